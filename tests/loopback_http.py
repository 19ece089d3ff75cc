"""A real HTTP/1.1 server on loopback for the transport tests: it counts connections and requests,
and a test can queue what it does instead of answering (``behaviour``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.connections = 0
        self.requests: list[str] = []
        self.behaviour: list[str] = []  # one entry per request, in order: what to do instead of answering
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/"


class CountingHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1; counts each connection; ``arrived`` records a request and returns the
    behaviour queued for it ("answer" when none)."""

    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, *args: object) -> None:
        pass

    def arrived(self) -> str:
        with self.server.lock:
            self.server.requests.append(self.path)
            return self.server.behaviour.pop(0) if self.server.behaviour else "answer"


@contextmanager
def serving(handler: type[CountingHandler]) -> Iterator[LoopbackServer]:
    server = LoopbackServer(handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
