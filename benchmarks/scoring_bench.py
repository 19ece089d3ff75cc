"""Benchmark qualify_batch: ``.venv/bin/python benchmarks/scoring_bench.py [--leads N] [--runs R] [--frozen-heap]``.

Generates N varied canonical leads (deterministic: seeded), runs ``qualify_batch`` R times and
prints leads per wall second and per CPU second (one core) as the medians of the runs;
``--frozen-heap`` scores inside ``leadflow.runtime.frozen_heap``, as a pipeline run does.
``scoring_rate`` is the same measurement for ``leadflow bench`` (``scoring_leads_per_s``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from leadflow.canonical import Lead  # noqa: E402
from scoring import load_model, qualify_batch  # noqa: E402

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
ORG_TYPES = ["health_system", "hospital", "physician_practice", "clinic", "payer", "pharma", "digital_health", "other", None]
TITLES = [
    "Chief Operating Officer", "Clinic Operations Manager", "Practice Manager", "Medical Director",
    "VP Revenue Cycle", "Compliance Officer", "Procurement Specialist", "Registered Nurse", "Student",
    "Director of Informatics", "CFO", "Account Executive", None, "Practice Administrator", "VP Operations",
    "Director of Nursing", "Revenue Cycle Director", "Privacy Officer", "Physician",
]
SPECIALTIES = ["Family Medicine", "Orthopedic Surgery", "Cardiology", "Dentist", "Veterinary", "General Acute Care Hospital",
               "Internal Medicine", "Pediatrics", "Behavioral Health", "Dermatology", "Multi-Specialty", None, None]
PAINS = [
    "Scheduling no-shows and staff burnout", "Care coordination after discharge", "Claims denials",
    "We need dashboards", "just browsing", None,
]
EVENTS = ["demo_request", "pricing_page_view", "solution_page_view", "content_download", "webinar_attended",
          "site_return_visit", "email_click", "implementation_page_view", "form_fill", "call_completed"]
SOURCES = ["web_form", "demo_request", "phone", "paid_search", "referral", "list_import", "organic", "webinar"]


def make_lead(rng: random.Random, index: int) -> Lead:
    if rng.random() < 0.1:
        return Lead.model_validate(_patient(rng, index))
    events = [
        {"type": rng.choice(EVENTS), "at": NOW - timedelta(days=rng.uniform(0, 120))}
        for _ in range(rng.randint(0, 8))
    ]
    org = rng.randint(0, index // 3 + 1)
    return Lead.model_validate({
        "crm": "hubspot",
        "crm_id": str(index),
        "job_title": rng.choice(TITLES),
        "email": f"p{index}@org{org}.org",
        "company_domain": f"org{org}.org",
        "org_type": rng.choice(ORG_TYPES),
        "specialty": rng.choice(SPECIALTIES),
        "care_setting": rng.choice(["inpatient", "ambulatory", "virtual", None]),
        "provider_count": rng.choice([None, 2, 12, 80, 400]),
        "bed_count": rng.choice([None, 20, 200]),
        "location_count": rng.choice([None, 1, 3, 9]),
        "state": rng.choice(["MA", "CA", "TX", None]),
        "country": rng.choice(["US", "US", "United States", "USA", "Canada", None, None]),
        "ehr_vendor": rng.choice(["Epic", "athenahealth", "Custom", None]),
        "source": rng.choice(SOURCES),
        "pain_point": rng.choice(PAINS),
        "budget_status": rng.choice(["approved", "planned", "unknown", "none", "grant"]),
        "timeline": rng.choice(["now", "quarter", "half_year", "year", "later", "unknown"]),
        "security_review": rng.choice(["ready", "unknown", "in_progress"]),
        "discovery": {"need_confirmed": rng.random() < 0.2, "timeline_confirmed": rng.random() < 0.2,
                      "authority_confirmed": rng.random() < 0.2, "budget_path_known": rng.random() < 0.2},
        "events": events,
        "sales_accepted": rng.random() < 0.1,
        "manual_stage": "sql" if rng.random() < 0.03 else None,
        "stage": rng.choice([None, "inquiry", "mql", "sql", "nurture"]),
    })


def _patient(rng: random.Random, index: int) -> dict:
    return {
        "crm": "salesforce",
        "crm_id": str(index),
        "lead_kind": "patient",
        "source": rng.choice(SOURCES),
        "patient": {
            "service_requested": rng.choice(["annual physical", "knee surgery", "skin rash check", None]),
            "payer": rng.choice(["Aetna", "Unknown Plan", None]),
            "zip": rng.choice(["02139", "94110", None]),
            "scheduling_ready": rng.choice([True, False, None]),
        },
        "events": [{"type": "form_fill", "at": NOW - timedelta(days=rng.uniform(0, 30))}],
    }


def scoring_rate(leads: int = 50_000, runs: int = 3, frozen: bool = False, seed: int = 6) -> dict:
    """``qualify_batch`` over ``leads`` generated leads, ``runs`` times: the medians of leads per
    wall second and per CPU second of this (single-threaded) process, and the stage counts.

    ``frozen``: inside ``leadflow.runtime.frozen_heap``, as a pipeline run scores; by default the
    garbage collector runs as the process left it (the conservative figure)."""
    from contextlib import nullcontext

    from leadflow.runtime import frozen_heap

    rng = random.Random(seed)
    batch = [make_lead(rng, i) for i in range(leads)]
    model = load_model()
    rates, cpu_rates = [], []
    results: list = []
    with frozen_heap() if frozen else nullcontext():
        for _ in range(runs):
            del results  # free the previous run's results outside the timed section
            start, cpu_start = time.perf_counter(), time.process_time()
            results = qualify_batch(batch, NOW, model)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            rates.append(len(results) / wall)
            cpu_rates.append(len(results) / cpu)
    stages: dict[str, int] = {}
    for result in results:
        stages[result.stage.value] = stages.get(result.stage.value, 0) + 1
    return {"leads": leads, "runs": runs, "frozen_heap": frozen, "stages": dict(sorted(stages.items())),
            "wall_leads_per_s": round(statistics.median(rates)), "cpu_leads_per_s": round(statistics.median(cpu_rates)),
            "cpu_leads_per_s_all": [round(r) for r in cpu_rates]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--frozen-heap", action="store_true", help="score inside leadflow.runtime.frozen_heap")
    args = parser.parse_args()
    rate = scoring_rate(args.leads, args.runs, args.frozen_heap)
    print(f"leads: {args.leads}  runs: {args.runs}  frozen heap: {args.frozen_heap}  stages: {rate['stages']}")
    print(f"median: {rate['wall_leads_per_s']:,} leads/s wall clock")
    print(f"median: {rate['cpu_leads_per_s']:,} leads/s of CPU time on one core (process time) "
          f"(all: {rate['cpu_leads_per_s_all']})")


if __name__ == "__main__":
    main()
