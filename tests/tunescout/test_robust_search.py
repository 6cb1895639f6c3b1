"""The speed/tempo/pitch-robust path end to end: ingest stores both families, /api/recognize falls back
to it when the pair path finds nothing, health says what the index supports, and an index made by the
previous release keeps the pair path."""

import dataclasses
import io
import json
import sqlite3
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY
from scipy import signal

from tests.conftest import wav_bytes
from tunescout.app import create_app
from tunescout.audio import decode_audio
from tunescout.cli import main
from tunescout.config import load_config
from tunescout.engine import analyse
from tunescout.storage.stack import open_catalogue

SR = 11025
AUTH = {"Authorization": "Bearer s3cret-token"}
INGESTED = ["drascula-track1", "drascula-track10", "drascula-track11", "drascula-track14"]
UNKNOWN = "drascula-track13"


def _samples(corpus, track: str) -> np.ndarray:
    return decode_audio(str(corpus / "tracks" / f"{track}.ogg"), SR).samples


def _clip(samples: np.ndarray, start_s: float, seconds: float, speed: float = 1.0) -> bytes:
    """``seconds`` of the song from ``start_s`` on, played ``speed`` times as fast (resampled)."""
    part = samples[int(start_s * SR) : int((start_s + seconds * speed) * SR)]
    return wav_bytes(signal.resample(part, round(part.size / speed)) if speed != 1.0 else part)


def _tempo_clip(samples: np.ndarray, start_s: float, seconds: float, tempo: float) -> bytes:
    """``seconds`` of the song from ``start_s`` on, played ``tempo`` times as fast with its pitch kept."""
    part = samples[int(start_s * SR) : int((start_s + seconds * tempo) * SR)]
    stretch = ["ffmpeg", "-v", "error", "-i", "pipe:", "-filter:a", f"atempo={tempo}", "-f", "wav", "pipe:"]
    return subprocess.run(stretch, input=wav_bytes(part), capture_output=True, check=True).stdout


def _recognize(client, data: bytes) -> dict:
    resp = client.post(
        "/api/recognize", data={"file": (io.BytesIO(data), "clip.wav")}, content_type="multipart/form-data"
    )
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def _config(sqlite_config, path):
    return dataclasses.replace(sqlite_config, data_dir=str(path))


@pytest.fixture(scope="module")
def robust_app(corpus, tmp_path_factory):
    from tunescout.config import config_from_dict

    config = config_from_dict(
        {"data_dir": str(tmp_path_factory.mktemp("robust")), "fingerprinting": {"token": "s3cret-token"}}
    )
    app = create_app(config)
    client = app.test_client()
    for track in INGESTED:
        path = corpus / "tracks" / f"{track}.ogg"
        resp = client.post(
            "/api/fingerprint",
            data={"file": (io.BytesIO(path.read_bytes()), path.name)},
            headers=AUTH,
            content_type="multipart/form-data",
        )
        assert resp.status_code == 200, resp.get_json()
    yield app
    app.extensions["tunescout"].close()


@pytest.mark.parametrize("speed", [1.05, 0.95])
def test_a_speed_changed_clip_is_recognised_with_its_scales(robust_app, corpus, speed):
    body = _recognize(robust_app.test_client(), _clip(_samples(corpus, "drascula-track10"), 30.0, 10.0, speed))
    assert [r["song_name"] for r in body["results"]] == ["drascula-track10"]
    best = body["results"][0]
    assert best["time_scale"] == pytest.approx(1 / speed, rel=0.01)
    assert best["frequency_scale"] == pytest.approx(speed, rel=0.01)
    assert best["offset_seconds"] == pytest.approx(30.0, abs=0.1)  # in the song's own time
    assert 0.5 <= best["confidence"] <= 1 and "robust" in body["timings"]


def test_a_clean_clip_is_answered_by_the_pair_path_at_scale_one(robust_app, corpus):
    body = _recognize(robust_app.test_client(), _clip(_samples(corpus, "drascula-track1"), 50.0, 5.0))
    best = body["results"][0]
    assert best["song_name"] == "drascula-track1" and best["offset_seconds"] == pytest.approx(50.0, abs=0.05)
    assert best["time_scale"] == 1.0 and best["frequency_scale"] == 1.0
    assert "robust" not in body["timings"]


@pytest.mark.parametrize("tempo", [1.1, 0.92])
def test_a_tempo_change_the_pairs_survive_is_answered_with_its_time_scale(robust_app, corpus, tempo):
    samples = _samples(corpus, "drascula-track10")
    body = _recognize(robust_app.test_client(), _tempo_clip(samples, 30.0, 10.0, tempo))
    best = body["results"][0]
    assert best["song_name"] == "drascula-track10" and "robust" not in body["timings"]
    assert best["time_scale"] == pytest.approx(1 / tempo, rel=0.005) and best["frequency_scale"] == 1.0
    assert best["offset_seconds"] == pytest.approx(30.0, abs=0.1)  # the clip's start, in the song's own time


def _robust_searches() -> dict[str, float]:
    """tunescout_robust_searches_total by row reads made."""
    return {n: REGISTRY.get_sample_value("tunescout_robust_searches_total", {"lookups": n}) or 0 for n in "12"}


@pytest.mark.parametrize("speed", [1.0, 1.05])
def test_a_clip_of_a_song_not_ingested_is_not_answered_after_the_rarest_rows(robust_app, corpus, speed):
    before = _robust_searches()
    body = _recognize(robust_app.test_client(), _clip(_samples(corpus, UNKNOWN), 20.0, 10.0, speed))
    assert body["results"] == [] and "robust" in body["timings"]
    after = _robust_searches()
    assert (after["1"] - before["1"], after["2"] - before["2"]) == (1, 0)  # no fit worth reading on for


def test_a_weak_fit_after_the_rarest_rows_reads_the_rest(robust_app, corpus):
    """With no first-step rejection (a bar of 100 after the rarest rows is never met), the path reads on
    and still finds the song: the second step completes the first."""
    engine = robust_app.extensions["tunescout"]
    default = engine.searcher.robust
    engine.searcher.robust = dataclasses.replace(default, q_first_min_score=0, q_first_min_ratio=0, min_score=100)
    try:
        before = _robust_searches()
        clip = _clip(_samples(corpus, "drascula-track10"), 30.0, 10.0, 1.05)
        assert _recognize(robust_app.test_client(), clip)["results"] == []  # no fit scores 100
        assert _robust_searches()["2"] - before["2"] == 1
    finally:
        engine.searcher.robust = default


def test_health_says_the_index_is_robust(robust_app):
    body = robust_app.test_client().get("/api/health").get_json()
    assert body["speed_pitch_robust"] is True
    assert [p["speed_pitch_robust"] for p in body["instances"]] == [True]
    assert all("speed_pitch_robust" not in p for p in body["results"])


def test_an_index_of_the_previous_release_keeps_the_pair_path(corpus, sqlite_config, tmp_path):
    config = _config(sqlite_config, tmp_path / "data")
    old = open_catalogue(config)
    old.ensure_schema("e20071e54d2ade53")  # as 1.0 did: no features
    path = corpus / "tracks" / "drascula-track10.ogg"
    old.add_song(analyse(str(path), "drascula-track10", robust=None))
    old.close()

    app = create_app(config)
    client = app.test_client()
    try:
        body = client.get("/api/health").get_json()
        assert body["speed_pitch_robust"] is False and body["instances"][0]["speed_pitch_robust"] is False
        samples = _samples(corpus, "drascula-track10")
        found = _recognize(client, _clip(samples, 20.0, 5.0))["results"]
        assert found[0]["song_name"] == "drascula-track10" and found[0]["time_scale"] == 1.0
        assert _recognize(client, _clip(samples, 30.0, 10.0, 1.05))["results"] == []  # no robust rows
        pair_hashes = analyse(str(corpus / "tracks" / "drascula-track1.ogg"), "x", robust=None).hashes.size
        resp = client.post(
            "/api/fingerprint",
            data={"file": (io.BytesIO((corpus / "tracks" / "drascula-track1.ogg").read_bytes()), "t1.ogg")},
            headers=AUTH,
            content_type="multipart/form-data",
        )
        assert resp.get_json()["total_hashes"] == pair_hashes  # a new song: the pair family only
    finally:
        app.extensions["tunescout"].close()


def test_upgrade_gives_songs_of_an_earlier_release_their_peaks_without_audio(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default config: ./data/fingerprints.sqlite
    runner = CliRunner()
    assert runner.invoke(main, ["ingest", str(corpus / "tracks" / "drascula-track10.ogg")]).exit_code == 0
    with sqlite3.connect(tmp_path / "data" / "fingerprints.sqlite") as db:
        db.execute("DROP TABLE peaks")  # as a release before peak verification left it
    samples = _samples(corpus, "drascula-track10")
    (tmp_path / "tempo.wav").write_bytes(_tempo_clip(samples, 30.0, 10.0, 1.1))

    def recognised():
        return json.loads(runner.invoke(main, ["recognize", str(tmp_path / "tempo.wav")]).output)["results"][0]

    app = create_app(load_config(None))
    try:
        assert app.test_client().get("/api/health").get_json()["peak_verification"] is False
        assert recognised()["time_scale"] == 1.0  # found, but its tempo is not measured
        upgraded = runner.invoke(main, ["upgrade"])
        assert upgraded.exit_code == 0, upgraded.output
        assert '"songs_given_peaks": 1' in upgraded.output
        assert app.test_client().get("/api/health").get_json()["peak_verification"] is True
        assert recognised()["time_scale"] == pytest.approx(1 / 1.1, rel=0.005)
        assert '"songs_given_peaks": 0' in runner.invoke(main, ["upgrade"]).output  # nothing left to do
    finally:
        app.extensions["tunescout"].close()


def test_a_packed_fingerprint_of_both_families_is_found_speed_changed(robust_app, corpus):
    from uploader.local import fingerprint_file

    path = str(corpus / "tracks" / "drascula-track15.ogg")
    stored = robust_app.extensions["tunescout"].fingerprint_packed(fingerprint_file(path), "packed-15")
    assert stored.total_hashes > analyse(path, "x", robust=None).hashes.size  # both families
    body = _recognize(robust_app.test_client(), _clip(_samples(corpus, "drascula-track15"), 20.0, 10.0, 0.95))
    assert [r["song_name"] for r in body["results"]] == ["packed-15"]
