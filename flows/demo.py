"""``leadflow demo``: the pipeline end to end on the built-in sandbox, through Prefect (no server).

The first run seeds a sandbox portal and org, creates the HubSpot properties leadflow writes, syncs
both CRMs and prints what happened. It runs the shipped mappings with native stages on (copies in
the demo folder), and prints per CRM how the CRM's own stage field (HubSpot lifecycle stage,
Salesforce Lead Status) moved. The sandbox's records and leadflow's state are kept under
``$LEADFLOW_HOME/demo`` (default ``.leadflow/demo``), so a second run starts where the first ended
and shows an incremental run with nothing to do. ``--reset`` starts over.

It ends with the paths of each CRM's qualification report (``report-<crm>/report.html``).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from leadflow import settings
from sandbox.environment import environment, sandbox_environment  # noqa: F401 - the demo's, re-exported

console = Console()
DEMO_LEADS = 400
DEMO_SEED = 7


def demo_dir() -> Path:
    return settings.state_dir() / "demo"


def snapshot(handle: Any) -> dict[str, Any]:
    """The sandbox's records in its seed-file format, so a later run can resume from them."""
    dump = handle.dump_state()
    hubspot = dump["hubspot"]
    contacts = [{"id": row["id"], "properties": row["properties"],
                 "companies": list((row.get("associations") or {}).get("companies", {}))}
                for row in hubspot.get("contacts", [])]
    companies = [{"id": row["id"], "properties": row["properties"]} for row in hubspot.get("companies", [])]
    tasks = [{"id": row["id"], "properties": row["properties"],
              "contacts": list((row.get("associations") or {}).get("contacts", {}))}
             for row in hubspot.get("tasks", [])]
    return {"hubspot": {"contacts": contacts, "companies": companies, "tasks": tasks},
            "salesforce": dump["salesforce"], "nppes": dump["nppes"], "hubspot_schema": portal_schema(handle)}


def portal_schema(handle: Any) -> dict[str, Any]:
    """The HubSpot portal's custom property definitions and groups (what ``crm setup`` created),
    which the seed format does not carry: without them a resumed portal would lack them again."""
    portal = handle._sandbox.hubspot
    return {"properties": {obj: [p for p in props.values() if not p.get("hubspotDefined")]
                           for obj, props in portal.properties.items()},
            "groups": {obj: list(groups.values()) for obj, groups in portal.groups.items()}}


def restore_schema(handle: Any, schema: dict[str, Any]) -> None:
    """Put ``portal_schema``'s definitions back into a resumed portal."""
    portal = handle._sandbox.hubspot
    for obj, props in (schema.get("properties") or {}).items():
        for prop in props:
            portal.properties[obj].setdefault(prop["name"], prop)
    for obj, groups in (schema.get("groups") or {}).items():
        for group in groups:
            portal.groups[obj].setdefault(group["name"], group)


def run_demo(reset: bool = False, leads: int = DEMO_LEADS) -> list[dict[str, Any]]:
    from connectors.crm.factory import connector_from_env
    from connectors.crm.setup import hubspot_setup
    from flows.sync import sync_leads
    from sandbox import start_sandbox

    folder = demo_dir()
    if reset and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    saved = folder / "sandbox.json"
    first_run = not saved.exists()
    seed: Any = str(saved) if not first_run else leads
    console.rule("[bold]leadflow demo")
    console.print(("Seeding the sandbox with %d HubSpot contacts and %d Salesforce leads" % (leads, leads))
                  if first_run else f"Resuming the sandbox saved by the last run ({saved})")
    # the sandbox's API user is leadflow's alone, so its own writes can be left out of window reads
    env = {"LEADFLOW_DATABASE_URL": f"sqlite:///{folder / 'leadflow.db'}", "LEADFLOW_SALESFORCE_SKIP_OWN_WRITES": "1",
           **native_stage_mappings(folder)}
    summaries = []
    with start_sandbox(seed, random_seed=DEMO_SEED, anchor_ms=_anchor_ms(first_run)) as handle:
        env.update(sandbox_environment(handle))
        if not first_run:
            restore_schema(handle, json.loads(saved.read_text()).get("hubspot_schema") or {})
        with environment(env):
            report = hubspot_setup(connector_from_env("hubspot"))
            console.print(f"HubSpot properties (leadflow crm setup): {report.summary()}")
            for crm in ("hubspot", "salesforce"):
                started = time.monotonic()
                before = native_stage_counts(handle, crm)
                with console.status(f"Syncing {crm} through Prefect…"):
                    summary = sync_leads(crm)
                summary["seconds"] = round(time.monotonic() - started, 1)
                summaries.append(summary)
                _print_run(summary, first_run)
                console.print(native_stage_line(crm, before, native_stage_counts(handle, crm)))
        saved.write_text(json.dumps(snapshot(handle)))
    console.rule()
    console.print(f"State and audit log: {folder / 'leadflow.db'} — try [bold]leadflow audit --lead <id>[/] "
                  f"with LEADFLOW_DATABASE_URL=sqlite:///{folder / 'leadflow.db'}")
    console.print("Run [bold]make demo[/] again: the next run is incremental and has nothing to do.")
    with environment(env):
        reports = _reports(folder)
    console.print("Qualification reports (leadflow report --crm X --out DIR):")
    for path in reports:
        console.print(str(path), markup=False, highlight=False, soft_wrap=True)
    return summaries


NATIVE_STAGE_FIELDS = {"hubspot": ("contacts", "lifecyclestage", "lifecycle stage"),
                       "salesforce": ("Lead", "Status", "Lead Status")}


def native_stage_mappings(folder: Path) -> dict[str, str]:
    """``LEADFLOW_MAPPING_<CRM>`` for copies of the shipped mappings with ``native_stages`` on."""
    import yaml

    from mappings import MAPPINGS_DIR

    env = {}
    for crm in NATIVE_STAGE_FIELDS:
        raw = yaml.safe_load((MAPPINGS_DIR / f"{crm}.yaml").read_text())
        raw["native_stages"]["enabled"] = True
        path = folder / f"{crm}-native-stages.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        env[settings.mapping_variable(crm)] = str(path)
    return env


def native_stage_counts(handle: Any, crm: str) -> dict[str, int]:
    """How many records hold each value of the CRM's own stage field, in the sandbox now."""
    obj, field, _label = NATIVE_STAGE_FIELDS[crm]
    api = handle.state.hubspot if crm == "hubspot" else handle.state.salesforce
    counts: dict[str, int] = {}
    for record in api.tables[obj].records.values():
        value = record.get(field) or "(blank)"
        counts[value] = counts.get(value, 0) + 1
    return counts


def native_stage_line(crm: str, before: dict[str, int], after: dict[str, int]) -> str:
    """``hubspot lifecycle stage: lead 210 → 180, marketingqualifiedlead 12 → 40, …`` (values that moved first)."""
    _obj, _field, label = NATIVE_STAGE_FIELDS[crm]
    values = sorted(set(before) | set(after), key=lambda v: (before.get(v, 0) == after.get(v, 0), v))
    parts = [f"{v} {before.get(v, 0)} → {after.get(v, 0)}" if before.get(v, 0) != after.get(v, 0)
             else f"{v} {after.get(v, 0)}" for v in values]
    return f"{crm} {label} (native stages on): " + ", ".join(parts)


def _anchor_ms(first_run: bool) -> int | None:
    return int(time.time() * 1000) if first_run else None


def _print_run(summary: dict[str, Any], first_run: bool) -> None:
    from flows.summary import print_summary

    print_summary(summary)
    if summary["read"] == 0 or (not first_run and summary["changed"] == 0 and summary["tasks_created"] == 0):
        echo = (f" It re-read {summary['read']} lead(s) that leadflow itself wrote last time and changed none."
                if summary["read"] else "")
        console.print(f"[green]{summary['crm']}: nothing to do[/] — no lead changed since the last run "
                      f"({summary['api_calls']} API call(s), {summary['seconds']} s).{echo}")
        return
    _print_stages(summary)
    for example in summary.get("examples", [])[:3]:
        console.print(f"  [bold]{example['company'] or example['crm_id']}[/] → {example['stage']} "
                      f"(score {example['lead_score']}): " + "; ".join(example["reasons"])
                      + f" — next: {example['next_step']}")


STAGE_LABELS = {"inquiry": "inq", "mql": "MQL", "sal": "SAL", "sql": "SQL", "nurture": "nurt",
                "disqualified": "DQ", "intake_ready": "intake", "redirect": "redir"}


def _print_stages(summary: dict[str, Any]) -> None:
    stages = [s for s in STAGE_LABELS if s in summary["stages"]]
    table = Table(title=f"{summary['crm']}: stages by source ({summary['tasks_created']} tasks created, "
                        f"{summary['seconds']} s)", caption="inq inquiry · nurt nurture · DQ disqualified · "
                        "intake intake-ready · redir redirect")
    table.add_column("source", no_wrap=True)
    for stage in stages:
        table.add_column(STAGE_LABELS[stage], justify="right")
    for source in sorted(summary["by_source"]):
        counts = summary["by_source"][source]
        table.add_row(source, *(str(counts.get(stage, 0)) for stage in stages))
    console.print(table)


def _reports(folder: Path) -> list[Path]:
    """The qualification report of each CRM (flows/report.py), as self-contained HTML files."""
    from flows.report import qualification_report

    # the demo's stages are all minutes old: any MQL or SQL without an opportunity counts as stalled
    return [Path(qualification_report(crm, stall_days=0, out_dir=str(folder / f"report-{crm}"))["files"]["html"])
            for crm in ("hubspot", "salesforce")]
