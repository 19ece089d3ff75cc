"""Shared by the enrichment tests: recorded NPPES bodies, leads, a quiet NPPES provider."""

from __future__ import annotations

import asyncio
import json
from functools import lru_cache
from typing import Any

import httpx
import respx
from respx.mocks import AbstractRequestMocker

from connectors.enrichment.nppes import NppesProvider
from leadflow.canonical import Lead
from sandbox.nppes import NppesRegistry

from fixture_files import NPPES_FIXTURES, TAXONOMY_SAMPLE_CSV  # noqa: E402,F401 - tests/ is on sys.path
NPPES_TEST_URL = "https://nppes.test/api/"


class KeepAliveMocker(AbstractRequestMocker):
    """respx at the registry client's transport (``connectors.http.KeepAliveTransport``), which
    takes and returns httpx's own request and response (see ``registry_mock``)."""

    name = "leadflow-keepalive"
    targets = ["connectors.http.KeepAliveTransport"]
    target_methods = ["handle_async_request"]

    @classmethod
    def to_httpx_request(cls, **kwargs: Any) -> httpx.Request:
        return kwargs["request"]

    @classmethod
    async def from_async_httpx_response(cls, httpx_response: httpx.Response, target: Any, **kwargs: Any) -> httpx.Response:
        return httpx_response


def registry_mock() -> respx.MockRouter:
    """``with registry_mock() as nppes_mock: nppes_mock.get(NPPES_TEST_URL).mock(...)``: respx for
    the registry client's requests (routes need not all be called)."""
    return respx.mock(using=KeepAliveMocker.name, assert_all_called=False)


def nppes_body(name: str) -> dict[str, Any]:
    return json.loads((NPPES_FIXTURES / name).read_text())


def nppes_fixture_names() -> list[str]:
    return sorted(p.name for p in NPPES_FIXTURES.glob("*.json"))


def all_fixture_records() -> list[dict[str, Any]]:
    return [record for name in nppes_fixture_names() for record in nppes_body(name).get("results", [])]


@lru_cache(maxsize=1)
def fixture_registry() -> NppesRegistry:
    """The NPPES stand-in's search logic over every recorded record."""
    return NppesRegistry(all_fixture_records())


def registry_answer(request: httpx.Request) -> httpx.Response:
    """A respx side effect: the request answered by ``fixture_registry``."""
    return httpx.Response(200, json=fixture_registry().search(dict(request.url.params)))


def make_lead(crm_id: str = "1", **fields: Any) -> Lead:
    return Lead(crm="hubspot", crm_id=crm_id, **fields)


def quiet_provider(**options: Any) -> NppesProvider:
    """An NPPES provider for tests: no backoff waits, short timeouts."""
    settings = {"url": NPPES_TEST_URL, "backoff_seconds": 0.0, "attempts": 3, "timeout_seconds": 2.0}
    return NppesProvider(**{**settings, **options})


class InFlightCounter:
    """A respx side effect that holds each request 10 ms and records the most requests in flight at
    once (``peak``); it runs on the provider's event loop."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.in_flight = self.peak = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        return self.response
