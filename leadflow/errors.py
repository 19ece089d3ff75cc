"""One error style for the whole ``leadflow`` command: one line, a documented exit code, and the
traceback only with ``--debug`` (or ``LEADFLOW_DEBUG=1``).

``describe(exc)`` maps an exception to ``(exit code, line)`` through ``RULES``, one table, first
match wins. Prefect re-raises a flow's or task's exception, and clients wrap theirs
(``requests.ConnectionError`` around ``urllib3.MaxRetryError``): the exception and its causes are
all tried, so the original type is what is classified. Every line goes through ``redact``: no
credential (token, password, session id, secret) leaves this module, whatever a client put in its
message. ``LeadflowGroup`` is the Typer group that applies it around every command.

Exit codes (README.md "Exit codes" and docs/operations.md list the same table):

==== ========================================================================================
0    success
1    failed: an unexpected error (the line says to run with ``--debug``), or a run whose every
     lead failed
2    bad input: a command-line option, a mapping or model file (file and key), a missing or
     malformed setting
3    partial: some leads failed or were quarantined; they are retried by the next run
4    stopped early: the API quota or the run's budget ran out; the next run resumes
5    another run holds the CRM's lock
6    the CRM refused the credential (HubSpot 401/403, Salesforce INVALID_LOGIN / INVALID_SESSION_ID)
7    a host could not be reached (CRM, NPPES, state store)
8    Prefect's temporary server did not start within its limit
==== ========================================================================================
"""

from __future__ import annotations

import os
import re
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import typer
from typer._click import exceptions as click_errors  # typer 0.29 vendors click: its own exception types
from typer.core import TyperGroup

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3
EXIT_STOPPED_EARLY = 4
EXIT_LOCKED = 5
EXIT_CREDENTIAL_REFUSED = 6
EXIT_UNREACHABLE = 7
EXIT_PREFECT_START = 8

OUTCOME_EXIT_CODES = {"success": EXIT_OK, "partial": EXIT_PARTIAL, "stopped_early": EXIT_STOPPED_EARLY,
                      "failed": EXIT_FAILED}
MAX_LINE = 400

# ---------------------------------------------------------------------------------------- redaction

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|SESSION|API_KEY|AUTH", re.IGNORECASE)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=!-]+"), r"\1 ***"),
    (re.compile(r"(?i)\b(authorization|x-api-key|cookie|set-cookie)(['\"]?\s*[:=]\s*['\"]?)[^'\",}\n]+"), r"\1\2***"),
    (re.compile(r"(?i)([?&;](?:[a-z_]*(?:token|key|secret|password|sid|session|code|signature|sig)[a-z_]*))=[^&#\s'\"]+"),
     r"\1=***"),
    (re.compile(r"(?i)(<(?:sf:)?(?:sessionId|password|client_secret)>)[^<]*"), r"\1***"),
    (re.compile(r"(?i)(['\"]?(?:access_token|refresh_token|client_secret|password|session_id|sessionid)['\"]?\s*[:=]\s*['\"]?)"
                r"[^'\"&,}\s]+"), r"\1***"),
    (re.compile(r"(://[^/\s:@]+:)[^@/\s]+@"), r"\1***@"),
)


def secret_values(environ: Any = os.environ) -> list[str]:
    """Values of environment variables whose names say they hold a secret (4+ characters)."""
    return sorted({v for k, v in environ.items() if SECRET_NAME.search(k) and len(v) >= 4}, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every known secret value and every credential-shaped part replaced by ``***``."""
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, "***")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def one_line(text: str) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= MAX_LINE else flat[: MAX_LINE - 1] + "…"


# ---------------------------------------------------------------------------------- classification

@dataclass(frozen=True)
class Rule:
    code: int
    matches: Callable[[BaseException], bool]
    line: Callable[[BaseException], str]


def _named(*names: str) -> Callable[[BaseException], bool]:
    return lambda exc: any(cls.__name__ in names for cls in type(exc).__mro__)


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _crm_of(exc: BaseException) -> str | None:
    module = type(exc).__module__ or ""
    if module.startswith("hubspot"):
        return "hubspot"
    if module.startswith("simple_salesforce") or type(exc).__name__.startswith("Salesforce"):
        return "salesforce"
    return None


def _codes(exc: BaseException) -> list[str]:
    from connectors.retry import error_codes

    body = getattr(exc, "body", None) if hasattr(exc, "body") else getattr(exc, "content", None)
    codes = error_codes(body)
    code = getattr(exc, "code", None)
    return codes + ([str(code)] if code and not isinstance(code, int) else [])


def _credential_refused(exc: BaseException) -> bool:
    crm, status = _crm_of(exc), _status(exc)
    if crm == "hubspot":
        return status in (401, 403)
    if crm == "salesforce":
        codes = _codes(exc)
        if "REQUEST_LIMIT_EXCEEDED" in codes:
            return False
        return (type(exc).__name__ in ("SalesforceAuthenticationFailed", "SalesforceExpiredSession")
                or status == 401 or any(c in ("INVALID_LOGIN", "INVALID_SESSION_ID", "invalid_grant",
                                              "invalid_client", "invalid_client_id") for c in codes))
    return False


def _salesforce_credentials(exc: BaseException) -> str:
    env = os.environ
    if type(exc).__name__ == "SalesforceExpiredSession" or "INVALID_SESSION_ID" in _codes(exc):
        if env.get("SALESFORCE_SESSION_ID"):
            return "SALESFORCE_SESSION_ID"
    if env.get("SALESFORCE_USERNAME"):
        return "SALESFORCE_USERNAME / SALESFORCE_PASSWORD / SALESFORCE_SECURITY_TOKEN"
    if env.get("SALESFORCE_CLIENT_ID"):
        return "SALESFORCE_CLIENT_ID / SALESFORCE_CLIENT_SECRET"
    return "SALESFORCE_SESSION_ID"


def _refused_line(exc: BaseException) -> str:
    crm = _crm_of(exc)
    status = _status(exc)
    codes = ",".join(dict.fromkeys(_codes(exc)))
    detail = " ".join(p for p in (str(status) if status else "", codes) if p)
    if crm == "hubspot":
        host = os.environ.get("HUBSPOT_HOST", "https://api.hubapi.com")
        what = "HUBSPOT_ACCESS_TOKEN"
    else:
        host = os.environ.get("SALESFORCE_INSTANCE_URL", "the Salesforce login host")
        what = _salesforce_credentials(exc)
    return f"{crm}: {host} refused the credential {what}" + (f" ({detail})" if detail else "")


_NETWORK_NAMES = ("ConnectionError", "ConnectError", "ConnectTimeout", "NewConnectionError", "MaxRetryError",
                  "NameResolutionError", "ConnectionRefusedError", "gaierror", "ConnectTimeoutError")


def _unreachable(exc: BaseException) -> bool:
    if _named(*_NETWORK_NAMES)(exc):
        return True
    return _named("OperationalError")(exc) and "connect" in str(exc).lower()


def _host_of(exc: BaseException) -> str | None:
    """host:port of the connection that failed, from whichever layer knows it."""
    for candidate in _chain(exc):
        pool = getattr(candidate, "pool", None) or getattr(candidate, "conn", None)
        if pool is not None and getattr(pool, "host", None):
            port = getattr(pool, "port", None)
            return f"{pool.host}:{port}" if port else str(pool.host)
        request = getattr(candidate, "request", None)
        url = getattr(request, "url", None) if request is not None else None
        if url:
            parsed = urlparse(str(url))
            if parsed.hostname:
                return f"{parsed.hostname}:{parsed.port}" if parsed.port else parsed.hostname
    match = re.search(r"host='([^']+)', port=(\d+)", str(exc))
    return f"{match.group(1)}:{match.group(2)}" if match else None


HOST_SETTINGS = ("HUBSPOT_HOST", "SALESFORCE_INSTANCE_URL", "LEADFLOW_NPPES_URL")


def _setting_for(host: str | None) -> str | None:
    if not host:
        return None
    for name in HOST_SETTINGS:
        parsed = urlparse(os.environ.get(name, ""))
        if parsed.hostname and host.split(":")[0] == parsed.hostname and (
                parsed.port is None or host.endswith(f":{parsed.port}")):
            return name
    return None


def _unreachable_line(exc: BaseException) -> str:
    if _named("OperationalError")(exc):
        return "cannot reach the state store (LEADFLOW_DATABASE_URL)"
    host = _host_of(exc)
    setting = _setting_for(host)
    reason = "connection refused" if "refused" in str(exc).lower() else "no connection"
    return (f"cannot reach {host or 'the host'} ({reason})"
            + (f": check {setting}" if setting else ""))


def _bad_prefect_setting(exc: BaseException) -> bool:
    return _named("ValidationError")(exc) and str(getattr(exc, "title", "")).endswith("Settings")


def _prefect_setting_line(exc: BaseException) -> str:
    first = exc.errors()[0]  # type: ignore[attr-defined]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"a Prefect setting is invalid: {exc.title}.{where}: {first.get('msg')}"  # type: ignore[attr-defined]


def _quota_decision(exc: BaseException) -> BaseException | None:
    """A CRM error that means the daily quota is spent (``connectors.retry.classify``), as QuotaExhausted."""
    from connectors.retry import Action, QuotaExhausted, classify

    if _status(exc) is None:
        return None
    decision = classify(exc)
    return QuotaExhausted(decision.reason) if decision.action is Action.QUOTA else None


def _quota_line(exc: BaseException | None) -> str:
    return f"stopped early: {exc} (the next run resumes)"


def _unexpected_line(exc: BaseException) -> str:
    from connectors.retry import error_message

    text = error_message(exc) if _status(exc) else f"{type(exc).__name__}: {exc}"
    if _status(exc) and "PROPERTY_DOESNT_EXIST" in _codes(exc):
        text += " (leadflow crm setup --crm hubspot creates leadflow's properties)"
    return f"{text} (run with --debug for the traceback)"


RULES: tuple[Rule, ...] = (
    Rule(EXIT_BAD_INPUT, _named("MappingError", "ModelFileError"), str),
    Rule(EXIT_BAD_INPUT, _named("MissingCredential", "SalesforceConfigError", "PrefectSettingError", "SettingError"),
         str),
    Rule(EXIT_BAD_INPUT, _bad_prefect_setting, _prefect_setting_line),
    Rule(EXIT_PREFECT_START, _named("PrefectStartTimeout"), str),
    Rule(EXIT_PREFECT_START, lambda e: "Timed out while attempting to connect to ephemeral Prefect API" in str(e),
         lambda e: str(_prefect_timeout())),
    Rule(EXIT_LOCKED, _named("RunLocked"), str),
    Rule(EXIT_STOPPED_EARLY, _named("QuotaExhausted", "BudgetExhausted"), _quota_line),
    Rule(EXIT_STOPPED_EARLY, lambda e: _quota_decision(e) is not None, lambda e: _quota_line(_quota_decision(e))),
    Rule(EXIT_CREDENTIAL_REFUSED, _credential_refused, _refused_line),
    Rule(EXIT_UNREACHABLE, _unreachable, _unreachable_line),
)


def _prefect_timeout() -> BaseException:
    from leadflow.prefect_env import PrefectStartTimeout, startup_timeout

    return PrefectStartTimeout(startup_timeout())


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts, then the members of exception groups; each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += list(getattr(current, "exceptions", None) or [])
        todo += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one redacted line for ``exc``."""
    for rule in RULES:
        for candidate in _chain(exc):
            try:
                if rule.matches(candidate):
                    return rule.code, one_line(redact(rule.line(candidate)))
            except Exception:  # noqa: BLE001 - a classifier must never hide the original error
                continue
    return EXIT_FAILED, one_line(redact(_unexpected_line(exc)))


# ------------------------------------------------------------------------------------ the Typer group

def debug_enabled(ctx: Any = None) -> bool:
    from leadflow.prefect_env import debug_requested

    if ctx is None:
        from typer._click.globals import get_current_context

        ctx = get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    if root is not None and root.params.get("debug"):
        return True
    return debug_requested(argv=[])


def report(exc: BaseException, debug: bool) -> int:
    """Print the line (after the traceback when ``debug``) on stderr; the exit code."""
    code, line = describe(exc)
    if debug:
        typer.echo(redact("".join(traceback.format_exception(exc))), err=True)
    typer.echo(f"error: {line}", err=True)
    return code


class LeadflowGroup(TyperGroup):
    """The top-level group: every command's exception becomes one line and its exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except click_errors.UsageError as exc:
            if debug_enabled(ctx):
                typer.echo(redact("".join(traceback.format_exception(exc))), err=True)
            hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            typer.echo(f"error: {one_line(redact(exc.format_message()))}{hint}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except click_errors.ClickException:
            raise
        except Exception as exc:  # noqa: BLE001 - this is the one place errors are reported
            raise typer.Exit(report(exc, debug_enabled(ctx))) from None
