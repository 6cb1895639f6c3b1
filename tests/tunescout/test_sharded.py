"""Sharded deployments on real servers: two MySQL and two ClickHouse instances, result shards,
instances that are down, slow, or come back."""

from __future__ import annotations

import dataclasses
import io
import itertools
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

import dejavu
from tests import servers
from tests.conftest import music_like, need, wav_bytes
from tunescout.app import create_app
from tunescout.config import config_from_dict
from tunescout.engine import Engine
from tunescout.errors import DuplicateSongError, IndexMismatchError, StorageError, UnprocessableError
from tunescout.storage.base import IdSlot, NewSong, instance_of
from tunescout.storage.sharded import ShardedStore
from tunescout.storage.sqlite import SQLiteStore

SR = 11025
AUTH = {"Authorization": "Bearer s3cret-token"}


@pytest.fixture(scope="module")
def songs():
    rng = np.random.default_rng(99)
    return [music_like(rng, 40) for _ in range(8)]


@pytest.fixture
def databases():
    """Fresh database names on the real servers, dropped afterwards."""
    need(servers.mysql_ready(), "MariaDB on its unix socket (scripts/start_servers.sh)")
    need(servers.clickhouse_ready(), "ClickHouse on 127.0.0.1:9000 (scripts/start_servers.sh)")
    made = []

    def make(kind: str, port: int | None = None) -> dict:
        name = servers.fresh_name()
        if kind == "mysql":
            made.append((servers.drop_mysql, name, port or 3306))
            db = servers.mysql_database(name, port or 3306)
        elif kind == "postgres":
            need(servers.postgres_ready(), "PostgreSQL on 127.0.0.1:5432 (scripts/start_servers.sh)")
            made.append((servers.drop_postgres, name, None))
            db = servers.postgres_database(name)
        else:
            made.append((servers.drop_clickhouse, name, port or servers.CLICKHOUSE_PORT))
            db = servers.clickhouse_database(name, port or servers.CLICKHOUSE_PORT)
        return {"database_type": kind, "database": db}

    yield make
    for drop, name, port in made:
        if drop in (servers.drop_mysql, servers.drop_postgres):
            drop(name)
        elif port == servers.CLICKHOUSE_PORT:  # the shared server: a private one goes with its test
            drop(name, port)


def sharded_config(tmp_path, instances, results, **recognizing):
    return config_from_dict(
        {
            "data_dir": str(tmp_path),
            "fingerprinting": {"token": "s3cret-token"},
            "recognizing": {"instance_timeout_s": 2.0, **recognizing},
            "instances": instances,
            "results": results,
        }
    )


def clip(song, start_s, seconds=5):
    return wav_bytes(song[int(start_s * SR) : int((start_s + seconds) * SR)])


def failures(instance: int) -> dict[str, float]:
    """tunescout_instance_failures_total of one instance, by kind."""
    return {
        kind: REGISTRY.get_sample_value("tunescout_instance_failures_total", {"instance": str(instance), "kind": kind})
        or 0.0
        for kind in ("error", "timeout")
    }


def best(engine: Engine, data: bytes) -> dict:
    body = engine.recognize(data).body()
    return body["results"][0] if body["results"] else {}


@pytest.fixture
def four(tmp_path, databases):
    """Two MySQL and two ClickHouse fingerprint instances, a MySQL and a ClickHouse result shard."""
    config = sharded_config(
        tmp_path,
        [databases("mysql"), databases("clickhouse"), databases("mysql"), databases("clickhouse")],
        [databases("mysql"), databases("clickhouse")],
    )
    engine = Engine.from_config(config)
    yield engine
    engine.close()


def test_songs_spread_evenly_and_are_recognised_across_instances(four, songs):
    stored = [four.fingerprint(io.BytesIO(wav_bytes(s)), f"song {i}.wav") for i, s in enumerate(songs)]
    ids = [s.song_id for s in stored]
    assert len(set(ids)) == len(ids)
    per_instance = [four.store.stores[i].count_songs() for i in range(4)]
    assert per_instance == [2, 2, 2, 2]
    for song_id in ids:  # the id names the instance that holds the song
        assert four.store.stores[instance_of(song_id, 4)].get_songs([song_id])
    for i, song in enumerate(songs):
        result = best(four, clip(song, 12.5))
        assert result["song_id"] == ids[i], f"song {i}"
        assert abs(result["offset_seconds"] - 12.5) <= 0.05


def test_duplicates_are_found_on_any_instance(four, songs):
    for i, song in enumerate(songs[:4]):
        four.fingerprint(io.BytesIO(wav_bytes(song)), f"{i}.wav")
    for song in songs[:4]:  # each lives on another instance
        with pytest.raises(DuplicateSongError):
            four.fingerprint(io.BytesIO(wav_bytes(song)), "again.wav")
    assert four.store.count_songs() == 4


def test_results_are_fetched_from_the_shard_the_token_names(four, songs, monkeypatch):
    turns = itertools.cycle([0, 1])  # the shard a result goes to, drawn at random: in turn here
    monkeypatch.setattr("tunescout.results.secrets.randbelow", lambda n: next(turns))
    four.fingerprint(io.BytesIO(wav_bytes(songs[0])), "a.wav")
    shards = []
    for _ in range(12):
        body = four.recognize(clip(songs[0], 3)).body()
        shards.append(int(body["token"][-2:], 16))
        assert four.fetch(body["token"])["results"] == body["results"]
    assert shards == [0, 1] * 6
    assert four.results.count_results() == [6, 6]


def test_a_down_instance_degrades_recognition_and_refuses_ingest(tmp_path, databases, songs):
    up = [databases("mysql"), databases("clickhouse")]
    config = sharded_config(tmp_path, [*up, databases("mysql")], [databases("mysql")])
    with_all = Engine.from_config(config)
    ids = [with_all.fingerprint(io.BytesIO(wav_bytes(s)), f"{i}.wav").song_id for i, s in enumerate(songs[:2])]
    with_all.close()

    # The same layout, but the third instance's server is gone.
    down = databases("mysql", port=servers.closed_port())
    config = sharded_config(tmp_path / "3", [*up, down], [databases("clickhouse")])
    app = create_app(config)
    client = app.test_client()
    try:
        for song in songs[: len(ids)]:
            resp = client.post("/api/recognize", data={"file": (io.BytesIO(clip(song, 20)), "q.wav")})
            body = resp.get_json()
            assert resp.status_code == 200 and body["degraded"] is True
            assert body["instances_unanswered"] == 1
        resp = client.post(
            "/api/fingerprint", headers=AUTH, data={"file": (io.BytesIO(wav_bytes(songs[5])), "new.wav")}
        )
        assert resp.status_code == 503 and resp.get_json()["status"] == "error"
        health = client.get("/api/health")
        assert health.status_code == 200 and health.get_json()["degraded"] is True
        assert [i["status"] for i in health.get_json()["instances"]] == ["up", "up", "down"]
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'tunescout_instance_failures_total{instance="2",kind="error"}' in metrics
    finally:
        app.extensions["tunescout"].close()


def test_id_layout_mismatch_is_refused(tmp_path, databases):
    """Re-using an instance at another position would break id routing: refused."""
    a, b = databases("mysql"), databases("clickhouse")
    Engine.from_config(sharded_config(tmp_path, [a, b], [databases("mysql")])).close()
    with pytest.raises(StorageError):
        Engine.from_config(sharded_config(tmp_path, [b, a], [databases("mysql")]))


def test_a_slow_instance_is_skipped_after_the_timeout(tmp_path, databases, songs):
    import MySQLdb

    slow = databases("mysql")
    config = sharded_config(
        tmp_path, [databases("clickhouse"), slow], [databases("clickhouse")], instance_timeout_s=1.0
    )
    engine = Engine.from_config(config)
    try:
        ids = [engine.fingerprint(io.BytesIO(wav_bytes(s)), f"{i}.wav").song_id for i, s in enumerate(songs[:2])]
        on_clickhouse = ids[0] if instance_of(ids[0], 2) == 0 else ids[1]
        song = songs[ids.index(on_clickhouse)]
        locker = MySQLdb.connect(
            **{**servers.mysql_database(slow["database"]["database"]), "password": servers.MYSQL_PASSWORD}
        )
        locker.cursor().execute("LOCK TABLES fingerprints WRITE")  # readers now wait
        before = failures(1)
        try:  # the lock is held until the recognition returns: the instance cannot answer in time
            body = engine.recognize(clip(song, 8)).body()
        finally:
            locker.cursor().execute("UNLOCK TABLES")
            locker.close()
        assert body["degraded"] is True and body["instances_unanswered"] == 1
        assert body["results"][0]["song_id"] == on_clickhouse
        # Given up when instance_timeout_s ran out (the database itself never failed), and only once:
        # backed off, it was not waited for again by the rest of the recognition.
        assert {kind: n - before[kind] for kind, n in failures(1).items()} == {"error": 0, "timeout": 1}
    finally:
        engine.close()


def test_result_shards_fail_over_and_never_lose_a_result(tmp_path, databases, songs):
    dead = databases("mysql", port=servers.closed_port())
    alive = databases("clickhouse")
    config = sharded_config(tmp_path, [databases("mysql")], [dead, alive])
    engine = Engine.from_config(config)
    try:
        engine.fingerprint(io.BytesIO(wav_bytes(songs[0])), "a.wav")
        for _ in range(6):
            token = engine.recognize(clip(songs[0], 2)).token
            assert token.endswith("01")  # the live shard; the token still routes to it
            assert engine.fetch(token)["token"] == token
    finally:
        engine.close()

    config = sharded_config(
        tmp_path / "b", [databases("mysql")], [dead, databases("clickhouse", port=servers.closed_port())]
    )
    app = create_app(config)
    try:
        resp = app.test_client().post("/api/recognize", data={"file": (io.BytesIO(clip(songs[0], 2)), "q.wav")})
        assert resp.status_code == 503
        assert resp.get_json() == {"status": "error", "message": "No result store can take the result"}
        resp = app.test_client().get("/api/fetch/" + "a" * 32 + "00")
        assert resp.status_code == 503  # the shard is down: not "not found"
    finally:
        app.extensions["tunescout"].close()


def test_an_instance_that_comes_back_is_used_again_without_restart(tmp_path, databases, songs):
    need(servers.clickhouse_ready(), "clickhouse-server binary")
    private = servers.PrivateClickHouse()
    private.start()
    try:
        config = sharded_config(
            tmp_path,
            [databases("mysql"), databases("clickhouse", port=private.port)],
            [databases("mysql")],
            instance_timeout_s=1.0,
        )
        engine = Engine.from_config(config)
        ids = [engine.fingerprint(io.BytesIO(wav_bytes(s)), f"{i}.wav").song_id for i, s in enumerate(songs[:2])]
        on_private = next(i for i, song_id in enumerate(ids) if instance_of(song_id, 2) == 1)
        query = clip(songs[on_private], 15)
        assert best(engine, query)["song_id"] == ids[on_private]

        private.stop()
        health = engine.health().body()
        assert health["degraded"] is True and [i["status"] for i in health["instances"]] == ["up", "down"]
        body = engine.recognize(query).body()
        assert body["degraded"] is True
        assert all(r["song_id"] != ids[on_private] for r in body["results"])

        private.start()
        deadline = time.monotonic() + 15
        while True:
            body = engine.recognize(query).body()
            if not body.get("degraded"):
                break
            assert time.monotonic() < deadline, "instance not used again within 15 s"
            time.sleep(0.5)
        assert body["results"][0]["song_id"] == ids[on_private]
        assert "degraded" not in engine.health().body()
        engine.close()
    finally:
        private.remove()


def test_postgres_serves_as_fingerprint_instance_and_result_shard(tmp_path, databases, songs):
    """ "database_type": "postgres" beside another backend: ingest, recognition, results, catalogue."""
    config = sharded_config(tmp_path, [databases("postgres"), databases("mysql")], [databases("postgres")])
    engine = Engine.from_config(config)
    try:
        ids = [engine.fingerprint(io.BytesIO(wav_bytes(s)), f"{i}.wav").song_id for i, s in enumerate(songs[:4])]
        assert sorted(instance_of(i, 2) for i in ids) == [0, 0, 1, 1]
        for song_id, song in zip(ids, songs):
            found = engine.recognize(clip(song, 12))
            assert found.results[0].song_id == song_id and abs(found.results[0].offset_seconds - 12.0) <= 0.05
            assert engine.fetch(found.token)["results"][0]["song_id"] == song_id
        health = engine.health().body()
        assert [p["database_type"] for p in health["instances"]] == ["postgres", "mysql"]
        assert "degraded" not in health and health["results"][0]["status"] == "up"
        on_postgres = next(i for i in ids if instance_of(i, 2) == 0)
        assert engine.delete_song(on_postgres).song_id == on_postgres
        assert all(r.song_id != on_postgres for r in engine.recognize(clip(songs[ids.index(on_postgres)], 12)).results)
        stats = engine.stats()
        assert [s.songs for s in stats.instances] == [1, 2] and stats.results == [5]
    finally:
        engine.close()


def test_song_reads_wait_for_a_slow_instance_no_longer_than_the_timeout(tmp_path, databases, songs):
    """get_songs asks the instances in parallel: a hung one costs the timeout once, and its songs
    are left out (the others' are not)."""
    import MySQLdb

    slow = databases("mysql")
    engine = Engine.from_config(
        sharded_config(
            tmp_path,
            [databases("clickhouse"), slow, databases("mysql")],
            [databases("clickhouse")],
            instance_timeout_s=1.0,
        )
    )
    try:
        ids = [engine.fingerprint(io.BytesIO(wav_bytes(s)), f"{i}.wav").song_id for i, s in enumerate(songs[:3])]
        assert sorted(instance_of(i, 3) for i in ids) == [0, 1, 2]
        locker = MySQLdb.connect(
            **{**servers.mysql_database(slow["database"]["database"]), "password": servers.MYSQL_PASSWORD}
        )
        locker.cursor().execute("LOCK TABLES songs WRITE")  # readers of songs on instance 1 now wait
        before = failures(1)
        try:
            found, unanswered = engine.store.get_songs(ids)
        finally:
            locker.cursor().execute("UNLOCK TABLES")
            locker.close()
        assert sorted(found) == sorted(i for i in ids if instance_of(i, 3) != 1) and unanswered == 1
        # One timeout, where a read of the locked instance alone would wait for the lock (a year, by
        # default) and time nothing out.
        assert {kind: n - before[kind] for kind, n in failures(1).items()} == {"error": 0, "timeout": 1}
    finally:
        engine.close()


def test_health_is_503_with_status_error_when_no_result_shard_answers(tmp_path, databases):
    config = sharded_config(tmp_path, [databases("mysql")], [databases("mysql", port=servers.closed_port())])
    app = create_app(config)
    try:
        resp = app.test_client().get("/api/health")
        body = resp.get_json()
        assert resp.status_code == 503 and body["status"] == "error" and body["message"] == "No storage answers"
        assert [p["status"] for p in body["instances"]] == ["up"] and body["results"][0]["status"] == "down"
    finally:
        app.extensions["tunescout"].close()


def test_a_song_is_read_from_its_instance_even_while_that_instance_is_backed_off(tmp_path, songs):
    """The id names the one instance to ask: a back-off after an earlier failure does not turn the
    song into a 404 (a lookup, which asks every instance, still skips it meanwhile)."""
    sqlite = [{"database_type": "sqlite", "database": {"database": f"fp{i}.sqlite"}} for i in range(2)]
    engine = Engine.from_config(sharded_config(tmp_path, sqlite, []))
    try:
        song_id = engine.fingerprint(io.BytesIO(wav_bytes(songs[0])), "a.wav").song_id
        held_by = instance_of(song_id, 2)
        engine.store.health.failed(held_by)
        assert not engine.store.health.usable(held_by)
        assert engine.get_song(song_id).song_id == song_id
        engine.store.health.failed(held_by)
        assert engine.recognize(clip(songs[0], 12)).body()["instances_unanswered"] == 1
    finally:
        engine.close()


def test_a_song_on_an_instance_that_does_not_answer_is_503_not_404(tmp_path, databases, songs):
    config = sharded_config(tmp_path, [databases("mysql"), databases("mysql", port=servers.closed_port())], [])
    app = create_app(config)
    try:
        resp = app.test_client().get("/api/songs/2")  # instance 1 of 2 holds the even ids
        assert resp.status_code == 503
        assert resp.get_json()["message"] == "The fingerprint instance that holds this song does not answer"
        assert app.test_client().get("/api/songs/1").status_code == 404  # instance 0 answers: no such song
    finally:
        app.extensions["tunescout"].close()


ROBUST = 2**30  # robust hash values have this bit set


def rows_song(rng, hashes, offsets) -> NewSong:
    return NewSong("s", rng.bytes(20).hex(), 60.0, np.array(hashes, np.uint32), np.array(offsets, np.int32))


@pytest.fixture
def three(tmp_path, rng):
    """Three SQLite instances on a clock of the test's: 0 made by the previous release (a song, no
    feature), 1 new, 2 unreachable (a file stands where its folder should be) until the test frees it."""
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    stores = [SQLiteStore(tmp_path / "fp0.sqlite", IdSlot(0, 3)), SQLiteStore(tmp_path / "fp1.sqlite", IdSlot(1, 3))]
    stores.append(SQLiteStore(blocked / "fp2.sqlite", IdSlot(2, 3)))
    stores[0].ensure_schema("digest-1")
    stores[0].add_song(rows_song(rng, [5, ROBUST + 5], [10, 2**31 - 1]))
    now = [0.0]
    sharded = ShardedStore(stores, timeout_s=5.0, clock=lambda: now[0])
    sharded.ensure_schema("digest-1", {"robust_digest": "ab12"})
    yield sharded, now, blocked
    sharded.close()


def test_rows_are_concatenated_over_instances_and_an_unanswered_one_is_counted(three, rng):
    sharded, now, blocked = three
    sharded.stores[1].add_song(rows_song(rng, [5, ROBUST + 5, ROBUST + 6], [1, 2, 3]))
    values = np.array([ROBUST + 5, 5, 9, ROBUST + 6], np.uint32)
    answer = sharded.rows(values)
    got = sorted(zip(answer.hashes.tolist(), answer.song_ids.tolist(), answer.offsets.tolist()))
    assert got == [(5, 1, 10), (5, 2, 1), (ROBUST + 5, 1, 2**31 - 1), (ROBUST + 5, 2, 2), (ROBUST + 6, 2, 3)]
    assert answer.unanswered == 1
    assert (answer.hashes.dtype, answer.song_ids.dtype, answer.offsets.dtype) == (np.uint32, np.int64, np.int64)

    blocked.unlink()  # instance 2 can be reached now: once its back-off ends, it is prepared and asked
    now[0] += 60
    sharded.stores[2].ensure_schema("digest-1")
    sharded.stores[2].add_song(rows_song(rng, [9], [7]))
    answer = sharded.rows(values)
    assert answer.unanswered == 0 and answer.hashes.size == 6
    assert (answer.hashes[answer.song_ids == 3].tolist(), answer.offsets[answer.song_ids == 3].tolist()) == ([9], [7])
    # one song's rows are asked of its instance alone
    answer = sharded.rows(values, 2)
    assert sorted(zip(answer.hashes.tolist(), answer.song_ids.tolist())) == [(5, 2), (ROBUST + 5, 2), (ROBUST + 6, 2)]
    assert answer.unanswered == 0


def test_rows_of_no_instance_that_answers(three):
    sharded, _, _ = three
    for i in range(3):
        sharded.health.failed(i)
    answer = sharded.rows(np.array([5], np.uint32))
    assert answer.unanswered == 3 and answer.hashes.size == answer.song_ids.size == answer.offsets.size == 0
    assert answer.hashes.dtype == np.uint32


def test_features_are_known_per_instance_and_a_late_one_gets_its_answer_when_prepared(three):
    sharded, now, blocked = three
    # 0 holds songs of the previous release: no feature; 1 was empty: recorded; 2 not prepared yet.
    assert [sharded.features(i) for i in range(3)] == [{}, {"robust_digest": "ab12"}, {}]
    blocked.unlink()
    now[0] += 60
    assert sharded.rows(np.array([5], np.uint32)).unanswered == 0
    assert sharded.features(2) == {"robust_digest": "ab12"}
    with pytest.raises(IndexMismatchError, match="robust_digest"):  # passed on to every instance again
        sharded.ensure_schema("digest-1", {"robust_digest": "cd34"})


def triplet_outcomes() -> dict[str, float]:
    return {
        o: REGISTRY.get_sample_value("tunescout_triplet_searches_total", {"outcome": o}) or 0.0
        for o in ("answered", "rejected", "passed_on")
    }


def test_clickhouse_instances_answer_a_clear_clip_from_its_triplet_keys(tmp_path, databases, songs):
    engine = Engine.from_config(
        sharded_config(tmp_path, [databases("clickhouse"), databases("clickhouse")], [databases("clickhouse")])
    )
    assert engine.searcher.third_instances() == [True, True]
    health = engine.health().body()
    assert health["triplet_keys"] is True and [p["triplet_keys"] for p in health["instances"]] == [True, True]
    stored = [engine.fingerprint(io.BytesIO(wav_bytes(s)), f"song {i}.wav") for i, s in enumerate(songs[:6])]
    small = engine.recognize(clip(songs[4], 12.0))  # six songs: the pairs' rows are few, they go first
    assert small.results[0].song_id == stored[4].song_id and "triplets" not in small.timings
    engine.searcher.match = dataclasses.replace(engine.match, triplet_rows_from=0)  # as in a large catalogue
    before = triplet_outcomes()
    found = engine.recognize(clip(songs[4], 12.0))
    assert found.results[0].song_id == stored[4].song_id
    assert abs(found.results[0].offset_seconds - 12.0) < 0.05
    assert "triplets" in found.timings and "query" not in found.timings  # no pair lookup
    unknown = engine.recognize(clip(songs[7], 12.0))  # not stored: the pair lookup has its say
    assert unknown.results == [] and "query" in unknown.timings
    after = triplet_outcomes()
    assert {o: after[o] - before[o] for o in after} == {"answered": 1, "rejected": 0, "passed_on": 1}
    # asked to reject clips that the triplets leave far below their bar: no pair lookup for those
    engine.searcher.match = dataclasses.replace(engine.match, triplet_reject=True)
    rejected = engine.recognize(clip(songs[7], 12.0))
    assert rejected.results == [] and "query" not in rejected.timings and "robust" not in rejected.timings
    assert triplet_outcomes()["rejected"] - after["rejected"] == 1
    # a client-made fingerprint has no third points: refused, since its song could never be found
    packed = dejavu.pack_fingerprint(
        np.array([5], np.uint32), np.array([1], np.int32), engine.params.digest(), "d" * 40, 40.0
    )
    with pytest.raises(UnprocessableError, match="send the audio file"):
        engine.fingerprint_packed(packed, "client made")
    engine.searcher.match = dataclasses.replace(engine.match, triplets=False)  # switched off: pairs only
    again = engine.recognize(clip(songs[4], 12.0))
    assert again.results[0].song_id == stored[4].song_id and "triplets" not in again.timings
    engine.close()


def test_an_instance_without_third_points_keeps_every_clip_on_the_pair_lookup(tmp_path, databases, songs):
    engine = Engine.from_config(
        sharded_config(
            tmp_path, [databases("clickhouse"), databases("mysql")], [databases("mysql")], reject_on_triplets=True
        )
    )
    assert engine.match.triplet_reject  # asked for, but idle: not every instance keeps third points
    assert engine.searcher.third_instances() == [True, False]
    health = engine.health().body()
    assert health["triplet_keys"] is False and [p["triplet_keys"] for p in health["instances"]] == [True, False]
    stored = [engine.fingerprint(io.BytesIO(wav_bytes(s)), f"song {i}.wav") for i, s in enumerate(songs[:4])]
    found = engine.recognize(clip(songs[2], 8.0))
    assert found.results[0].song_id == stored[2].song_id and "triplets" not in found.timings
    engine.searcher.match = dataclasses.replace(engine.match, triplet_rows_from=0)
    unknown = engine.recognize(clip(songs[7], 8.0))
    assert unknown.results == [] and "query" in unknown.timings and "triplets" not in unknown.timings
    engine.close()
