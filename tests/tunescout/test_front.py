"""The HTTP front of `tunescout serve`, with real sockets: slow clients, early answers, malformed requests."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
import requests

from tests import servers
from tests.conftest import music_like, wav_bytes

TOKEN = "s3cret-token"
MB = 1024 * 1024


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    """2 workers x 4 threads, as in production; slow bodies would only time out after a minute."""
    live = servers.LiveServer(
        tmp_path_factory.mktemp("busy"),
        {"rate_limit": {"enabled": False}, "serving": {"body_timeout_s": 60.0}},
        workers=2,
        threads=4,
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """One worker (its in-memory rate-limit counters count every request), tight limits and timeouts."""
    live = servers.LiveServer(
        tmp_path_factory.mktemp("strict"),
        {
            "fingerprinting": {"token": TOKEN, "max_file_size_mb": 4},
            "recognizing": {"max_file_size_mb": 2},
            "rate_limit": {"recognizing": "2 per minute"},
            "serving": {"header_timeout_s": 1.0, "body_timeout_s": 1.5, "body_min_rate_bytes_s": 1000},
        },
        workers=1,
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def clip() -> bytes:
    return wav_bytes(music_like(np.random.default_rng(3), 5))


def raw_exchange(port: int, request: bytes, timeout_s: float = 10.0) -> tuple[int, dict, bytes]:
    """Send raw bytes, read until the server closes; the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def assert_json_error(headers: dict, body: bytes) -> dict:
    assert headers["content-type"] == "application/json"
    parsed = json.loads(body)
    assert parsed["status"] == "error" and isinstance(parsed["message"], str) and parsed["message"]
    return parsed


def slow_upload(port: int, stop: threading.Event, started: threading.Barrier) -> None:
    """A client sending a 100 kB body at one byte a second."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /api/recognize HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nx")
        started.wait()
        while not stop.wait(1.0):
            try:
                sock.sendall(b"x")
            except OSError:
                return


def timed(call) -> tuple[float, requests.Response]:
    start = time.monotonic()
    resp = call()
    return time.monotonic() - start, resp


def test_slow_uploads_leave_the_service_answering(busy, clip):
    """Eight clients uploading at 1 byte/s (as many as the worker threads): health and recognition are
    still answered at once, not when the slow clients leave (their deadline is a minute away)."""
    recognize = lambda: requests.post(busy.url + "/api/recognize", files={"file": ("q.wav", clip)}, timeout=30)  # noqa: E731
    health = lambda: requests.get(busy.url + "/api/health", timeout=30)  # noqa: E731
    usual = max(timed(recognize)[0], timed(health)[0])
    stop, started = threading.Event(), threading.Barrier(9)
    clients = [threading.Thread(target=slow_upload, args=(busy.port, stop, started)) for _ in range(8)]
    for client in clients:
        client.start()
    try:
        started.wait(timeout=10)
        time.sleep(1.5)  # every slow request is past its head, into its body
        for call in (health, recognize, health, recognize):
            elapsed, resp = timed(call)
            assert resp.status_code == 200, resp.text
            assert elapsed < 5.0 + 10 * usual, f"answered after {elapsed:.1f} s (usually {usual:.2f} s)"
    finally:
        stop.set()
        for client in clients:
            client.join()


def test_a_body_too_slow_gets_408_and_a_slow_head_too(strict):
    start = time.monotonic()
    status, headers, body = raw_exchange(
        strict.port, b"POST /api/recognize HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n" + b"x" * 100
    )
    assert status == 408 and 1.0 < time.monotonic() - start < 5.0
    assert assert_json_error(headers, body)["message"].startswith("Request timeout")
    status, headers, body = raw_exchange(strict.port, b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
    assert status == 408
    assert_json_error(headers, body)


MALFORMED = {
    "chunk size not hex": (
        b"POST /api/recognize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "negative Content-Length": (b"POST /api/recognize HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    "non-numeric Content-Length": (b"POST /api/recognize HTTP/1.1\r\nHost: x\r\nContent-Length: ab\r\n\r\n", 400),
    "two Content-Lengths": (
        b"POST /api/recognize HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    ),
    "Transfer-Encoding and Content-Length": (
        b"POST /api/recognize HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "request line not HTTP": (b"HELLO\r\n\r\n", 400),
    "header without a colon": (b"GET /api/health HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", 400),
    "URL too long": (b"GET /api/health?" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "header too long": (b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 10000 + b"\r\n\r\n", 431),
    "too many headers": (
        b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
        431,
    ),
}


@pytest.mark.parametrize("request_bytes,status", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_requests_get_json_errors(busy, request_bytes, status):
    got, headers, body = raw_exchange(busy.port, request_bytes)
    assert got == status, body
    assert_json_error(headers, body)


@pytest.mark.parametrize("key", ["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""], ids=["whole", "no key"])
def test_a_websocket_upgrade_is_answered_as_plain_http(busy, key):
    """The API has no WebSocket: the app answers (werkzeug's 400 for a WebSocket request to an HTTP route,
    in the JSON error shape), where gunicorn answered an empty 403 (or a 426) itself."""
    request = (
        "GET /api/health HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: close, Upgrade\r\n"
        f"{key}Sec-WebSocket-Version: 13\r\n\r\n"
    )
    status, headers, body = raw_exchange(busy.port, request.encode())
    assert status == 400
    assert_json_error(headers, body)


def test_a_1mb_body_into_a_rate_limit_gets_its_429(strict):
    """The body is read before the answer: the client, still sending, reads the 429 (no broken pipe),
    and the kept-alive connection serves the next request."""
    body = b"\0" * MB
    with requests.Session() as session:
        statuses = [
            session.post(strict.url + "/api/recognize", files={"file": ("q.wav", body)}, timeout=30) for _ in range(6)
        ]
    assert [r.status_code for r in statuses][-3:] == [429] * 3
    for resp in statuses:
        assert resp.json()["status"] == "error"
    conn = http.client.HTTPConnection("127.0.0.1", strict.port, timeout=30)
    try:
        for _ in range(3):
            conn.request("POST", "/api/recognize", body=body, headers={"Content-Type": "application/octet-stream"})
            resp = conn.getresponse()
            assert resp.status == 429 and json.loads(resp.read())["status"] == "error"
            sock = conn.sock
            conn.request("GET", "/api/health")
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
            assert conn.sock is sock  # the same connection, kept alive
    finally:
        conn.close()


def test_401_and_413_reach_a_client_still_sending(strict):
    resp = requests.post(strict.url + "/api/fingerprint", files={"file": ("a.wav", b"\0" * MB)}, timeout=30)
    assert resp.status_code == 401 and resp.json()["status"] == "error"
    too_big = io.BytesIO(b"\0" * (12 * MB))  # larger than the limit, sent whole by the client whatever the answer
    resp = requests.post(strict.url + "/api/recognize", data=too_big, timeout=30)
    assert resp.status_code == 413
    assert {"status": "error", "message": "File too large", "limit_bytes": 2 * MB}.items() <= resp.json().items()
    chunked = requests.post(strict.url + "/api/recognize", data=iter([b"\0" * MB] * 3), timeout=30)
    assert chunked.status_code == 413 and chunked.json()["limit_bytes"] == 2 * MB


def test_no_control_socket_shared_with_other_servers(busy):
    """gunicorn's control socket defaults to one path per user: every server of that user would
    listen on it in turn. `tunescout serve` opens none."""
    log = busy.log_path.read_text()
    assert "Booting worker" in log and "Control socket" not in log


def test_workers_are_replaced_after_max_requests_without_failing_a_request(tmp_path):
    """serving.max_requests bounds a worker's memory: after that many requests a fresh worker takes
    over; clients see no failure meanwhile."""
    live = servers.LiveServer(tmp_path, {"serving": {"max_requests": 5, "max_requests_jitter": 0}}, workers=1)
    workers, statuses = set(), []
    try:
        deadline = time.monotonic() + 20  # a stopping worker notices within a second, its successor boots
        while len(workers) < 2 and time.monotonic() < deadline:
            statuses.append(requests.get(live.url + "/api/health", timeout=30).status_code)
            log = live.log_path.read_text()
            workers = {line.split("worker=")[1].split()[0] for line in log.splitlines() if "GET /api/health" in line}
            time.sleep(0.05)
    finally:
        live.stop()
    assert len(workers) >= 2 and set(statuses) == {200}


def half_closed_exchange(port: int, request: bytes) -> tuple[int, dict, bytes]:
    """Send a request, then shut the sending side (as `nc -N` does); read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return int(lines[0].split()[1]), {k.lower(): v for k, v in (ln.split(": ", 1) for ln in lines[1:])}, body


def test_a_half_closed_client_gets_its_answer(busy, clip):
    status, _, body = half_closed_exchange(busy.port, b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and json.loads(body)["status"] == "ok"
    boundary = b"b0undary"
    form = b'--%s\r\nContent-Disposition: form-data; name="file"; filename="q.wav"\r\n\r\n%s\r\n--%s--\r\n' % (
        boundary,
        clip,
        boundary,
    )
    head = b"POST /api/recognize HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=%s\r\n" % boundary
    status, _, body = half_closed_exchange(busy.port, head + b"Content-Length: %d\r\n\r\n" % len(form) + form)
    assert status == 200 and json.loads(body)["status"] == "success"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /api/recognize HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort",
        b"POST /api/recognize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Cut: ",
    ],
    ids=["body shorter than Content-Length", "chunked body cut", "head cut"],
)
def test_a_request_cut_short_by_a_half_close_is_400(busy, request_bytes):
    status, headers, body = half_closed_exchange(busy.port, request_bytes)
    assert status == 400
    assert_json_error(headers, body)


@pytest.mark.parametrize("trust_proxy", [True, False])
def test_rate_limit_keys_on_x_forwarded_for_only_behind_a_trusted_proxy(tmp_path, trust_proxy):
    live = servers.LiveServer(
        tmp_path, {"rate_limit": {"fetching_results": "2 per minute", "trust_proxy": trust_proxy}}, workers=1
    )
    try:
        statuses = [
            requests.get(
                live.url + "/api/fetch/" + "0" * 34, headers={"X-Forwarded-For": f"203.0.113.{i % 3}"}, timeout=10
            ).status_code
            for i in range(6)
        ]
    finally:
        live.stop()
    # three clients, two requests each, when the header is trusted; one client over its limit otherwise
    assert statuses == ([404] * 6 if trust_proxy else [404, 404, 429, 429, 429, 429])


def test_the_gunicorn_hooks_the_front_extends_exist():
    """FrontProtocol overrides methods of gunicorn's asyncio protocol that are not public API: a
    gunicorn that renamed one would silently lose the JSON errors, deadlines or lingering close."""
    from gunicorn.asgi.protocol import ASGIProtocol
    from gunicorn.workers import gasgi

    from tunescout.front import FrontProtocol

    own = {"_head_timeout", "_resume_reading_for_linger"}
    extended = {name for name in vars(FrontProtocol) if not name.startswith("__")} - own
    used = {"_keepalive_timeout", "_safe_write"}
    assert extended | used <= set(dir(ASGIProtocol)), (extended | used) - set(dir(ASGIProtocol))
    assert gasgi.ASGIProtocol in (ASGIProtocol, FrontProtocol)  # the name FrontWorker replaces


def test_a_stop_does_not_wait_for_connections_the_clients_closed(tmp_path):
    """A closed or idle connection is closed at once; only one whose client may still be sending
    lingers (reading what it sends, so that it reads its answer)."""
    live = servers.LiveServer(tmp_path, {}, workers=1)
    for _ in range(3):
        status, _, _ = raw_exchange(live.port, b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status == 200
    start = time.monotonic()
    log = live.stop()
    assert time.monotonic() - start < 4.0 and "Waiting for" not in log


LEFT_EARLY = {  # clients that leave before their last answer
    # http.client takes an HTTP/1.0 answer without Connection: keep-alive (gunicorn sends none) as the last
    # one: it reads it and closes, while the server answers the request pipelined behind (fuzz pipelined:17)
    "HTTP/1.0 keep-alive, a request pipelined behind": (
        b"GET /api/fetch/abc HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        b"GET /api/fetch/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        True,
    ),
    "closed without reading": (b"GET /api/fetch/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
}


@pytest.mark.parametrize("request_bytes,read_first", LEFT_EARLY.values(), ids=LEFT_EARLY.keys())
def test_a_stop_does_not_wait_for_a_client_that_left_before_its_last_answer(tmp_path, request_bytes, read_first):
    """The client closes (FIN), then the answer it no longer reads resets the connection: closing it then
    must still close it. The worker counted it as open, and a SIGTERM waited the whole graceful timeout."""
    live = servers.LiveServer(tmp_path, {}, workers=1)
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(request_bytes)
        if read_first:
            answer = http.client.HTTPResponse(sock, method="GET")
            answer.begin()
            assert answer.status == 404 and answer.will_close
            answer.read()
            answer.close()
    deadline = time.monotonic() + 10
    while "GET /api/fetch/last" not in live.log_path.read_text():  # answered, to nobody
        assert time.monotonic() < deadline, "the last request was not answered"
        time.sleep(0.05)
    time.sleep(0.2)
    start = time.monotonic()
    log = live.stop()
    assert time.monotonic() - start < 4.0 and "Waiting for" not in log
