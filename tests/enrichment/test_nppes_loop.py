"""The NPPES provider's own event loop thread against a real HTTP server on loopback: batches from
different loops (one per page, as flows enrich them) share its one loop and its connections, and the
thread ends with the provider."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
from collections.abc import Iterator

import pytest
from enrichment_support import make_lead, quiet_provider
from loopback_http import CountingHandler, LoopbackServer, serving  # tests/ is on sys.path

EMPTY = json.dumps({"result_count": 0, "results": []}).encode()


class Registry(CountingHandler):
    def do_GET(self) -> None:
        self.arrived()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(EMPTY)))
        self.end_headers()
        self.wfile.write(EMPTY)


@pytest.fixture
def registry() -> Iterator[LoopbackServer]:
    with serving(Registry) as running:
        yield running


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nppes"]


def test_batches_from_two_loops_share_the_providers_loop_and_connection_which_end_with_it(registry: LoopbackServer) -> None:
    before = len(_loop_threads())
    provider = quiet_provider(url=registry.url, concurrency=1)
    page_one = [provider.lookup_keys(make_lead(npi=f"100000000{i}"))[0] for i in range(3)]
    page_two = [provider.lookup_keys(make_lead(npi=f"110000000{i}"))[0] for i in range(3)]
    first = asyncio.run(provider.fetch_many(page_one))  # each asyncio.run: a page's own loop
    second = asyncio.run(provider.fetch_many(page_two))
    assert [r.status for r in (*first.values(), *second.values())] == ["miss"] * 6
    assert len(registry.requests) == 6 and registry.connections == 1  # kept alive across both pages' loops
    assert len(_loop_threads()) == before + 1
    del provider
    gc.collect()
    assert len(_loop_threads()) == before
