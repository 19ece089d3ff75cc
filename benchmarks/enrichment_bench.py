"""Enrichment benchmark: 10,000 leads from 2,000 organizations against an NPPES stand-in over HTTP.

The stand-in (``sandbox.nppes.NppesRegistry`` in a small Starlette app under uvicorn on loopback,
in a child process by default, in a background thread with ``--server thread``, or the full
sandbox with ``--server sandbox``) holds the 2,000 organizations plus 8,000 distractors (the same
names registered in other states) and counts the requests it serves. The leads (several per organization, names spelled differently, shuffled,
some carrying the NPI) go through ``build_waterfall`` in pages like a flow would. The first run
must make no more requests than the organizations need (one each); a rerun must make none.

    .venv/bin/python benchmarks/enrichment_bench.py [--orgs 2000] [--leads 10000] [--page 500]
        [--server process|thread|sandbox] [--concurrency 8] [--database-url postgresql+psycopg://...]

Exits non-zero when the first run makes more requests than organizations, the rerun makes any,
or a lead is left unenriched.

``--seeded N [--seed S]`` measures match quality instead: the sandbox seed's organizations
(``sandbox.seed``, N leads' worth, names as reps type them: abbreviations, St/Saint, dropped
apostrophes, "The", ", Inc.", parentheticals, the city appended, "<legal> dba <name>"), one lead
per organization with the CRM's company name, city, state (and NPI where the CRM holds it), against
the seed's NPPES records in the stand-in. It prints found / wrong / missed against the seed's truth
(the organization's own NPI; absent organizations must stay unmatched), hospital kinds found, and
requests per organization. Exits non-zero on any wrong match.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import Engine, create_engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectors.enrichment.waterfall import build_waterfall  # noqa: E402
from state import schema as store  # noqa: E402
from leadflow.canonical import Lead  # noqa: E402
from sandbox.nppes import NppesRegistry  # noqa: E402

TEMPLATE = ROOT / "tests" / "fixtures" / "nppes" / "npi2_number_lookup_v2024_multi_specialty_dba.json"
STATES = ["GA", "PA", "MI", "TX", "CA", "NY", "OH", "FL", "IL", "WA"]
PLACES = ["Riverside", "Lakeview", "Northside", "Summit", "Cedar", "Harbor", "Maple", "Granite", "Willow", "Prairie",
          "Highland", "Bayview", "Oakwood", "Pinecrest", "Sunrise", "Meadow", "Canyon", "Liberty", "Heritage", "Valley"]
SPECIALTIES = [("Cardiology", "207RC0000X"), ("Orthopedics", "207X00000X"), ("Pediatrics", "208000000X"),
               ("Dermatology", "207N00000X"), ("Oncology", "207RX0202X"), ("Womens Health", "207V00000X"),
               ("Family Medicine", "207Q00000X"), ("Urgent Care", "261QU0200X"), ("Home Health", "251E00000X"),
               ("Imaging", "261QR0200X")]
KINDS = ["Associates", "Group", "Partners", "Center", "Clinic", "Physicians", "Specialists", "Care", "Health", "Institute"]
SPELLINGS = ["{name}", "{name}, LLC", "{upper}", "{lower} pc", "The {name} Inc."]


@dataclass
class Org:
    npi: str
    name: str
    state: str


def organizations(count: int) -> list[Org]:
    rng = random.Random(5)
    names = [f"{p} {s} {k}" for p in PLACES for s, _ in SPECIALTIES for k in KINDS]
    rng.shuffle(names)
    if count > len(names):
        raise SystemExit(f"at most {len(names)} organizations")
    return [Org(str(1_100_000_000 + i), names[i], STATES[i % len(STATES)]) for i in range(count)]


def record(org: Org, template: dict[str, Any], taxonomy_code: str) -> dict[str, Any]:
    raw = copy.deepcopy(template)
    raw["number"] = org.npi
    raw["basic"]["organization_name"] = f"{org.name.upper()}, PC"
    raw["other_names"] = []
    for address in raw["addresses"]:
        address["state"] = org.state
    raw["taxonomies"] = [{**raw["taxonomies"][0], "code": taxonomy_code}]
    return raw


def registry_records(orgs: list[Org], distractors: int) -> list[dict[str, Any]]:
    rng = random.Random(6)
    template = json.loads(TEMPLATE.read_text())["results"][0]
    codes = dict(SPECIALTIES)
    records = [record(org, template, codes[_specialty(org.name)]) for org in orgs]
    for i in range(distractors):  # same names elsewhere: the state filter has to hold
        org = orgs[i % len(orgs)]
        other_state = STATES[(STATES.index(org.state) + 1 + i // len(orgs)) % len(STATES)]
        records.append(record(Org(str(1_500_000_000 + i), org.name, other_state), template, "207Q00000X"))
    rng.shuffle(records)
    return records


def _specialty(name: str) -> str:
    return next(s for s, _ in SPECIALTIES if f" {s} " in f" {name} ")


def leads_for(orgs: list[Org], count: int) -> list[Lead]:
    rng = random.Random(7)
    leads = []
    with_npi = {org.npi for org in orgs[: len(orgs) // 5]}
    for i in range(count):
        org = orgs[i % len(orgs)]
        spelling = SPELLINGS[(i // len(orgs)) % len(SPELLINGS)]
        name = spelling.format(name=org.name, upper=org.name.upper(), lower=org.name.lower())
        npi = org.npi if org.npi in with_npi else None
        leads.append(Lead(crm="hubspot", crm_id=str(i), email=f"lead{i}@example.org", company_name=name, state=org.state, npi=npi))
    rng.shuffle(leads)
    return leads


def stand_in_app(registry: NppesRegistry, served: list[int]) -> Starlette:
    """GET /api/ answers like the registry; GET /_served tells how many /api/ requests it served."""

    async def api(request: Request) -> JSONResponse:
        served[0] += 1
        return JSONResponse(registry.search(dict(request.query_params)))

    async def count(request: Request) -> JSONResponse:
        return JSONResponse({"served": served[0]})

    return Starlette(routes=[Route("/api/", api), Route("/_served", count)])


class ThreadStandIn:
    """The stand-in under uvicorn in a background thread of this process."""

    def __init__(self, registry: NppesRegistry) -> None:
        self.served = [0]
        config = uvicorn.Config(stand_in_app(registry, self.served), host="127.0.0.1", port=0, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def requests(self) -> int:
        return self.served[0]

    def __enter__(self) -> ThreadStandIn:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/api/"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


class ProcessStandIn:
    """The stand-in under uvicorn in a child process (this script with --serve), on its own CPU."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/"
        command = [sys.executable, __file__, "--serve", str(self.port), "--orgs", str(args.orgs),
                   "--distractors", str(args.distractors)]
        self.process = subprocess.Popen(command)

    def requests(self) -> int:
        return httpx.get(self.url.replace("/api/", "/_served")).json()["served"]

    def __enter__(self) -> ProcessStandIn:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.requests()
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.process.kill()
        raise RuntimeError("the NPPES stand-in did not start within 60 s")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class SandboxStandIn:
    """The full sandbox (``leadflow sandbox serve`` in a child process) seeded with these records;
    requests are counted by its own stats endpoint."""

    def __init__(self, records: list[dict[str, Any]], folder: str) -> None:
        self.seed = Path(folder) / "nppes_seed.json"
        self.seed.write_text(json.dumps({"nppes": records}))

    def requests(self) -> int:
        return sum(self.handle.stats()["endpoints"].get("nppes.search", {}).values())

    def __enter__(self) -> SandboxStandIn:
        from sandbox import start_sandbox_process

        self._running = start_sandbox_process(seed=str(self.seed))
        self.handle = self._running.__enter__()
        self.url = self.handle.nppes_url
        return self

    def __exit__(self, *exc: object) -> None:
        self._running.__exit__(None, None, None)


def _stand_in(args: argparse.Namespace, registry: NppesRegistry, folder: str) -> ProcessStandIn | ThreadStandIn | SandboxStandIn:
    if args.server == "sandbox":
        return SandboxStandIn(registry.records, folder)
    return ProcessStandIn(args) if args.server == "process" else ThreadStandIn(registry)


@contextlib.contextmanager
def state_store(url: str) -> Iterator[Engine]:
    """An engine on ``url``; on PostgreSQL in a throwaway schema, so runs start cold and leave nothing."""
    if not url.startswith("postgresql"):
        engine = store.make_engine(url)
        yield engine
        engine.dispose()
        return
    schema = f"lf_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'create schema "{schema}"'))
    separator = "&" if "?" in url else "?"
    engine = store.make_engine(f"{url}{separator}options=-csearch_path%3D{schema}")
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'drop schema "{schema}" cascade'))
        admin.dispose()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(port: int, args: argparse.Namespace) -> int:
    registry = NppesRegistry(registry_records(organizations(args.orgs), args.distractors))
    uvicorn.run(stand_in_app(registry, [0]), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    return 0


def enrich_all(url: str, engine, leads: list[Lead], page: int, now: datetime, concurrency: int | None = None) -> tuple[dict[str, Any], float, int]:
    waterfall = build_waterfall(engine=engine, nppes_url=url)
    if concurrency:
        for provider in waterfall.providers:
            if provider.name == "nppes":
                provider.concurrency = concurrency
    started, cpu_started = time.perf_counter(), time.process_time()
    enriched = 0
    for start in range(0, len(leads), page):
        outcomes = waterfall.enrich_batch(leads[start : start + page], now)
        enriched += sum(1 for o in outcomes if "org_type" in o.provenance)
    stats = {**waterfall.stats(), "client_cpu_seconds": time.process_time() - cpu_started}
    return stats, time.perf_counter() - started, enriched


def seeded_leads(n: int, seed: int) -> tuple[list[Any], list[Lead], dict[str, set[str]], NppesRegistry]:
    """(organizations, one lead per organization of a kind the registry lists, lead id -> the NPIs
    that are this organization, registry). An organization is its own NPI, plus any other record
    registered under the same name (legal or DBA) practising in its city: the seed draws some
    names twice, and a lead cannot tell those apart either."""
    from connectors.enrichment.nppes import normalize_name, parse_record
    from sandbox.seed import Generator

    generator = Generator(n, seed)
    data = generator.generate()
    orgs = [org for segment in ("health_system", "hospital", "physician_practice", "clinic", "post_acute")
            for org in generator.orgs.get(segment, [])]
    by_name: dict[tuple[str, str, str], set[str]] = {}
    for raw in data.nppes:
        record = parse_record(raw)
        for registered in (record.name, *record.other_names):
            for address in record.locations:
                by_name.setdefault((normalize_name(registered), address.city, address.state), set()).add(record.npi)
    leads, truth = [], {}
    for org in orgs:
        lead_id = str(org.key)
        leads.append(Lead(crm="hubspot", crm_id=lead_id, company_name=org.crm_name, city=org.city, state=org.state,
                          npi=org.npi if org.npi and org.in_crm_npi else None))
        same = by_name.get((normalize_name(org.name), org.city.upper(), org.state), set())
        truth[lead_id] = ({org.npi} if org.npi else set()) | same
    return orgs, leads, truth, NppesRegistry(data.nppes)


def seeded(args: argparse.Namespace) -> int:
    orgs, leads, truth, registry = seeded_leads(args.seeded, args.seed)
    with (tempfile.TemporaryDirectory() as tmp, ThreadStandIn(registry) as stand_in,
          state_store(f"sqlite:///{Path(tmp) / 'bench.db'}") as engine):
        waterfall = build_waterfall(engine=engine, nppes_url=stand_in.url)
        started = time.perf_counter()
        outcomes = waterfall.enrich_batch(leads, datetime.now(timezone.utc))
        seconds = time.perf_counter() - started
        served = stand_in.requests()
    kind_of = {str(org.key): org.hospital_kind for org in orgs}
    own_npi = {str(org.key): org.npi for org in orgs}
    counts = dict.fromkeys(("found", "wrong", "missed", "ambiguous", "absent_unmatched", "kind_right", "kind_total"), 0)
    misses = []
    for lead, outcome in zip(leads, outcomes):
        expected, got = truth[lead.crm_id], outcome.lead.npi
        if not expected:
            counts["wrong" if got else "absent_unmatched"] += 1
        elif got in expected:
            counts["found"] += 1
            if kind_of[lead.crm_id] and got == own_npi[lead.crm_id]:  # (a same-named other one has its own kind)
                counts["kind_total"] += 1
                counts["kind_right"] += outcome.lead.org_kind == kind_of[lead.crm_id]
        elif got is None:
            counts["ambiguous" if len(expected) > 1 else "missed"] += 1
            if len(expected) == 1:
                misses.append(f"{lead.company_name!r} in {lead.city}, {lead.state}: {'; '.join(outcome.notes)[:160]}")
        else:
            counts["wrong"] += 1
    listed = sum(1 for v in truth.values() if v)
    typed = sum(1 for org in orgs if org.crm_name != org.name)
    print(f"seeded sandbox (seed {args.seed}): {len(orgs)} organizations ({listed} in NPPES, {typed} names typed "
          f"differently), registry {len(registry.records)} records; wall {seconds:.2f} s")
    print(f"found {counts['found']}/{listed}  wrong {counts['wrong']}  missed {counts['missed']}  "
          f"ambiguous (two same-named organizations there) {counts['ambiguous']}  "
          f"absent left unmatched {counts['absent_unmatched']}/{len(orgs) - listed}  "
          f"hospital kind right {counts['kind_right']}/{counts['kind_total']}  "
          f"requests {served} = {served / len(orgs):.2f} per organization")
    for line in misses[: args.show_misses]:
        print("  missed:", line)
    return 1 if counts["wrong"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=2_000)
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--distractors", type=int, default=8_000)
    parser.add_argument("--page", type=int, default=500, help="leads per enrich_batch call")
    parser.add_argument("--concurrency", type=int, default=None, help="NPPES requests in flight (default: the config's)")
    parser.add_argument("--server", choices=["process", "thread", "sandbox"], default="process",
                        help="the stand-in alone in a child process or a thread, or the full sandbox")
    parser.add_argument("--database-url", default=None, help="state store (default: a temporary SQLite file)")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--seeded", type=int, metavar="N", help="match quality on the sandbox seed of N leads")
    parser.add_argument("--seed", type=int, default=0, help="the sandbox seed number (with --seeded)")
    parser.add_argument("--show-misses", type=int, default=0, help="list this many missed organizations (with --seeded)")
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args)
    if args.seeded:
        return seeded(args)

    orgs = organizations(args.orgs)
    registry = NppesRegistry(registry_records(orgs, args.distractors))
    leads = leads_for(orgs, args.leads)
    with (tempfile.TemporaryDirectory() as tmp, _stand_in(args, registry, tmp) as stand_in,
          state_store(args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}") as engine):
        now = datetime.now(timezone.utc)
        results = []
        for label, when in (("first run", now), ("rerun", now + timedelta(hours=1))):
            before = stand_in.requests()
            stats, seconds, enriched = enrich_all(stand_in.url, engine, leads, args.page, when, args.concurrency)
            results.append((label, stand_in.requests() - before, stats, seconds, enriched))

    print(f"registry: {len(registry.records):,} records ({args.server}); leads: {len(leads):,} from {len(orgs):,} organizations; page {args.page}")
    for label, served, stats, seconds, enriched in results:
        print(f"{label:9}: requests served {served:,}  lookups {stats['lookups']:,}  cache hits {stats['cache_hits']:,}  "
              f"no match {stats['no_match']:,}  errors {stats['errors']:,}  enriched {enriched:,}  "
              f"wall {seconds:.2f} s ({stats['client_cpu_seconds']:.2f} s client CPU)  {len(leads) / seconds:,.0f} leads/s")
    first, rerun = results[0][1], results[1][1]
    ok = first <= len(orgs) and rerun == 0 and results[0][4] == len(leads)
    print("OK" if ok else f"FAILED: first run {first} requests (allowed {len(orgs)}), rerun {rerun} (allowed 0)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
