"""A ``requests.Session`` that lets https-only clients (simple-salesforce) reach a loopback server.

simple-salesforce rebuilds every URL as ``https://{instance}/...`` and logs in at
``https://{domain}.salesforce.com/...``. ``LoopbackSession`` rewrites, at send time:

- ``https://127.0.0.1:P/...`` (or ``localhost``, ``[::1]``) to ``http://127.0.0.1:P/...``;
- ``https://<login host>/...`` for the login hosts it was given to ``<target>/...``.

It only ever rewrites to loopback: a non-loopback ``target`` is refused, and URLs for other hosts
pass through untouched, so a production session built with ``target=None`` behaves like a plain
``requests.Session``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

SANDBOX_LOGIN_DOMAIN = "leadflow-sandbox.my"
"""A simple-salesforce ``domain`` for the sandbox (client credentials refuse ``login``/``test``)."""

DEFAULT_LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com", f"{SANDBOX_LOGIN_DOMAIN}.salesforce.com")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LoopbackSession(requests.Session):
    """See the module docstring. ``target`` is e.g. ``http://127.0.0.1:8765``."""

    def __init__(self, target: str | None = None, login_hosts: Iterable[str] = DEFAULT_LOGIN_HOSTS):
        super().__init__()
        self.target = None
        if target is not None:
            parts = urlsplit(target)
            if parts.scheme not in ("http", "https") or not is_loopback(parts.hostname):
                raise ValueError(f"LoopbackSession only rewrites to loopback targets, not {target!r}")
            self.target = parts
        self.login_hosts = frozenset(host.lower() for host in login_hosts) if target else frozenset()

    def rewrite(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme != "https":
            return url
        host = (parts.hostname or "").lower()
        if self.target is not None and host in self.login_hosts:
            return urlunsplit((self.target.scheme, self.target.netloc, parts.path, parts.query, parts.fragment))
        if is_loopback(host):
            return urlunsplit(("http", parts.netloc, parts.path, parts.query, parts.fragment))
        return url

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        text = url.decode() if isinstance(url, bytes) else url
        return super().request(method, self.rewrite(text), *args, **kwargs)
