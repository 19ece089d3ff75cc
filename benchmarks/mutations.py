"""Mutation check: remove each guard in turn, in a scratch copy of the tree, and run the tests that
should catch it; every mutation must make some test fail.

    .venv/bin/python benchmarks/mutations.py            # all mutations
    .venv/bin/python benchmarks/mutations.py --only compare-before-write --keep

Each mutation names a file, an exact text to replace (it must occur in the file, or the check
itself fails: a guard that moved must be re-pointed here) and the tests to run. Exit 0 when every
mutation was caught; 1 otherwise. The scratch copies live under a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".git", ".venv", ".leadflow", "__pycache__", ".pytest_cache", "node_modules"}


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = [
    Mutation("compare-before-write", "flows/pipeline.py",
             "        kept = _keep_edits_made_since_read(ctx, page, plan)\n",
             "        kept = []\n",
             ("tests/flows/test_trust.py::test_a_hubspot_rep_edit_made_during_the_run_survives_it_and_the_next_run",)),
    Mutation("never-over-manual", "connectors/crm/writeback.py",
             "    return values_equal(fm, current, last_written)\n", "    return True\n",
             ("tests/connectors/test_crm_writeback.py",)),
    Mutation("manual-stage-gets-no-task", "scoring/tasks.py",
             "    return stage in task_stages and manual_stage is None\n", "    return stage in task_stages\n",
             ("tests/flows/test_trust.py::test_a_hubspot_rep_edit_made_during_the_run_survives_it_and_the_next_run",
              "tests/scoring/test_tasks_policy.py")),
    Mutation("held-task-of-a-failed-write", "flows/pipeline.py",
             "        ctx.task_carry.discard(set(write.failed))",
             "        pass",
             ("tests/flows/test_trust.py::test_a_failed_field_write_keeps_its_lead_pending_though_its_task_was_held",)),
    Mutation("lead-processed-once-per-run", "flows/pipeline.py",
             "    page_leads = _not_yet_handled(ctx, page.leads)\n", "    page_leads = page.leads\n",
             ("tests/flows/test_trust.py::test_a_lead_retried_by_id_is_not_processed_again_by_the_window_read",)),
    Mutation("audit-before-write", "flows/pipeline.py",
             "    _audit_intent(ctx, plan.updates, send, plan.supersede, plan.by_id, provenance, kept)\n"
             "    if ctx.dry_run:",
             "    if ctx.dry_run:",
             ("tests/flows/test_trust.py::test_every_crm_change_is_audited_even_when_the_run_dies_right_after_the_write",)),
    Mutation("no-value-in-reasons", "connectors/crm/convert.py",
             '    raise _FieldProblem(problem("true/false", value))',
             '    raise _FieldProblem(f"{value!r} is not true/false")',
             ("tests/flows/test_trust.py::test_no_patient_text_and_no_credential_reaches_logs_previews_artifacts_pending_rows_or_audit",)),
    Mutation("watermark-only-on-a-completed-run", "flows/sync.py",
             "        moves_watermark = incremental and not dry_run and limit is None\n",
             "        moves_watermark = incremental and not dry_run\n",
             ("tests/flows/test_sync_flows.py", "tests/flows/test_watermark_guard.py")),
    Mutation("search-result-cap", "connectors/crm/hubspot.py",
             "                if after >= self.cap:\n                    break\n            if exhausted:",
             "            if exhausted:",
             ("tests/connectors/test_crm_hubspot_paging.py",)),
    Mutation("retry-after", "connectors/retry.py",
             '    retry_after = _header(headers, "Retry-After")\n',
             "    retry_after = None\n",
             ("tests/connectors/test_crm_retry.py",)),
    Mutation("retry-after-nppes", "connectors/retry.py",
             '    retry_after = _header(headers, "Retry-After")\n',
             "    retry_after = None\n",
             ("tests/enrichment/test_nppes_http.py::test_429_waits_what_retry_after_asks_not_the_backoff",)),
    Mutation("limiter-slot-from-the-answer", "connectors/ratelimit.py",
             "            self._answered.append(self._clock())\n",
             "            self._answered.append(self._clock() - 3.0)\n",  # as if counted 3 s before its answer
             ("tests/connectors/test_crm_ratelimit.py",)),
    Mutation("limiter-counts-the-portals-calls", "connectors/ratelimit.py",
             "            limiter.observe_remaining(seen[\"burst_remaining\"])\n",
             "            pass\n",
             ("tests/connectors/test_crm_faults_sandbox.py::"
              "test_calls_another_app_made_in_the_window_take_the_limiters_slots_too",)),
    Mutation("limiter-slot-back-after-a-failed-call", "connectors/ratelimit.py",
             "        try:\n            yield\n        finally:\n            self.release()\n",
             "        yield\n        self.release()\n",
             ("tests/connectors/test_crm_ratelimit.py",)),
    Mutation("keepalive-stale-idle-connection", "connectors/http.py",
             "            if conn.usable:\n",
             "            if True:\n",
             ("tests/connectors/test_http_transport.py",)),
    Mutation("keepalive-resend-only-a-reused-get", "connectors/http.py",
             "            if not (reused and request.method in _RESENDABLE):\n",
             "            if False:\n",
             ("tests/connectors/test_http_transport.py",)),
    Mutation("keepalive-no-resend-after-part-of-an-answer", "connectors/http.py",
             "        if not exc.partial:\n",
             "        if True:\n",
             ("tests/connectors/test_http_transport.py",)),
    Mutation("keepalive-http-1-0-closes", "connectors/http.py",
             '    keep_alive = version == "HTTP/1.1" and ',
             "    keep_alive = ",
             ("tests/connectors/test_http_transport.py",)),
    Mutation("nppes-search-memo-counts-empty-answers", "connectors/enrichment/nppes.py",
             "    return max(1, len(answer[0]))\n",
             "    return len(answer[0])\n",
             ("tests/enrichment/test_nppes_http.py",)),
    Mutation("nppes-loop-thread-ends-with-its-provider", "connectors/enrichment/nppes.py",
             "                weakref.finalize(self, _close_pool, http, loop)\n",
             "                pass\n",
             ("tests/enrichment/test_nppes_loop.py",)),
    Mutation("keepalive-chunked-answer", "connectors/http.py",
             "            return b\"\".join(chunks)\n",
             "            return b\"\".join(chunks[:-1])\n",
             ("tests/connectors/test_http_transport.py",)),
    Mutation("sandbox-time-index-moves-a-written-record", "sandbox/store.py",
             "            self._by_mod.discard((old, key, record_id))\n",
             "            pass\n",
             ("tests/sandbox/test_store_index.py",)),
]


def _copy_tree(target: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in SKIP}

    shutil.copytree(ROOT, target, ignore=ignore, symlinks=True)


def run(mutation: Mutation, scratch: Path, python: str) -> dict:
    tree = scratch / mutation.name
    _copy_tree(tree)
    path = tree / mutation.path
    text = path.read_text()
    if mutation.old not in text:
        return {"mutation": mutation.name, "caught": False, "error": f"guard text not found in {mutation.path}"}
    path.write_text(text.replace(mutation.old, mutation.new, 1))
    tests = [t for t in mutation.tests if (tree / t.split("::", 1)[0]).exists()]
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=tree,
                          env=env, capture_output=True, text=True)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    return {"mutation": mutation.name, "caught": done.returncode == 1, "exit": done.returncode,
            "tests": tests, "result": last, "seconds": round(time.monotonic() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="run only this mutation (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch trees")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    scratch = Path(tempfile.mkdtemp(prefix="leadflow-mutations-"))
    results = []
    try:
        for mutation in chosen:
            outcome = run(mutation, scratch, sys.executable)
            results.append(outcome)
            print(json.dumps(outcome), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    missed = [r["mutation"] for r in results if not r["caught"]]
    print(f"{len(results) - len(missed)} of {len(results)} mutations caught" + (f"; missed: {missed}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
