"""A lean keep-alive transport for httpx over asyncio streams, and the event loop thread it runs on.

A provider that sends one small GET per organization (the NPPES registry) pays the per-request cost
of its HTTP client thousands of times a run. Measured on this project's 2-vCPU machine against the
sandbox's registry (2,000 small GETs, 8 in flight, CPU of the client process):
httpx's own transports (httpcore's pool, h11's parser, both pure Python) cost more than a
synchronous ``http.client`` connection per worker thread, and that, driven from an event loop
through a thread pool, cost about 0.6 ms per request, half of it handing each request to a worker
thread and its answer back. This transport keeps httpx's interface (``httpx.Request`` in,
``httpx.Response`` out, httpx's exceptions, so the one retry policy and ``response.json()`` are
unchanged) and sends each request from the event loop itself over a kept-alive asyncio stream:
about 0.2 ms per request, httpx's request and response objects included.

``KeepAliveTransport`` belongs to one event loop (its connections are that loop's streams). A
caller with several loops, one per batch, runs every request on one long-lived loop in its own
thread (``LoopThread``) and hands it a whole batch at a time.

What it does not do: HTTP/2, proxies, ``Expect: 100-continue``, compression (it sends no
``Accept-Encoding``; httpx decodes a compressed answer it gets anyway). What it does:
- the request's ``timeout`` extension: ``connect``, ``write`` (the request sent) and ``read`` (the
  whole answer);
- a streamed request body is read whole and sent with its length (no chunked encoding);
- answers with a ``Content-Length``, with ``Transfer-Encoding: chunked``, or read to the close;
- TLS with the given ``ssl.SSLContext`` (certificate and host checks on by default);
- an idle connection the server closed is not used again, and a GET or HEAD whose reused
  connection drops before the first byte of an answer is sent again once on a new one;
- ``Connection: close`` or an HTTP/1.0 answer closes the connection after reading it;
- errors as httpx raises them: ``ConnectError``/``ConnectTimeout``, ``ReadTimeout``,
  ``WriteTimeout``, ``ReadError``, ``WriteError``, ``RemoteProtocolError`` (all
  ``httpx.TransportError``), with the host and the exception's class, never the URL's query.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
Origin = tuple[str, str, int]

_RESENDABLE = frozenset({"GET", "HEAD"})
_NO_BODY_STATUS = frozenset({204, 304})
_HEAD_LIMIT = 64 * 1024  # status line and headers; a longer head is a protocol error
_VERSIONS = {b"HTTP/1.1": "HTTP/1.1", b"HTTP/1.0": "HTTP/1.0"}
_DROPS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class _Dropped(Exception):
    """The connection closed before the first byte of an answer."""


@dataclass(eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    origin: Origin

    @property
    def usable(self) -> bool:
        """Still open on both sides: the server has not closed it while it was idle."""
        return not (self.reader.at_eof() or self.writer.is_closing() or self.reader.exception() is not None)

    def close(self) -> None:
        self.writer.close()


@dataclass
class _Answer:
    status: int
    version: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """httpx's async transport interface over kept-alive asyncio streams, per origin, for one loop."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._closed = False

    @property
    def connections(self) -> int:
        """Connections open now (idle or in use)."""
        return len(self._open)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = (request.url.scheme, request.url.host, request.url.port or _default_port(request.url.scheme))
        timeouts = request.extensions.get("timeout") or {}
        payload = _request_bytes(request, await request.aread())
        conn, reused = await self._connection(origin, timeouts, request)
        try:
            answer = await _exchange(conn, payload, request, timeouts)
        except _Dropped as dropped:
            self._discard(conn)
            if not (reused and request.method in _RESENDABLE):
                raise _disconnected(request, dropped) from dropped
            conn = await self._connect(origin, timeouts, request)  # the server closed an idle connection
            try:
                answer = await _exchange(conn, payload, request, timeouts)
            except _Dropped as again:
                self._discard(conn)
                raise _disconnected(request, again) from again
            except BaseException:
                self._discard(conn)
                raise
        except BaseException:
            self._discard(conn)  # a timeout or cancellation leaves the connection's state unknown
            raise
        if answer.keep_alive and not self._closed:
            self._idle.setdefault(origin, []).append(conn)
        else:
            self._discard(conn)
        return httpx.Response(answer.status, headers=answer.headers, stream=httpx.ByteStream(answer.body),
                              request=request, extensions={"http_version": answer.version.encode()})

    async def aclose(self) -> None:
        self._closed = True
        connections, self._open, self._idle = list(self._open), set(), {}
        for conn in connections:
            conn.close()

    # -- connections -------------------------------------------------------------------------

    async def _connection(self, origin: Origin, timeouts: dict[str, Any],
                          request: httpx.Request) -> tuple[_Connection, bool]:
        """(a connection to ``origin``, whether it was used before): the most recently idle usable one."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.usable:
                return conn, True
            self._discard(conn)
        return await self._connect(origin, timeouts, request), False

    async def _connect(self, origin: Origin, timeouts: dict[str, Any], request: httpx.Request) -> _Connection:
        scheme, host, port = origin
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        tls = (self._ssl_context or ssl.create_default_context()) if scheme == "https" else None
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                reader, writer = await asyncio.open_connection(host, port, ssl=tls, limit=_HEAD_LIMIT,
                                                               server_hostname=host if tls else None)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connect to {host}:{port} timed out", request=request) from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"connect to {host}:{port} failed: {exc.__class__.__name__}", request=request) from exc
        conn = _Connection(reader, writer, origin)
        self._open.add(conn)
        return conn

    def _discard(self, conn: _Connection) -> None:
        self._open.discard(conn)
        conn.close()


# -- one request and its answer ----------------------------------------------------------------


def _request_bytes(request: httpx.Request, body: bytes) -> bytes:
    """The request line, headers and body to send (a streamed body was read whole: sent with its length)."""
    headers = request.headers.raw
    if "transfer-encoding" in request.headers:
        headers = [(k, v) for k, v in headers if k.lower() not in (b"transfer-encoding", b"content-length")]
        headers.append((b"Content-Length", str(len(body)).encode()))
    if "host" not in request.headers:
        headers = [(b"Host", request.url.netloc), *headers]
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def _exchange(conn: _Connection, payload: bytes, request: httpx.Request, timeouts: dict[str, Any]) -> _Answer:
    try:
        async with asyncio.timeout(timeouts.get("write")):
            conn.writer.write(payload)
            await conn.writer.drain()
    except _DROPS as exc:
        raise _Dropped(exc.__class__.__name__) from exc
    except TimeoutError as exc:
        raise httpx.WriteTimeout("sending the request timed out", request=request) from exc
    except OSError as exc:
        raise httpx.WriteError(f"sending the request failed: {exc.__class__.__name__}", request=request) from exc
    try:
        async with asyncio.timeout(timeouts.get("read")):
            return await _read_answer(conn.reader, request)
    except TimeoutError as exc:
        raise httpx.ReadTimeout("reading the answer timed out", request=request) from exc
    except asyncio.LimitOverrunError as exc:
        raise httpx.RemoteProtocolError("malformed answer: headers too long", request=request) from exc
    except asyncio.IncompleteReadError as exc:
        raise httpx.RemoteProtocolError("the server closed the connection in the middle of an answer",
                                        request=request) from exc
    except OSError as exc:
        raise httpx.ReadError(f"reading the answer failed: {exc.__class__.__name__}", request=request) from exc


async def _read_answer(reader: asyncio.StreamReader, request: httpx.Request) -> _Answer:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _Dropped("closed before an answer") from exc
        raise
    except _DROPS as exc:
        raise _Dropped(exc.__class__.__name__) from exc
    while True:
        status, version, headers = _parse_head(head, request)
        if not 100 <= status < 200:
            break
        head = await reader.readuntil(b"\r\n\r\n")  # an interim answer (100 Continue, 103 Early Hints): the real one follows
    values = _header_values(headers)
    keep_alive = version == "HTTP/1.1" and b"close" not in values.get(b"connection", b"").lower()
    if request.method == "HEAD" or status in _NO_BODY_STATUS:
        return _Answer(status, version, headers, b"", keep_alive)
    if b"chunked" in values.get(b"transfer-encoding", b"").lower():
        return _Answer(status, version, headers, await _read_chunked(reader, request), keep_alive)
    length = values.get(b"content-length")
    if length is not None:
        if not length.isdigit():
            raise httpx.RemoteProtocolError("malformed answer: bad Content-Length", request=request)
        return _Answer(status, version, headers, await reader.readexactly(int(length)), keep_alive)
    return _Answer(status, version, headers, await reader.read(), False)  # the body ends with the connection


def _parse_head(head: bytes, request: httpx.Request) -> tuple[int, str, list[tuple[bytes, bytes]]]:
    status_line, *lines = head[:-4].split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or parts[0] not in _VERSIONS or not (len(parts[1]) == 3 and parts[1].isdigit()):
        raise httpx.RemoteProtocolError("malformed answer: bad status line", request=request)
    headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            raise httpx.RemoteProtocolError("malformed answer: bad header line", request=request)
        headers.append((name, value.strip()))
    return int(parts[1]), _VERSIONS[parts[0]], headers


def _header_values(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Lower-cased name -> its values joined with commas."""
    values: dict[bytes, bytes] = {}
    for name, value in headers:
        key = name.lower()
        values[key] = values[key] + b", " + value if key in values else value
    return values


async def _read_chunked(reader: asyncio.StreamReader, request: httpx.Request) -> bytes:
    chunks = []
    while True:
        size_line = (await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise httpx.RemoteProtocolError("malformed answer: bad chunk size", request=request) from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields, then the blank line
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise httpx.RemoteProtocolError("malformed answer: a chunk without its line end", request=request)


def _disconnected(request: httpx.Request, exc: BaseException) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(f"server disconnected without an answer ({exc})", request=request)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


# -- the loop the transport runs on -------------------------------------------------------------


@dataclass
class LoopThread:
    """An asyncio event loop running in a daemon thread of its own, for work handed to it whole
    (``submit``) from other threads or loops. ``close`` stops it; it is safe to call from any
    thread, the loop's own included, and more than once."""

    name: str = "leadflow-loop"
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop, repr=False)

    def __post_init__(self) -> None:
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        self.loop.run_forever()

    def submit(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(work, self.loop)

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """``work``'s result, awaited from another loop (cancelling the wait cancels the work)."""
        if asyncio.get_running_loop() is self.loop:
            return await work
        return await asyncio.wrap_future(self.submit(work))

    def close(self, before: Coroutine[Any, Any, Any] | None = None, timeout: float = 5.0) -> None:
        """Run ``before`` on the loop (closing what it holds), then stop the loop and end the thread."""
        if self.loop.is_closed():
            if before is not None:
                before.close()
            return
        if threading.current_thread() is self._thread:
            if before is not None:
                self.loop.create_task(before)
            self.loop.call_soon(self.loop.stop)
            return
        if before is not None and self.loop.is_running():
            try:
                self.submit(before).result(timeout)
            except Exception:  # noqa: BLE001 - closing: what it could not close, the process end closes
                pass
        elif before is not None:
            before.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()
