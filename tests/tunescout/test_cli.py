import json

import numpy as np
from click.testing import CliRunner

from tests.conftest import music_like, wav_bytes
from tunescout.cli import main


def test_ingest_is_resumable_and_recognize_prints_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(3)
    folder = tmp_path / "music" / "sub"
    folder.mkdir(parents=True)
    songs = [music_like(rng, 30) for _ in range(3)]
    for i, s in enumerate(songs):
        (folder / f"song{i}.wav").write_bytes(wav_bytes(s))
    (folder / "notes.txt").write_text("not audio")
    runner = CliRunner()
    first = runner.invoke(main, ["ingest", str(tmp_path / "music"), "--workers", "2"])
    assert first.exit_code == 0, first.output
    assert "3 stored, 0 already there, 0 failed" in first.output
    again = runner.invoke(main, ["ingest", str(tmp_path / "music")])
    assert "0 stored, 3 already there, 0 failed" in again.output

    (tmp_path / "clip.wav").write_bytes(wav_bytes(songs[1][11025 * 10 : 11025 * 15]))
    out = runner.invoke(main, ["recognize", str(tmp_path / "clip.wav")])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["results"][0]["song_name"] == "song1"


def test_failures_exit_non_zero(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.mp3"
    bad.write_text("not audio")
    result = CliRunner().invoke(main, ["ingest", str(bad)])
    assert result.exit_code == 1 and "1 failed" in result.output


def test_bad_config_is_a_clear_message(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"instances": [{"database_type": "oracle"}]}')
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 1
    assert "instances[0].database_type: 'oracle' is not one of" in result.output


def test_version_is_the_package_version():
    from tunescout import __version__

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output == f"tunescout, version {__version__}\n"


def test_ingest_picks_the_shared_audio_extensions(tmp_path):
    from tunescout.cli import find_audio
    from tunescout.contract import AUDIO_EXTENSIONS

    for name in ("a.MP3", "b.flac", "c.txt", "d.mkv"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in find_audio([tmp_path])] == ["a.MP3", "b.flac", "d.mkv"]
    assert {"mp3", "flac", "mkv"} <= set(AUDIO_EXTENSIONS)


def ingested(tmp_path, monkeypatch, seed: int, seconds: float) -> CliRunner:
    """A runner in tmp_path (the default config's data folder) after ingesting s0, s1, s2.wav."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(seed)
    for i in range(3):
        (tmp_path / f"s{i}.wav").write_bytes(wav_bytes(music_like(rng, seconds)))
    runner = CliRunner()
    assert runner.invoke(main, ["ingest", str(tmp_path), "--workers", "1"]).exit_code == 0
    return runner


def test_songs_list_show_delete_and_stats(tmp_path, monkeypatch):
    runner = ingested(tmp_path, monkeypatch, seed=4, seconds=20)
    page = json.loads(runner.invoke(main, ["songs", "list", "--limit", "2"]).output)
    assert [s["song_name"] for s in page["songs"]] == ["s0", "s1"] and page["next_cursor"] == "2"
    rest = json.loads(runner.invoke(main, ["songs", "list", "--cursor", "2"]).output)
    assert [s["song_name"] for s in rest["songs"]] == ["s2"]
    assert json.loads(runner.invoke(main, ["songs", "show", "3"]).output)["song"]["song_name"] == "s2"
    refused = runner.invoke(main, ["songs", "delete", "3"], input="n\n")
    assert refused.exit_code == 1 and json.loads(runner.invoke(main, ["stats"]).output)["songs"] == 3
    deleted = runner.invoke(main, ["songs", "delete", "3", "--yes"])
    assert json.loads(deleted.output) == {"status": "success", "deleted": 3}
    missing = runner.invoke(main, ["songs", "show", "3"])
    assert missing.exit_code == 1 and "Song not found" in missing.output
    assert json.loads(runner.invoke(main, ["stats"]).output)["songs"] == 2


def test_compact_gives_back_the_space_of_deleted_songs(tmp_path, monkeypatch):
    runner = ingested(tmp_path, monkeypatch, seed=5, seconds=30)
    for song_id in ("1", "2"):
        assert runner.invoke(main, ["songs", "delete", song_id, "--yes"]).exit_code == 0
    done = runner.invoke(main, ["compact"])
    assert done.exit_code == 0, done.output
    [instance] = json.loads(done.output)["instances"]
    assert instance["index_bytes"] < instance["index_bytes_before"]
    recognized = json.loads(runner.invoke(main, ["recognize", str(tmp_path / "s2.wav")]).output)
    assert recognized["results"][0]["song_name"] == "s2"


def test_ingest_refuses_songs_longer_than_the_configured_max_duration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(5)
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "long.wav").write_bytes(wav_bytes(music_like(rng, 30)))
    (tmp_path / "music" / "short.wav").write_bytes(wav_bytes(music_like(rng, 12)))
    (tmp_path / "config.json").write_text(json.dumps({"fingerprinting": {"max_duration": 20}}))
    result = CliRunner().invoke(main, ["ingest", "--config", "config.json", "music", "--workers", "1"])
    assert result.exit_code == 1
    assert "1 stored, 0 already there, 1 failed" in result.output and "long.wav" in result.output
