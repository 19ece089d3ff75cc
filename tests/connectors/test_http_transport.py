"""connectors.http.KeepAliveTransport against a real HTTP/1.1 server on loopback: keep-alive reuse,
servers that hang up, timeouts, errors as httpx raises them."""

from __future__ import annotations

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from connectors.http import KeepAliveTransport
from connectors.retry import is_retryable

TIMEOUTS = {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.requests: list[str] = []
        self.behaviour: list[str] = []  # one entry per request, in order: what to do instead of answering
        self.lock = threading.Lock()

    def next_behaviour(self) -> str:
        with self.lock:
            return self.behaviour.pop(0) if self.behaviour else "answer"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.received = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.do_GET()

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests.append(self.path)
        behaviour = self.server.next_behaviour()
        if behaviour == "hang_up":  # read the request, close without a word
            self.close_connection = True
            return
        if behaviour == "slow":
            time.sleep(1.0)
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
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if behaviour == "answer_then_hang_up":  # a keep-alive timeout on the server's side
            self.close_connection = True


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def get(transport: KeepAliveTransport, url: str, timeouts: dict[str, float] = TIMEOUTS, **params: str) -> httpx.Response:
    request = httpx.Request("GET", url, params=params, headers={"X-Probe": "yes"}, extensions={"timeout": timeouts})
    response = transport.handle_request(request)
    response.read()
    return response


def test_one_thread_sends_every_request_over_one_connection(server: Server) -> None:
    transport = KeepAliveTransport()
    answers = [get(transport, server.url, number=str(n)).json() for n in range(5)]
    assert [a["path"] for a in answers] == [f"/api/?number={n}" for n in range(5)]
    assert server.connections == 1
    transport.close()


def test_each_thread_has_its_own_connection(server: Server) -> None:
    transport = KeepAliveTransport()
    barrier = threading.Barrier(3)

    def work() -> None:
        barrier.wait()
        for _ in range(3):
            assert get(transport, server.url).status_code == 200

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert server.connections == 3 and len(server.requests) == 9
    transport.close()


def test_an_idle_connection_the_server_closed_is_replaced_before_use(server: Server) -> None:
    transport = KeepAliveTransport()
    server.behaviour = ["answer_then_hang_up"]
    assert get(transport, server.url).status_code == 200
    time.sleep(0.2)  # the server's close reaches the client's socket
    post = httpx.Request("POST", server.url, content=b"{}", extensions={"timeout": TIMEOUTS})  # never sent twice
    assert transport.handle_request(post).status_code == 200
    assert server.connections == 2 and len(server.requests) == 2
    transport.close()


def test_a_get_whose_reused_connection_drops_is_sent_once_more_on_a_new_one(server: Server) -> None:
    transport = KeepAliveTransport()
    assert get(transport, server.url).status_code == 200
    server.behaviour = ["hang_up"]
    assert get(transport, server.url, n="2").json()["path"] == "/api/?n=2"
    assert server.connections == 2 and server.requests[1:] == ["/api/?n=2", "/api/?n=2"]
    transport.close()


def test_a_new_connection_that_drops_is_an_error_the_retry_policy_retries(server: Server) -> None:
    transport = KeepAliveTransport()
    server.behaviour = ["hang_up"]
    with pytest.raises(httpx.RemoteProtocolError) as caught:
        get(transport, server.url)
    assert is_retryable(caught.value) and len(server.requests) == 1  # not sent twice
    assert get(transport, server.url).status_code == 200  # and the transport goes on
    transport.close()


def test_connection_close_in_the_answer_closes_it(server: Server) -> None:
    transport = KeepAliveTransport()
    server.behaviour = ["close"]
    assert get(transport, server.url).status_code == 200
    assert get(transport, server.url).status_code == 200
    assert server.connections == 2
    transport.close()


def test_a_compressed_answer_reads_as_httpx_reads_it(server: Server) -> None:
    transport = KeepAliveTransport()
    server.behaviour = ["gzip"]
    response = get(transport, server.url, a="1")
    assert response.headers["content-encoding"] == "gzip" and response.json()["path"] == "/api/?a=1"
    host = server.url.split("/")[2]
    assert response.json()["probe"] == "yes" and response.json()["hosts"] == [host]  # the request's own headers, once
    transport.close()


def test_a_streamed_body_goes_out_whole_with_its_length(server: Server) -> None:
    transport = KeepAliveTransport()
    request = httpx.Request("POST", server.url, content=iter([b'{"a":', b" 1}"]), extensions={"timeout": TIMEOUTS})
    assert request.headers["transfer-encoding"] == "chunked"
    response = transport.handle_request(request)
    response.read()
    assert response.json()["body"] == '{"a": 1}'
    transport.close()


def test_an_http_1_0_answer_says_so_and_its_connection_is_not_reused(server: Server) -> None:
    transport = KeepAliveTransport()
    server.behaviour = ["http10"]
    assert get(transport, server.url).http_version == "HTTP/1.0"
    assert get(transport, server.url).http_version == "HTTP/1.1"
    assert server.connections == 2
    transport.close()


def test_a_slow_answer_is_a_read_timeout(server: Server) -> None:
    transport = KeepAliveTransport()
    server.behaviour = ["slow"]
    with pytest.raises(httpx.ReadTimeout) as caught:
        get(transport, server.url, timeouts={**TIMEOUTS, "read": 0.2})
    assert is_retryable(caught.value)
    assert get(transport, server.url).status_code == 200  # the timed-out connection was not reused
    assert server.connections == 2
    transport.close()


def test_nobody_listening_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(httpx.ConnectError) as caught:
        get(KeepAliveTransport(), f"http://127.0.0.1:{port}/api/")
    assert is_retryable(caught.value)


def test_close_closes_the_connections_and_refuses_new_requests(server: Server) -> None:
    transport = KeepAliveTransport()
    get(transport, server.url)
    transport.close()
    with pytest.raises(RuntimeError, match="closed"):
        get(transport, server.url)


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


def test_https_checks_the_certificate_with_the_given_context(server: Server, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(cert, key)
    server.socket = serving.wrap_socket(server.socket, server_side=True)
    url = server.url.replace("http://", "https://")
    trusting = ssl.create_default_context(cafile=str(cert))
    transport = KeepAliveTransport(trusting)
    assert [get(transport, url, n=str(n)).json()["path"] for n in range(2)] == ["/api/?n=0", "/api/?n=1"]
    assert server.connections == 1
    transport.close()
    with pytest.raises(httpx.ConnectError):  # the system's trust store does not know this certificate
        get(KeepAliveTransport(ssl.create_default_context()), url)
