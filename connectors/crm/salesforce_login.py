"""Where leadflow logs in to Salesforce (``SALESFORCE_DOMAIN``) and the two login requests.

simple-salesforce builds every login URL as ``https://{domain}.salesforce.com``: it cannot reach a
login host outside ``salesforce.com``, another scheme or a port. So leadflow resolves the setting
to a base URL itself and sends the two documented login requests with simple-salesforce's own
functions, then hands the session id and instance to ``Salesforce(session_id=..., instance=...)``:

- username-password: the partner SOAP ``login`` call, ``POST {base}/services/Soap/u/{version}``
  (``SalesforceLogin(..., scratch_url=base)``, the envelope simple-salesforce sends; the answer's
  ``sessionId`` and ``serverUrl``; a refusal is a SOAP fault with ``sf:exceptionCode``, e.g.
  ``INVALID_LOGIN``);
- client credentials: ``POST {base}/services/oauth2/token`` with ``grant_type=client_credentials``
  and the consumer key/secret as HTTP Basic (``simple_salesforce.login.token_login``, as
  ``SalesforceLogin`` does it; the answer's ``access_token`` and ``instance_url``; a refusal is
  ``{"error": "invalid_client" | "invalid_grant" | ..., "error_description"}``). Salesforce
  serves this flow only on a My Domain (``login``/``test`` answer ``invalid_grant: request not
  supported on this domain``), so those two are refused here before any request.

``SALESFORCE_DOMAIN`` values: ``login`` (production), ``test`` (sandboxes), a My Domain host
(``acme.my.salesforce.com``, ``acme--uat.sandbox.my.salesforce.com``), simple-salesforce's short
form (``acme.my``), or a full URL (``https://acme.my.salesforce.com``, ``http://127.0.0.1:8080``
for the built-in sandbox). Unset: the instance URL's host when it is a ``salesforce.com`` host,
else the instance URL itself (a My Domain answers logins, and so does the sandbox).
"""

from __future__ import annotations

import base64
import re
from urllib.parse import urlsplit

import requests
from simple_salesforce import SalesforceLogin
from simple_salesforce.exceptions import SalesforceAuthenticationFailed
from simple_salesforce.login import token_login

STANDARD_DOMAINS = ("login", "test")
HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
SHORT_DOMAIN = re.compile(r"^[A-Za-z0-9-]+(?:\.sandbox)?\.my$")  # simple-salesforce's "acme.my"


class SalesforceDomainError(ValueError):
    """``SALESFORCE_DOMAIN`` (or ``SalesforceConfig.domain``) is not a login host or URL."""


class SalesforceLoginRefused(PermissionError):
    """Salesforce answered the login with a refusal; the message names the user (or client id) and
    Salesforce's code, never a password or secret."""

    def __init__(self, who: str, code: str):
        super().__init__(f"Salesforce refused the login for {who}: {code}")
        self.code = code


def login_base_url(domain: str | None, instance_url: str) -> str:
    """The base URL the login endpoints hang off, e.g. ``https://login.salesforce.com``."""
    raw = (domain or "").strip().rstrip("/")
    if not raw:
        parts = urlsplit(instance_url)
        host = (parts.hostname or "").lower()
        if host.endswith(".salesforce.com"):
            return f"https://{host}"
        return instance_url.rstrip("/")
    if "://" in raw:
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise SalesforceDomainError(f"SALESFORCE_DOMAIN={raw!r}: expected login, test, a My Domain host "
                                        "or a URL such as https://acme.my.salesforce.com")
        return f"{parts.scheme}://{parts.netloc}"
    if raw in STANDARD_DOMAINS or SHORT_DOMAIN.match(raw):
        return f"https://{raw}.salesforce.com"
    if HOST.match(raw) and "." in raw:
        return f"https://{raw.lower()}"
    raise SalesforceDomainError(f"SALESFORCE_DOMAIN={raw!r}: expected login, test, a My Domain host "
                                "(acme.my.salesforce.com) or a URL")


def is_standard_login(base_url: str) -> bool:
    return urlsplit(base_url).hostname in {f"{d}.salesforce.com" for d in STANDARD_DOMAINS}


def password_login(base_url: str, username: str, password: str, security_token: str, version: str,
                   session: requests.Session) -> tuple[str, str]:
    """``(session_id, instance host[:port])`` from the SOAP login at ``base_url``."""
    try:
        return SalesforceLogin(username=username, password=password, security_token=security_token,
                               sf_version=version, session=session, scratch_url=base_url)
    except SalesforceAuthenticationFailed as exc:
        raise SalesforceLoginRefused(f"user {username}", _code(exc)) from None


def client_credentials_login(base_url: str, client_id: str, client_secret: str,
                             session: requests.Session) -> tuple[str, str]:
    """``(access_token, instance host[:port])`` from the OAuth 2.0 client-credentials grant."""
    if is_standard_login(base_url):
        raise SalesforceDomainError(
            f"client-credentials login needs the org's My Domain, not {urlsplit(base_url).hostname}: "
            "set SALESFORCE_DOMAIN (e.g. acme.my.salesforce.com)")
    basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    try:
        return token_login(f"{base_url}/services/oauth2/token", {"grant_type": "client_credentials"},
                           urlsplit(base_url).netloc, client_id, {"Authorization": f"Basic {basic}"}, None, session)
    except SalesforceAuthenticationFailed as exc:
        raise SalesforceLoginRefused(f"client id {client_id}", _code(exc)) from None


def _code(exc: SalesforceAuthenticationFailed) -> str:
    code = str(exc.code) if exc.code is not None else "refused"
    return code if re.fullmatch(r"[A-Za-z0-9_ .-]{1,80}", code) else "refused"
