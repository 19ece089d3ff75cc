"""Seed data: realistic healthcare leads generated from a seed number, or raw records from JSON.

``generate(n, seed)`` builds N leads per CRM (HubSpot contacts with associated companies;
Salesforce Leads with company fields on the Lead) and the NPPES organization records their
organizations match (some absent, some ambiguous: two NPI-2 records with near-identical names in
one state). CRM field names and picklist values come from ``mappings/*.yaml``. Timestamps are
relative to ``anchor_ms`` (default: today's midnight UTC), so the same seed and anchor give the
same data.

Each lead also gets a history (``Generator._history``, its own random stream): Original Source,
calls, meetings, campaign responses, form conversions, lifecycle dates and a won, lost or open
deal, whose rates depend on the lead's traits (``lead_traits``; sandbox/README.md "Histories").

``load(sandbox, data)`` loads the raw form (the ``--seed FILE`` format)::

    {"hubspot": {"contacts": [{"id", "properties", "companies": [ids]}], "companies": [...],
                 "tasks" | "calls" | "meetings" | "deals": [{"id", "properties", "contacts": [ids]}]},
     "salesforce": {"Lead": [{"Id", ...fields, "CreatedDate"?, "SystemModstamp"?}], "Task": [...],
                    "Event": [...], "Campaign": [...], "CampaignMember": [...], "Opportunity": [...]},
     "nppes": [NPPES result records]}

Datetime values may be ISO strings, epoch-ms strings or (generated data) epoch-ms ints. Seeded
Salesforce records were made by a person: ``CreatedById``/``LastModifiedById`` default to the
sales rep (``sandbox.salesforce.REP_USER_ID``, set by ``OrgTable``), never the integration user.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from leadflow.titles import decision_role_from_title
from mappings import CrmMapping, load_mapping
from sandbox.hubspot import MODIFIED_PROPS, CREATED_PROPS, HubSpotPortal, _prop
from sandbox.salesforce import SalesforceOrg, sf_id
from sandbox.store import now_ms, parse_datetime_ms

DAY_MS = 86_400_000

# NUCC codes (code, NPPES desc, taxonomy_group)
TAXONOMY = {
    "hospital": ("282N00000X", "General Acute Care Hospital", ""),
    "multi_specialty": ("193200000X", "Multi-Specialty Group", ""),
    "single_specialty": ("193400000X", "Single Specialty Group", ""),
    "family": ("207Q00000X", "Family Medicine", ""),
    "internal": ("207R00000X", "Internal Medicine", ""),
    "cardiology": ("207RC0000X", "Internal Medicine, Cardiovascular Disease", ""),
    "orthopaedics": ("207X00000X", "Orthopaedic Surgery", ""),
    "pediatrics": ("208000000X", "Pediatrics", ""),
    "obgyn": ("207V00000X", "Obstetrics & Gynecology", ""),
    "primary_care_clinic": ("261QP2300X", "Clinic/Center, Primary Care", ""),
    "fqhc": ("261QF0400X", "Clinic/Center, Federally Qualified Health Center (FQHC)", ""),
    "urgent_care": ("261QU0200X", "Clinic/Center, Urgent Care", ""),
    "home_health": ("251E00000X", "Home Health", ""),
    "snf": ("314000000X", "Skilled Nursing Facility", ""),
    "lab": ("291U00000X", "Clinical Medical Laboratory", ""),
    "pharmacy": ("3336C0003X", "Pharmacy, Community/Retail Pharmacy", ""),
}

PLACES = {
    "GA": ["Atlanta", "Savannah", "Macon", "Athens"], "TX": ["Houston", "Austin", "Dallas", "El Paso"],
    "CA": ["Sacramento", "Fresno", "San Diego", "Oakland"], "NY": ["Albany", "Buffalo", "Rochester", "Syracuse"],
    "FL": ["Tampa", "Orlando", "Jacksonville", "Gainesville"], "OH": ["Columbus", "Dayton", "Toledo", "Akron"],
    "PA": ["Pittsburgh", "Harrisburg", "Allentown", "Erie"], "IL": ["Springfield", "Peoria", "Rockford", "Chicago"],
    "NC": ["Raleigh", "Durham", "Asheville", "Charlotte"], "MI": ["Lansing", "Grand Rapids", "Flint", "Detroit"],
    "WA": ["Spokane", "Tacoma", "Olympia", "Seattle"], "MA": ["Worcester", "Springfield", "Lowell", "Boston"],
    "TN": ["Nashville", "Knoxville", "Memphis", "Chattanooga"], "AZ": ["Phoenix", "Tucson", "Mesa", "Flagstaff"],
    "MN": ["Duluth", "Rochester", "St. Cloud", "Minneapolis"], "CO": ["Denver", "Boulder", "Pueblo", "Greeley"],
}
STATES = list(PLACES)
ZIP_PREFIX = {"GA": "303", "TX": "770", "CA": "958", "NY": "122", "FL": "336", "OH": "432", "PA": "152", "IL": "627",
              "NC": "276", "MI": "489", "WA": "992", "MA": "016", "TN": "372", "AZ": "850", "MN": "558", "CO": "802"}
SAINTS = ["St. Mary's", "St. Joseph's", "St. Luke's", "Good Samaritan", "Mercy", "Sacred Heart", "Providence",
          "St. Vincent's", "Holy Cross", "St. Francis"]
SURNAMES = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
            "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
            "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
            "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green",
            "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Patel",
            "Kim", "Chen", "O'Brien", "Okafor", "Cohen", "Schmidt", "Novak", "Silva", "Khan"]
FIRST_NAMES = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
               "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen",
               "Christopher", "Lisa", "Daniel", "Nancy", "Matthew", "Betty", "Anthony", "Margaret", "Mark", "Sandra",
               "Priya", "Wei", "Aisha", "Carlos", "Fatima", "Hiroshi", "Olga", "Kwame", "Sofia", "Mateo", "Zoe",
               "Ravi", "Leila", "Diego", "Grace", "Noah", "Emma", "Liam", "Ava", "Ethan"]
SYLLABLES = ["Cura", "Vita", "Medi", "Thera", "Nova", "Geno", "Cardi", "Neuro", "Immu", "Onco", "Lumi", "Zen",
             "Axi", "Bio", "Clari", "Vero", "Pulse", "Heal", "Kin", "Ari"]
EHR = ["Epic", "Oracle Health", "MEDITECH", "athenahealth", "eClinicalWorks", "NextGen", "Veradigm", "None"]
PAYERS = ["Medicare", "Medicaid", "Aetna", "Blue Cross Blue Shield", "UnitedHealthcare", "Cigna", "Humana", "Self-pay"]
SERVICES = ["Primary care appointment", "Physical therapy", "Cardiology consult", "Telehealth visit", "Lab work",
            "Pediatric checkup", "Behavioral health", "Orthopedic evaluation"]

SEGMENTS: list[tuple[str, int]] = [
    ("health_system", 11), ("hospital", 12), ("physician_practice", 20), ("clinic", 13), ("payer", 7),
    ("pharma", 6), ("digital_health", 9), ("patient", 12), ("post_acute", 5), ("noise", 5),
]
TITLES = {
    "health_system": ["Chief Information Officer", "CMIO", "VP, Revenue Cycle", "Director of IT Security",
                      "Chief Nursing Officer", "Director of Population Health", "IT Analyst", "Procurement Manager",
                      "Chief Financial Officer", "Privacy Officer"],
    "hospital": ["Chief Medical Officer", "Director of Nursing", "Hospital Administrator",
                 "Clinical Informatics Manager", "RN", "Revenue Cycle Director", "CIO", "Compliance Officer"],
    "physician_practice": ["Practice Administrator", "Practice Manager", "Physician Owner", "Office Manager",
                           "Medical Assistant", "Billing Specialist", "Managing Partner", "Physician"],
    "clinic": ["Executive Director", "Clinic Manager", "Medical Director", "Front Desk Coordinator",
               "Operations Director", "Nurse Practitioner"],
    "payer": ["VP Network Management", "Director of Care Management", "Medical Director",
              "Provider Relations Specialist", "Chief Operating Officer"],
    "pharma": ["Director, Market Access", "VP Commercial Operations", "Brand Manager", "Field Medical Director",
               "Patient Services Lead"],
    "digital_health": ["CEO", "Co-Founder", "Head of Product", "CTO", "Partnerships Manager", "Software Engineer"],
    "post_acute": ["Administrator", "Director of Nursing", "Agency Owner", "Lab Manager", "Pharmacist in Charge"],
    "noise": ["Student", "Consultant", "Sales Representative", "Intern", "", "Researcher", "Journalist"],
}
PAIN_POINTS = {
    "health_system": ["Patient access backlog across 12 hospitals", "Prior authorization delays",
                      "Referral leakage to competitors", "Consolidating scheduling after a merger"],
    "hospital": ["ED throughput and discharge delays", "Manual prior authorizations", "Denials rising this year",
                 "Nurse staffing and scheduling"],
    "physician_practice": ["Phones ring all day, no online booking", "No-shows around 18%",
                           "Front desk overwhelmed with intake paperwork", "Slow claims and denials"],
    "clinic": ["Sliding-fee intake is manual", "Waitlist for new patients", "Grant reporting takes weeks"],
    "payer": ["Care gaps in Medicare Advantage members", "Provider directory accuracy", "Member engagement"],
    "pharma": ["Patient enrollment in hub services", "Prior auth support for a launch", "HCP targeting"],
    "digital_health": ["Need EHR integrations to scale", "Payer contracting for virtual care",
                       "Scheduling API for partners"],
    "post_acute": ["Referral intake from hospitals by fax", "Care transitions", "Compliance documentation"],
    "noise": ["Researching the market", "", "Writing a paper on healthcare IT"],
}
SOURCES = [("web_form", 16), ("demo_request", 10), ("phone", 5), ("paid_search", 12), ("paid_social", 6),
           ("referral", 8), ("conference", 7), ("webinar", 9), ("organic", 12), ("partner", 5),
           ("list_import", 6), ("other", 4)]
ORG_TYPE = {"health_system": "health_system", "hospital": "hospital", "physician_practice": "physician_practice",
            "clinic": "clinic", "payer": "payer", "pharma": "pharma", "digital_health": "digital_health",
            "post_acute": "other", "noise": "other"}
# The organization's industry as a CRM holds it: (HubSpot company `industry` code, Salesforce Lead `Industry`),
# by segment (post-acute by kind; noise by a word of its name, none for "Self"); INDUSTRY_BLANK of organizations
# have none.
INDUSTRY = {
    "health_system": [("HOSPITAL_HEALTH_CARE", "Healthcare")], "hospital": [("HOSPITAL_HEALTH_CARE", "Healthcare")],
    "physician_practice": [("MEDICAL_PRACTICE", "Healthcare")], "clinic": [("MEDICAL_PRACTICE", "Healthcare")],
    "payer": [("INSURANCE", "Insurance")],
    "pharma": [("PHARMACEUTICALS", "Biotechnology"), ("BIOTECHNOLOGY", "Biotechnology")],
    "digital_health": [("COMPUTER_SOFTWARE", "Technology"), ("INFORMATION_TECHNOLOGY_AND_SERVICES", "Technology")],
    "home_health": [("HOSPITAL_HEALTH_CARE", "Healthcare")], "snf": [("HOSPITAL_HEALTH_CARE", "Healthcare")],
    "lab": [("HOSPITAL_HEALTH_CARE", "Healthcare")], "pharmacy": [("RETAIL", "Retail")],
}
NOISE_INDUSTRY = {"Consulting": [("MANAGEMENT_CONSULTING", "Consulting")],
                  "University": [("HIGHER_EDUCATION", "Education")],
                  "Capital": [("VENTURE_CAPITAL_PRIVATE_EQUITY", "Finance")]}
INDUSTRY_BLANK = 0.1
CARE_SETTING = {"health_system": "inpatient", "hospital": "inpatient", "physician_practice": "ambulatory",
                "clinic": "ambulatory", "digital_health": "virtual", "post_acute": "post_acute"}


# Hospital kinds (NUCC code, NPPES desc, weight, name pattern or None to keep the generated name); chosen from
# their own random stream (seed and org key), so adding them left the rest of the data unchanged. A VA hospital
# registers as general acute care: its name says VA.
HOSPITAL_KINDS = [
    ("general_acute", "282N00000X", "General Acute Care Hospital", 55, None),
    ("critical_access", "282NC0060X", "General Acute Care Hospital, Critical Access", 12, "{place} Community Hospital"),
    ("childrens", "282NC2000X", "General Acute Care Hospital, Children", 6, "{place} Children's Hospital"),
    ("psychiatric", "283Q00000X", "Psychiatric Hospital", 7, "{place} Behavioral Health Hospital"),
    ("rehabilitation", "283X00000X", "Rehabilitation Hospital", 6, "{place} Rehabilitation Hospital"),
    ("long_term_care", "282E00000X", "Long Term Care Hospital", 5, "{place} Specialty Hospital"),
    ("federal_dod", "2865M2000X", "Military Hospital, Military General Acute Care Hospital", 4, "{place} Army Medical Center"),
    ("federal_va", "282N00000X", "General Acute Care Hospital", 5, "{place} VA Medical Center"),
]
HOSPITAL_BEDS = {"critical_access": [25], "childrens": [120, 250, 400], "psychiatric": [60, 120],
                 "rehabilitation": [60, 120], "long_term_care": [60, 120], "federal_va": [120, 250, 400]}
# How reps and web forms type an organization's name (the registry holds the legal spelling): applied from the
# organization's own random stream, each with its chance.
TYPED_ABBREVIATIONS = [("Medical Center", "Med Ctr", 0.45), ("Hospital", "Hosp", 0.3), ("Regional", "Reg", 0.2),
                       ("Memorial", "Mem", 0.15), ("Center", "Ctr", 0.2), ("Health System", "Hlth System", 0.1)]
TYPED_PARENTHETICALS = ["(Main Campus)", "(Downtown)", "(formerly {city} General)"]
# HubSpot's Original Source (hs_analytics_source, drill-down 1, drill-down 2) for a seeded channel
HUBSPOT_ORIGINAL_SOURCE = {
    "web_form": ("DIRECT_TRAFFIC", "", ""), "demo_request": ("ORGANIC_SEARCH", "google", ""),
    "phone": ("OFFLINE", "CRM_UI", ""), "paid_search": ("PAID_SEARCH", "google", "ehr scheduling software"),
    "paid_social": ("PAID_SOCIAL", "linkedin", "Patient access 2026"), "referral": ("REFERRALS", "himss.org", ""),
    "conference": ("OFFLINE", "IMPORT", "HIMSS 2026 booth scans"),
    "webinar": ("EMAIL_MARKETING", "Webinar invite", "Patient access webinar"),
    "organic": ("ORGANIC_SEARCH", "google", ""), "partner": ("REFERRALS", "partner.example", ""),
    "list_import": ("OFFLINE", "IMPORT", "Purchased list 2026"), "other": ("OTHER_CAMPAIGNS", "", ""),
}
ORGANIC_VARIANTS = ("SOCIAL_MEDIA", "AI_REFERRALS")
# Salesforce campaigns: (key, Campaign.Name, Campaign.Type)
CAMPAIGNS = (("webinar", "Webinar: Patient access in 2026", "Webinar"), ("conference", "HIMSS 2026", "Conference"),
             ("trade_show", "AHA Leadership Summit 2026", "Trade Show"), ("email", "Q3 nurture email", "Email"))
DEAL_SIZE = {"health_system": (250_000, 900_000), "hospital": (80_000, 300_000),
             "physician_practice": (12_000, 60_000), "clinic": (15_000, 50_000), "payer": (150_000, 500_000),
             "pharma": (100_000, 400_000), "digital_health": (20_000, 120_000), "post_acute": (10_000, 40_000)}
FIT = {"health_system": 1.0, "hospital": 1.0, "physician_practice": 0.9, "clinic": 0.8, "payer": 0.5,
       "pharma": 0.4, "digital_health": 0.5, "post_acute": 0.4, "noise": 0.0, "patient": 0.0}
CHANNEL = {"referral": 1.0, "demo_request": 1.0, "partner": 0.9, "phone": 0.8, "webinar": 0.6, "conference": 0.6,
           "web_form": 0.4, "organic": 0.4, "paid_search": 0.25, "paid_social": 0.2, "list_import": 0.05,
           "other": 0.1}
AUTHORITY = {"decision_maker": 1.0, "influencer": 0.5, "user": 0.1, "unknown": 0.2}
READINESS = {"ready": 1.0, "in_progress": 0.5, "not_started": 0.1}


def lead_traits(lead: dict[str, Any]) -> dict[str, float]:
    """The known traits (0-1) a seeded lead's history rates depend on: fit (segment), authority
    (title), channel (source) and compliance readiness (security review and BAA)."""
    role = lead.get("decision_role") or decision_role_from_title(lead.get("title"))
    readiness = [READINESS.get(lead.get(name) or "", 0.0) for name in ("security_review", "baa_status")]
    return {"fit": FIT.get(lead["segment"], 0.0), "authority": AUTHORITY.get(role, 0.2),
            "channel": CHANNEL.get(lead["source"], 0.1), "compliance": sum(readiness) / 2}


@dataclass
class Org:
    key: int
    segment: str
    name: str
    domain: str
    state: str
    city: str
    kind: str
    npi: str | None = None
    in_crm_npi: bool = False
    ehr: str | None = None
    beds: int | None = None
    providers: int | None = None
    locations: int | None = None
    industry: tuple[str, str] | None = None  # (HubSpot industry code, Salesforce Industry value)
    nppes: list[dict[str, Any]] = field(default_factory=list)
    hospital_kind: str | None = None  # HOSPITAL_KINDS name (hospitals and health systems)
    typed: str | None = None  # the name as the CRMs hold it (a typed variant of ``name``)
    legal: str | None = None  # the name the registry holds (None: not in NPPES)

    @property
    def crm_name(self) -> str:
        return self.typed or self.name

    def size_fields(self) -> dict[str, int]:
        """The CRMs' standard size fields for about half the organizations (their own random stream):
        employees about 6 per bed or 5 per provider, revenue about 110k per employee."""
        rng = random.Random(f"size:{self.key}:{self.name}")
        if rng.random() < 0.5 or not (self.beds or self.providers):
            return {}
        employees = (self.beds or 0) * rng.randint(4, 8) or (self.providers or 0) * rng.randint(3, 6)
        fields = {"employee_count": employees}
        if rng.random() < 0.6:
            fields["annual_revenue"] = employees * rng.randint(90, 130) * 1000
        return fields


@dataclass
class SeedData:
    """Generated or loaded records in the raw (``--seed FILE``) form."""

    hubspot: dict[str, list[dict[str, Any]]]
    salesforce: dict[str, list[dict[str, Any]]]
    nppes: list[dict[str, Any]]


def _weighted(rng: random.Random, table: list[tuple[str, int]]) -> str:
    total = sum(weight for _, weight in table)
    pick = rng.random() * total
    for value, weight in table:
        pick -= weight
        if pick < 0:
            return value
    return table[-1][0]


def npi_check_digit(base9: str) -> str:
    """The Luhn check digit NPIs use (with the 80840 prefix)."""
    total = 24  # the constant for the 80840 prefix
    for position, char in enumerate(reversed(base9)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


class Generator:
    """Deterministic lead/org/NPPES generation; see the module docstring."""

    def __init__(self, n: int, seed: int, anchor_ms: int | None = None):
        self.n, self.seed = n, seed
        self.rng = random.Random(seed)
        self.anchor = anchor_ms if anchor_ms is not None else (int(time.time() * 1000) // DAY_MS) * DAY_MS
        self.hs = load_mapping("hubspot")
        self.sf = load_mapping("salesforce")
        self.declared = declared_inputs(self.hs, self.sf)
        self._npis: set[str] = set()
        self.orgs: dict[str, list[Org]] = {}
        self.nppes: list[dict[str, Any]] = []

    # -- organizations --------------------------------------------------------------------------
    def _npi(self) -> str:
        while True:
            base = str(self.rng.randrange(100_000_000, 200_000_000))
            npi = base + npi_check_digit(base)
            if npi not in self._npis:
                self._npis.add(npi)
                return npi

    def _org(self, key: int, segment: str) -> Org:
        rng = self.rng
        state = rng.choice(STATES)
        city = rng.choice(PLACES[state])
        kind = segment
        place = city if rng.random() < 0.6 else rng.choice(["Lakeside", "Riverside", "Valley", "Northside",
                                                             "Summit", "Bayview", "Pinecrest", "Heritage"])
        if segment == "health_system":
            name = rng.choice([f"{place} Health", f"{place} Health System", f"{rng.choice(SAINTS)} Health System",
                               f"{place} Healthcare"])
        elif segment == "hospital":
            name = rng.choice([f"{rng.choice(SAINTS)} Medical Center", f"{place} Regional Hospital",
                               f"{place} Memorial Hospital", f"{place} Community Hospital"])
        elif segment == "physician_practice":
            kind = rng.choice(["family", "internal", "cardiology", "orthopaedics", "pediatrics", "obgyn",
                               "multi_specialty"])
            surname = rng.choice(SURNAMES)
            name = {"family": f"{surname} Family Medicine", "internal": f"{place} Internal Medicine Associates",
                    "cardiology": f"{surname} & {rng.choice(SURNAMES)} Cardiology Group",
                    "orthopaedics": f"{place} Orthopedic Associates", "pediatrics": f"{place} Pediatrics, PC",
                    "obgyn": f"{place} Women's Health", "multi_specialty": f"{place} Multispecialty Group"}[kind]
        elif segment == "clinic":
            kind = rng.choice(["primary_care_clinic", "fqhc", "urgent_care"])
            name = {"primary_care_clinic": f"{place} Primary Care Clinic",
                    "fqhc": f"{place} Community Health Center", "urgent_care": f"{place} Urgent Care"}[kind]
        elif segment == "post_acute":
            kind = rng.choice(["home_health", "snf", "lab", "pharmacy"])
            name = {"home_health": f"{place} Home Health Services", "snf": f"{place} Nursing and Rehabilitation Center",
                    "lab": f"{place} Clinical Laboratory", "pharmacy": f"{place} Community Pharmacy"}[kind]
        elif segment == "payer":
            name = rng.choice([f"{place} Health Plan", f"{state} Mutual Health", f"{place} Care Alliance"])
        elif segment == "pharma":
            name = f"{rng.choice(SYLLABLES)}{rng.choice(SYLLABLES).lower()} " + rng.choice(
                ["Therapeutics", "Pharmaceuticals, Inc.", "Biosciences"])
        elif segment == "digital_health":
            name = f"{rng.choice(SYLLABLES)}{rng.choice(['ly', 'ra', 'MD', 'Care', 'Health'])}" + rng.choice(
                ["", " Labs", " Health"])
        else:
            name = rng.choice([f"{rng.choice(SURNAMES)} Consulting", "Self", f"{place} University",
                               f"{rng.choice(SURNAMES)} Capital"])
        hospital_kind = self._hospital_kind(key, segment)
        if hospital_kind and segment == "hospital":
            pattern = next(p for k, _, _, _, p in HOSPITAL_KINDS if k == hospital_kind)
            name = pattern.format(place=place) if pattern else name
        slug = "".join(ch for ch in name.lower() if ch.isalnum())[:24]
        tld = ".org" if segment in ("health_system", "hospital", "clinic") else ".com"
        org = Org(key, segment, name, f"{slug}{key % 97 if key > 200 else ''}{tld}", state, city, kind)
        org.hospital_kind = hospital_kind
        if segment in ("health_system", "hospital"):
            org.beds = rng.choice([25, 60, 120, 250, 400, 650, 900]) * (3 if segment == "health_system" else 1)
            if segment == "hospital" and hospital_kind in HOSPITAL_BEDS:
                org.beds = random.Random(f"{self.seed}:beds:{key}").choice(HOSPITAL_BEDS[hospital_kind])
            org.locations = rng.randint(3, 40) if segment == "health_system" else rng.randint(1, 6)
            org.providers = org.beds * rng.randint(1, 3)
        elif segment in ("physician_practice", "clinic", "post_acute"):
            org.providers = rng.choice([1, 2, 4, 8, 15, 30, 60])
            org.locations = rng.choice([1, 1, 1, 2, 3, 5, 9])
        if segment in ("health_system", "hospital", "physician_practice", "clinic", "post_acute"):
            org.ehr = rng.choice(EHR)
            self._nppes_for(org)
        org.industry = self._industry(org)
        org.typed = self._typed_name(org)
        return org

    def _hospital_kind(self, key: int, segment: str) -> str | None:
        if segment == "health_system":
            return "general_acute"
        if segment != "hospital":
            return None
        rng = random.Random(f"{self.seed}:hospital_kind:{key}")
        return rng.choices([k[0] for k in HOSPITAL_KINDS], weights=[k[3] for k in HOSPITAL_KINDS])[0]

    def _typed_name(self, org: Org) -> str:
        """The name as a rep or a web form typed it: abbreviations, St/Saint, a dropped apostrophe, "The",
        ", Inc.", a parenthetical, the city appended, or "<legal name> dba <name>" (own random stream)."""
        rng = random.Random(f"{self.seed}:typed:{org.key}")
        if org.segment not in ("health_system", "hospital", "physician_practice", "clinic", "post_acute"):
            return org.name
        typed = org.name
        for full, short, chance in TYPED_ABBREVIATIONS:
            if full in typed and rng.random() < chance:
                typed = typed.replace(full, short)
        if typed.startswith("St. ") and rng.random() < 0.5:
            typed = rng.choice(["St ", "Saint "]) + typed[4:]
        if "'s " in typed and rng.random() < 0.3:
            typed = typed.replace("'s ", "s ", 1)
        roll = rng.random()
        if roll < 0.08:
            typed = f"The {typed}"
        elif roll < 0.16:
            typed = f"{typed}, Inc."
        elif roll < 0.22:
            typed = f"{typed} {rng.choice(TYPED_PARENTHETICALS).format(city=org.city)}"
        elif roll < 0.28 and org.segment in ("health_system", "hospital"):
            typed = f"{typed} {org.city}"
        return typed

    def _legal_name(self, org: Org) -> str:
        """The registry's spelling: upper case, no commas; "ST." kept, written "ST" or "SAINT" (own stream)."""
        legal = org.name.upper().replace(",", "")
        if legal.startswith("ST. "):
            legal = random.Random(f"{self.seed}:legal:{org.key}").choice(["ST. ", "ST ", "SAINT "]) + legal[4:]
        return legal

    def _industry(self, org: Org) -> tuple[str, str] | None:
        """From its own random stream (seed and org key), so adding it left the rest of the data unchanged."""
        rng = random.Random(f"{self.seed}:industry:{org.key}")
        if org.segment == "post_acute":
            options = INDUSTRY[org.kind]
        elif org.segment == "noise":
            options = next((v for word, v in NOISE_INDUSTRY.items() if word in org.name.split()), [])
        else:
            options = INDUSTRY[org.segment]
        if not options or rng.random() < INDUSTRY_BLANK:
            return None
        return rng.choice(options)

    def _nppes_for(self, org: Org) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.12:
            return  # absent from NPPES
        legal = self._legal_name(org)
        dba = None
        if roll < 0.22:
            dba, legal = legal, f"{org.city.upper()} {rng.choice(['HEALTH SERVICES', 'MEDICAL GROUP', 'CARE'])} INC"
            if random.Random(f"{self.seed}:dba:{org.key}").random() < 0.3:
                org.typed = f"{legal.title()} dba {org.typed or org.name}"
        org.npi = self._npi()
        org.in_crm_npi = rng.random() < 0.3
        org.legal = legal
        org.nppes.append(self._nppes_record(org.npi, legal, org, dba))
        if 0.22 <= roll < 0.32:
            twin = legal.replace("'S", "S").replace(" MEDICAL", " MED") + rng.choice([" INC", " LLC", ""])
            if twin == legal:
                twin = legal + " INC"
            other_city = rng.choice(PLACES[org.state])
            org.nppes.append(self._nppes_record(self._npi(), twin, org, None, city=other_city))
        self.nppes.extend(org.nppes)

    def _nppes_record(self, npi: str, legal: str, org: Org, dba: str | None, city: str | None = None) -> dict[str, Any]:
        rng = self.rng
        city = (city or org.city).upper()
        zip_code = ZIP_PREFIX[org.state] + f"{rng.randrange(100):02d}" + f"{rng.randrange(10000):04d}"
        phone = f"{rng.randint(201, 989)}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
        street = f"{rng.randint(10, 9999)} {rng.choice(['MAIN ST', 'OAK AVE', 'MEDICAL PKWY', 'HOSPITAL DR', 'PARK BLVD', 'CENTER ST'])}"
        created = self.anchor - rng.randrange(400, 6000) * DAY_MS
        updated = created + rng.randrange(0, (self.anchor - created) // DAY_MS) * DAY_MS
        location = {"address_1": street, "address_purpose": "LOCATION", "address_type": "DOM", "city": city,
                    "country_code": "US", "country_name": "United States", "postal_code": zip_code,
                    "state": org.state, "telephone_number": phone}
        mailing = dict(location, address_purpose="MAILING")
        if rng.random() < 0.25:
            mailing.update(address_1=f"PO BOX {rng.randint(100, 99999)}", postal_code=zip_code[:5])
        taxonomies = self._taxonomies(org)
        official = rng.choice(FIRST_NAMES).upper(), rng.choice(SURNAMES).upper()
        record = {
            "addresses": [location, mailing],
            "basic": {
                "authorized_official_first_name": official[0], "authorized_official_last_name": official[1],
                "authorized_official_name_prefix": "--", "authorized_official_telephone_number": phone.replace("-", ""),
                "authorized_official_title_or_position": rng.choice(["CEO", "PRESIDENT", "ADMINISTRATOR", "CFO",
                                                                     "PRACTICE MANAGER"]),
                "certification_date": _date(updated), "enumeration_date": _date(created),
                "last_updated": _date(updated), "organization_name": legal, "organizational_subpart": "NO",
                "status": "A",
            },
            "created_epoch": str(created), "endpoints": [], "enumeration_type": "NPI-2", "identifiers": [],
            "last_updated_epoch": str(updated), "number": npi,
            "other_names": [{"code": "3", "organization_name": dba, "type": "Doing Business As"}] if dba else [],
            "practiceLocations": [], "taxonomies": taxonomies,
        }
        if org.locations and org.locations > 1:
            second = rng.choice(PLACES[org.state]).upper()
            record["practiceLocations"] = [dict(location, city=second, address_1=f"{rng.randint(10, 999)} CLINIC WAY",
                                                update_date=_date(updated))]
            del record["practiceLocations"][0]["address_purpose"]
        return record

    def _taxonomies(self, org: Org) -> list[dict[str, Any]]:
        rng = self.rng
        kinds = {"health_system": ["hospital"], "hospital": ["hospital"]}.get(org.segment, [org.kind])
        hospital = next((k for k in HOSPITAL_KINDS if k[0] == org.hospital_kind), None)
        group = ""
        if org.kind == "multi_specialty":
            kinds = rng.sample(["family", "internal", "cardiology", "pediatrics", "obgyn"], 2)
            group = "193200000X - Multi-Specialty Group"
        out = []
        for position, kind in enumerate(kinds):
            code, desc, _ = TAXONOMY[kind]
            if kind == "hospital" and hospital:
                code, desc = hospital[1], hospital[2]
            out.append({"code": code, "desc": desc, "license": None if rng.random() < 0.5 else
                        f"{org.state}{rng.randint(10000, 99999)}", "primary": position == 0,
                        "state": None if rng.random() < 0.5 else org.state, "taxonomy_group": group})
        if len(out) > 1 and rng.random() < 0.3:
            out.reverse()
        return out

    # -- leads ----------------------------------------------------------------------------------
    def generate(self) -> SeedData:
        rng = self.rng
        segments = [_weighted(rng, SEGMENTS) for _ in range(self.n)]
        counts: dict[str, int] = {}
        for segment in segments:
            counts[segment] = counts.get(segment, 0) + 1
        key = 0
        for segment, count in counts.items():
            if segment == "patient":
                continue
            self.orgs[segment] = []
            for _ in range(max(1, int(count / 2.5))):
                key += 1
                self.orgs[segment].append(self._org(key, segment))
        self._noise_nppes(max(3, self.n // 20))
        leads = [self._lead(i, segment) for i, segment in enumerate(segments)]
        for index, lead in enumerate(leads):
            lead["history"] = self._history(index, lead)
        return SeedData(self._hubspot(leads), self._salesforce(leads), self.nppes)

    def _noise_nppes(self, count: int) -> None:
        for i in range(count):
            segment = self.rng.choice(["hospital", "physician_practice", "clinic", "post_acute"])
            org = self._org(10_000_000 + i, segment)
            if not org.nppes:
                continue

    def _lead(self, index: int, segment: str) -> dict[str, Any]:
        rng = self.rng
        first, last = rng.choice(FIRST_NAMES), rng.choice(SURNAMES)
        created = self.anchor - rng.randrange(1, 365 * 24 * 60) * 60_000
        modified = created + int((self.anchor - created) * rng.random() ** 2)
        lead: dict[str, Any] = {"first_name": first, "last_name": last, "created": created, "modified": modified,
                                "segment": segment, "source": _weighted(rng, SOURCES)}
        slug = f"{first}.{last}".lower().replace("'", "")
        if segment == "patient":
            lead.update(lead_kind="patient", email=f"{slug}{index}@{rng.choice(['gmail.com', 'yahoo.com', 'outlook.com'])}",
                        service=rng.choice(SERVICES), payer=rng.choice(PAYERS),
                        zip=ZIP_PREFIX[rng.choice(STATES)] + f"{rng.randrange(100):02d}",
                        scheduling_ready=rng.random() < 0.5, title=None, org=None)
        else:
            org = rng.choice(self.orgs[segment])
            lead.update(lead_kind="b2b", org=org, title=rng.choice(TITLES[segment]) or None,
                        email=f"{slug}{index if index % 7 == 0 else ''}@{org.domain}")
            lead["pain_point"] = rng.choice(PAIN_POINTS[segment]) or None if rng.random() < 0.6 else None
            for name, options in self.declared:
                if rng.random() < (0.25 if name == "decision_role" else 0.45):
                    lead[name] = rng.choice(options)
            if rng.random() < 0.15:
                lead["discovery"] = {k: rng.random() < 0.6 for k in ("need_confirmed", "timeline_confirmed",
                                                                     "authority_confirmed", "budget_path_known")}
        if rng.random() < 0.08:
            lead["sales_accepted"] = True
        if rng.random() < 0.05:
            lead["manual_stage"] = rng.choice(["sal", "sql", "nurture", "disqualified"] if segment != "patient"
                                              else ["intake_ready", "redirect", "nurture"])
        lead["events"] = self._events(created, segment)
        return lead

    def _events(self, created: int, segment: str) -> dict[str, tuple[int, int]]:
        rng = self.rng
        activity = rng.random() ** (0.7 if segment in ("health_system", "hospital", "physician_practice") else 1.3)
        events = {}
        for name, chance in (("form_fill", 0.8), ("site_return_visit", 0.7), ("email_click", 0.35),
                             ("content_download", 0.3), ("solution_page_view", 0.35), ("pricing_page_view", 0.25),
                             ("webinar_attended", 0.15), ("implementation_page_view", 0.1),
                             ("demo_request", 0.12), ("call_completed", 0.08)):
            if rng.random() < chance * activity + 0.05:
                at = created + int((self.anchor - created) * rng.random())
                events[name] = (at, rng.randint(1, 12))
        return events

    # -- histories: activities, campaign responses, conversions, deals ---------------------------
    def _history(self, index: int, lead: dict[str, Any]) -> dict[str, Any]:
        """What the CRM recorded about the lead, from its own random stream (seed and lead index, so
        adding it left every other generated value unchanged); rates follow the lead's traits
        (sandbox/README.md, "Histories")."""
        rng = random.Random(f"{self.seed}:history:{index}")
        traits = lead_traits(lead)
        created, events = lead["created"], lead["events"]
        history: dict[str, Any] = {"calls": [], "meetings": [], "campaigns": [], "conversions": [], "deal": None}
        if "call_completed" in events:
            at, count = events["call_completed"]
            history["calls"] = sorted([at] + [created + int((at - created) * rng.random())
                                              for _ in range(min(count, 4) - 1)])
        if rng.random() < 0.3 and lead["lead_kind"] == "b2b":
            history["missed_calls"] = [created + int((self.anchor - created) * rng.random())]
        if "webinar_attended" in events:
            history["campaigns"].append(("webinar", events["webinar_attended"][0], True))
        if lead["source"] == "conference":
            history["campaigns"].append((rng.choice(["conference", "trade_show"]), created, True))
        if lead["lead_kind"] == "b2b" and rng.random() < 0.25:
            history["campaigns"].append(("email", created + int((self.anchor - created) * rng.random()), False))
        for name, label in (("form_fill", "Contact us"), ("demo_request", "Demo request"),
                            ("content_download", "Ebook: The patient access playbook")):
            if name in events:
                history["conversions"].append((events[name][0], label))
        history["conversions"].sort()
        p_meeting = 0.03 + 0.25 * traits["fit"] + 0.15 * traits["authority"] + 0.35 * traits["channel"]
        if lead["lead_kind"] == "b2b" and rng.random() < p_meeting * (1.0 if events else 0.3):
            start = created + int((self.anchor - created) * (0.3 + 0.7 * rng.random()))
            history["meetings"].append((start, "COMPLETED" if rng.random() < 0.85 else "NO_SHOW"))
        held = [m for m in history["meetings"] if m[1] == "COMPLETED"]
        p_opportunity = 0.3 + 0.2 * traits["fit"] + 0.2 * traits["authority"]
        if held and rng.random() < p_opportunity:
            opened = held[0][0] + rng.randint(1, 10) * DAY_MS
            if opened < self.anchor:
                history["deal"] = self._deal(rng, lead, traits, opened)
        return history

    def _deal(self, rng: random.Random, lead: dict[str, Any], traits: dict[str, float], opened: int) -> dict[str, Any]:
        p_won = 0.15 + 0.3 * traits["compliance"] + 0.15 * traits["fit"] + 0.1 * traits["channel"]
        low, high = DEAL_SIZE.get(lead["segment"], (10_000, 50_000))
        deal = {"opened": opened, "amount": float(rng.randrange(low, high, 500)), "stage": "open",
                "close": opened + rng.randint(30, 120) * DAY_MS}
        if deal["close"] < self.anchor:
            deal["stage"] = "won" if rng.random() < p_won else "lost"
        return deal

    # -- rendering per CRM ----------------------------------------------------------------------
    def _hubspot(self, leads: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        mapping = self.hs
        field_of = {name: m.field for name, m in mapping.fields.items()}
        value_of = {name: (m.values or {}) for name, m in mapping.fields.items()}
        companies: dict[int, dict[str, Any]] = {}
        contacts, tasks = [], []
        native: dict[str, list[dict[str, Any]]] = {"calls": [], "meetings": [], "deals": []}
        for index, lead in enumerate(leads):
            contact_id = str(10_001 + index)
            props: dict[str, Any] = {}
            _put(props, field_of["email"], lead.get("email"))
            _put(props, field_of["first_name"], lead["first_name"])
            _put(props, field_of["last_name"], lead["last_name"])
            _put(props, field_of["job_title"], lead.get("title"))
            self._declared(props, lead, field_of, value_of, bool_text=True)
            for name, (at, count) in lead["events"].items():
                event = mapping.events.get(name)
                if event:
                    props[event.field] = at
                    if event.count_field:
                        props[event.count_field] = str(count)
            props[MODIFIED_PROPS["contacts"]] = lead["modified"]
            props[CREATED_PROPS["contacts"]] = lead["created"]
            self._hubspot_history(index, contact_id, lead, props, field_of, native)
            org: Org | None = lead.get("org")
            company_ids = []
            if org is not None:
                company_id = str(5_000_000 + org.key)
                company_ids.append(company_id)
                if org.key not in companies:
                    companies[org.key] = self._company(company_id, org, lead["created"], field_of)
            contacts.append({"id": contact_id, "properties": props, "companies": company_ids})
            if self.rng.random() < 0.05:
                due = lead["modified"] + 3 * DAY_MS
                tasks.append({"id": str(90_000_000_001 + len(tasks)), "contacts": [contact_id], "properties": {
                    "hs_task_subject": "Follow up", "hs_task_body": "Call back about pricing",
                    "hs_task_status": self.rng.choice(["NOT_STARTED", "COMPLETED"]), "hs_task_priority": "MEDIUM",
                    "hs_task_type": "CALL", "hs_timestamp": due, "hs_createdate": lead["modified"],
                    "hs_lastmodifieddate": lead["modified"]}})
        return {"contacts": contacts, "companies": list(companies.values()), "tasks": tasks, **native}

    def _hubspot_history(self, index: int, contact_id: str, lead: dict[str, Any], props: dict[str, Any],
                         field_of: dict[str, str], native: dict[str, list[dict[str, Any]]]) -> None:
        """Original Source, conversions, lifecycle stage dates and the contact's calls, meetings and deal."""
        rng = random.Random(f"{self.seed}:hubspot-source:{index}")
        history = lead["history"]
        source, detail, campaign = HUBSPOT_ORIGINAL_SOURCE[lead["source"]]
        if source == "ORGANIC_SEARCH" and lead["source"] == "organic" and rng.random() < 0.25:
            source, detail = rng.choice(ORGANIC_VARIANTS), ""
        props[field_of["source"]] = source
        props[field_of["latest_source"]] = source if rng.random() < 0.7 else "DIRECT_TRAFFIC"
        _put(props, field_of["source_detail"], detail)
        _put(props, field_of["campaign"], campaign)
        conversions = history["conversions"]
        if conversions:
            props["first_conversion_date"], props["first_conversion_event_name"] = conversions[0]
            props["recent_conversion_date"], props["recent_conversion_event_name"] = conversions[-1]
            props["num_conversion_events"] = str(max(len(conversions), int(props.get("num_conversion_events") or 0)))
        stages = {"lead": lead["created"]}
        activity = sorted(at for at, _ in lead["events"].values())
        if activity:
            stages["marketingqualifiedlead"] = activity[0]
        for at in history["calls"]:
            native["calls"].append(_hubspot_call(len(native["calls"]), contact_id, at, "COMPLETED"))
        for at in history.get("missed_calls", []):
            native["calls"].append(_hubspot_call(len(native["calls"]), contact_id, at, "NO_ANSWER"))
        for start, outcome in history["meetings"]:
            native["meetings"].append({"id": str(70_000_000_001 + len(native["meetings"])), "contacts": [contact_id],
                                       "properties": {"hs_timestamp": start, "hs_meeting_start_time": start,
                                                      "hs_meeting_end_time": start + 1_800_000,
                                                      "hs_meeting_title": "Intro meeting",
                                                      "hs_meeting_outcome": outcome, "hs_createdate": start,
                                                      "hs_lastmodifieddate": start}})
            if outcome == "COMPLETED":
                stages.setdefault("salesqualifiedlead", start)
        deal = history["deal"]
        if deal:
            stage = {"won": "closedwon", "lost": "closedlost"}.get(deal["stage"], "presentationscheduled")
            native["deals"].append({"id": str(30_000_001 + len(native["deals"])), "contacts": [contact_id],
                                    "properties": {"dealname": f"{lead.get('org').name if lead.get('org') else 'Deal'}",
                                                   "pipeline": "default", "dealstage": stage, "amount": str(deal["amount"]),
                                                   "closedate": deal["close"], "createdate": deal["opened"],
                                                   "hs_lastmodifieddate": min(deal["close"], self.anchor)}})
            stages["opportunity"] = deal["opened"]
            if deal["stage"] == "won":
                stages["customer"] = deal["close"]
        for stage, at in stages.items():
            props[f"hs_lifecyclestage_{stage}_date"] = at
        props["lifecyclestage"] = max(stages, key=lambda name: stages[name])
        props["hs_lead_status"] = _lead_status(lead, history)

    def _company(self, company_id: str, org: Org, created: int, field_of: dict[str, str]) -> dict[str, Any]:
        props: dict[str, Any] = {field_of["company_name"]: org.crm_name, field_of["company_domain"]: org.domain,
                                 field_of["state"]: org.state, field_of["country"]: "United States", "city": org.city}
        if org.npi and org.in_crm_npi:
            props[field_of["npi"]] = org.npi
        if org.ehr:
            props[field_of["ehr_vendor"]] = org.ehr
        if org.industry:
            props[field_of["industry"]] = org.industry[0]
        for name, value in org.size_fields().items():
            props[field_of[name]] = str(value)
        props["createdate"] = created - DAY_MS
        props["hs_lastmodifieddate"] = created
        return {"id": company_id, "properties": props}

    def _declared(self, out: dict[str, Any], lead: dict[str, Any], field_of: dict[str, str],
                  value_of: dict[str, dict[str, str]], bool_text: bool) -> None:
        def enum(name: str, value: str | None) -> None:
            if value is not None:
                out[field_of[name]] = value_of[name].get(value, value)

        def flag(name: str, value: bool) -> None:
            out[field_of[name]] = ("true" if value else "false") if bool_text else value

        enum("lead_kind", lead["lead_kind"])
        enum("source", lead["source"])
        for name, _ in self.declared:
            enum(name, lead.get(name))
        enum("manual_stage", lead.get("manual_stage"))
        _put(out, field_of["pain_point"], lead.get("pain_point"))
        for name, value in (lead.get("discovery") or {}).items():
            flag(f"discovery.{name}", value)
        if lead.get("sales_accepted"):
            flag("sales_accepted", True)
        if lead["lead_kind"] == "patient":
            _put(out, field_of["patient.service_requested"], lead["service"])
            _put(out, field_of["patient.payer"], lead["payer"])
            _put(out, field_of["patient.zip"], lead["zip"])
            flag("patient.scheduling_ready", lead["scheduling_ready"])

    def _salesforce(self, leads: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        mapping = self.sf
        field_of = {name: m.field for name, m in mapping.fields.items()}
        value_of = {name: (m.values or {}) for name, m in mapping.fields.items()}
        aliases = [alias for alias, canonical in (mapping.fields["source"].read_aliases or {}).items()]
        rows, tasks = [], []
        native: dict[str, list[dict[str, Any]]] = {"Task": [], "Event": [], "CampaignMember": [], "Opportunity": []}
        for index, lead in enumerate(leads):
            record: dict[str, Any] = {"Id": sf_id("00Q", index + 1)}
            _put(record, field_of["email"], lead.get("email"))
            _put(record, field_of["first_name"], lead["first_name"])
            _put(record, field_of["last_name"], lead["last_name"])
            _put(record, field_of["job_title"], lead.get("title"))
            self._declared(record, lead, field_of, value_of, bool_text=False)
            if lead["source"] in ("referral", "webinar") and self.rng.random() < 0.2:
                record[field_of["source"]] = aliases[0] if lead["source"] == "referral" else aliases[-1]
            org: Org | None = lead.get("org")
            if org is not None:
                record[field_of["company_name"]] = org.crm_name
                record[field_of["company_domain"]] = f"https://www.{org.domain}"
                record[field_of["state"]] = org.state
                record[field_of["country"]] = "United States"
                record["City"] = org.city
                if org.npi and org.in_crm_npi:
                    record[field_of["npi"]] = org.npi
                if org.ehr:
                    record[field_of["ehr_vendor"]] = org.ehr
                if org.industry:
                    record[field_of["industry"]] = org.industry[1]
                for name, value in org.size_fields().items():
                    record[field_of[name]] = value
                if self.rng.random() < 0.3:
                    record[field_of["org_type"]] = value_of["org_type"][ORG_TYPE[org.segment]]
            else:
                record[field_of["company_name"]] = "Individual"
            for name, (at, count) in lead["events"].items():
                event = mapping.events.get(name)
                if event:
                    record[event.field] = at
                    if event.count_field:
                        record[event.count_field] = float(count)
            record["Status"] = "Open - Not Contacted"
            record["CreatedDate"] = lead["created"]
            record["SystemModstamp"] = lead["modified"]
            self._salesforce_history(record, lead, native)
            rows.append(record)
            if self.rng.random() < 0.05:
                tasks.append({"Id": sf_id("00T", len(tasks) + 1), "WhoId": record["Id"], "Subject": "Follow up",
                              "Status": self.rng.choice(["Not Started", "Completed"]), "Priority": "Normal",
                              "ActivityDate": _date(lead["modified"] + 3 * DAY_MS), "CreatedDate": lead["modified"],
                              "SystemModstamp": lead["modified"]})
        for offset, task in enumerate(native.pop("Task")):
            task["Id"] = sf_id("00T", len(tasks) + 1 + offset)
            tasks.append(task)
        campaigns = [{"Id": sf_id("701", i + 1), "Name": name, "Type": kind, "Status": "Completed", "IsActive": True,
                      "StartDate": _date(self.anchor - 200 * DAY_MS)} for i, (_, name, kind) in enumerate(CAMPAIGNS)]
        return {"Lead": rows, "Task": tasks, "Campaign": campaigns, **native}

    def _salesforce_history(self, record: dict[str, Any], lead: dict[str, Any],
                            native: dict[str, list[dict[str, Any]]]) -> None:
        """The lead's completed call Tasks, held meeting Events, campaign memberships, conversion and
        opportunity; its Status and LastActivityDate follow them."""
        history, lead_id = lead["history"], record["Id"]
        dates = []
        for at in history["calls"]:
            native["Task"].append({"WhoId": lead_id, "Subject": "Call", "TaskSubtype": "Call", "Type": "Call",
                                   "Status": "Completed", "Priority": "Normal", "ActivityDate": _date(at),
                                   "CompletedDateTime": at, "CreatedDate": at, "SystemModstamp": at})
            dates.append(at)
        for start, outcome in history["meetings"]:
            if outcome != "COMPLETED":
                continue
            native["Event"].append({"Id": sf_id("00U", len(native["Event"]) + 1), "WhoId": lead_id,
                                    "Subject": "Intro meeting", "StartDateTime": start, "EndDateTime": start + 1_800_000,
                                    "ActivityDateTime": start, "DurationInMinutes": 30, "CreatedDate": start,
                                    "SystemModstamp": start})
            dates.append(start)
        keys = [key for key, _, _ in CAMPAIGNS]
        for key, at, responded in history["campaigns"]:
            member: dict[str, Any] = {"Id": sf_id("00v", len(native["CampaignMember"]) + 1),
                                      "CampaignId": sf_id("701", keys.index(key) + 1), "LeadId": lead_id,
                                      "Status": "Attended" if responded else "Sent", "HasResponded": responded,
                                      "CreatedDate": lead["created"], "SystemModstamp": at}
            if responded:
                member["FirstRespondedDate"] = _date(at)
            native["CampaignMember"].append(member)
        if dates:
            record["LastActivityDate"] = _date(max(dates))
            record["Status"] = "Working - Contacted"
        deal = history["deal"]
        if deal:
            opportunity_id = sf_id("006", len(native["Opportunity"]) + 1)
            stage = {"won": "Closed Won", "lost": "Closed Lost"}.get(deal["stage"], "Proposal/Price Quote")
            native["Opportunity"].append({
                "Id": opportunity_id, "Name": record.get("Company") or "Opportunity", "StageName": stage,
                "IsClosed": deal["stage"] != "open", "IsWon": deal["stage"] == "won", "Amount": deal["amount"],
                "CloseDate": _date(deal["close"]), "LeadSource": record.get("LeadSource"),
                "CreatedDate": deal["opened"], "SystemModstamp": min(deal["close"], self.anchor)})
            record.update(IsConverted=True, ConvertedDate=_date(deal["opened"]), ConvertedOpportunityId=opportunity_id,
                          Status="Closed - Converted")
        elif _lead_status(lead, history) == "UNQUALIFIED":
            record["Status"] = "Closed - Not Converted"


def _hubspot_call(number: int, contact_id: str, at: int, status: str) -> dict[str, Any]:
    return {"id": str(60_000_000_001 + number), "contacts": [contact_id],
            "properties": {"hs_timestamp": at, "hs_call_status": status, "hs_call_direction": "OUTBOUND",
                           "hs_call_title": "Discovery call", "hs_createdate": at, "hs_lastmodifieddate": at}}


def _lead_status(lead: dict[str, Any], history: dict[str, Any]) -> str:
    """HubSpot's hs_lead_status for a seeded history."""
    if history["deal"]:
        return "OPEN_DEAL" if history["deal"]["stage"] == "open" else "CONNECTED"
    if any(outcome == "COMPLETED" for _, outcome in history["meetings"]):
        return "CONNECTED"
    if lead["segment"] == "noise":
        return "UNQUALIFIED"
    if history["calls"] or history.get("missed_calls"):
        return "ATTEMPTED_TO_CONTACT"
    return "NEW"


NOT_DECLARED = frozenset({"lead_kind", "source", "manual_stage", "stage", "org_type", "care_setting"})


def declared_inputs(*mappings: CrmMapping) -> list[tuple[str, list[str]]]:
    """The declared enumerated inputs every mapping reads from the lead (budget, timeline, security
    review, BAA, ...), with their canonical values: read from the mappings, so new ones are seeded too."""
    first, *others = mappings
    out = []
    for name, item in first.fields.items():
        if name in NOT_DECLARED or item.object != "lead" or item.direction != "read" or not item.values:
            continue
        if all(name in other.fields and other.fields[name].direction == "read" for other in others):
            out.append((name, list(item.values)))
    return out


def _put(out: dict[str, Any], name: str, value: Any) -> None:
    if value is not None and value != "":
        out[name] = value


def _date(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


def generate(n: int, seed: int = 0, anchor_ms: int | None = None) -> SeedData:
    """N leads per CRM, their organizations and NPPES records; deterministic for (n, seed, anchor)."""
    return Generator(n, seed, anchor_ms).generate()


def from_json(raw: dict[str, Any]) -> SeedData:
    return SeedData(raw.get("hubspot") or {}, raw.get("salesforce") or {}, raw.get("nppes") or [])


# ---- loading into a sandbox ---------------------------------------------------------------------


def customer_owned(item: Any) -> bool:
    """A property the customer keeps (leadflow reads it, or fills it only when blank), as opposed to
    leadflow's own outputs (``leadflow_*``), which ``leadflow crm setup`` creates."""
    return item.direction == "read" or (item.policy == "if_blank" and not item.field.startswith("leadflow_"))


def input_properties(mapping: CrmMapping) -> dict[str, list[dict[str, Any]]]:
    """HubSpot custom property definitions for the properties the customer keeps
    (``customer_owned``) and the event fields; leadflow's outputs are left for ``leadflow crm setup``."""
    groups = {"lead": ("contacts", "contactinformation"), "company": ("companies", "companyinformation")}
    out: dict[str, list[dict[str, Any]]] = {"contacts": [], "companies": []}
    for name, item in mapping.fields.items():
        if not customer_owned(item):
            continue
        obj, group = groups[item.object]
        out[obj].append(_hubspot_property(item.field, item.type, item.values, group))
    for event in mapping.events.values():
        out["contacts"].append(_hubspot_property(event.field, "datetime", None, "contactinformation"))
        if event.count_field:
            out["contacts"].append(_hubspot_property(event.count_field, "number", None, "contactinformation"))
    return out


def _hubspot_property(name: str, kind: str, values: dict[str, str] | None, group: str) -> dict[str, Any]:
    label = name.replace("_", " ").capitalize()
    if kind == "enumeration":
        options = [(value, value.replace("_", " ").title()) for value in (values or {}).values()]
        return _prop(name, label, "enumeration", "select", group, options, hubspot_defined=False)
    if kind == "bool":
        return _prop(name, label, "bool", "booleancheckbox", group, [("true", "Yes"), ("false", "No")],
                     hubspot_defined=False)
    if kind == "number":
        return _prop(name, label, "number", "number", group, hubspot_defined=False)
    if kind in ("datetime", "date"):
        return _prop(name, label, kind, "date", group, hubspot_defined=False)
    return _prop(name, label, "string", "textarea" if kind == "text" else "text", group, hubspot_defined=False)


def load(sandbox: Any, data: SeedData) -> None:
    """Load raw records into ``sandbox`` (a ``sandbox.app.Sandbox``), replacing nothing already there."""
    portal: HubSpotPortal = sandbox.hubspot
    for obj, props in input_properties(load_mapping("hubspot")).items():
        for prop in props:
            portal.properties[obj].setdefault(prop["name"], prop)
    _load_hubspot(portal, data.hubspot)
    _load_salesforce(sandbox.salesforce, data.salesforce)
    sandbox.set_nppes_records(list(sandbox.nppes_records) + list(data.nppes))


def _load_hubspot(portal: HubSpotPortal, raw: dict[str, list[dict[str, Any]]]) -> None:
    now = now_ms()
    for obj in ("companies", "contacts", "tasks", "calls", "meetings", "deals"):
        rows = []
        datetime_props = {name for name, prop in portal.properties[obj].items() if prop["type"] in ("datetime", "date")}
        for item in raw.get(obj) or []:
            record_id = str(item["id"])
            props = dict(item.get("properties") or {})
            modified = _pop_time(props, ("lastmodifieddate", "hs_lastmodifieddate"), now)
            created = _pop_time(props, ("createdate", "hs_createdate"), modified)
            props.pop("hs_object_id", None)
            record = {}
            for name, value in props.items():
                if value is None or value == "":
                    continue
                if name in datetime_props and type(value) is not int:
                    value = parse_datetime_ms(str(value))
                elif type(value) is not int:
                    value = value if isinstance(value, str) else ("true" if value is True else "false"
                                                                  if value is False else str(value))
                record[name] = value
            rows.append((record_id, record, created, modified))
        portal.tables[obj].bulk_load(rows)
        portal.reserve_ids_after(obj)
    for item in raw.get("contacts") or []:
        for position, company_id in enumerate(item.get("companies") or []):
            portal.associate("contacts", str(item["id"]), "companies", str(company_id),
                             1 if position == 0 else 279)
    for item in raw.get("tasks") or []:
        for contact_id in item.get("contacts") or []:
            portal.associate("tasks", str(item["id"]), "contacts", str(contact_id), 204)
    for obj, type_id in (("calls", 194), ("meetings", 200), ("deals", 3)):
        for item in raw.get(obj) or []:
            for contact_id in item.get("contacts") or []:
                portal.associate(obj, str(item["id"]), "contacts", str(contact_id), type_id)


def _pop_time(props: dict[str, Any], names: Iterable[str], default: int) -> int:
    found = default
    for name in names:
        value = props.pop(name, None)
        if value is not None:
            found = value if type(value) is int else (parse_datetime_ms(str(value)) or default)
    return found


def _load_salesforce(org: SalesforceOrg, raw: dict[str, list[dict[str, Any]]]) -> None:
    now = now_ms()
    for obj in ("Opportunity", "Campaign", "Lead", "Task", "Event", "CampaignMember"):
        schema = org.schema[obj]
        rows = []
        for item in raw.get(obj) or []:
            record = dict(item)
            record.pop("attributes", None)
            record_id = str(record.pop("Id", None) or org.next_id(obj))
            modified = _pop_time(record, ("SystemModstamp", "LastModifiedDate"), now)
            created = _pop_time(record, ("CreatedDate",), modified)
            stored = {}
            for name, value in record.items():
                spec = schema.get(name)
                if spec is None:
                    raise ValueError(f"seed: Salesforce {obj} {record_id}: unknown field {name!r}")
                if value is None or value == "":
                    continue
                if spec.type == "datetime" and type(value) is not int:
                    value = parse_datetime_ms(str(value))
                elif spec.type == "double" and not isinstance(value, float):
                    value = float(value)
                stored[name] = value
            if obj == "Task" and stored.get("Status") == "Completed":
                stored["IsClosed"] = True
            rows.append((record_id, stored, created, modified))
        org.tables[obj].bulk_load(rows)
        org.reserve_ids_after_load(obj)
