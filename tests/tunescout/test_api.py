"""The HTTP contract of every endpoint and every error, on the embedded SQLite default."""

import io
import re
import time

import numpy as np
import pytest

from tests.conftest import music_like, wav_bytes
from tunescout.app import create_app

AUTH = {"Authorization": "Bearer s3cret-token"}


@pytest.fixture
def app(sqlite_config):
    app = create_app(sqlite_config)
    yield app
    app.extensions["tunescout"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def song():
    return music_like(np.random.default_rng(7), 60)


def upload(client, url, data: bytes, filename="song.wav", headers=None, **form):
    return client.post(
        url,
        data={"file": (io.BytesIO(data), filename), **form},
        headers=headers or {},
        content_type="multipart/form-data",
    )


def assert_error(resp, status, message):
    assert resp.status_code == status
    assert resp.is_json
    assert resp.get_json()["status"] == "error"
    assert resp.get_json()["message"] == message


def test_fingerprint_then_recognise_then_fetch(client, song):
    resp = upload(client, "/api/fingerprint", wav_bytes(song), "My Song.wav", AUTH)
    assert resp.status_code == 200, resp.get_json()
    stored = resp.get_json()
    assert {"status": "success", "song_name": "My Song"}.items() <= stored.items()
    assert stored["total_hashes"] > 100 and len(stored["blob_sha1"]) == 40

    start = 20 * 11025
    resp = upload(client, "/api/recognize", wav_bytes(song[start : start + 5 * 11025]))
    body = resp.get_json()
    assert resp.status_code == 200 and body["status"] == "success"
    assert re.fullmatch(r"[0-9a-f]{34}", body["token"])
    best = body["results"][0]
    assert best["song_id"] == stored["song_id"] and best["blob_sha1"] == stored["blob_sha1"]
    assert abs(best["offset_seconds"] - 20.0) <= 0.05
    assert 0 < best["hashes_matched_in_input"] <= best["input_total_hashes"]
    for key in ("input_confidence", "fingerprinted_confidence", "confidence"):
        assert 0 <= best[key] <= 1
    assert set(body["timings"]) == {"decode", "fingerprint", "query", "align"}

    fetched = client.get(f"/api/fetch/{body['token']}").get_json()
    assert fetched == {k: v for k, v in body.items()}


def test_same_audio_in_another_container_is_a_duplicate(client, song, tmp_path):
    from tests.tunescout.test_audio import ffmpeg

    assert upload(client, "/api/fingerprint", wav_bytes(song), "a.wav", AUTH).status_code == 200
    (tmp_path / "a.wav").write_bytes(wav_bytes(song))
    flac = ffmpeg("-i", str(tmp_path / "a.wav"), "-f", "flac", "-")
    resp = upload(client, "/api/fingerprint", flac, "a.flac", AUTH)
    assert_error(resp, 409, "Already fingerprinted")
    assert len(resp.get_json()["blob_sha1"]) == 40


def test_unknown_song_gives_no_results(client, song, rng):
    upload(client, "/api/fingerprint", wav_bytes(song), "a.wav", AUTH)
    other = music_like(rng, 8, note_seconds=0.31, base_hz=117.0)  # another tempo and tuning
    body = upload(client, "/api/recognize", wav_bytes(other)).get_json()
    assert body["status"] == "success" and body["results"] == []


def test_start_and_duration_trim_the_input(client, song):
    upload(client, "/api/fingerprint", wav_bytes(song), "a.wav", AUTH)
    body = upload(client, "/api/recognize", wav_bytes(song[: 40 * 11025]), start="30", duration="5").get_json()
    assert abs(body["results"][0]["offset_seconds"] - 30.0) <= 0.05
    resp = upload(client, "/api/recognize", wav_bytes(song[: 11025 * 5]), start="soon")
    assert_error(resp, 400, "'start' must be a number of seconds")


@pytest.mark.parametrize(
    "data, filename",
    [
        (b"", "empty.mp3"),
        (b"this is text, not audio\n" * 20, "notes.mp3"),
        (b"RIFF\x00\x00", "truncated.wav"),
    ],
)
def test_undecodable_input_is_415(client, data, filename):
    assert_error(upload(client, "/api/recognize", data, filename), 415, "Failed to process input file")


def test_a_truncated_real_file_decodes_up_to_the_cut(client, song, tmp_path):
    from tests.tunescout.test_audio import ffmpeg

    song_id = upload(client, "/api/fingerprint", wav_bytes(song), "a.wav", AUTH).get_json()["song_id"]
    (tmp_path / "a.wav").write_bytes(wav_bytes(song[: 11025 * 10]))
    mp3 = ffmpeg("-i", str(tmp_path / "a.wav"), "-f", "mp3", "-")
    resp = upload(client, "/api/recognize", mp3[:5000], "cut.mp3")  # the first 2.3 s
    assert resp.status_code == 200
    assert resp.get_json()["results"][0]["song_id"] == song_id


def test_missing_file_part(client):
    resp = client.post("/api/recognize", data={"start": "1"}, content_type="multipart/form-data")
    assert_error(resp, 400, "No file part in the request")


def test_huge_upload_is_refused_before_reading(client):
    resp = upload(client, "/api/recognize", b"\0" * (2 * 1024 * 1024))
    assert_error(resp, 413, "File too large")
    body = resp.get_json()
    assert body["limit_bytes"] == 1024 * 1024 and body["received_bytes"] > body["limit_bytes"]


def test_fetch_unknown_or_malformed_token(client):
    for token in ("0" * 34, "zz", "..etc", "0" * 32 + "05", "A" * 34):
        assert_error(client.get(f"/api/fetch/{token}"), 404, "The requested data could not be found")


def test_fingerprint_needs_the_bearer_token(client, song):
    data = wav_bytes(song[: 11025 * 5])
    assert_error(upload(client, "/api/fingerprint", data), 401, "Token missing or invalid")
    assert_error(
        upload(client, "/api/fingerprint", data, headers={"Authorization": "Bearer nope"}),
        401,
        "Token missing or invalid",
    )
    assert_error(
        upload(client, "/api/fingerprint", data, headers={"Authorization": "s3cret-token"}),
        401,
        "Token missing or invalid",
    )


def test_fingerprinting_can_be_switched_off(tmp_path, song):
    from tunescout.config import config_from_dict

    app = create_app(
        config_from_dict({"data_dir": str(tmp_path), "fingerprinting": {"allow": False, "token": "s3cret-token"}})
    )
    resp = upload(app.test_client(), "/api/fingerprint", wav_bytes(song[:11025]), headers=AUTH)
    assert_error(resp, 403, "Fingerprinting not allowed")


def test_path_traversal_names_are_made_safe(client, song):
    resp = upload(
        client, "/api/fingerprint", wav_bytes(song), "../../etc/passwd.wav", AUTH, name="../../../tmp/evil\x00name"
    )
    assert resp.status_code == 200
    name = resp.get_json()["song_name"]
    assert "/" not in name and ".." not in name and "\x00" not in name


def test_routing_errors_are_json(client):
    assert_error(client.get("/api/nope"), 404, "Not found")
    assert_error(client.get("/api/recognize"), 405, "Method not allowed")
    assert_error(client.delete("/api/fingerprint"), 405, "Method not allowed")


def test_generated_token_is_private(tmp_path):
    from tunescout.config import config_from_dict

    app = create_app(config_from_dict({"data_dir": str(tmp_path)}))
    path = tmp_path / "write_token"
    assert path.stat().st_mode & 0o777 == 0o600
    assert app.config["WRITE_TOKEN"] == path.read_text().strip()
    assert create_app(config_from_dict({"data_dir": str(tmp_path)})).config["WRITE_TOKEN"] == app.config["WRITE_TOKEN"]


def test_catalogue_list_get_delete_and_stats(client, song):
    rng = np.random.default_rng(11)
    others = [music_like(rng, 30) for _ in range(2)]
    stored = [
        upload(client, "/api/fingerprint", wav_bytes(s), f"s{i}.wav", AUTH).get_json()
        for i, s in enumerate([song, *others])
    ]
    ids = [s["song_id"] for s in stored]

    page = client.get("/api/songs?limit=2").get_json()
    assert [s["song_id"] for s in page["songs"]] == ids[:2] and page["next_cursor"]
    rest = client.get(f"/api/songs?limit=2&cursor={page['next_cursor']}").get_json()
    assert [s["song_id"] for s in rest["songs"]] == ids[2:] and rest["next_cursor"] is None
    first = page["songs"][0]
    assert set(first) == {"song_id", "song_name", "blob_sha1", "total_hashes", "duration", "instance", "created"}
    assert first["song_name"] == "s0" and first["instance"] == 0 and abs(first["duration"] - 60) < 0.01

    assert client.get(f"/api/songs/{ids[1]}").get_json()["song"]["song_name"] == "s1"
    stats = client.get("/api/stats").get_json()
    assert stats["songs"] == 3 and stats["hashes"] == sum(s["total_hashes"] for s in stored)
    assert stats["index_bytes"] > 0 and stats["instances"][0]["songs"] == 3

    query = wav_bytes(song[10 * 11025 : 15 * 11025])
    assert upload(client, "/api/recognize", query).get_json()["results"][0]["song_id"] == ids[0]
    assert client.delete(f"/api/songs/{ids[0]}", headers=AUTH).get_json() == {"status": "success", "deleted": ids[0]}
    assert upload(client, "/api/recognize", query).get_json()["results"] == []
    assert_error(client.get(f"/api/songs/{ids[0]}"), 404, "Song not found")
    assert_error(client.delete(f"/api/songs/{ids[0]}", headers=AUTH), 404, "Song not found")
    assert client.get("/api/stats").get_json()["results_stored"] == 2


def test_catalogue_errors(client):
    assert_error(client.get("/api/songs?limit=0"), 400, "limit must be between 1 and 1000")
    assert_error(client.get("/api/songs?limit=x"), 400, "'limit' must be an integer")
    assert_error(client.get("/api/songs?cursor=abc"), 400, "Malformed cursor")
    assert_error(client.delete("/api/songs/1"), 401, "Token missing or invalid")
    assert_error(
        client.delete("/api/songs/1", headers={"Authorization": "Bearer wrong"}), 401, "Token missing or invalid"
    )
    assert_error(client.get("/api/songs/99"), 404, "Song not found")
    assert client.get("/api/songs/abc").status_code == 404


def test_health_reports_each_part(client):
    body = client.get("/api/health").get_json()
    assert body["status"] == "ok" and "degraded" not in body
    assert body["instances"][0]["status"] == "up" and body["instances"][0]["latency_ms"] >= 0
    assert body["results"][0]["database_type"] == "sqlite"


def metric(client, line_start: str) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_recognitions_and_ingests(client, song):
    match = 'tunescout_recognitions_total{outcome="match"}'
    no_match = 'tunescout_recognitions_total{outcome="no_match"}'
    songs = "tunescout_songs_ingested_total"
    not_found = 'tunescout_http_requests_total{endpoint="/api/fetch/<token>",method="GET",status="404"}'
    searches = ('tunescout_searches_total{lookups="1"}', 'tunescout_searches_total{lookups="2"}')
    before = {k: metric(client, k) for k in (match, no_match, songs, not_found, *searches)}
    upload(client, "/api/recognize", wav_bytes(song[: 5 * 11025]))
    upload(client, "/api/fingerprint", wav_bytes(song), "s.wav", AUTH)
    upload(client, "/api/recognize", wav_bytes(song[: 5 * 11025]))
    client.get("/api/fetch/" + "0" * 34)
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    after = {k: metric(client, k) for k in before}
    assert {k: after[k] - before[k] for k in before if k not in searches} == {
        match: 1,
        no_match: 1,
        songs: 1,
        not_found: 1,
    }
    assert sum(after[k] - before[k] for k in searches) == 2  # one search per recognition
    assert "tunescout_http_request_duration_seconds_bucket" in resp.get_data(as_text=True)


def test_only_a_clip_left_unanswered_within_reach_is_searched_again_with_the_richer_query(client, song, rng):
    second = "tunescout_second_queries_total"
    upload(client, "/api/fingerprint", wav_bytes(song), "s.wav", AUTH)
    before = metric(client, second)
    found = upload(client, "/api/recognize", wav_bytes(song[20 * 11025 : 30 * 11025]))
    assert found.get_json()["results"] and metric(client, second) == before  # the first query answered
    other = (0.1 * rng.standard_normal(10 * 11025)).astype(np.float32)  # noise: a few shared hashes, no song
    missed = upload(client, "/api/recognize", wav_bytes(other))
    assert missed.get_json()["results"] == [] and metric(client, second) == before + 1
    silence = upload(client, "/api/recognize", wav_bytes(np.zeros(5 * 11025, np.float32)))
    assert silence.status_code == 200 and metric(client, second) == before + 1  # no song shares a hash


def test_metrics_count_loads_of_the_counts_copy(client, song):
    loads = 'tunescout_counts_copy_loads_total{instance="0"}'
    before = metric(client, loads)
    upload(client, "/api/fingerprint", wav_bytes(song), "s.wav", AUTH)
    upload(client, "/api/recognize", wav_bytes(song[: 5 * 11025]))  # loads the copy, in the background
    deadline = time.monotonic() + 5
    while metric(client, loads) < before + 1:
        assert time.monotonic() < deadline, "the copy was not loaded"
        time.sleep(0.02)
    assert 'tunescout_counts_copy_values{instance="0"}' in client.get("/metrics").get_data(as_text=True)


def test_a_huge_start_is_400(client, song):
    resp = upload(client, "/api/recognize", wav_bytes(song[: 5 * 11025]), start="1e308")
    assert_error(resp, 400, "start must be between 0 and 86400 seconds, and duration > 0")


@pytest.mark.parametrize("rate_hz", [0, 2**31 - 1, 9_999_991])
def test_a_wav_header_claiming_an_absurd_rate_is_415_at_once(client, rate_hz):
    from tests.tunescout.test_audio import wav_header

    start = time.perf_counter()
    assert upload(client, "/api/recognize", wav_header(rate_hz), "lies.wav").status_code == 415
    assert time.perf_counter() - start < 0.5


def test_silence_is_not_stored_as_a_song(client):
    resp = upload(client, "/api/fingerprint", wav_bytes(np.zeros(60 * 11025, np.float32)), "quiet.wav", AUTH)
    assert_error(
        resp,
        422,
        "The audio gives 0 fingerprint hashes, fewer than the 10 a song needs to be recognised "
        "(silence or near-silence?)",
    )
    assert client.get("/api/songs").get_json()["songs"] == []


def test_a_song_longer_than_max_duration_is_refused(tmp_path, song):
    from tunescout.config import config_from_dict

    config = config_from_dict(
        {"data_dir": str(tmp_path), "fingerprinting": {"token": "s3cret-token", "max_duration": 30}}
    )
    app = create_app(config)
    resp = upload(app.test_client(), "/api/fingerprint", wav_bytes(song), "long.wav", AUTH)
    app.extensions["tunescout"].close()
    assert_error(resp, 422, "The audio is longer than fingerprinting.max_duration (30 s); raise it to store this song")


@pytest.mark.parametrize("filename, stem", [(b"caf\xe9.wav", "café"), (b"\xff\xfe\x01name.wav", "ÿþ_name")])
def test_a_file_name_that_is_not_utf8_is_still_the_file(client, song, filename, stem):
    data = wav_bytes(song[: 20 * 11025])
    body = (
        b'--XX\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: audio/wav\r\n\r\n" + data + b"\r\n--XX--\r\n"
    )
    headers = {"Content-Type": "multipart/form-data; boundary=XX", **AUTH}
    resp = client.post("/api/fingerprint", data=body, headers=headers)
    assert resp.status_code == 200 and resp.get_json()["song_name"] == stem
    resp = client.post("/api/recognize", data=body, headers=headers)
    assert resp.status_code == 200 and resp.get_json()["results"][0]["song_name"] == stem
