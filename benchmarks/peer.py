"""``leadflow bench --peer dlt``: leadflow's HubSpot read phase beside dlt's REST API source, same sandbox.

Both sides read the same data from one sandbox process (seeded once with N leads): the contacts
through ``GET /crm/v3/objects/contacts`` (limit 100, the properties leadflow's HubSpot mapping reads,
``associations=companies``) and the contacts' companies with the mapping's company properties.

- **leadflow** (``read_leadflow``): the backfill's read phase as ``sync_leads`` runs it, without
  enrichment, scoring or writes: ``HubSpotConnector.iter_pages(None, None)`` (list pages, each company
  read once per run in batch reads of 100, conversion into the canonical ``Lead``), with
  ``mark_reads=False`` (no state rows) and the native activity reads (calls, meetings, deals) left
  out, so the phase is list + company reads + conversion.
- **dlt** (``read_dlt``): ``dlt.sources.rest_api`` with two resources, ``contacts`` (the list
  endpoint above, paged by ``paging.next.after`` -> ``after``, or by following ``paging.next.link``
  with ``paging="link"``) and ``companies`` (the companies list endpoint, same paging), through a
  pipeline's ``extract`` and ``normalize`` into a local load package (dlt's ``dummy`` destination:
  nothing is loaded). ``normalize`` is dlt's conversion (schema inference, typing, nested tables),
  the counterpart of leadflow's conversion into ``Lead``; extract alone is reported too.

Each side runs in a fresh Python process (``python -m benchmarks.peer --side ...``), the sides
alternating (leadflow, dlt, then dlt, leadflow, ...); the sandbox's stats are reset before each and
read after it (API calls by endpoint). CPU is the worker's ``getrusage`` (self and children, user +
sys) around the read only: imports and set-up are outside it.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PEERS = ("dlt",)
SIDES = ("leadflow", "dlt")
PAGING = ("after", "link")
LIST_LIMIT = 100  # GET /crm/v3/objects/{type}: limit <= 100
DLT_MISSING = ("leadflow bench --peer dlt: the dlt package is not installed; install it with "
               "`pip install -r requirements.lock` or `pip install -e '.[bench]'`")


class PeerUnavailable(RuntimeError):
    """The peer cannot run here (its package is missing, or the CRM has no peer)."""


def peer_problem(peer: str, crm: str) -> str | None:
    """One line saying why ``peer`` cannot run for ``crm``, or None when it can."""
    if peer not in PEERS:
        return f"leadflow bench --peer: unknown peer {peer!r}; expected one of {', '.join(PEERS)}"
    if crm != "hubspot":
        return f"leadflow bench --peer {peer}: only HubSpot has a peer (got --crm {crm})"
    try:
        import dlt  # noqa: F401
    except ImportError:
        return DLT_MISSING
    return None


def _cpu_seconds() -> float:
    """User + sys CPU of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def read_fields() -> tuple[list[str], list[str]]:
    """The contact and company properties leadflow's HubSpot mapping reads (the connector's own lists)."""
    from leadflow import settings
    from mappings import load_mapping

    mapping = load_mapping(settings.mapping_path("hubspot") or "hubspot")
    return mapping.crm_fields("lead"), mapping.crm_fields("company")


# ------------------------------------------------------------------------------------ leadflow


def read_leadflow() -> dict[str, Any]:
    """leadflow's backfill read phase against the sandbox named by the environment: list pages,
    company batch reads, conversion (no native activity reads, no state rows); CPU and wall of it."""
    from connectors.crm.factory import connector_from_env
    from connectors.crm.hubspot import ActivityReader
    from state.schema import engine_for

    connector = connector_from_env("hubspot", engine=engine_for("sqlite://"), mark_reads=False)
    connector.activity_reader = ActivityReader(connector.transport, connector.lead_type, [], None,
                                               connector.config.batch_size)
    leads = quarantined = pages = 0
    companies: set[str] = set()
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    for page in connector.iter_pages(None, None):
        pages += 1
        leads += len(page.leads)
        quarantined += len(page.quarantined)
        companies.update(lead.crm_company_id for lead in page.leads if lead.crm_company_id)
    wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    return {"leads": leads, "quarantined": quarantined, "pages": pages, "companies": len(companies),
            "wall_seconds": wall, "cpu_seconds": cpu}


# ----------------------------------------------------------------------------------------- dlt


def dlt_paginator(paging: str) -> dict[str, str]:
    """dlt's paginator for HubSpot's list paging: ``paging.next.after`` sent back as ``after``
    (``cursor``), or ``paging.next.link`` followed as the next request's URL (``json_link``). Both
    stop when ``paging.next`` is absent (dlt stops on a missing cursor or link)."""
    if paging == "link":
        return {"type": "json_link", "next_url_path": "paging.next.link"}
    return {"type": "cursor", "cursor_path": "paging.next.after", "cursor_param": "after"}


def dlt_config(host: str, token: str, contact_props: list[str], company_props: list[str],
               paging: str = "after") -> dict[str, Any]:
    """The ``rest_api_source`` configuration: contacts and companies from HubSpot's list endpoints."""

    def resource_for(name: str, props: list[str], associations: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": LIST_LIMIT, "properties": ",".join(props), "archived": "false"}
        if associations:
            params["associations"] = associations
        return {"name": name, "endpoint": {"path": f"crm/v3/objects/{name}", "params": params,
                                           "data_selector": "results", "paginator": dlt_paginator(paging)}}

    return {
        "client": {"base_url": host.rstrip("/") + "/", "auth": {"type": "bearer", "token": token}},
        "resource_defaults": {"write_disposition": "replace"},
        "resources": [resource_for("contacts", contact_props, "companies"),
                      resource_for("companies", company_props, None)],
    }


def read_dlt(workdir: Path, paging: str = "after") -> dict[str, Any]:
    """dlt's REST API source through ``extract`` and ``normalize`` (dummy destination, nothing loaded)
    against the sandbox named by the environment; CPU and wall of each phase, rows per table."""
    import dlt
    from dlt.sources.rest_api import rest_api_source

    contact_props, company_props = read_fields()
    config = dlt_config(os.environ["HUBSPOT_HOST"], os.environ["HUBSPOT_ACCESS_TOKEN"], contact_props,
                        company_props, paging)
    pipeline = dlt.pipeline(pipeline_name="leadflow_peer", pipelines_dir=str(workdir / "dlt"), destination="dummy")
    source = rest_api_source(config)
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    pipeline.extract(source)
    cpu1, wall1 = _cpu_seconds(), time.perf_counter()
    info = pipeline.normalize()
    cpu2, wall2 = _cpu_seconds(), time.perf_counter()
    rows = {table: int(count) for table, count in (info.row_counts or {}).items() if not table.startswith("_dlt")}
    return {"leads": rows.get("contacts", 0), "companies": rows.get("companies", 0), "rows": rows,
            "wall_seconds": wall2 - wall0, "cpu_seconds": cpu2 - cpu0,
            "extract_wall_seconds": wall1 - wall0, "extract_cpu_seconds": cpu1 - cpu0,
            "normalize_cpu_seconds": cpu2 - cpu1}


def measure_side(side: str, workdir: Path, paging: str = "after") -> dict[str, Any]:
    """One side's read in this process, with per-lead figures."""
    out = read_leadflow() if side == "leadflow" else read_dlt(workdir, paging)
    leads = out["leads"]
    out.update(side=side, pid=os.getpid(),
               cpu_ms_per_lead=round(out["cpu_seconds"] * 1000 / leads, 4) if leads else None,
               leads_per_s=round(leads / out["wall_seconds"], 1) if out["wall_seconds"] > 0 else None,
               peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    if "extract_cpu_seconds" in out and leads:
        out["extract_cpu_ms_per_lead"] = round(out["extract_cpu_seconds"] * 1000 / leads, 4)
    return out


# ------------------------------------------------------------------------------------ the command


def _hubspot_calls(stats: dict[str, Any]) -> dict[str, int]:
    return {name: sum(counts.values()) for name, counts in (stats.get("endpoints") or {}).items()
            if name.startswith("hubspot.")}


def run_side(side: str, env: dict[str, str], paging: str, timeout: float) -> dict[str, Any]:
    """``measure_side`` in a fresh interpreter; a failure yields ``error`` (never raises)."""
    from benchmarks.startup import bench_log_dir
    from leadflow.errors import one_line, redact

    workdir = Path(tempfile.mkdtemp(prefix=f"leadflow-peer-{side}-"))
    logs = bench_log_dir()
    logs.mkdir(parents=True, exist_ok=True)
    stderr_path = logs / f"peer-{side}-{time.strftime('%Y%m%dT%H%M%S')}-{workdir.name}.stderr"
    result_path = workdir / "result.json"
    args = [sys.executable, "-m", "benchmarks.peer", "--side", side, "--paging", paging,
            "--workdir", str(workdir), "--result", str(result_path)]
    root = Path(__file__).resolve().parent.parent
    try:
        with open(stderr_path, "w") as stderr:
            try:
                code = subprocess.run(args, cwd=str(root), env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                      timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                code = None
        try:
            result = json.loads(result_path.read_text())
        except (OSError, ValueError):
            result = {"side": side}
        if code != 0:
            lines = [line for line in stderr_path.read_text(errors="replace").splitlines() if line.strip()]
            detail = f"exit {code}: {lines[-1].strip() if lines else ''}" if code is not None else \
                f"did not end within {timeout:g} s"
            result["error"] = {"phase": f"peer:{side}", "error": one_line(redact(detail))}
        result["worker_exit_code"] = code
        result["stderr_path"] = str(stderr_path)
        return result
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


def side_order(repeat: int) -> list[str]:
    """leadflow, dlt, dlt, leadflow, leadflow, dlt, ...: each side first as often as the other
    (to one), so a machine that slows down or speeds up during the run favours neither."""
    order: list[str] = []
    for i in range(max(1, repeat)):
        order += list(SIDES) if i % 2 == 0 else list(reversed(SIDES))
    return order


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of one side's complete measurements (every value under ``*_all``)."""
    done = [r for r in rows if not r.get("error")]
    out: dict[str, Any] = {"measurements": len(rows), "complete_measurements": len(done)}
    for key in ("cpu_ms_per_lead", "leads_per_s", "wall_seconds", "cpu_seconds", "api_calls",
                "extract_cpu_ms_per_lead", "peak_rss_mb", "leads", "companies"):
        values = [r[key] for r in done if r.get(key) is not None]
        if values:
            out[key] = round(statistics.median(values), 4)
            out[key + "_all"] = [round(v, 4) for v in values]
    if done:
        out["api_calls_by_endpoint"] = done[0].get("api_calls_by_endpoint")
        out["rows"] = done[0].get("rows")
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def bench_peer(leads: int, repeat: int = 3, peer: str = "dlt", random_seed: int = 42, paging: str = "after",
               timeout: float = 1800.0) -> dict[str, Any]:
    """Both sides against one sandbox seeded with ``leads`` leads, alternating in fresh processes;
    medians per side and ``peer_cpu_ratio`` = leadflow's CPU per lead / the peer's. Raises
    ``PeerUnavailable`` before starting anything when the peer cannot run."""
    problem = peer_problem(peer, "hubspot")
    if problem:
        raise PeerUnavailable(problem)
    from connectors.crm.factory import connector_from_env
    from connectors.crm.setup import hubspot_setup
    from sandbox.environment import environment, sandbox_environment
    from sandbox.server import start_sandbox_process
    from state.schema import engine_for

    measured: list[dict[str, Any]] = []
    with start_sandbox_process(leads, random_seed=random_seed, startup_timeout=max(600, leads / 250)) as handle:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HUBSPOT_"))},
               **sandbox_environment(handle), "LEADFLOW_HUBSPOT_RATE_LIMIT": "off", "RUNTIME__DLTHUB_TELEMETRY": "false"}
        with environment({k: env[k] for k in ("HUBSPOT_HOST", "HUBSPOT_ACCESS_TOKEN", "LEADFLOW_HUBSPOT_RATE_LIMIT")}):
            hubspot_setup(connector_from_env("hubspot", engine=engine_for("sqlite://")))  # leadflow's properties
        for side in side_order(repeat):
            handle.reset_stats()
            row = run_side(side, env, paging, timeout)
            row["api_calls_by_endpoint"] = _hubspot_calls(handle.stats())
            row["api_calls"] = sum(row["api_calls_by_endpoint"].values())
            measured.append(row)
    return peer_result(peer, leads, paging, measured)


def peer_result(peer: str, leads: int, paging: str, measured: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-side medians, the ratios and the failures of a ``bench_peer`` run."""
    sides = {side: summarize([r for r in measured if r.get("side") == side]) for side in SIDES}
    ours, theirs = sides["leadflow"], sides["dlt"]
    failures = [{**r["error"], "stderr_path": r.get("stderr_path")} for r in measured if r.get("error")]
    from benchmarks.startup import git_revision

    out: dict[str, Any] = {
        "peer": peer, "leads": leads, "paging": paging, "revision": git_revision(),
        "order": [r.get("side") for r in measured],
        "leadflow": ours, peer: theirs,
        "peer_cpu_ratio": ratio(ours.get("cpu_ms_per_lead"), theirs.get("cpu_ms_per_lead")),
        "peer_extract_cpu_ratio": ratio(ours.get("cpu_ms_per_lead"), theirs.get("extract_cpu_ms_per_lead")),
        "peer_calls_ratio": ratio(ours.get("api_calls"), theirs.get("api_calls")),
        "stderr_paths": [r.get("stderr_path") for r in measured],
    }
    if failures:
        out["failures"] = failures
    return out


def render(result: dict[str, Any]) -> str:
    """The peer comparison as text lines."""
    peer = result["peer"]
    lines = [f"peer {peer}: HubSpot read phase, {result['leads']:,} leads, paging by {result['paging']}, "
             f"order {' '.join(result['order'])}"]
    for side in ("leadflow", peer):
        s = result[side]
        lines.append(f"  {side:<9} calls {s.get('api_calls')}  cpu {s.get('cpu_ms_per_lead')} ms/lead  "
                     f"{s.get('leads_per_s')} leads/s  ({s.get('complete_measurements')} of {s.get('measurements')}; "
                     f"cpu ms/lead each {s.get('cpu_ms_per_lead_all')})  by endpoint {s.get('api_calls_by_endpoint')}")
    lines.append(f"  peer_cpu_ratio {result.get('peer_cpu_ratio')} (leadflow / {peer} extract + normalize), "
                 f"against {peer}'s extract alone {result.get('peer_extract_cpu_ratio')}")
    for failure in result.get("failures") or []:
        lines.append(f"  FAILED in {failure['phase']}: {failure['error']} (stderr: {failure['stderr_path']})")
    return "\n".join(lines)


def exit_code(result: dict[str, Any]) -> int:
    """0 when every measurement ran, 3 when some failed, 1 when a side has none complete."""
    from leadflow.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL

    if not all(result[side].get("complete_measurements") for side in ("leadflow", result["peer"])):
        return EXIT_FAILED
    return EXIT_PARTIAL if result.get("failures") else EXIT_OK


def _main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="one side of leadflow bench --peer in this process")
    parser.add_argument("--side", choices=SIDES, required=True)
    parser.add_argument("--paging", choices=PAGING, default="after")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    os.environ["DLT_DATA_DIR"] = str(Path(args.workdir) / "dlt-home")  # dlt's global dir: the worker's own
    result = measure_side(args.side, Path(args.workdir), args.paging)
    Path(args.result).write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    _main()
