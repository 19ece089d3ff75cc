"""``leadflow listen``: the webhook receiver. HubSpot webhooks and Salesforce Outbound Messages come
in, are checked (``connectors/crm/webhooks.py``), de-duplicated by event id (``state.claims``), cleared of
leadflow's own echoes, and queued; a coalescer re-qualifies the queued leads of each CRM in small
batches through the by-id flow (``flows.sync.requalify_leads``, a Prefect flow run in this process).

A request is answered as soon as its changes are queued: nothing is processed inline. A change that
is queued but not yet processed when the receiver stops is not lost: its modification time puts it
in the next scheduled sync's window. Logs carry counts and event types, never a payload value.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from connectors.crm.webhooks import (
    MAX_BODY_BYTES,
    Change,
    Rejected,
    check_hubspot,
    parse_hubspot,
    parse_salesforce,
    salesforce_ack,
    salesforce_fault,
)

log = logging.getLogger("leadflow.listen")

DEFAULT_WINDOW_SECONDS = 2.0
DEFAULT_BATCH = 50
REPLAY_KEEP = timedelta(days=2)  # Salesforce retries an unacknowledged message for up to 24 hours
HUBSPOT_PATH = "/webhooks/hubspot"
SALESFORCE_PATH = "/webhooks/salesforce"

Runner = Callable[[str, list[str], list[str]], Any]  # (crm, lead ids, company ids)


@dataclass
class ListenConfig:
    """The receiver's settings; ``from_env`` reads them (secrets are never logged)."""

    hubspot_secret: str | None = None  # HUBSPOT_APP_SECRET: the app's client secret
    salesforce_org_id: str | None = None  # SALESFORCE_ORG_ID
    salesforce_token: str | None = None  # LEADFLOW_SALESFORCE_WEBHOOK_TOKEN: ?token= in the endpoint URL
    salesforce_user_id: str | None = None  # LEADFLOW_SALESFORCE_USER_ID: leadflow's integration user
    public_url: str | None = None  # LEADFLOW_WEBHOOK_PUBLIC_URL: the base URL HubSpot calls (behind a proxy)
    window_s: float = DEFAULT_WINDOW_SECONDS  # LEADFLOW_WEBHOOK_WINDOW_SECONDS
    batch: int = DEFAULT_BATCH
    max_body: int = MAX_BODY_BYTES

    @classmethod
    def from_env(cls) -> ListenConfig:
        def env(name: str) -> str | None:
            return os.environ.get(name, "").strip() or None

        window = env("LEADFLOW_WEBHOOK_WINDOW_SECONDS")
        try:
            window_s = float(window) if window else DEFAULT_WINDOW_SECONDS
        except ValueError:
            raise ValueError("LEADFLOW_WEBHOOK_WINDOW_SECONDS: expected a number of seconds") from None
        return cls(hubspot_secret=env("HUBSPOT_APP_SECRET"), salesforce_org_id=env("SALESFORCE_ORG_ID"),
                   salesforce_token=env("LEADFLOW_SALESFORCE_WEBHOOK_TOKEN"),
                   salesforce_user_id=env("LEADFLOW_SALESFORCE_USER_ID"), public_url=env("LEADFLOW_WEBHOOK_PUBLIC_URL"),
                   window_s=window_s)


# --------------------------------------------------------------------------- coalescing


@dataclass
class _Queue:
    leads: dict[str, None] = field(default_factory=dict)  # insertion-ordered set
    companies: dict[str, None] = field(default_factory=dict)
    first_at: float | None = None
    busy: bool = False


class Coalescer:
    """Per CRM, the leads changed within ``window`` seconds of the first queued change go to the
    runner together, ``batch`` at a time, one run per CRM at a time. A lead queued twice before its
    run is run once."""

    def __init__(self, runner: Runner, window: float, batch: int):
        self.runner, self.window, self.batch = runner, window, max(1, batch)
        self._queues: dict[str, _Queue] = {}
        self._cond = threading.Condition()
        self._threads: dict[str, threading.Thread] = {}
        self._closed = False
        self.runs: list[tuple[str, list[str], list[str]]] = []

    def add(self, crm: str, leads: Iterable[str] = (), companies: Iterable[str] = ()) -> None:
        with self._cond:
            queue = self._queues.setdefault(crm, _Queue())
            queue.leads.update(dict.fromkeys(leads))
            queue.companies.update(dict.fromkeys(companies))
            if (queue.leads or queue.companies) and queue.first_at is None:
                queue.first_at = time.monotonic()
            if crm not in self._threads:
                thread = threading.Thread(target=self._work, args=(crm,), name=f"leadflow-listen-{crm}", daemon=True)
                self._threads[crm] = thread
                thread.start()
            self._cond.notify_all()

    def _take(self, crm: str) -> tuple[list[str], list[str]] | None:
        """Wait until the CRM's window has passed; the next batch, or None when closed."""
        with self._cond:
            queue = self._queues[crm]
            while True:
                if self._closed:
                    return None
                if queue.first_at is not None:
                    left = queue.first_at + self.window - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                else:
                    self._cond.wait()
            leads = list(queue.leads)[:self.batch]
            companies = list(queue.companies)[:max(0, self.batch - len(leads))]
            for key in leads:
                del queue.leads[key]
            for key in companies:
                del queue.companies[key]
            queue.first_at = time.monotonic() - self.window if (queue.leads or queue.companies) else None
            queue.busy = True
            return leads, companies

    def _work(self, crm: str) -> None:
        while (batch := self._take(crm)) is not None:
            leads, companies = batch
            try:
                self.runs.append((crm, leads, companies))
                self.runner(crm, leads, companies)
            except Exception as exc:  # noqa: BLE001 - the scheduled sync catches these leads up
                log.error("%s: re-qualifying %d lead(s) failed (%s); the next scheduled sync takes them",
                          crm, len(leads) + len(companies), type(exc).__name__)
            finally:
                with self._cond:
                    self._queues[crm].busy = False
                    self._cond.notify_all()

    def idle(self) -> bool:
        with self._cond:
            return all(q.first_at is None and not q.busy for q in self._queues.values())

    def wait_idle(self, timeout: float) -> bool:
        """Until every queue is empty and no run is going (tests, a clean shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(q.first_at is None and not q.busy for q in self._queues.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads.values():
            thread.join(timeout=30)


# --------------------------------------------------------------------------- what needs work


class ChangeFilter:
    """Which notified changes need a re-qualification. Leadflow's own write-back comes back as
    notifications: a HubSpot property change to the value leadflow last wrote to that property
    (``lf_written_values``), a Salesforce record last modified by leadflow's integration user or
    not modified since leadflow's echo or trusted read mark (``state.leads.skippable``). Those,
    and changes to properties leadflow does not read, cause no work and no CRM call. A HubSpot
    company property that leadflow itself fills (enrichment) is left to the scheduled sync: its
    notification cannot be told from leadflow's echo without reading the company's contacts."""

    def __init__(self, engine, salesforce_user_id: str | None = None):
        from mappings import load_mapping

        self.engine = engine
        self.salesforce_user_id = salesforce_user_id
        self._mappings: dict[str, Any] = {}
        self._load = load_mapping

    def mapping(self, crm: str):
        from leadflow import settings

        if crm not in self._mappings:
            self._mappings[crm] = self._load(settings.mapping_path(crm) or crm)
        return self._mappings[crm]

    def hubspot(self, changes: list[Change]) -> tuple[list[str], list[str], Counter]:
        """(contact ids, company ids) to re-qualify, and the count of each verdict."""
        from state import leads as state

        mapping = self.mapping("hubspot")
        lead_fields = set(mapping.crm_fields("lead"))
        company_fields = set(mapping.crm_fields("company"))
        company_written = {fm.field for fm in mapping.writable().values() if fm.object == "company"}
        verdicts: Counter = Counter()
        leads: dict[str, None] = {}
        companies: dict[str, None] = {}
        property_changes = [c for c in changes if c.object == "contact" and c.kind == "propertyChange"]
        written = state.written_values(self.engine, "hubspot", [c.object_id for c in property_changes])
        for change in changes:
            if change.kind == "deletion":
                verdicts["deleted"] += 1
            elif change.kind == "propertyChange" and change.property not in (
                    lead_fields if change.object == "contact" else company_fields):
                verdicts["not_read"] += 1
            elif change.object == "contact" and change.kind == "propertyChange" and \
                    self._wrote(mapping, written.get(change.object_id, {}), change):
                verdicts["echo"] += 1
            elif change.object == "company" and change.kind == "propertyChange" and change.property in company_written:
                verdicts["company_field_leadflow_writes"] += 1  # its echo, or a fill-in the scheduled sync takes
            elif change.object == "contact":
                leads[change.object_id] = None
                verdicts["queued"] += 1
            elif change.kind == "associationChange" and change.related_id:
                leads[change.related_id] = None  # company -> contact association: the contact's side
                verdicts["queued"] += 1
            else:
                companies[change.object_id] = None
                verdicts["queued"] += 1
        return list(leads), list(companies), verdicts

    @staticmethod
    def _wrote(mapping, written: dict[str, str | None], change: Change) -> bool:
        """Whether the property now holds the value leadflow last wrote to it (type-aware: HubSpot
        notifies a datetime as epoch milliseconds)."""
        from connectors.crm.convert import values_equal

        if change.property not in written:
            return False
        fm = next((f for f in mapping.writable().values() if f.field == change.property and f.object == "lead"), None)
        if fm is None:
            return written[change.property] == change.value
        return values_equal(fm, change.value, written[change.property])

    def salesforce(self, changes: list[Change]) -> tuple[list[str], Counter]:
        from state import leads as state

        mapping = self.mapping("salesforce")
        lead_object = mapping.objects["lead"]
        verdicts: Counter = Counter()
        ours = {c.object_id for c in changes if self.salesforce_user_id and c.modified_by
                and c.modified_by[:15] == self.salesforce_user_id[:15]}
        handled = state.skippable(self.engine, "salesforce", lead_object,
                                  {c.object_id: c.modstamp for c in changes if c.object == lead_object})
        leads: dict[str, None] = {}
        for change in changes:
            if change.object != lead_object:
                verdicts["other_object"] += 1
            elif change.object_id in ours or change.object_id in handled:
                verdicts["echo"] += 1
            else:
                leads[change.object_id] = None
                verdicts["queued"] += 1
        return list(leads), verdicts


# --------------------------------------------------------------------------- the ASGI app


class Receiver:
    """The receiver's state: config, store, filter and coalescer; ``app()`` is its Starlette app."""

    def __init__(self, config: ListenConfig, engine, coalescer: Coalescer):
        self.config, self.engine, self.coalescer = config, engine, coalescer
        self.filter = ChangeFilter(engine, config.salesforce_user_id)
        self.counts: Counter = Counter()

    def app(self):
        from starlette.applications import Starlette
        from starlette.routing import Route

        return Starlette(routes=[
            Route(HUBSPOT_PATH, self.hubspot, methods=["POST"]),
            Route(SALESFORCE_PATH, self.salesforce, methods=["POST"]),
            Route("/healthz", self.health, methods=["GET"]),
        ])

    async def health(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({"ok": True, "idle": self.coalescer.idle()})

    async def hubspot(self, request):
        from starlette.responses import Response

        if not self.config.hubspot_secret:
            return self._rejected("hubspot", Rejected(404, "hubspot: HUBSPOT_APP_SECRET is not set"))
        try:
            body = await _bounded_body(request, self.config.max_body)
            check_hubspot(self.config.hubspot_secret, request.method, self._public_uri(request), body,
                          request.headers, int(time.time() * 1000))
            changes = parse_hubspot(body)
        except Rejected as rejected:
            return self._rejected("hubspot", rejected)
        fresh, leads, companies, verdicts = await asyncio.to_thread(self._hubspot_work, changes)
        self.coalescer.add("hubspot", leads, companies)
        self._log("hubspot", changes, fresh, verdicts)
        return Response(status_code=200)

    def _hubspot_work(self, changes: list[Change]):
        fresh = self._fresh("hubspot", changes)
        leads, companies, verdicts = self.filter.hubspot(fresh)
        return fresh, leads, companies, verdicts

    async def salesforce(self, request):
        from starlette.responses import Response

        try:
            if not self.config.salesforce_org_id:
                raise Rejected(404, "salesforce: SALESFORCE_ORG_ID is not set")
            token = self.config.salesforce_token
            if token is not None and not _same_secret(request.query_params.get("token", ""), token):
                raise Rejected(401, "salesforce: missing or wrong endpoint token")
            body = await _bounded_body(request, self.config.max_body)
            changes = parse_salesforce(body, self.config.salesforce_org_id)
        except Rejected as rejected:
            return self._rejected("salesforce", rejected)
        fresh, leads, verdicts = await asyncio.to_thread(self._salesforce_work, changes)
        self.coalescer.add("salesforce", leads)
        self._log("salesforce", changes, fresh, verdicts)
        return Response(salesforce_ack(), status_code=200, media_type="text/xml")

    def _salesforce_work(self, changes: list[Change]):
        fresh = self._fresh("salesforce", changes)
        leads, verdicts = self.filter.salesforce(fresh)
        return fresh, leads, verdicts

    def _fresh(self, source: str, changes: list[Change]) -> list[Change]:
        """Changes whose event id was not accepted before (a replay or a platform retry is acknowledged, not redone)."""
        from state import claims

        new = claims.accept_new(self.engine, source, [c.event_id for c in changes], REPLAY_KEEP)
        return [c for c in changes if c.event_id in new]

    def _public_uri(self, request) -> str:
        if self.config.public_url:
            query = f"?{request.url.query}" if request.url.query else ""
            return self.config.public_url.rstrip("/") + request.url.path + query
        return str(request.url)

    def _rejected(self, source: str, rejected: Rejected):
        from starlette.responses import Response

        self.counts[f"{source}_rejected_{rejected.status}"] += 1
        log.warning("%s: request rejected with %d: %s", source, rejected.status, rejected.reason)
        if source == "salesforce" and rejected.status != 413:
            return Response(salesforce_fault(rejected.reason), status_code=500 if rejected.status < 500 else
                            rejected.status, media_type="text/xml")
        return Response(status_code=rejected.status)

    def _log(self, source: str, changes: list[Change], fresh: list[Change], verdicts: Counter) -> None:
        kinds = Counter(f"{c.object}.{c.kind}" for c in changes)
        replayed = len(changes) - len(fresh)
        self.counts[f"{source}_events"] += len(changes)
        self.counts[f"{source}_replayed"] += replayed
        for verdict, count in verdicts.items():
            self.counts[f"{source}_{verdict}"] += count
        log.info("%s: %d event(s) %s; %d replayed; %s", source, len(changes),
                 dict(sorted(kinds.items())), replayed, dict(sorted(verdicts.items())))


def _same_secret(given: str, expected: str) -> bool:
    import hmac

    return hmac.compare_digest(given.encode(), expected.encode())


async def _bounded_body(request, limit: int) -> bytes:
    """The body, or ``Rejected(413)`` as soon as it is known to pass ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, f"request body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- running it


def requalify_runner(crm: str, leads: list[str], companies: list[str]) -> Any:
    """The coalescer's runner: the by-id Prefect flow, in this process."""
    from flows.sync import requalify_leads

    return requalify_leads(crm, leads, companies)


def build_receiver(config: ListenConfig, runner: Runner = requalify_runner, engine=None) -> Receiver:
    from leadflow import settings
    from state.schema import engine_for

    engine = engine or engine_for(settings.database_url())
    return Receiver(config, engine, Coalescer(runner, config.window_s, config.batch))


def serve(host: str, port: int, config: ListenConfig | None = None) -> None:
    """Run the receiver until interrupted; queued changes are finished (for a few seconds) on the way out."""
    import uvicorn

    _log_to_stderr()
    receiver = build_receiver(config or ListenConfig.from_env())
    endpoints = [p for p, on in ((HUBSPOT_PATH, receiver.config.hubspot_secret),
                                 (SALESFORCE_PATH, receiver.config.salesforce_org_id)) if on]
    log.info("listening on %s:%d for %s (coalescing window %.1f s)", host, port, ", ".join(endpoints) or "nothing",
             receiver.config.window_s)
    try:
        uvicorn.run(receiver.app(), host=host, port=port, log_level="warning", access_log=False)
    finally:
        receiver.coalescer.wait_idle(timeout=30)
        receiver.coalescer.close()


def _log_to_stderr() -> None:
    """The receiver's own lines (counts and event types per request, rejections) on stderr."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


@contextmanager
def running_receiver(config: ListenConfig, runner: Runner = requalify_runner, engine=None,
                     port: int = 0) -> Iterator[tuple[str, Receiver]]:
    """The receiver on 127.0.0.1 in a background thread (tests, the freshness benchmark): yields
    its base URL and the ``Receiver``; on exit the queued changes are finished, then it stops."""
    import socket

    import uvicorn

    receiver = build_receiver(config, runner, engine)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(receiver.app(), log_level="warning", access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="leadflow-listen", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the webhook receiver did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", receiver
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        receiver.coalescer.wait_idle(timeout=30)
        receiver.coalescer.close()
