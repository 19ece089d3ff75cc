"""connectors.http.KeepAliveTransport against a real HTTP/1.1 server on loopback: keep-alive reuse,
servers that hang up, timeouts, answer framings, errors as httpx raises them; and the LoopThread it
runs on."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from connectors.http import KeepAliveTransport, LoopThread
from connectors.retry import is_retryable
from loopback_http import CountingHandler, LoopbackServer as Server, serving  # tests/ is on sys.path

TIMEOUTS = {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}
CUT_SHORT = {  # answers the server stops sending part of the way through, then closes
    "head_cut_short": b"HTTP/1.1 200 OK\r\nContent-Le",
    "body_cut_short": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}",
}


class Handler(CountingHandler):
    def do_POST(self) -> None:
        self.received = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.do_GET()

    def do_GET(self) -> None:
        behaviour = self.arrived()
        if behaviour == "hang_up":  # read the request, close without a word
            self.close_connection = True
            return
        if behaviour == "slow":
            time.sleep(1.0)
        if behaviour == "garbage":
            self.wfile.write(b"HELLO THERE\r\n\r\n")
            self.close_connection = True
            return
        if behaviour in CUT_SHORT:
            self.wfile.write(CUT_SHORT[behaviour])
            self.close_connection = True
            return
        if behaviour == "http10":
            self.protocol_version = "HTTP/1.0"  # this answer only; HTTP/1.0 closes the connection after it
        body = json.dumps({"path": self.path, "probe": self.headers.get("x-probe"),
                           "hosts": self.headers.get_all("host"), "body": getattr(self, "received", b"").decode()}).encode()
        headers = {"Content-Type": "application/json"}
        if behaviour == "gzip":
            body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
        if behaviour == "close":
            headers["Connection"] = "close"
            self.close_connection = True
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        if behaviour == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 7):
                piece = body[start:start + 7]
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        if behaviour == "answer_then_hang_up":  # a keep-alive timeout on the server's side
            self.close_connection = True


@pytest.fixture
def server() -> Iterator[Server]:
    with serving(Handler) as running:
        yield running


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread(name="test-http")
    yield thread
    thread.close()


class Client:
    """A transport driven from this (test) thread: each request runs on the loop thread."""

    def __init__(self, loop: LoopThread, ssl_context: ssl.SSLContext | None = None) -> None:
        self.loop = loop
        self.transport = KeepAliveTransport(ssl_context)

    def send(self, request: httpx.Request) -> httpx.Response:
        async def exchange() -> httpx.Response:
            response = await self.transport.handle_async_request(request)
            await response.aread()
            return response

        return self.loop.submit(exchange()).result(10)

    def close(self) -> None:
        self.loop.submit(self.transport.aclose()).result(10)


def get(client: Client, url: str, timeouts: dict[str, float] = TIMEOUTS, **params: str) -> httpx.Response:
    request = httpx.Request("GET", url, params=params, headers={"X-Probe": "yes"}, extensions={"timeout": timeouts})
    return client.send(request)


def test_requests_one_after_another_share_one_connection(server: Server, loop: LoopThread) -> None:
    client = Client(loop)
    answers = [get(client, server.url, number=str(n)).json() for n in range(5)]
    assert [a["path"] for a in answers] == [f"/api/?number={n}" for n in range(5)]
    assert server.connections == 1
    client.close()


def test_requests_in_flight_together_each_have_a_connection_then_reuse_them(server: Server, loop: LoopThread) -> None:
    client = Client(loop)

    async def three_at_once() -> list[int]:
        requests = [httpx.Request("GET", server.url, params={"n": str(n)}, extensions={"timeout": TIMEOUTS})
                    for n in range(3)]
        return [r.status_code for r in await asyncio.gather(*map(client.transport.handle_async_request, requests))]

    server.behaviour = ["slow", "slow", "slow"]
    assert loop.submit(three_at_once()).result(10) == [200, 200, 200]
    assert loop.submit(three_at_once()).result(10) == [200, 200, 200]
    assert server.connections == 3 and len(server.requests) == 6 and client.transport.connections == 3
    client.close()
    assert client.transport.connections == 0


def test_an_idle_connection_the_server_closed_is_replaced_before_use(server: Server, loop: LoopThread) -> None:
    client = Client(loop)
    server.behaviour = ["answer_then_hang_up"]
    assert get(client, server.url).status_code == 200
    time.sleep(0.2)  # the server's close reaches the client's socket
    post = httpx.Request("POST", server.url, content=b"{}", extensions={"timeout": TIMEOUTS})  # never sent twice
    assert client.send(post).status_code == 200
    assert server.connections == 2 and len(server.requests) == 2
    client.close()


def test_a_get_whose_reused_connection_drops_is_sent_once_more_on_a_new_one(server: Server, loop: LoopThread) -> None:
    client = Client(loop)
    assert get(client, server.url).status_code == 200
    server.behaviour = ["hang_up"]
    assert get(client, server.url, n="2").json()["path"] == "/api/?n=2"
    assert server.connections == 2 and server.requests[1:] == ["/api/?n=2", "/api/?n=2"]
    client.close()


def test_a_new_connection_that_drops_is_an_error_the_retry_policy_retries(server: Server, loop: LoopThread) -> None:
    client = Client(loop)
    server.behaviour = ["hang_up"]
    with pytest.raises(httpx.RemoteProtocolError) as caught:
        get(client, server.url)
    assert is_retryable(caught.value) and len(server.requests) == 1  # not sent twice
    assert get(client, server.url).status_code == 200  # and the transport goes on
    client.close()


def test_connection_close_in_the_answer_closes_it(server: Server, loop: LoopThread) -> None:
    client = Client(loop)
    server.behaviour = ["close"]
    assert get(client, server.url).status_code == 200
    assert get(client, server.url).status_code == 200
    assert server.connections == 2
    client.close()


def test_a_compressed_answer_reads_as_httpx_reads_it(server: Server, loop: LoopThread) -> None:
    client = Client(loop)
    server.behaviour = ["gzip"]
    response = get(client, server.url, a="1")
    assert response.headers["content-encoding"] == "gzip" and response.json()["path"] == "/api/?a=1"
    host = server.url.split("/")[2]
    assert response.json()["probe"] == "yes" and response.json()["hosts"] == [host]  # the request's own headers, once
    client.close()


def test_a_streamed_body_goes_out_whole_with_its_length(server: Server, loop: LoopThread) -> None:
    client = Client(loop)
    async def pieces():
        for piece in (b'{"a":', b" 1}"):
            yield piece

    request = httpx.Request("POST", server.url, content=pieces(), extensions={"timeout": TIMEOUTS})
    assert request.headers["transfer-encoding"] == "chunked"
    response = client.send(request)
    assert response.json()["body"] == '{"a": 1}'
    client.close()


def test_an_http_1_0_answer_says_so_and_its_connection_is_not_reused(server: Server, loop: LoopThread) -> None:
    client = Client(loop)
    server.behaviour = ["http10"]
    assert get(client, server.url).http_version == "HTTP/1.0"
    assert get(client, server.url).http_version == "HTTP/1.1"
    assert server.connections == 2
    client.close()


def test_a_slow_answer_is_a_read_timeout(server: Server, loop: LoopThread) -> None:
    client = Client(loop)
    server.behaviour = ["slow"]
    with pytest.raises(httpx.ReadTimeout) as caught:
        get(client, server.url, timeouts={**TIMEOUTS, "read": 0.2})
    assert is_retryable(caught.value)
    assert get(client, server.url).status_code == 200  # the timed-out connection was not reused
    assert server.connections == 2
    client.close()


def test_nobody_listening_is_a_connect_error(loop: LoopThread) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(httpx.ConnectError) as caught:
        get(Client(loop), f"http://127.0.0.1:{port}/api/")
    assert is_retryable(caught.value)


def test_close_closes_the_connections_and_refuses_new_requests(server: Server, loop: LoopThread) -> None:
    client = Client(loop)
    get(client, server.url)
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        get(client, server.url)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made here (the ``cryptography`` package Prefect needs)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leadflow test")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_checks_the_certificate_with_the_given_context(server: Server, loop: LoopThread, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(cert, key)
    server.socket = serving.wrap_socket(server.socket, server_side=True)
    url = server.url.replace("http://", "https://")
    trusting = ssl.create_default_context(cafile=str(cert))
    client = Client(loop, trusting)
    assert [get(client, url, n=str(n)).json()["path"] for n in range(2)] == ["/api/?n=0", "/api/?n=1"]
    assert server.connections == 1
    client.close()
    with pytest.raises(httpx.ConnectError):  # the system's trust store does not know this certificate
        get(Client(loop, ssl.create_default_context()), url)


def test_a_chunked_answer_is_read_whole_with_its_extensions_and_trailer_left_out(server: Server, loop: LoopThread) -> None:
    client = Client(loop)
    server.behaviour = ["chunked"]
    assert get(client, server.url, c="1").json()["path"] == "/api/?c=1"
    assert get(client, server.url, c="2").json()["path"] == "/api/?c=2"  # the stream stayed in step
    assert server.connections == 1
    client.close()


def test_an_answer_that_is_not_http_is_a_protocol_error(server: Server, loop: LoopThread) -> None:
    client = Client(loop)
    server.behaviour = ["garbage"]
    with pytest.raises(httpx.RemoteProtocolError, match="bad status line") as caught:
        get(client, server.url)
    assert is_retryable(caught.value)
    assert get(client, server.url).status_code == 200
    client.close()


@pytest.mark.parametrize("cut", sorted(CUT_SHORT))
def test_an_answer_cut_short_is_a_protocol_error_and_not_sent_again(server: Server, loop: LoopThread, cut: str) -> None:
    client = Client(loop)
    assert get(client, server.url).status_code == 200
    server.behaviour = [cut]
    with pytest.raises(httpx.RemoteProtocolError, match="middle of an answer"):
        get(client, server.url)  # on a reused connection, but part of an answer came: not resent
    assert len(server.requests) == 2
    client.close()


def test_the_loop_thread_runs_work_from_other_loops_and_a_cancelled_wait_cancels_the_work() -> None:
    thread = LoopThread(name="test-loop")
    started, cancelled = threading.Event(), threading.Event()

    async def work() -> str:
        assert threading.current_thread().name == "test-loop"
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    async def waiter() -> None:
        task = asyncio.ensure_future(thread.run(work()))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def answer() -> str:
        return threading.current_thread().name

    assert asyncio.run(thread.run(answer())) == "test-loop"
    asyncio.run(waiter())
    assert cancelled.wait(5)
    thread.close()
    thread.close()  # twice is fine
    assert thread.loop.is_closed()
