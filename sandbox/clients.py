"""The real client libraries, configured for a running sandbox.

Salesforce recipe (what works against the sandbox, all through ``leadflow.http_session``):

- ``flow="session"``: ``Salesforce(instance_url=url, session_id=..., session=LoopbackSession())``
  (no login; a 401 raises ``SalesforceExpiredSession`` at once);
- ``flow="password"``: username + password + security token (SOAP login at
  ``https://login.salesforce.com/services/Soap/u/<v>``, rewritten to the sandbox);
- ``flow="oauth_password"``: username + password + consumer key/secret (OAuth password grant);
- ``flow="client_credentials"``: consumer key/secret with ``domain=SANDBOX_LOGIN_DOMAIN``.

The three login flows re-login by themselves on a 401 ``INVALID_SESSION_ID`` (simple-salesforce
retries up to 3 times). JWT bearer is not supported by the sandbox.

``user``: ``"integration"`` (the sandbox credentials; leadflow's user) or ``"rep"`` (a sales rep
with its own username, password and session id: a person's edits). Client credentials always run
as the integration user (the connected app's run-as user).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from leadflow.http_session import SANDBOX_LOGIN_DOMAIN, LoopbackSession

SALESFORCE_FLOWS = ("session", "password", "oauth_password", "client_credentials")
SALESFORCE_USERS = ("integration", "rep")


def salesforce_user_credentials(credentials: Any, user: str = "integration") -> Any:
    """``credentials`` for ``user`` (one of ``SALESFORCE_USERS``): the rep keeps the connected app
    (client id and secret) and has its own username, password and session id."""
    if user == "integration":
        return credentials
    if user != "rep":
        raise ValueError(f"unknown sandbox Salesforce user {user!r}; expected one of {', '.join(SALESFORCE_USERS)}")
    from sandbox.salesforce import REP, REP_SESSION_ID

    return SimpleNamespace(username=REP.username, password=REP.password, security_token=REP.security_token,
                           client_id=credentials.client_id, client_secret=credentials.client_secret,
                           session_id=REP_SESSION_ID)


def hubspot_client(url: str, token: str = "sandbox-token", **kwargs: Any) -> Any:
    """``hubspot.HubSpot`` talking to the sandbox (``kwargs``: e.g. ``retry=urllib3.Retry(...)``)."""
    from hubspot import HubSpot

    return HubSpot(access_token=token, host=url, **kwargs)


def salesforce_client(url: str, credentials: Any, flow: str = "session", version: str = "59.0",
                      session: LoopbackSession | None = None, user: str = "integration") -> Any:
    """``simple_salesforce.Salesforce`` logged in to the sandbox at ``url`` with one of ``SALESFORCE_FLOWS``,
    as ``user`` (one of ``SALESFORCE_USERS``).

    ``credentials`` has ``username, password, security_token, client_id, client_secret, session_id``."""
    from simple_salesforce import Salesforce

    session = session or LoopbackSession(url)
    c = salesforce_user_credentials(credentials, user)
    if flow == "session":
        return Salesforce(instance_url=url, session_id=c.session_id, session=session, version=version)
    if flow == "password":
        return Salesforce(username=c.username, password=c.password, security_token=c.security_token,
                          session=session, version=version)
    if flow == "oauth_password":
        return Salesforce(username=c.username, password=c.password, consumer_key=c.client_id,
                          consumer_secret=c.client_secret, session=session, version=version)
    if flow == "client_credentials":
        return Salesforce(consumer_key=c.client_id, consumer_secret=c.client_secret, domain=SANDBOX_LOGIN_DOMAIN,
                          session=session, version=version)
    raise ValueError(f"unknown Salesforce login flow {flow!r}; expected one of {', '.join(SALESFORCE_FLOWS)}")
