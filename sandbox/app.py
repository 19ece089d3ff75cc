"""The sandbox ASGI app: one port, the three APIs at their real paths, plus ``/_sandbox/`` admin.

Every API route is an ``Endpoint`` with a stable name (``hubspot.contacts.search``,
``salesforce.query``, ``nppes.search``, ...; ``ENDPOINT_NAMES`` lists them). An endpoint counts
the request in the stats, applies the fault rules for its name, checks auth and rate limits
as the real API does, then runs the handler under the sandbox lock.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mappings import load_mapping
from sandbox.faults import FaultSet, RateLimits, RollingWindow, SpecError, parse_fault_spec, parse_rate_limits
from sandbox.http import BadJson, Ctx, Stats, json_response, loads
from sandbox.hubspot import HubSpotApi, HubSpotError, HubSpotPortal, error_response
from sandbox.salesforce import DEFAULT_DAILY, SalesforceApi, SalesforceError, SalesforceOrg, sf_error

HUBSPOT_DEFAULT_MAX = 190
HUBSPOT_DEFAULT_DAILY = 625_000


@dataclass
class Credentials:
    """What clients must present; printed by ``leadflow sandbox serve``."""

    hubspot_token: str = "sandbox-token"
    username: str = "sandbox@leadflow.test"
    password: str = "sandbox"
    security_token: str = ""
    client_id: str = "sandbox"
    client_secret: str = "sandbox"
    session_id: str = "sandbox-session"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class Sandbox:
    """All state of one sandbox: the portal, the org, the NPPES records, faults, limits, stats."""

    def __init__(self, credentials: Credentials | None = None, faults: str | list[dict[str, Any]] | None = None,
                 rate_limits: str | dict[str, Any] | None = None, fault_seed: int = 0):
        self.credentials = credentials or Credentials()
        self.lock = threading.RLock()
        self.stats = Stats()
        self.fault_seed = fault_seed
        self.faults = FaultSet(parse_fault_spec(faults, fault_seed))
        self.limits: RateLimits = parse_rate_limits(rate_limits)
        self.hubspot = HubSpotPortal()
        self.salesforce = SalesforceOrg(load_mapping("salesforce"), self.credentials.session_id)
        self.nppes_records: list[dict[str, Any]] = []
        self._nppes: Any = None
        self._hs_window = RollingWindow()
        self._hs_search_window = RollingWindow()
        self.hubspot_daily_used = 0
        self.hubspot_api = HubSpotApi(self.hubspot, self._record_errors)
        self.salesforce_api = SalesforceApi(self.salesforce, self.credentials, self._record_errors,
                                            self.faults_session_budget)
        from sandbox.notify import Notifier

        self.notifier = Notifier(self)  # change notifications, once a URL is set (sandbox/notify.py)

    # -- configuration at run time --------------------------------------------------------------
    def set_faults(self, spec: str | list[dict[str, Any]] | None, seed: int | None = None) -> None:
        with self.lock:
            if seed is not None:
                self.fault_seed = seed
            self.faults = FaultSet(parse_fault_spec(spec, self.fault_seed))

    def set_rate_limits(self, spec: str | dict[str, Any] | None) -> None:
        with self.lock:
            self.limits = parse_rate_limits(spec)

    def reset_limits(self) -> None:
        with self.lock:
            self._hs_window.clear()
            self._hs_search_window.clear()
            self.hubspot_daily_used = 0
            self.salesforce.api_calls = 0

    def faults_session_budget(self) -> int | None:
        return self.faults.session_budget()

    def _record_errors(self, endpoint: str, ids: list[str]) -> dict[str, tuple[str, str | None]]:
        return self.faults.record_errors(endpoint, ids)

    def expire_salesforce_sessions(self) -> None:
        with self.lock:
            self.salesforce.sessions.expire_all()

    def restore_salesforce_session(self) -> None:
        with self.lock:
            self.salesforce.sessions.restore_default()

    @property
    def nppes(self) -> Any:
        if self._nppes is None:
            from sandbox.nppes import NppesRegistry

            self._nppes = NppesRegistry(self.nppes_records)
        return self._nppes

    def set_nppes_records(self, records: list[dict[str, Any]]) -> None:
        self.nppes_records = records
        self._nppes = None

    # -- the ASGI app ---------------------------------------------------------------------------
    def app(self) -> Any:
        routes: list[Route] = []
        for api, table in (("hubspot", self.hubspot_api.routes()), ("salesforce", self.salesforce_api.routes())):
            for method, path, name, handler in table:
                routes.append(Route(path, Endpoint(self, api, name, handler), methods=[method]))
        routes.append(Route("/api/", Endpoint(self, "nppes", "nppes.search", self._nppes_search), methods=["GET"]))
        routes.append(Route("/api", Endpoint(self, "nppes", "nppes.search", self._nppes_search), methods=["GET"]))
        routes += admin_routes(self)
        handlers = {404: _not_found, 405: _not_found}
        return _KeepRawSend(Starlette(routes=routes, exception_handlers=handlers))

    def endpoint_names(self) -> list[str]:
        names = {name for _, _, name, _ in self.hubspot_api.routes() + self.salesforce_api.routes()}
        return sorted(names | {"nppes.search"})

    def _nppes_search(self, ctx: Ctx) -> Response:
        params = {key: value for key, value in ctx.query.items()}
        return json_response(self.nppes.search(params))

    # -- per-API checks -------------------------------------------------------------------------
    def guard(self, api: str, ctx: Ctx, status: int | None, message: str | None) -> Response | None:
        """Auth, rate limits and injected statuses, before the handler runs; None lets it run."""
        if api == "hubspot":
            return self._hubspot_guard(ctx, status, message)
        if api == "salesforce":
            return self._salesforce_guard(ctx, status, message)
        if status is not None:
            return json_response({"Errors": [{"description": message or "Service unavailable", "field": "generic",
                                              "number": str(status)}]}, status)
        return None

    def _hubspot_guard(self, ctx: Ctx, status: int | None, message: str | None) -> Response | None:
        auth = ctx.header("authorization") or ""
        if auth != f"Bearer {self.credentials.hubspot_token}":
            return error_response(HubSpotError(
                401, "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
                "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                "INVALID_AUTHENTICATION"))
        search = ctx.endpoint.endswith(".search")
        now = time.monotonic()
        limits = self.limits
        if limits.hubspot_daily is not None and self.hubspot_daily_used >= limits.hubspot_daily:
            return json_response(_rate_body("DAILY", "You have reached your daily limit."), 429,
                                 None if search else self.hubspot_headers(now))
        if search and limits.hubspot_search_max is not None:
            if self._hs_search_window.count(limits.hubspot_search_interval_ms, now) >= limits.hubspot_search_max:
                return json_response(_rate_body("SECONDLY", "You have reached your secondly limit."), 429)
        if not search:
            if limits.hubspot_max is not None and \
                    self._hs_window.count(limits.hubspot_interval_ms, now) >= limits.hubspot_max:
                return json_response(_rate_body("TEN_SECONDLY_ROLLING", "You have reached your ten_secondly_rolling limit."),
                                     429, self.hubspot_headers(now))
        if status == 429:
            return json_response(_rate_body("TEN_SECONDLY_ROLLING", message or "You have reached your ten_secondly_rolling limit."),
                                 429, None if search else self.hubspot_headers(now, remaining=0))
        (self._hs_search_window if search else self._hs_window).add(now)
        self.hubspot_daily_used += 1
        if status is not None:
            category = "RATE_LIMITS" if status == 429 else "INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR"
            body = HubSpotError(status, message or _HTTP_REASON.get(status, "error"), category)
            return error_response(body, None if search else self.hubspot_headers(now))
        return None

    def hubspot_headers(self, now: float | None = None, remaining: int | None = None) -> dict[str, str]:
        limits = self.limits
        maximum = limits.hubspot_max or HUBSPOT_DEFAULT_MAX
        daily = limits.hubspot_daily or HUBSPOT_DEFAULT_DAILY
        used = self._hs_window.count(limits.hubspot_interval_ms, now)
        return {
            "X-HubSpot-RateLimit-Daily": str(daily),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, daily - self.hubspot_daily_used)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(limits.hubspot_interval_ms),
            "X-HubSpot-RateLimit-Max": str(maximum),
            "X-HubSpot-RateLimit-Remaining": str(max(0, maximum - used) if remaining is None else remaining),
        }

    def _salesforce_guard(self, ctx: Ctx, status: int | None, message: str | None) -> Response | None:
        if ctx.endpoint in ("salesforce.oauth.token", "salesforce.soap.login", "salesforce.versions"):
            if status is not None:
                return json_response({"error": "server_error", "error_description": message or "injected"}, status)
            return None
        auth = ctx.header("authorization") or ""
        token = auth[7:] if auth.lower().startswith("bearer ") else auth[6:] if auth.lower().startswith("oauth ") else ""
        if not self.salesforce.sessions.use(token, self.faults.session_budget()):
            return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        daily = self.limits.salesforce_daily
        if daily is not None and self.salesforce.api_calls >= daily:
            return sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.",
                            headers=self.salesforce_headers())
        self.salesforce.api_calls += 1
        if status is not None:
            code, text = _SF_INJECTED.get(status, ("UNKNOWN_EXCEPTION", "An unexpected error occurred."))
            if status == 401:
                return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
            return sf_error(status, code, message or text, headers=self.salesforce_headers())
        return None

    def salesforce_headers(self) -> dict[str, str]:
        total = self.limits.salesforce_daily or DEFAULT_DAILY
        return {"Sforce-Limit-Info": f"api-usage={self.salesforce.api_calls}/{total}"}

    def run_handler(self, api: str, ctx: Ctx, handler: Callable[[Ctx], Response]) -> Response:
        if api == "hubspot":
            try:
                response = handler(ctx)
            except HubSpotError as exc:
                response = error_response(exc)
            if not ctx.endpoint.endswith(".search"):
                response.headers.update(self.hubspot_headers())
            return response
        if api == "salesforce":
            try:
                if ctx.endpoint == "salesforce.limits":
                    response = self.salesforce_api.limits(ctx, self.limits.salesforce_daily)
                else:
                    response = handler(ctx)
            except SalesforceError as exc:
                response = sf_error(exc.status, exc.code, exc.message, exc.fields)
            if ctx.endpoint not in ("salesforce.oauth.token", "salesforce.soap.login", "salesforce.versions"):
                response.headers.update(self.salesforce_headers())
            return response
        return handler(ctx)


class Endpoint:
    """One named API route as an ASGI app (so it can close the connection without answering)."""

    def __init__(self, sandbox: Sandbox, api: str, name: str, handler: Callable[[Ctx], Response]):
        self.sandbox, self.api, self.name, self.handler = sandbox, api, name, handler

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        sandbox = self.sandbox
        request = Request(scope, receive)
        body = await request.body()
        ctx = Ctx(request, self.name, body, dict(scope.get("path_params") or {}))
        started, clock = time.time(), time.perf_counter()
        with sandbox.lock:
            decision = sandbox.faults.decide(self.name, lambda: _touched_ids(ctx))
        if decision.delay:
            await asyncio.sleep(decision.delay)
            started = time.time()
        if decision.drop == "before":
            await _drop(scope)
            sandbox.stats.record(self.name, request.method, 0, started, time.perf_counter() - clock)
            return
        with sandbox.lock:
            response = sandbox.guard(self.api, ctx, decision.status, decision.message)
            if response is not None and decision.retry_after is not None:
                response.headers["Retry-After"] = f"{decision.retry_after:g}"
            if response is None:
                response = sandbox.run_handler(self.api, ctx, self.handler)
        if decision.drop == "after":
            await _drop(scope)
            sandbox.stats.record(self.name, request.method, 0, started, time.perf_counter() - clock)
            return
        await response(scope, receive, send)
        sandbox.stats.record(self.name, request.method, response.status_code, started, time.perf_counter() - clock)


def _touched_ids(ctx: Ctx) -> set[str]:
    ids = {str(v) for k, v in ctx.params.items() if k in ("objectId", "record_id", "toObjectId")}
    try:
        body = ctx.json()
    except BadJson:
        return ids
    if isinstance(body, dict):
        for key in ("inputs", "records"):
            for item in body.get(key) or []:
                if isinstance(item, dict) and (item.get("id") or item.get("Id")):
                    ids.add(str(item.get("id") or item.get("Id")))
    return ids


class _KeepRawSend:
    """Outermost ASGI layer: keeps the server's own ``send`` so an endpoint can drop the connection."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope["sandbox.raw_send"] = send
        await self.app(scope, receive, send)


async def _drop(scope: dict[str, Any]) -> None:
    """Close the TCP connection without an HTTP answer (uvicorn: the protocol cycle's transport)."""
    raw_send = scope.get("sandbox.raw_send")
    transport = getattr(getattr(raw_send, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionAbortedError("sandbox: dropped connection")
    transport.abort() if hasattr(transport, "abort") else transport.close()
    await asyncio.sleep(0)


async def _not_found(request: Request, exc: Exception) -> Response:
    """Unknown routes answer in the shape of the API their path belongs to."""
    status = getattr(exc, "status_code", 404)
    path = request.url.path
    if path.startswith("/services/"):
        return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
    if path.startswith("/crm/"):
        return error_response(HubSpotError(404 if status == 404 else status, f"Unknown route {request.method} {path}",
                                           "OBJECT_NOT_FOUND" if status == 404 else "VALIDATION_ERROR"))
    return json_response({"error": f"{status}: {request.method} {path}"}, status)


def _rate_body(policy: str, message: str) -> dict[str, Any]:
    return {"status": "error", "message": message, "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()), "policyName": policy, "requestId": str(uuid.uuid4())}


_HTTP_REASON = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error",
                502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
_SF_INJECTED = {
    403: ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
    500: ("UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include this ErrorId if you contact "
                               "support: 1234567890-12345 (-1234567890)"),
    503: ("SERVER_UNAVAILABLE", "Server temporarily unavailable."),
    429: ("REQUEST_LIMIT_EXCEEDED", "Too many requests."),
}


# ---- admin ---------------------------------------------------------------------------------------


def admin_routes(sandbox: Sandbox) -> list[Route]:
    async def stats(request: Request) -> Response:
        return json_response(sandbox.stats.snapshot())

    async def stats_reset(request: Request) -> Response:
        sandbox.stats.reset()
        return json_response(sandbox.stats.snapshot())

    async def requests(request: Request) -> Response:
        limit = int(request.query_params.get("limit") or 0) or None
        rows = sandbox.stats.recent(limit, request.query_params.get("endpoint"))
        return json_response({"requests": rows, "capacity": sandbox.stats.log.maxlen})

    async def faults_get(request: Request) -> Response:
        return json_response({"faults": sandbox.faults.to_list(), "rate_limits": sandbox.limits.to_dict(),
                              "seed": sandbox.fault_seed})

    async def faults_set(request: Request) -> Response:
        raw = await request.body()
        try:
            if raw.strip().startswith((b"{", b"[")):
                body = loads(raw)
                if isinstance(body, list):
                    body = {"faults": body}
                if "faults" in body or "seed" in body:
                    sandbox.set_faults(body.get("faults"), body.get("seed"))
                if "rate_limits" in body:
                    sandbox.set_rate_limits(body["rate_limits"])
            else:
                sandbox.set_faults(raw.decode().strip() or None)
        except (SpecError, ValueError) as exc:
            return json_response({"error": str(exc)}, 400)
        return await faults_get(request)

    async def limits_reset(request: Request) -> Response:
        sandbox.reset_limits()
        return json_response({"ok": True})

    async def state(request: Request) -> Response:
        with sandbox.lock:
            return json_response(dump_state(sandbox, request.query_params.get("api"),
                                            request.query_params.get("object"), request.query_params.get("id")))

    async def expire(request: Request) -> Response:
        sandbox.expire_salesforce_sessions()
        return json_response({"ok": True})

    async def restore(request: Request) -> Response:
        sandbox.restore_salesforce_session()
        return json_response({"ok": True})

    async def notify_get(request: Request) -> Response:
        return json_response(sandbox.notifier.describe())

    async def notify_set(request: Request) -> Response:
        body = loads(await request.body() or b"{}")
        try:
            sandbox.notifier.configure(body.get("url"), body.get("hubspot_secret"), body.get("delay_s"),
                                       body.get("retry_delays_s"))
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(sandbox.notifier.describe())

    async def health(request: Request) -> Response:
        return json_response({"ok": True, "endpoints": sandbox.endpoint_names(),
                              "credentials": sandbox.credentials.to_dict()})

    return [
        Route("/_sandbox/health", health, methods=["GET"]),
        Route("/_sandbox/stats", stats, methods=["GET"]),
        Route("/_sandbox/stats/reset", stats_reset, methods=["POST"]),
        Route("/_sandbox/requests", requests, methods=["GET"]),
        Route("/_sandbox/faults", faults_get, methods=["GET"]),
        Route("/_sandbox/faults", faults_set, methods=["POST"]),
        Route("/_sandbox/limits/reset", limits_reset, methods=["POST"]),
        Route("/_sandbox/state", state, methods=["GET"]),
        Route("/_sandbox/salesforce/expire_sessions", expire, methods=["POST"]),
        Route("/_sandbox/salesforce/restore_session", restore, methods=["POST"]),
        Route("/_sandbox/notify", notify_get, methods=["GET"]),
        Route("/_sandbox/notify", notify_set, methods=["POST"]),
    ]


def dump_state(sandbox: Sandbox, api: str | None = None, obj: str | None = None,
               record_id: str | None = None) -> dict[str, Any]:
    """Records as the APIs would render them with every stored field; filter by api/object/id."""
    out: dict[str, Any] = {}
    if api in (None, "hubspot"):
        portal = sandbox.hubspot
        hubspot: dict[str, Any] = {}
        for name, table in portal.tables.items():
            if obj not in (None, name):
                continue
            ids = [record_id] if record_id else [entry[1] for entry in table.ids_in_order()]
            rows = []
            for i in ids:
                if i not in table:
                    continue
                row = portal.render(name, i, list(table.records[i]))
                row["associations"] = {to: {k: v for k, v in portal.associated(name, i, to).items()}
                                       for (frm, to) in portal.links if frm == name and portal.associated(name, i, to)}
                rows.append(row)
            hubspot[name] = rows
        out["hubspot"] = hubspot
    if api in (None, "salesforce"):
        org = sandbox.salesforce
        salesforce: dict[str, Any] = {}
        for name, table in org.tables.items():
            if obj not in (None, name):
                continue
            ids = [record_id] if record_id else [entry[1] for entry in table.ids_in_order()]
            fields = ["Id", "CreatedDate", "LastModifiedDate", "SystemModstamp"]
            salesforce[name] = [org.render(name, i, fields + list(table.records[i]), "v59.0") for i in ids if i in table]
        out["salesforce"] = salesforce
    if api in (None, "nppes") and obj is None and record_id is None:
        out["nppes"] = sandbox.nppes_records
    return out
