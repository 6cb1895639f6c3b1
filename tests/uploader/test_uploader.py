"""tunescout_uploader end to end against a live server: real tracks, a kill half way, resume,
local fingerprints, retries under rate limits, errors that are not retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tests import servers
from tests.conftest import need, wav_bytes

TOKEN = "uploader-test-token-123456"


def tracks(corpus: Path, n: int) -> list[Path]:
    files = sorted((corpus / "tracks").glob("*"))
    need(len(files) >= n, f"{n} corpus tracks")
    return files[:n]


@pytest.fixture
def folder(tmp_path, corpus):
    """A folder tree of real tracks (and a file that is not audio by extension)."""
    root = tmp_path / "music"
    for i, track in enumerate(tracks(corpus, 8)):
        sub = root / f"disc{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / track.name).symlink_to(track)
    (root / "notes.txt").write_text("not audio")
    return root


@pytest.fixture
def server(tmp_path):
    live = servers.LiveServer(
        tmp_path / "server", {"fingerprinting": {"token": TOKEN}, "rate_limit": {"fingerprinting": "50 per second"}}
    )
    yield live
    live.stop()


def run_uploader(*args, token=TOKEN, manifest=None, **popen):
    env = {**os.environ, "TUNESCOUT_TOKEN": token}
    cmd = [sys.executable, "-m", "uploader", *args]
    if manifest:
        cmd += ["--manifest", str(manifest)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def catalogue(url) -> list[dict]:
    return requests.get(url + "/api/songs?limit=1000", timeout=10).json()["songs"]


@pytest.mark.corpus
def test_upload_kill_half_way_and_resume(server, folder, tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    proc = run_uploader("--url", server.url, "--workers", "1", str(folder), manifest=manifest)
    deadline = time.monotonic() + 120
    while not manifest.exists() or len(manifest.read_text().splitlines()) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, "uploader ended before the kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Uploads that ended between the look at the manifest and the kill are recorded too, so the
    # count is 3 or a little more, never known in advance: whatever it is, the kill came before
    # the end, and the resume must take up exactly what the manifest holds.
    recorded = len(manifest.read_text().splitlines())
    assert 3 <= recorded < 8

    code, output = finish(run_uploader("--url", server.url, "--workers", "3", str(folder), manifest=manifest))
    assert code == 0, output
    assert f"({recorded} known from the manifest)" in output and "failed 0" in output
    songs = catalogue(server.url)
    assert len(songs) == 8  # every track exactly once
    assert len({s["blob_sha1"] for s in songs}) == 8

    # A third run uploads nothing; without the manifest the server answers 409, counted as done.
    code, output = finish(run_uploader("--url", server.url, str(folder), manifest=manifest))
    assert code == 0 and "stored 0, already there 8 (8 known" in output
    code, output = finish(run_uploader("--url", server.url, str(folder), manifest=tmp_path / "fresh.jsonl"))
    assert code == 0 and "stored 0, already there 8 (0 known" in output


@pytest.mark.corpus
def test_fingerprint_locally_sends_only_hashes(server, folder, tmp_path, queries):
    code, output = finish(
        run_uploader("--url", server.url, "--fingerprint-locally", str(folder), manifest=tmp_path / "m.jsonl")
    )
    assert code == 0, output
    songs = catalogue(server.url)
    assert len(songs) == 8
    # The same audio sent as a file is a duplicate: both sides decode to the same PCM digest.
    one = next(folder.rglob("*.ogg"))
    resp = requests.post(
        server.url + "/api/fingerprint",
        headers={"Authorization": f"Bearer {TOKEN}"},
        files={"file": (one.name, one.read_bytes())},
        timeout=60,
    )
    assert resp.status_code == 409
    # And its clips are recognised.
    from uploader.local import decode

    samples, _ = decode(str(one), 11025)
    clip = wav_bytes(samples[30 * 11025 : 35 * 11025])
    best = requests.post(server.url + "/api/recognize", files={"file": ("c.wav", clip)}, timeout=30).json()
    assert best["results"][0]["song_name"] == one.stem


@pytest.mark.corpus
def test_packed_fingerprint_is_orders_of_magnitude_smaller(folder):
    from uploader.local import fingerprint_file

    files = sorted(folder.rglob("*.ogg"))[:3]
    ratio = sum(f.stat().st_size for f in files) / sum(len(fingerprint_file(str(f))) for f in files)
    assert ratio > 20, ratio


@pytest.mark.corpus
def test_a_digest_the_server_does_not_serve_is_a_clear_400(server, folder):
    import dejavu
    from uploader.local import fingerprint_file

    packed = bytearray(fingerprint_file(str(next(folder.rglob("*.ogg")))))
    packed[5:21] = b"0123456789abcdef"
    resp = requests.post(
        server.url + "/api/fingerprint",
        headers={"Authorization": f"Bearer {TOKEN}"},
        files={"fingerprint": ("x.tsfp", bytes(packed))},
        timeout=30,
    )
    assert resp.status_code == 400
    assert resp.json()["message"].startswith("Fingerprint parameters 0123456789abcdef are not served here")
    assert resp.json()["params_digest"] == dejavu.DEFAULT_PARAMS.digest()
    resp = requests.post(
        server.url + "/api/fingerprint",
        headers={"Authorization": f"Bearer {TOKEN}"},
        files={"fingerprint": ("x.tsfp", b"garbage")},
        timeout=30,
    )
    assert resp.status_code == 400 and resp.json()["message"].startswith("Invalid fingerprint")


@pytest.mark.corpus
def test_rate_limits_are_retried_until_done(tmp_path, folder):
    # One worker, so that one counter sees every request (without Redis each worker counts its
    # own), and three uploads that start together: the second and third of that second get 429.
    live = servers.LiveServer(
        tmp_path / "limited",
        {"fingerprinting": {"token": TOKEN}, "rate_limit": {"fingerprinting": "1 per second"}},
        workers=1,
        threads=4,
    )
    try:
        code, output = finish(
            run_uploader(
                "--url", live.url, "--workers", "3", "--retries", "20", str(folder), manifest=tmp_path / "m.jsonl"
            )
        )
        assert code == 0, output
        assert len(catalogue(live.url)) == 8
        log = live.stop()
    finally:
        live.stop()
    assert '"POST /api/fingerprint HTTP/1.1" 429' in log  # the limit did bite, and was waited out


@pytest.mark.corpus
def test_wrong_token_is_reported_not_retried_and_never_printed(server, folder, tmp_path):
    wrong = "wrong-token-that-must-not-leak"
    proc = run_uploader("--url", server.url, str(folder), token=wrong, manifest=tmp_path / "m.jsonl")
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    code, output = finish(proc)
    assert code == 1 and wrong.encode() not in cmdline and wrong not in output
    assert "failed 8" in output and "HTTP 401: Token missing or invalid" in output
    # Not retried: the server saw one request per file.
    assert server.stop().count('"POST /api/fingerprint HTTP/1.1" 401') == 8


@pytest.mark.corpus
def test_dry_run_lists_and_uploads_nothing(server, folder, tmp_path):
    code, output = finish(
        run_uploader("--url", server.url, "--dry-run", "--ext", "ogg", str(folder), manifest=tmp_path / "m.jsonl")
    )
    assert code == 0 and "8 files to upload" in output and "notes.txt" not in output
    assert catalogue(server.url) == []


def test_the_uploader_imports_only_the_shared_parts_of_the_service():
    """The command takes the audio extensions from tunescout.contract (standard-library constants);
    local fingerprinting decodes with the server's decoder. No web framework comes with either."""

    def imported(module):
        return subprocess.check_output(
            [sys.executable, "-c", f"import sys, {module}; print(*sys.modules)"], text=True
        ).split()

    def of_the_service(mods):
        return {m for m in mods if m.split(".")[0] == "tunescout"}

    command, local = imported("uploader.cli"), imported("uploader.local")
    assert of_the_service(command) == {"tunescout", "tunescout.contract"}
    assert of_the_service(local) == {"tunescout", "tunescout.audio", "tunescout.errors"}
    assert not [m for m in command + local if m.split(".")[0] in {"flask", "werkzeug", "redis"}]


def test_local_decode_errors_say_what_failed(tmp_path):
    from uploader.local import DecodeError, decode

    bad = tmp_path / "bad.mp3"
    bad.write_text("not audio")
    with pytest.raises(DecodeError, match="^cannot decode it: "):
        decode(str(bad), 11025)


def test_local_decode_needs_no_ffmpeg_program(tmp_path):
    good = tmp_path / "good.wav"
    good.write_bytes(wav_bytes(np.zeros(11025, np.float32)))
    # A fresh interpreter with nothing on the PATH: the FFmpeg libraries decode in the process.
    code = f"from uploader.local import decode\nprint(decode({str(good)!r}, 11025)[0].size)"
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(tmp_path)},
        check=True,
    )
    assert done.stdout == "11025\n"


def test_a_retry_after_of_zero_still_waits_a_back_off(tmp_path):
    """Retry-After counts whole seconds: the 0 a rate limit sends in the last fraction of its window
    must not turn the retries into a busy loop that spends them all before the window turns."""
    import http.server
    import threading

    from uploader.client import UploadClient

    answers = [(429, "0"), (429, "0"), (200, None)]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            status, retry_after = answers.pop(0)
            body = b'{"status": "success", "song_id": 1}' if status == 200 else b'{"status": "error"}'
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    waits = []
    try:
        client = UploadClient(f"http://127.0.0.1:{server.server_port}", TOKEN, retries=5, sleep=waits.append)
        song = tmp_path / "a.ogg"
        song.write_bytes(b"x" * 100)
        assert client.upload_file(song, "a").status == "stored"
    finally:
        server.shutdown()
    assert len(waits) == 2 and all(1.0 <= w <= 1.5 for w in waits)
