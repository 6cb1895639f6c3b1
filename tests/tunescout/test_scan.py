"""tunescout.scan on a synthetic broadcast of real music: catalogued plays become segments with their
boundaries, speech and a song not in the catalogue do not, and segments come out as they end."""

from __future__ import annotations

import http.server
import json
import shutil
import signal as signal_module
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import signal

from tests.conftest import ROOT, SR, need, wav_bytes
from tunescout.audio import decode_audio, stream_windows
from tunescout.cli import main
from tunescout.config import config_from_dict
from tunescout.engine import Engine
from tunescout.scan import Scanner, ScanParams, ScanSummary, Segment, scan

pytestmark = pytest.mark.corpus

INGESTED = ["drascula-track1", "drascula-track10", "drascula-track11", "drascula-track14"]
UNKNOWN = "drascula-track13"
FADE_SECONDS = 3.0
BOUNDARY_SECONDS = 1.5  # the p95 goal for a boundary


class Broadcast:
    """A recording made of parts, one after the other (or crossfaded), and its true timeline."""

    def __init__(self):
        self.parts: list[np.ndarray] = []
        self.plays: list[dict] = []  # song, start, end (recording seconds), song_start, fade_in

    @property
    def seconds(self) -> float:
        return sum(p.size for p in self.parts) / SR

    def add(self, samples: np.ndarray, song: str | None = None, song_start: float = 0.0, fade: float = 0.0):
        samples = samples.astype(np.float32)
        start = self.seconds - fade
        if fade:
            n = round(fade * SR)
            ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
            self.parts[-1][-n:] = self.parts[-1][-n:] * (1 - ramp) + samples[:n] * ramp
            samples = samples[n:]
        self.parts.append(samples.copy())
        if song:
            self.plays.append(dict(song=song, start=start, end=self.seconds, song_start=song_start, fade_in=fade))

    def samples(self) -> np.ndarray:
        return np.concatenate(self.parts)


def speech(text: str, tmp_path) -> np.ndarray:
    need(shutil.which("espeak-ng") is not None, "espeak-ng (speech between the songs)")
    path = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return decode_audio(path, SR).samples


@pytest.fixture(scope="module")
def engine(corpus, tmp_path_factory):
    engine = Engine.from_config(config_from_dict({"data_dir": str(tmp_path_factory.mktemp("scan"))}))
    for track in INGESTED:
        engine.fingerprint(str(corpus / "tracks" / f"{track}.ogg"), track)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def broadcast(corpus, tmp_path_factory) -> tuple[Broadcast, object]:
    """About 4.5 minutes: talk, a play, noise, an unknown song, talk, two songs crossfaded, talk, the
    first song again (another passage), a play 5 % fast, talk; written as a WAV file."""
    tmp = tmp_path_factory.mktemp("broadcast")
    songs = {t: decode_audio(str(corpus / "tracks" / f"{t}.ogg"), SR).samples for t in INGESTED + [UNKNOWN]}

    def cut(track, start, seconds):
        return songs[track][round(start * SR) : round((start + seconds) * SR)]

    fast = cut("drascula-track14", 10.0, 42.0)
    b = Broadcast()
    b.add(speech("Good morning, and welcome to the show. Here is our first record.", tmp))
    b.add(cut("drascula-track1", 20.0, 60.0), "drascula-track1", 20.0)
    b.add(0.05 * np.random.default_rng(1).standard_normal(4 * SR))
    b.add(cut(UNKNOWN, 10.0, 40.0))
    b.add(speech("That one is not in the catalogue. Now for something we know.", tmp))
    b.add(cut("drascula-track10", 0.0, 50.0), "drascula-track10", 0.0)
    b.add(cut("drascula-track11", 30.0, 45.0), "drascula-track11", 30.0, fade=FADE_SECONDS)
    b.add(speech("And once again.", tmp))
    b.add(cut("drascula-track1", 100.0, 35.0), "drascula-track1", 100.0)
    b.add(signal.resample(fast, round(fast.size / 1.05)), "drascula-track14", 10.0)
    b.add(speech("That was a little fast. Goodbye.", tmp))
    path = tmp / "broadcast.wav"
    path.write_bytes(wav_bytes(b.samples()))
    return b, path


def assert_timeline(segments: list[dict], plays: list[dict]) -> None:
    """The segments are the plays, in order, each boundary within BOUNDARY_SECONDS (within the fade
    for a crossfaded one), the song positions as well."""
    assert [s["song_name"] for s in segments] == [p["song"] for p in plays]
    for s, p in zip(segments, plays):
        if p["fade_in"]:  # a crossfade: both segments' boundaries lie within the fade
            assert p["start"] - 0.5 <= s["start_seconds"] <= p["start"] + p["fade_in"] + 0.5, (s, p)
        else:
            assert abs(s["start_seconds"] - p["start"]) <= BOUNDARY_SECONDS, (s, p)
        fade_out = next((q["fade_in"] for q in plays if abs(q["start"] + q["fade_in"] - p["end"]) < 0.01), 0.0)
        assert p["end"] - fade_out - 0.5 <= s["end_seconds"] <= p["end"] + BOUNDARY_SECONDS, (s, p)
        song_start = p["song_start"] + max(s["start_seconds"] - p["start"], 0.0) / (s["time_scale"] or 1.0)
        assert abs(s["song_start_seconds"] - song_start) <= BOUNDARY_SECONDS, (s, p)


def test_a_broadcast_becomes_its_timeline(engine, broadcast):
    b, path = broadcast
    found = list(scan(engine, path))
    summary = found.pop()
    assert isinstance(summary, ScanSummary) and all(isinstance(s, Segment) for s in found)
    segments = sorted((s.body() for s in found), key=lambda s: s["start_seconds"])
    assert_timeline(segments, b.plays)
    assert segments[-1]["time_scale"] == pytest.approx(1 / 1.05, abs=0.005)
    assert all(s["time_scale"] == 1.0 for s in segments[:-1])
    assert summary.segments == len(found) and summary.duration_seconds == pytest.approx(b.seconds, abs=0.01)
    assert summary.windows == len(list(stream_windows(path, SR))) and not summary.interrupted


def test_following_a_play_spares_its_searches_and_keeps_the_timeline(engine, broadcast):
    """A window whose new audio the play already found still fills is confirmed by the song's peaks
    and not searched; the timeline is the one a search of every window gives."""
    b, path = broadcast
    runs = {}
    for follow in (False, True):
        *found, summary = scan(engine, path, ScanParams(follow=follow))
        runs[follow] = sorted((s.body() for s in found), key=lambda s: s["start_seconds"]), summary
        assert_timeline(runs[follow][0], b.plays)
    assert runs[False][1].windows_followed == 0
    # of the windows inside the plays, about half or more: the catalogued plays fill most of it
    assert runs[True][1].windows_followed >= runs[True][1].windows / 3
    for a, f in zip(runs[False][0], runs[True][0]):
        assert abs(a["start_seconds"] - f["start_seconds"]) <= 0.1 and abs(a["end_seconds"] - f["end_seconds"]) <= 0.1


def test_a_segment_comes_out_as_soon_as_its_play_has_ended(engine, broadcast):
    b, path = broadcast
    scanner = Scanner(engine)
    when = []
    for window in stream_windows(path, SR):
        when += [(s, window.end_seconds) for s in scanner.feed(window)]
    first, seen_at = when[0]
    assert first.song_name == "drascula-track1" and seen_at < first.end_seconds + 20.0 < b.seconds


def test_a_scan_stopped_midway_reports_the_play_in_progress(engine, broadcast):
    b, path = broadcast
    scanner = Scanner(engine)
    for window in stream_windows(path, SR):
        assert not scanner.feed(window)
        if window.end_seconds > b.plays[0]["start"] + 30.0:
            break
    [segment] = scanner.finish()
    assert segment.song_name == "drascula-track1" and segment.end_seconds == pytest.approx(window.end_seconds, abs=1.0)
    assert scanner.summary(interrupted=True).interrupted


@pytest.fixture(scope="module")
def config_file(engine, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "config.json"
    path.write_text(json.dumps({"data_dir": engine.config.data_dir}))
    return path


def test_the_cli_prints_a_json_line_per_segment_then_the_summary(broadcast, config_file):
    b, path = broadcast
    result = CliRunner().invoke(main, ["scan", "--config", str(config_file), str(path)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["type"] for line in lines] == ["segment"] * len(b.plays) + ["summary"]
    assert_timeline(sorted(lines[:-1], key=lambda s: s["start_seconds"]), b.plays)
    assert {"segments": len(b.plays), "interrupted": False}.items() <= lines[-1].items()
    table = CliRunner().invoke(main, ["scan", "--config", str(config_file), "--format", "table", str(path)])
    assert table.exit_code == 0 and "  drascula-track1 [1] from 0:00:20.0 to 0:01:20.0  confidence" in table.output
    assert table.output.splitlines()[-1].startswith(f"{len(b.plays)} segments in 0:04:")


def test_the_cli_refuses_what_it_cannot_decode(tmp_path, config_file):
    (tmp_path / "bad.mp3").write_text("not audio")
    result = CliRunner().invoke(main, ["scan", "--config", str(config_file), str(tmp_path / "bad.mp3")])
    assert result.exit_code == 1 and "Error:" in result.output


class _SlowStream(http.server.BaseHTTPRequestHandler):
    """Serves the files of its folder as a live source does: no length, a piece at a time."""

    folder: Path
    requests: list[str]
    trickle_from: float | None = None  # the share served at once; the rest a little at a time

    def do_GET(self):
        self.requests.append(self.path)
        path = self.folder / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.apple.mpegurl" if path.suffix == ".m3u8" else "audio/mpeg")
        self.end_headers()
        data = path.read_bytes()
        fast = len(data) if self.trickle_from is None else round(len(data) * self.trickle_from)
        pieces = [(at, min(at + 32_768, fast), 0.01) for at in range(0, fast, 32_768)]
        # slower than it plays: a scan cannot reach the end of what trickles
        pieces += [(at, at + 4_096, 0.5) for at in range(fast, len(data), 4_096)]
        try:
            for begin, end, pause in pieces:
                self.wfile.write(data[begin:end])
                self.wfile.flush()
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the scan stopped listening

    def log_message(self, *args):
        pass


def _serve(folder: Path, trickle_from: float | None = None):
    handler = type("Handler", (_SlowStream,), {"folder": folder, "requests": [], "trickle_from": trickle_from})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}", handler.requests


@pytest.fixture(scope="module")
def live_folder(broadcast, tmp_path_factory) -> Path:
    """The broadcast as an MP3 stream and as an HLS playlist of 10 s MPEG-TS segments."""
    need(shutil.which("ffmpeg") is not None, "ffmpeg (the live source's encodings)")
    _, path = broadcast
    folder = tmp_path_factory.mktemp("live")
    encode = ["ffmpeg", "-v", "error", "-i", str(path), "-c:a", "libmp3lame", "-b:a", "96k"]
    subprocess.run([*encode, str(folder / "live.mp3")], check=True)
    hls = ["-f", "hls", "-hls_time", "10", "-hls_list_size", "0"]
    subprocess.run([*encode, *hls, str(folder / "live.m3u8")], check=True)
    return folder


@pytest.fixture(scope="module")
def live_source(live_folder):
    """The live source served on 127.0.0.1 a piece at a time: its address and the paths asked for."""
    server, url, requests = _serve(live_folder)
    yield url, requests
    server.shutdown()


@pytest.fixture
def trickling_source(live_folder):
    """The MP3 stream, of which each request gets the first half at once and the rest slower than it
    plays, so that no scan reaches its end while a test runs."""
    server, url, _ = _serve(live_folder, trickle_from=0.5)
    yield f"{url}/live.mp3"
    server.shutdown()


@pytest.mark.parametrize("name", ["live.mp3", "live.m3u8"])
def test_the_cli_follows_a_live_stream_and_reports_each_song_while_it_plays(broadcast, config_file, live_source, name):
    b, _ = broadcast
    url, requests = live_source
    result = CliRunner().invoke(main, ["scan", "--config", str(config_file), "--follow", "10", f"{url}/{name}"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    segments = [line for line in lines if line["type"] == "segment"]
    assert_timeline(sorted(segments, key=lambda s: s["start_seconds"]), b.plays)
    assert lines[-1]["type"] == "summary" and lines[-1]["duration_seconds"] == pytest.approx(b.seconds, abs=1.0)
    first = segments[0]
    reports = [line for line in lines[: lines.index(first)] if line["type"] == "playing"]
    reports = [r for r in reports if r["song_id"] == first["song_id"]]
    # a 60 s play followed every 10 s: reported while it plays, its end (that of the last window
    # recognising it, not refined) growing up to the true one
    assert len(reports) >= 4, lines
    ends = [r["end_seconds"] for r in reports]
    assert ends == sorted(ends) and first["end_seconds"] - 15.0 <= ends[-1] <= first["end_seconds"] + 10.0
    assert all(abs(r["start_seconds"] - first["start_seconds"]) <= BOUNDARY_SECONDS for r in reports)
    assert any(r.endswith(".ts") for r in requests) or name.endswith(".mp3")


def test_the_cli_refuses_a_missing_file_before_opening_the_index(tmp_path):
    result = CliRunner().invoke(main, ["scan", "--config", str(tmp_path / "none.json"), str(tmp_path / "absent.mp3")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_ctrl_c_ends_the_cli_with_what_is_known(config_file, trickling_source, tmp_path):
    command = [sys.executable, "-X", "faulthandler", "-m", "tunescout", "scan", "--config", str(config_file)]
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr:
        scan_process = subprocess.Popen(
            [*command, trickling_source], cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    try:
        first = json.loads(scan_process.stdout.readline())
        scan_process.send_signal(signal_module.SIGINT)
        try:
            rest, _ = scan_process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            scan_process.send_signal(signal_module.SIGABRT)  # faulthandler: where each thread is
            scan_process.wait(timeout=10)
            pytest.fail(f"still running 30 s after Ctrl-C:\n{errors.read_text()}")
    finally:
        scan_process.kill()
    assert first["song_name"] == "drascula-track1" and scan_process.returncode == 0
    summary = json.loads(rest.splitlines()[-1])
    assert summary["type"] == "summary" and summary["interrupted"] is True
    assert summary["duration_seconds"] < 200


class _DroppingStream(_SlowStream):
    """The MP3 stream, broken off halfway: the first request gets the first half, the next the rest,
    later ones nothing (the station is off the air)."""

    def do_GET(self):
        self.requests.append(self.path)
        if len(self.requests) > 2:
            self.send_error(404)
            return
        data = (self.folder / "live.mp3").read_bytes()
        half = len(data) // 2
        piece = data[:half] if len(self.requests) == 1 else data[half:]
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg")
        self.end_headers()
        try:
            self.wfile.write(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def test_the_cli_reconnects_to_a_stream_that_broke_off(broadcast, config_file, live_folder):
    b, _ = broadcast
    handler = type("Handler", (_DroppingStream,), {"folder": live_folder, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/live.mp3"
    try:
        alone = CliRunner().invoke(main, ["scan", "--config", str(config_file), url])
        handler.requests.clear()
        result = CliRunner().invoke(main, ["scan", "--config", str(config_file), "--reconnect", "5", url])
    finally:
        server.shutdown()
    assert alone.exit_code == 0 and result.exit_code == 0, result.output
    # without --reconnect the scan ends with the first half; with it, it goes on after a second off the air
    assert json.loads(alone.stdout.splitlines()[-1])["duration_seconds"] < b.seconds / 2 + 5
    assert "answers again" in result.stderr  # logged for the operator
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    summary, segments = lines[-1], [line for line in lines if line["type"] == "segment"]
    assert len(handler.requests) >= 2
    assert b.seconds + 0.9 <= summary["duration_seconds"] <= b.seconds + 10
    off = summary["duration_seconds"] - b.seconds  # the silence for the time the stream was off
    cut = b.seconds / 2
    for play in b.plays:
        shift = off if play["start"] > cut + 5 else 0.0
        if play["end"] < cut - 5 or play["start"] > cut + 5:  # wholly on one side of the break
            found = [s for s in segments if s["song_name"] == play["song"]]
            assert any(abs(s["start_seconds"] - (play["start"] + shift)) <= 2.5 for s in found), (play, found)


def test_a_play_a_little_fast_is_one_segment(engine, corpus, tmp_path):
    """A play 1.5 % fast, whose time scale the hashes report as 1.0, puts the song's start a little
    earlier in each window; the windows still make one play (ScanParams.drift), where a fixed
    tolerance cuts it in pieces."""
    song = decode_audio(str(corpus / "tracks" / "drascula-track1.ogg"), SR).samples[20 * SR : 110 * SR]
    noise = 0.05 * np.random.default_rng(2).standard_normal(5 * SR).astype(np.float32)
    path = tmp_path / "fast.wav"
    path.write_bytes(wav_bytes(np.concatenate([noise, signal.resample(song, round(song.size / 1.015)), noise])))
    pieces = {}
    # (searching every window, each at its own offset: following, and one play per song, keep it whole too)
    for drift in (0.0, ScanParams().drift):
        alone = ScanParams(drift=drift, follow=False, one_play_per_song=False)
        found = [s for s in scan(engine, path, alone) if isinstance(s, Segment)]
        pieces[drift] = [s for s in found if s.song_name == "drascula-track1"]
    assert len(pieces[ScanParams().drift]) == 1 < len(pieces[0.0])
    (play,) = pieces[ScanParams().drift]
    assert play.start_seconds < 7.0 and play.end_seconds > 5.0 + 90 / 1.015 - 3.0
    followed = [s for s in scan(engine, path) if isinstance(s, Segment) and s.song_name == "drascula-track1"]
    assert len(followed) == 1 and abs(followed[0].end_seconds - play.end_seconds) < 1.0


def test_a_passage_played_twice_in_a_row_is_one_play(engine, corpus, tmp_path):
    """A loop (a passage repeated at once) finds the song at another offset in each repeat: with
    ScanParams.one_play_per_song the open play goes on, and the segment is not cut in two."""
    song = decode_audio(str(corpus / "tracks" / "drascula-track10.ogg"), SR).samples[10 * SR : 40 * SR]
    noise = 0.05 * np.random.default_rng(3).standard_normal(5 * SR).astype(np.float32)
    path = tmp_path / "loop.wav"
    path.write_bytes(wav_bytes(np.concatenate([noise, song, song, noise])))
    runs = {}
    for merge in (False, True):
        found = scan(engine, path, ScanParams(one_play_per_song=merge))
        runs[merge] = [s for s in found if isinstance(s, Segment) and s.song_name == "drascula-track10"]
    assert len(runs[False]) == 2
    (play,) = runs[True]
    assert abs(play.start_seconds - 5.0) <= BOUNDARY_SECONDS and abs(play.end_seconds - 65.0) <= BOUNDARY_SECONDS
    assert abs(play.song_start_seconds - 10.0) <= BOUNDARY_SECONDS
    assert abs(play.song_end_seconds - 40.0) <= BOUNDARY_SECONDS
