"""A lean keep-alive transport for httpx: HTTP/1.1 over ``http.client``, one connection per thread.

httpx's own ``HTTPTransport`` (httpcore's pool and h11's parser, both pure Python) cost about
0.2 ms of CPU per request beyond the request itself on loopback; a provider that sends one small
GET per organization (the NPPES registry) pays that thousands of times a run. This transport keeps
httpx's interface (``httpx.Request`` in, ``httpx.Response`` out, httpx's exceptions, so the one
retry policy and ``response.json()`` are unchanged) and sends each request over the calling
thread's own keep-alive connection to the origin, through the standard library's ``http.client``
(no connection pool to scan, no second HTTP state machine). Callers that run requests from a fixed pool of worker threads (the registry
client's) get a fixed number of connections, one per worker.

What it does not do: HTTP/2, proxies, connection limits across threads. What it does:
- the request's ``timeout`` extension (connect, then read and write on the socket);
- a streamed request body is read whole and sent with its length (no chunked encoding);
- TLS with the given ``ssl.SSLContext`` (certificate and host checks on by default);
- an idle connection the server closed is noticed before use (the socket reads as ready), and a
  GET or HEAD whose reused connection drops before an answer is sent again once on a new one;
- the answer's ``Connection: close`` (or HTTP/1.0) closes the connection after reading (``http.client``);
- errors as httpx raises them: ``ConnectError``/``ConnectTimeout``, ``ReadTimeout``,
  ``WriteTimeout``, ``ReadError``, ``RemoteProtocolError`` (all ``httpx.TransportError``).
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from typing import Any

import httpx

_RESENDABLE = frozenset({"GET", "HEAD"})
_DROPPED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
Origin = tuple[str, str, int]


class KeepAliveTransport(httpx.BaseTransport):
    """httpx's transport interface over one ``http.client`` keep-alive connection per thread and origin."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        origin = (request.url.scheme, request.url.host, request.url.port or _default_port(request.url.scheme))
        timeouts = request.extensions.get("timeout") or {}
        conn, reused = self._connection(origin, timeouts, request)
        try:
            answer = self._exchange(conn, request, timeouts)
        except _DROPPED as exc:
            self._discard(origin, conn)
            if not (reused and request.method in _RESENDABLE):
                raise _disconnected(request, exc) from exc
            conn, _ = self._connection(origin, timeouts, request)  # the server closed an idle connection
            try:
                answer = self._exchange(conn, request, timeouts)
            except _DROPPED as again:
                self._discard(origin, conn)
                raise _disconnected(request, again) from again
            except BaseException:
                self._discard(origin, conn)
                raise
        except BaseException:
            self._discard(origin, conn)
            raise
        status, headers, body, version = answer
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body), request=request,
                              extensions={"http_version": version})

    def close(self) -> None:
        with self._lock:
            self._closed, connections = True, list(self._open)
            self._open.clear()
        for conn in connections:
            conn.close()

    # -- connections -------------------------------------------------------------------------

    def _connection(self, origin: Origin, timeouts: dict[str, Any],
                    request: httpx.Request) -> tuple[http.client.HTTPConnection, bool]:
        """(this thread's connection to ``origin``, whether it was used before)."""
        mine: dict[Origin, http.client.HTTPConnection] = self._local.__dict__.setdefault("connections", {})
        conn = mine.get(origin)
        if conn is not None and conn.sock is not None and not _readable(conn.sock):
            return conn, True
        if conn is not None:  # closed, or the server hung up while it was idle
            self._discard(origin, conn)
        with self._lock:
            if self._closed:
                raise RuntimeError("the transport is closed")
        conn = self._connect(origin, timeouts, request)
        mine[origin] = conn
        with self._lock:
            self._open.add(conn)
        return conn, False

    def _connect(self, origin: Origin, timeouts: dict[str, Any], request: httpx.Request) -> http.client.HTTPConnection:
        scheme, host, port = origin
        connect_timeout = timeouts.get("connect")
        if scheme == "https":
            context = self._ssl_context or ssl.create_default_context()
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=connect_timeout,
                                                                            context=context)
        elif scheme == "http":
            conn = http.client.HTTPConnection(host, port, timeout=connect_timeout)
        else:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        try:
            conn.connect()
        except socket.timeout as exc:
            conn.close()
            raise httpx.ConnectTimeout(f"connect to {host}:{port} timed out", request=request) from exc
        except (OSError, ssl.SSLError) as exc:
            conn.close()
            raise httpx.ConnectError(f"connect to {host}:{port} failed: {exc.__class__.__name__}", request=request) from exc
        return conn

    def _discard(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        mine = self._local.__dict__.get("connections", {})
        if mine.get(origin) is conn:
            del mine[origin]
        with self._lock:
            self._open.discard(conn)
        conn.close()

    # -- one request and its answer --------------------------------------------------------------

    @staticmethod
    def _exchange(conn: http.client.HTTPConnection, request: httpx.Request,
                  timeouts: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes, bytes]:
        body = request.read() or None
        headers = request.headers.raw
        if "transfer-encoding" in request.headers:  # a streamed body, read whole above: send its length
            headers = [(k, v) for k, v in headers if k.lower() not in (b"transfer-encoding", b"content-length")]
            headers.append((b"Content-Length", str(len(body or b"")).encode()))
        assert conn.sock is not None
        try:
            conn.sock.settimeout(timeouts.get("write"))
            conn.putrequest(request.method, request.url.raw_path.decode("ascii"), skip_host=True,
                            skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders(body)
        except socket.timeout as exc:
            raise httpx.WriteTimeout("sending the request timed out", request=request) from exc
        try:
            conn.sock.settimeout(timeouts.get("read"))
            answer = conn.getresponse()
            content = answer.read()
        except socket.timeout as exc:
            raise httpx.ReadTimeout("reading the answer timed out", request=request) from exc
        except _DROPPED:
            raise
        except http.client.HTTPException as exc:
            raise httpx.RemoteProtocolError(f"malformed answer: {exc.__class__.__name__}", request=request) from exc
        except OSError as exc:
            raise httpx.ReadError(f"reading the answer failed: {exc.__class__.__name__}", request=request) from exc
        return answer.status, answer.getheaders(), content, b"HTTP/1.0" if answer.version == 10 else b"HTTP/1.1"


def _readable(sock: socket.socket) -> bool:
    """An idle keep-alive socket with something to read: the server closed it (or sent junk)."""
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _disconnected(request: httpx.Request, exc: BaseException) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(f"server disconnected without an answer ({exc.__class__.__name__})",
                                     request=request)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80
