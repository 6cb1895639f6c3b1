"""The HTTP front of each worker: reads whole requests in an event loop, then runs the app on its threads.

A thread that computes never waits for a client. gunicorn's asyncio worker parses each request;
``BufferedWSGI`` reads its body, within a deadline and a size limit, into memory (a temporary file
past ``SPOOL_BYTES``), and only then hands it to the Flask app on the worker's thread pool. A slow
upload holds a connection, never a thread. ``FrontProtocol`` makes every answer the front gives on
its own (bad request line, headers, chunked framing, 408, 413, 414, 431) the API's one JSON error
shape, bounds how long the request head may take, and closes connections so that the client reads
the answer even when it is still sending a body nobody will read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import ctypes.util
import json
import sys
import tempfile
import time
from http import HTTPStatus

from gunicorn.asgi import protocol as gunicorn_protocol
from gunicorn.workers import gasgi

from .errors import error_body

TRIM_AFTER_BYTES = 2 << 20  # a request body this large leaves its freed memory to the system (trim_freed_memory)
SPOOL_BYTES = 1 << 20  # a body larger than this waits for the app in a temporary file, not in memory
LINGER_S = 5.0  # how long a closing connection still reads (and drops) what the client sends
LINGER_BYTES = 64 << 20  # and how much of it, before the connection is cut
# What the client is told about a request the front refused itself (never an echo of the request).
_MESSAGES = {
    408: "Request timeout: the request took too long to arrive",
    413: "File too large",
    414: "Request line too long",
    431: "Request header fields too large",
    501: "Transfer coding not implemented",
}


def json_error(status: int, message: str, **extra) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and headers of an error the front answers itself (the API's one error shape)."""
    body = json.dumps(error_body(message, **extra)).encode()
    return body, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


class BufferedWSGI:
    """An ASGI app that buffers the request body, then calls a WSGI app on a thread pool.

    ``max_body_bytes(path)`` is the largest body a path takes: a larger declared body is refused
    (413) before any of it is read, and a chunked one when it grows past it. The body and the
    request head together must arrive within ``body_timeout_s`` of the head plus one second per
    ``body_min_rate_bytes_s`` received (a slow but steady upload of a large file is not cut; one
    byte a second is), else 408. The head has ``header_timeout_s`` (FrontProtocol).
    """

    def __init__(
        self,
        wsgi_app,
        threads: int,
        max_body_bytes,
        body_timeout_s: float,
        body_min_rate_bytes_s: int,
        header_timeout_s: float,
    ):
        self.wsgi_app = wsgi_app
        self.header_timeout_s = header_timeout_s  # read by FrontProtocol
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tunescout")
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.body_min_rate_bytes_s = body_min_rate_bytes_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        limit = self.max_body_bytes(scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            return await _send_error(send, 413, "File too large", limit_bytes=limit, received_bytes=declared)
        try:
            body = await self._read_body(receive, limit)
        except _BodyTooLargeError as exc:
            return await _send_error(send, 413, "File too large", limit_bytes=limit, received_bytes=exc.received_bytes)
        except TimeoutError:
            return await _send_error(send, 408, _MESSAGES[408])
        if body is None:  # the client stopped sending (or left: then nobody reads this)
            return await _send_error(send, 400, "Request body cut short")
        loop = asyncio.get_running_loop()
        status, headers, chunks = await loop.run_in_executor(self.pool, self._call_app, scope, body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"".join(chunks)})

    async def _read_body(self, receive, limit: int):
        """The whole body in a spooled file; None when the client disconnects.

        Raises:
            _BodyTooLargeError: the body grew past limit.
            TimeoutError: it did not arrive in time.
        """
        body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        deadline = time.monotonic() + self.body_timeout_s
        try:
            while True:
                remaining = deadline + body.tell() / self.body_min_rate_bytes_s - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    message = await receive()
                if message["type"] == "http.disconnect":
                    body.close()
                    return None
                body.write(message.get("body", b""))
                if body.tell() > limit:
                    raise _BodyTooLargeError(body.tell())
                if not message.get("more_body", False):
                    body.seek(0)
                    return body
        except BaseException:
            body.close()
            raise

    def _call_app(self, scope, body):
        """Run the WSGI app to the end of its response (in a pool thread)."""
        started = {}

        def start_response(status, headers, exc_info=None):
            started["status"], started["headers"] = status, headers
            return lambda data: None

        try:
            result = self.wsgi_app(wsgi_environ(scope, body), start_response)
            try:
                chunks = list(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        finally:
            if body.seek(0, 2) > TRIM_AFTER_BYTES:
                trim_freed_memory()
            body.close()
        status = int(started["status"].split(" ", 1)[0])
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in started["headers"]]
        return status, headers, chunks

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def trim_freed_memory() -> None:
    """Give the memory glibc keeps free back to the system (nothing without glibc).

    tunescout.memory lets every heap keep up to 128 MB of freed memory for the next request, and
    each thread allocates from a heap of its own: after large uploads a worker stayed hundreds of
    MB larger, none of it in use (malloc_trim gave it back; Python's own objects had not grown).
    Ordinary clips keep their reused memory: only a large body trims, after its response.
    """
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _BodyTooLargeError(Exception):
    def __init__(self, received_bytes: int):
        super().__init__(received_bytes)
        self.received_bytes = received_bytes


def _declared_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value)
    return None


async def _send_error(send, status: int, message: str, **extra) -> None:
    body, headers = json_error(status, message, **extra)
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def wsgi_environ(scope, body) -> dict:
    """The PEP 3333 environ of an ASGI HTTP scope whose body has been read into ``body``."""
    size = body.seek(0, 2)
    body.seek(0)
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", ""),
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": str(client[1]),
        "CONTENT_LENGTH": str(size),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        if name in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):  # the body is whole: its length is known
            continue
        key = name if name == "CONTENT_TYPE" else f"HTTP_{name}"
        value = raw_value.decode("latin-1")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


class FrontProtocol(gunicorn_protocol.ASGIProtocol):
    """gunicorn's HTTP/1.1 protocol with JSON error pages, a deadline for the request head, and a
    lingering close.

    The head deadline runs from the connection's start (a kept-alive connection's next request is
    bounded by the keep-alive timeout). Closing, the protocol first sends what it has, then shuts
    its side and reads and drops what the client still sends for up to ``LINGER_S``: closing a
    socket with unread bytes resets the connection, and the client loses the answer it was sent
    (an early 413 while it is still uploading).
    """

    def connection_made(self, transport):
        self._peer_done = False  # the client half-closed: it sends nothing more, but may read
        self._head_bytes = 0  # bytes received since the last request head was complete
        self._head_timer = None
        self._linger_timer = None
        self._lingering = False
        self._linger_bytes = 0
        super().connection_made(transport)
        self._head_timer = self.worker.loop.call_later(self.app.header_timeout_s, self._head_timeout)

    def _on_headers_complete(self):
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        return super()._on_headers_complete()

    def _head_timeout(self):
        self._head_timer = None
        if self._current_request is None and not self._closed:
            self._send_error_response(408, _MESSAGES[408])
            self._close_transport()
            if self._request_ready is not None:
                self._request_ready.set()

    def _send_error_response(self, status, message, extra_headers=()):
        body, _ = json_error(status, _client_message(status))
        reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        extra = "".join(f"{name}: {value}\r\n" for name, value in extra_headers)
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
        )
        self._safe_write(head.encode("latin-1") + body)

    def data_received(self, data):
        if self._lingering:
            self._linger_bytes += len(data)
            if self._linger_bytes > LINGER_BYTES:
                self.transport.abort()
            return
        self._head_bytes += len(data)
        super().data_received(data)

    def _close_transport(self):
        if self.transport is None or self._closed:
            return
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        idle = self._current_request is None and not self._head_bytes  # nothing sent is left unread
        self._closed = True
        if idle or self._peer_done or not self.transport.can_write_eof():
            # Not gunicorn's close, which skips close() when its write_eof() raises: it does once a client
            # that half-closed has reset the connection (it left before its last answer). After the EOF
            # nothing reads the socket, so the connection stayed open, counted, and a SIGTERM waited for it
            # the whole graceful timeout.
            self.transport.close()  # sends what is buffered first
            return
        self._lingering = True
        try:
            self.transport.write_eof()  # sends what is buffered first, then FIN
            self._resume_reading_for_linger()
        except Exception:  # the client is gone already
            self.transport.abort()
            return
        self._linger_timer = self.worker.loop.call_later(LINGER_S, self.transport.abort)

    def _resume_reading_for_linger(self):
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()

    def eof_received(self):
        """The client half-closed (shutdown(SHUT_WR)): answer what it sent, then close.

        A request cut short is a 400, whether its head (here) or its body (BufferedWSGI, which sees
        the end of the body as a disconnect). A whole request is answered as usual.
        """
        if self._lingering:
            self.transport.close()
            return True
        self._peer_done = True
        receiver = self._body_receiver
        if self._current_request is None:
            if self._head_bytes and not self._closed:
                self._send_error_response(400, "")
            self._close_transport()
            if self._request_ready is not None:
                self._request_ready.set()
        elif receiver is not None and not receiver._complete:
            receiver.signal_disconnect()
        return True  # keep the transport open for the answer

    def _is_websocket_upgrade(self, request):
        return False  # the API has no WebSocket: the Upgrade header is ignored and the request answered

    def _arm_keepalive_timer(self):
        self._head_bytes = 0  # waiting for the next request: what came before is read
        if self._peer_done:  # no next request can come
            self._keepalive_timeout()
            return
        super()._arm_keepalive_timer()

    def connection_lost(self, exc):
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)


def _client_message(status: int) -> str:
    """The message of a status the front answers itself (gunicorn's own text is never sent)."""
    return _MESSAGES.get(status, "Internal server error" if status >= 500 else "Malformed HTTP request")


class FrontWorker(gasgi.ASGIWorker):
    """gunicorn's asyncio worker serving ``BufferedWSGI``, with ``FrontProtocol`` on each connection."""

    @classmethod
    def check_config(cls, cfg, log):
        pass  # threads configures BufferedWSGI's pool here, which the parent's warning does not know

    def init_process(self):
        # The worker class names its protocol as a module global; replaced in this process only.
        gasgi.ASGIProtocol = FrontProtocol
        super().init_process()
