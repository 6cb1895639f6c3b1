"""POST /api/scan and its job: queued, running, done, cancelled, bounded, taken up again after a stop."""

from __future__ import annotations

import fcntl
import functools
import http.server
import io
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tests import servers
from tests.conftest import SR, music_like, wav_bytes
from tunescout.app import create_app
from tunescout.config import config_from_dict

AUTH = {"Authorization": "Bearer s3cret-token"}
NOISE = 0.01


def make_config(tmp_path: Path, **scanning):
    return config_from_dict(
        {"data_dir": str(tmp_path / "data"), "fingerprinting": {"token": "s3cret-token"}, "scanning": scanning}
    )


@pytest.fixture(scope="module")
def songs():
    rng = np.random.default_rng(11)
    return {"first": music_like(rng, 60), "second": music_like(rng, 60, base_hz=150.0)}


@pytest.fixture(scope="module")
def recording(songs) -> tuple[bytes, list[tuple[str, float, float, float]]]:
    """Noise, 40 s of the first song from its second 10, noise, 30 s of the second from its start,
    noise; and the plays: (song, start, end, song start)."""
    rng = np.random.default_rng(12)

    def noise(seconds):
        return NOISE * rng.standard_normal(round(seconds * SR))

    parts = [noise(15), songs["first"][10 * SR : 50 * SR], noise(10), songs["second"][: 30 * SR], noise(10)]
    plays = [("first", 15.0, 55.0, 10.0), ("second", 65.0, 95.0, 0.0)]
    return wav_bytes(np.concatenate(parts).astype(np.float32)), plays


@pytest.fixture(scope="module")
def long_recording(songs) -> bytes:
    """Ten minutes of the songs over and over: a scan that takes a few seconds."""
    return wav_bytes(np.tile(np.concatenate([songs["first"], songs["second"]]), 5).astype(np.float32))


def open_app(config, songs=None):
    app = create_app(config)
    for name, samples in (songs or {}).items():
        resp = post(app.test_client(), "/api/fingerprint", wav_bytes(samples), f"{name}.wav")
        assert resp.status_code == 200, resp.get_json()
    return app


def close(app) -> None:
    app.extensions["tunescout_scans"].close()
    app.extensions["tunescout"].close()


@pytest.fixture
def app(tmp_path, songs):
    app = open_app(make_config(tmp_path, queue=1), songs)
    yield app
    close(app)


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, url, data: bytes, filename="recording.wav", headers=AUTH, **form):
    return client.post(
        url, data={"file": (io.BytesIO(data), filename), **form}, headers=headers, content_type="multipart/form-data"
    )


def wait_for(client, token: str, states=("done", "failed", "cancelled"), timeout_s=120.0) -> list[dict]:
    """The job's states, polled until one is in ``states``."""
    seen, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(f"/api/scan/{token}").get_json()
        seen.append(body)
        if body["state"] in states:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"job {token} still {seen[-1]['state']} after {timeout_s} s")


def job_files(app) -> list[str]:
    return sorted(p.name for p in app.extensions["tunescout_scans"].folder.glob("*") if not p.name.startswith("slot-"))


@pytest.fixture
def slots_held(app):
    """Every scan slot of the host held (as another process running scans would): jobs stay queued."""
    scans = app.extensions["tunescout_scans"]
    scans.folder.mkdir(parents=True, exist_ok=True)
    fds = []
    for i in range(scans.config.workers):
        fds.append(os.open(scans.folder / f"slot-{i}.lock", os.O_RDWR | os.O_CREAT))
        fcntl.flock(fds[-1], fcntl.LOCK_EX)

    def release():
        while fds:
            os.close(fds.pop())

    yield release
    release()


def assert_timeline(segments: list[dict], plays) -> None:
    assert [s["song_name"] for s in segments] == [p[0] for p in plays]
    for s, (_, start, end, song_start) in zip(segments, plays):
        assert abs(s["start_seconds"] - start) <= 1.5 and abs(s["end_seconds"] - end) <= 1.5, s
        assert abs(s["song_start_seconds"] - song_start) <= 1.5, s


def test_a_scan_job_runs_to_the_recording_timeline(client, recording):
    data, plays = recording
    resp = post(client, "/api/scan", data)
    assert resp.status_code == 202, resp.get_json()
    body = resp.get_json()
    assert resp.headers["Location"] == f"/api/scan/{body['token']}"
    assert body["state"] == "queued" and body["name"] == "recording.wav" and body["total_seconds"] == 105.0
    seen = wait_for(client, body["token"])
    done = seen[-1]
    assert {s["state"] for s in seen} <= {"queued", "running", "done"} and done["state"] == "done", done
    assert done["progress"] == 1.0 and done["duration_seconds"] == 105.0 and done["resumed"] == 0
    assert_timeline(done["segments"], plays)
    assert done["summary"]["segments"] == 2 and done["summary"]["windows"] == 20
    progress = [s["progress"] for s in seen if s["state"] == "running"]
    assert progress == sorted(progress) and all(0 <= p < 1 for p in progress)


def test_jobs_wait_for_a_free_slot_and_the_queue_is_bounded(app, client, recording, slots_held):
    data, plays = recording
    first, second = (post(client, "/api/scan", data, name=n) for n in ("one", "two"))
    assert (first.status_code, second.status_code) == (202, 202)  # one slot, one place in the queue
    full = post(client, "/api/scan", data)
    assert full.status_code == 503 and full.headers["Retry-After"] == "30"
    message = "Too many scans queued; try again later"
    assert full.get_json() == {"status": "error", "message": message, "retry_after_s": 30}
    time.sleep(1.5)  # the dispatcher polls every 0.5 s: no slot, no run
    tokens = [r.get_json()["token"] for r in (first, second)]
    assert [client.get(f"/api/scan/{t}").get_json()["state"] for t in tokens] == ["queued", "queued"]
    slots_held()
    for token, name in zip(tokens, ("one", "two")):
        done = wait_for(client, token)[-1]
        assert done["state"] == "done" and done["name"] == name
        assert_timeline(done["segments"], plays)
    assert job_files(app) == []  # the recordings are gone once their timelines are stored


def test_a_cancelled_job_stops_and_keeps_what_it_found(app, client, long_recording, recording, slots_held):
    queued = post(client, "/api/scan", recording[0]).get_json()["token"]
    assert client.delete(f"/api/scan/{queued}").status_code == 401
    cancelled = client.delete(f"/api/scan/{queued}", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.get_json()["state"] == "cancelled"
    slots_held()
    running = post(client, "/api/scan", long_recording).get_json()["token"]
    seen = wait_for(client, running, states=("running",))
    while not seen[-1]["segments"]:
        seen = wait_for(client, running, states=("running",))
    body = client.delete(f"/api/scan/{running}", headers=AUTH).get_json()
    assert body["state"] == "cancelled" and body["segments"]
    deadline = time.monotonic() + 30
    while job_files(app) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job_files(app) == []  # both runs saw the cancel and stopped
    for token in (queued, running):
        final = client.get(f"/api/scan/{token}").get_json()
        assert final["state"] == "cancelled"
        assert final["duration_seconds"] < 600
        assert client.delete(f"/api/scan/{token}", headers=AUTH).get_json()["state"] == "cancelled"


def test_a_job_left_by_a_stopped_process_is_scanned_again_at_the_next_start(tmp_path, songs, long_recording):
    config = make_config(tmp_path)
    first = open_app(config, songs)
    token = post(first.test_client(), "/api/scan", long_recording).get_json()["token"]
    wait_for(first.test_client(), token, states=("running",))
    close(first)  # as a worker that is replaced: the run stops, the job stays
    left = first.test_client().get(f"/api/scan/{token}").get_json()
    assert left["state"] == "running" and left["duration_seconds"] < 600
    second = open_app(config)
    try:
        done = wait_for(second.test_client(), token)[-1]
        assert done["state"] == "done" and done["resumed"] == 1 and done["duration_seconds"] == 600.0
        assert [s["song_name"] for s in done["segments"]] == ["first", "second"] * 5
        assert job_files(second) == []
    finally:
        close(second)


def test_scan_requests_that_cannot_be_served(tmp_path, client, recording):
    assert post(client, "/api/scan", recording[0], headers={}).status_code == 401
    resp = post(client, "/api/scan", b"not audio at all" * 100, "x.wav")
    assert resp.status_code == 415 and resp.get_json()["message"] == "Failed to process input file"
    resp = client.post("/api/scan", data={}, headers=AUTH, content_type="multipart/form-data")
    assert resp.status_code == 400 and resp.get_json()["message"] == "No file part in the request"
    resp = client.post("/api/scan", data={"url": "http://169.254.169.254/latest"}, headers=AUTH)
    assert resp.status_code == 403 and "allowed_urls" in resp.get_json()["message"]
    for token in ("nope", "0" * 34, "ab" * 16 + "07"):
        assert client.get(f"/api/scan/{token}").status_code == 404
        assert client.delete(f"/api/scan/{token}", headers=AUTH).status_code == 404
    small = open_app(make_config(tmp_path / "small", max_file_size_mb=0.01))
    try:
        resp = post(small.test_client(), "/api/scan", recording[0])
        assert resp.status_code == 413 and resp.get_json()["status"] == "error"
    finally:
        close(small)
    open_scans = open_app(make_config(tmp_path / "open", require_token=False))
    try:
        assert post(open_scans.test_client(), "/api/scan", recording[0], headers={}).status_code == 202
    finally:
        close(open_scans)


def test_a_stream_under_an_allowed_prefix_is_scanned(tmp_path, songs, recording):
    data, plays = recording
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "live.wav").write_bytes(data)
    handler = functools.partial(QuietHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    app = open_app(make_config(tmp_path, allowed_urls=[base]), songs)
    try:
        client = app.test_client()
        resp = client.post("/api/scan", data={"url": base + "live.wav"}, headers=AUTH)
        assert resp.status_code == 202 and resp.get_json()["name"] == base + "live.wav"
        done = wait_for(client, resp.get_json()["token"])[-1]
        assert done["state"] == "done" and done["progress"] == 1.0
        assert_timeline(done["segments"], plays)
        other = f"http://127.0.0.1:{server.server_port + 1}/live.wav"
        assert client.post("/api/scan", data={"url": other}, headers=AUTH).status_code == 403
    finally:
        close(app)
        server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_a_served_scan_survives_a_restart_of_the_service(tmp_path, songs, recording, long_recording):
    """`tunescout serve` with two workers: the front refuses a recording over the limit before reading it;
    a scan stopped by SIGTERM is taken up by the next start of the service and ends with its timeline."""
    config = {"fingerprinting": {"token": "s3cret-token"}, "scanning": {"max_file_size_mb": 20}}
    live = servers.LiveServer(tmp_path, config)
    try:
        for name, samples in songs.items():
            files = {"file": (f"{name}.wav", wav_bytes(samples))}
            assert requests.post(live.url + "/api/fingerprint", files=files, headers=AUTH, timeout=30).ok
        files = {"file": ("big.wav", b"\0" * (21 << 20))}
        resp = requests.post(live.url + "/api/scan", files=files, headers=AUTH, timeout=30)
        assert resp.status_code == 413 and resp.json()["status"] == "error"
        files = {"file": ("long.wav", long_recording)}
        token = requests.post(live.url + "/api/scan", files=files, headers=AUTH, timeout=30).json()["token"]
        deadline = time.monotonic() + 60
        while requests.get(f"{live.url}/api/scan/{token}", timeout=5).json()["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        live.proc.send_signal(signal.SIGTERM)
        assert live.proc.wait(timeout=30) == 0
    finally:
        live.stop()
    again = servers.LiveServer(tmp_path, config)
    try:
        deadline = time.monotonic() + 120
        while (body := requests.get(f"{again.url}/api/scan/{token}", timeout=5).json())["state"] != "done":
            assert time.monotonic() < deadline and body["state"] in ("queued", "running"), body
            time.sleep(0.2)
        assert body["resumed"] == 1 and body["duration_seconds"] == 600.0
        assert [s["song_name"] for s in body["segments"]] == ["first", "second"] * 5
    finally:
        again.stop()
