"""From an NPPES primary taxonomy to leadflow's org_type, org_kind, care_setting and a finer category.

The table below is leadflow's own grouping, keyed by NUCC code prefixes (longest prefix wins);
codes are facts, the grouping is ours. Hospital kinds by code (NUCC Health Care Provider
Taxonomy, Hospitals grouping): 282N00000X general acute, 282NC0060X critical access,
282NC2000X children's, 282NR1301X rural acute, 282NW0100X women's (general acute), 282E00000X
long-term care, 281P00000X chronic disease (long-term care), 283Q00000X psychiatric, 283X00000X
rehabilitation, 2865* military (federal DoD). The code set has no Rural Emergency Hospital and no
VA hospital code: a rural emergency hospital is known from the CMS Provider of Services subtype
(connectors/enrichment/reference.py), a VA hospital from its VA clinic code 261QV0200X or its registered
legal name (``federal_kind_of_name``).

The NUCC code set itself (© AMA on behalf of NUCC) is optional and never shipped: when a path
to its CSV is configured, it only supplies "Classification, Specialization" descriptions for
``specialty``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from leadflow.canonical import CareSetting, OrgKind, OrgType

MULTI_SPECIALTY_GROUP = "193200000X"
SINGLE_SPECIALTY_GROUP = "193400000X"


@dataclass(frozen=True)
class Category:
    name: str
    org_type: OrgType
    care_setting: CareSetting
    kind: OrgKind | None = None


def _hospital(name: str, kind: OrgKind | None, setting: CareSetting = CareSetting.inpatient) -> Category:
    return Category(name, OrgType.hospital, setting, kind)


_HOSPITAL = _hospital("hospital", None)
_PRACTICE = Category("group_practice", OrgType.physician_practice, CareSetting.ambulatory)

# prefix -> (category, org_type, care_setting); a prefix of 1-10 characters of a NUCC code
CODE_TABLE: dict[str, Category] = {
    "1932": Category("multi_specialty_group", OrgType.physician_practice, CareSetting.ambulatory),
    "1934": Category("single_specialty_group", OrgType.physician_practice, CareSetting.ambulatory),
    "1835": Category("pharmacy", OrgType.other, CareSetting.ambulatory),
    "251B": Category("agency", OrgType.other, CareSetting.other),
    "251C": Category("agency", OrgType.other, CareSetting.other),
    "251E": Category("home_health", OrgType.other, CareSetting.home),
    "251F": Category("home_health", OrgType.other, CareSetting.home),
    "251G": Category("hospice", OrgType.other, CareSetting.home),
    "251J": Category("home_health", OrgType.other, CareSetting.home),
    "253Z": Category("home_health", OrgType.other, CareSetting.home),
    "251K": Category("public_health_agency", OrgType.clinic, CareSetting.ambulatory),
    "251S": Category("behavioral_health_agency", OrgType.clinic, CareSetting.ambulatory),
    "251T": Category("pace_organization", OrgType.other, CareSetting.post_acute),
    "25": Category("agency", OrgType.other, CareSetting.other),
    "261QA1903X": Category("ambulatory_surgery_center", OrgType.clinic, CareSetting.ambulatory),
    "261QM1300X": Category("multi_specialty_clinic", OrgType.clinic, CareSetting.ambulatory),
    "261QU0200X": Category("urgent_care", OrgType.clinic, CareSetting.ambulatory),
    "261QF0400X": Category("community_health_center", OrgType.clinic, CareSetting.ambulatory),
    "261QR1300X": Category("community_health_center", OrgType.clinic, CareSetting.ambulatory),
    "261Q": Category("ambulatory_clinic", OrgType.clinic, CareSetting.ambulatory),
    "27": _hospital("hospital_unit", None),
    "28": _HOSPITAL,
    "282N": _hospital("general_acute_care_hospital", OrgKind.general_acute),
    "282NC0060X": _hospital("critical_access_hospital", OrgKind.critical_access),
    "282NC2000X": _hospital("childrens_hospital", OrgKind.childrens),
    "282NR1301X": _hospital("rural_acute_care_hospital", OrgKind.rural_acute),
    "282E": _hospital("long_term_care_hospital", OrgKind.long_term_care, CareSetting.post_acute),
    "281P": _hospital("chronic_disease_hospital", OrgKind.long_term_care, CareSetting.post_acute),
    "283Q": _hospital("psychiatric_hospital", OrgKind.psychiatric),
    "283X": _hospital("rehabilitation_hospital", OrgKind.rehabilitation, CareSetting.post_acute),
    "2865": _hospital("military_hospital", OrgKind.federal_dod),
    "2843": _hospital("special_hospital", OrgKind.other),
    "282J": Category("religious_nonmedical_institution", OrgType.other, CareSetting.other, OrgKind.other),
    "261QV0200X": Category("va_clinic", OrgType.clinic, CareSetting.ambulatory, OrgKind.federal_va),
    "261QM11": Category("military_clinic", OrgType.clinic, CareSetting.ambulatory, OrgKind.federal_dod),
    "29": Category("laboratory", OrgType.other, CareSetting.other),
    "30": Category("managed_care", OrgType.payer, CareSetting.other),
    "31": Category("nursing_facility", OrgType.other, CareSetting.post_acute),
    "315D": Category("hospice", OrgType.other, CareSetting.post_acute),
    "32": Category("residential_treatment", OrgType.other, CareSetting.inpatient),
    "3336": Category("pharmacy", OrgType.other, CareSetting.ambulatory),
    "3321": Category("pharmacy", OrgType.other, CareSetting.ambulatory),
    "3328": Category("pharmacy", OrgType.other, CareSetting.ambulatory),
    "3320": Category("pharmacy", OrgType.other, CareSetting.ambulatory),
    "33": Category("supplier", OrgType.other, CareSetting.other),
    "34": Category("transportation", OrgType.other, CareSetting.other),
    "385H": Category("respite_care", OrgType.other, CareSetting.post_acute),
    "1742": Category("other_service", OrgType.other, CareSetting.other),
    "177F": Category("other_service", OrgType.other, CareSetting.other),
}

# NUCC codes starting with these digits are individual practitioners' codes: an organization
# whose primary taxonomy is one of them is a group practice.
_INDIVIDUAL_PREFIXES = ("10", "11", "12", "13", "14", "15", "16", "17", "18", "20", "21", "22", "23",
                        "24", "36", "37", "39", "40")


@dataclass(frozen=True)
class Taxonomy:
    code: str
    desc: str
    primary: bool
    group: str  # "" or e.g. "193200000X - Multi-Specialty Group"


@dataclass(frozen=True)
class Classification:
    code: str
    specialty: str
    category: str
    org_type: OrgType
    care_setting: CareSetting
    org_kind: OrgKind | None = None


def category_for(code: str) -> Category | None:
    """The longest CODE_TABLE prefix of ``code``; individual codes map to a group practice."""
    code = code.strip().upper()
    for length in range(len(code), 0, -1):
        category = CODE_TABLE.get(code[:length])
        if category is not None:
            return category
    if code.startswith(_INDIVIDUAL_PREFIXES):
        return _PRACTICE
    return None


def primary_taxonomy(taxonomies: list[Taxonomy]) -> Taxonomy | None:
    """The primary taxonomy wherever it is listed; the first when none is flagged primary."""
    primaries = [t for t in taxonomies if t.primary]
    if primaries:
        return primaries[0]
    return taxonomies[0] if taxonomies else None


def practice_kind(taxonomies: list[Taxonomy]) -> str:
    """single_specialty_group or multi_specialty_group, from taxonomy_group or the codes listed."""
    groups = " ".join(t.group for t in taxonomies).upper()
    if MULTI_SPECIALTY_GROUP in groups:
        return "multi_specialty_group"
    if SINGLE_SPECIALTY_GROUP in groups:
        return "single_specialty_group"
    classifications = {t.code[:4] for t in taxonomies if category_for(t.code) is _PRACTICE}
    return "multi_specialty_group" if len(classifications) > 1 else "single_specialty_group"


def classify(taxonomies: list[Taxonomy], descriptions: dict[str, str] | None = None) -> Classification | None:
    primary = primary_taxonomy(taxonomies)
    if primary is None:
        return None
    category = category_for(primary.code)
    if category is None:
        category = Category("other", OrgType.other, CareSetting.other)
    elif category is _PRACTICE:
        category = Category(practice_kind(taxonomies), category.org_type, category.care_setting)
    specialty = (descriptions or {}).get(primary.code.upper()) or primary.desc.strip()
    return Classification(primary.code.upper(), specialty, category.name, category.org_type, category.care_setting,
                          category.kind)


# The care setting of each kind, for a kind known from elsewhere (the CMS Provider of Services subtype):
# a rural emergency hospital has no inpatient beds (emergency and outpatient care only).
KIND_CARE_SETTING: dict[OrgKind, CareSetting] = {
    OrgKind.general_acute: CareSetting.inpatient, OrgKind.critical_access: CareSetting.inpatient,
    OrgKind.rural_acute: CareSetting.inpatient, OrgKind.rural_emergency: CareSetting.ambulatory,
    OrgKind.psychiatric: CareSetting.inpatient, OrgKind.childrens: CareSetting.inpatient,
    OrgKind.long_term_care: CareSetting.post_acute, OrgKind.rehabilitation: CareSetting.post_acute,
    OrgKind.federal_va: CareSetting.inpatient, OrgKind.federal_dod: CareSetting.inpatient,
    OrgKind.other: CareSetting.other,
}


_VA_NAME = re.compile(r"\b(VETERANS AFFAIRS|VETERANS ADMINISTRATION|VA MEDICAL CENTER|VA HEALTH ?CARE SYSTEM|VAMC)\b")


def federal_kind_of_name(legal_name: str, classification: Classification | None) -> OrgKind | None:
    """federal_va for a hospital whose registered legal name says Veterans Affairs (the NUCC set
    has no VA hospital code; VA hospitals register as general acute care)."""
    if classification is None or classification.org_type is not OrgType.hospital:
        return None
    if _VA_NAME.search(legal_name.upper()):
        return OrgKind.federal_va
    return None


@lru_cache(maxsize=4)
def load_nucc_descriptions(path: str | Path) -> dict[str, str]:
    """code -> "Classification, Specialization" (as current NPPES bodies spell ``desc``)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return {row["Code"].strip().upper(): _nucc_description(row) for row in csv.DictReader(handle)}


def _nucc_description(row: dict[str, str]) -> str:
    classification = (row.get("Classification") or "").strip()
    specialization = (row.get("Specialization") or "").strip()
    return f"{classification}, {specialization}" if specialization else classification
