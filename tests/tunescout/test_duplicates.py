"""Duplicates inside the catalogue: planted re-encodes, edits and compilations are found with their
spans, from the index alone, and unrelated songs are not paired."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import SR, music_like, wav_bytes
from tests.tunescout.test_audio import ffmpeg
from tunescout.cli import main
from tunescout.config import config_from_dict
from tunescout.duplicates import DuplicateRun, check_catalogue, duplicates_of
from tunescout.engine import Engine

SPAN_ERROR_S = 1.0  # a shared span's edges, seconds


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """Five songs of their own, and three planted copies: an MP3 re-encode of the first, an edit of
    it (its seconds 10-40 and 70-95: two cuts), and a compilation of the second and the third."""
    tmp = tmp_path_factory.mktemp("duplicates")
    rng = np.random.default_rng(21)
    own = {f"song{i}": music_like(rng, 100 if i == 0 else 60, base_hz=100.0 + 17 * i) for i in range(5)}
    (tmp / "song0.wav").write_bytes(wav_bytes(own["song0"]))
    mp3 = ffmpeg("-i", str(tmp / "song0.wav"), "-b:a", "96k", "-f", "mp3", "-")
    first = own["song0"]
    planted = {
        "edit": np.concatenate([first[10 * SR : 40 * SR], first[70 * SR : 95 * SR]]),
        "compilation": np.concatenate([own["song1"], own["song2"]]),
    }
    config = config_from_dict({"data_dir": str(tmp / "data")})
    engine = Engine.from_config(config)
    ids = {}
    for name, samples in {**own, **planted}.items():
        ids[name] = engine.fingerprint(_wav(tmp, name, samples), name).song_id
    (tmp / "reencode.mp3").write_bytes(mp3)
    ids["reencode"] = engine.fingerprint(str(tmp / "reencode.mp3"), "reencode").song_id
    yield engine, ids, tmp
    engine.close()


def _wav(tmp, name, samples) -> str:
    path = tmp / f"{name}.wav"
    path.write_bytes(wav_bytes(samples.astype(np.float32)))
    return str(path)


def spans_of(found, other_id):
    return [(s.start_seconds, s.end_seconds, s.other_start_seconds, s.other_end_seconds) for s in found[other_id].spans]


def test_every_planted_pair_is_found_with_its_spans_and_no_other(catalogue):
    engine, ids, _ = catalogue
    pairs = {frozenset((d.song_id, d.other_id)): d for d in check_catalogue(engine, DuplicateRun())}
    name = {v: k for k, v in ids.items()}
    assert {frozenset(name[i] for i in p) for p in pairs} == {
        frozenset(p)
        for p in [
            ("song0", "reencode"),
            ("song0", "edit"),
            ("reencode", "edit"),
            ("song1", "compilation"),
            ("song2", "compilation"),
        ]
    }
    edit = {d.other_id: d for d in duplicates_of(engine, ids["edit"])}
    for expected, got in zip([(0, 30, 10, 40), (30, 55, 70, 95)], spans_of(edit, ids["song0"])):
        assert np.allclose(got, expected, atol=SPAN_ERROR_S), (got, expected)
    compilation = {d.other_id: d for d in duplicates_of(engine, ids["compilation"])}
    assert np.allclose(spans_of(compilation, ids["song1"]), [(0, 60, 0, 60)], atol=SPAN_ERROR_S)
    assert np.allclose(spans_of(compilation, ids["song2"]), [(60, 120, 0, 60)], atol=SPAN_ERROR_S)
    reencode = {d.other_id: d for d in duplicates_of(engine, ids["reencode"])}
    assert np.allclose(spans_of(reencode, ids["song0"]), [(0, 100, 0, 100)], atol=SPAN_ERROR_S)
    assert duplicates_of(engine, ids["song3"]) == [] and duplicates_of(engine, 999) == []


def test_the_command_reports_each_pair_once_and_goes_on_where_it_stopped(catalogue, monkeypatch):
    engine, ids, tmp = catalogue
    monkeypatch.chdir(tmp)
    (tmp / "config.json").write_text(json.dumps({"data_dir": str(tmp / "data")}))
    state = tmp / "run.json"
    half = DuplicateRun(after=ids["song4"], checked=5)  # as a run stopped after the five songs of their own
    half.save(state)
    result = CliRunner().invoke(main, ["duplicates", "--state", str(state)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    summary = lines.pop()
    assert summary["type"] == "summary" and summary["checked"] == len(ids) and summary["pairs"] == len(lines)
    # the songs checked after the stop (the planted ones) pair with everything, earlier songs too
    assert len(lines) == 5 and all(line["type"] == "duplicate" and line["spans"] for line in lines)
    again = CliRunner().invoke(main, ["duplicates", "--state", str(state)])
    assert json.loads(again.output.splitlines()[-1])["pairs"] == 5  # nothing new, nothing twice
    one = CliRunner().invoke(main, ["duplicates", "--song", str(ids["compilation"]), "--format", "table"])
    assert one.exit_code == 0 and "song1" in one.output and "song2" in one.output
    since = CliRunner().invoke(main, ["duplicates", "--since", "2999-01-01"])
    assert json.loads(since.output.splitlines()[-1])["pairs"] == 0
    bad = CliRunner().invoke(main, ["duplicates", "--since", "yesterday"])
    assert bad.exit_code == 2 and "not a date" in bad.output


def test_the_api_gives_one_songs_duplicates(catalogue):
    from tunescout.app import create_app

    engine, ids, tmp = catalogue
    app = create_app(config_from_dict({"data_dir": str(tmp / "data")}))
    try:
        client = app.test_client()
        body = client.get(f"/api/duplicates?song_id={ids['compilation']}").get_json()
        assert body["status"] == "success" and body["song_id"] == ids["compilation"]
        assert sorted(d["other_name"] for d in body["duplicates"]) == ["song1", "song2"]
        assert all(abs(d["shared_seconds"] - 60) <= 2 for d in body["duplicates"])
        assert client.get(f"/api/duplicates?song_id={ids['song3']}").get_json()["duplicates"] == []
        assert client.get("/api/duplicates?song_id=12345").status_code == 404
        assert client.get("/api/duplicates").status_code == 400
        assert client.get("/api/duplicates?song_id=x").status_code == 400
    finally:
        app.extensions["tunescout"].close()
