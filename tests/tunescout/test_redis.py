"""Redis for real: the per-instance lookup cache (hits, never stale, Redis down and back), rate limits
(429 + Retry-After, memory fall-back, proxy switch) and CORS."""

from __future__ import annotations

import dataclasses
import io
import logging
import time

import numpy as np
import pytest
import redis

from tests import servers
from tests.conftest import music_like, need, wav_bytes
from tunescout.app import create_app
from tunescout.config import config_from_dict
from tunescout.engine import Engine
from tunescout.storage.cache import CachedStore
from tunescout.storage.stack import layers

SR = 11025
AUTH = {"Authorization": "Bearer s3cret-token"}
CACHE_DBS = (12, 13)
LIMIT_DB = 14


@pytest.fixture(scope="module")
def songs():
    rng = np.random.default_rng(5)
    return [music_like(rng, 40) for _ in range(3)]


@pytest.fixture
def flushed():
    """The real Redis, the test's databases emptied before and after."""
    need(servers.redis_ready(), "Redis on 127.0.0.1:6379 (scripts/start_servers.sh)")
    clients = [redis.Redis(port=servers.REDIS_PORT, db=db) for db in (*CACHE_DBS, LIMIT_DB)]
    for c in clients:
        c.flushdb()
    yield clients
    for c in clients:
        c.flushdb()
        c.close()


def make_config(tmp_path, redis_port=servers.REDIS_PORT, instances=1, **sections):
    raw = {
        "data_dir": str(tmp_path),
        "fingerprinting": {"token": "s3cret-token"},
        "redis": {"host": "127.0.0.1", "port": redis_port, "prefix": "tstest"},
        "rate_limit": {"redis_db_index": LIMIT_DB},
        "instances": instances
        if isinstance(instances, list)
        else [
            {"database_type": "sqlite", "redis_db_index": CACHE_DBS[i], "database": {"database": f"fp{i}.sqlite"}}
            for i in range(instances)
        ],
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return config_from_dict(raw)


def clip(song, start_s=10, seconds=5):
    return wav_bytes(song[int(start_s * SR) : int((start_s + seconds) * SR)])


def ids(body):
    return [r["song_id"] for r in body["results"]]


def cache_of(engine, i=0):
    return next(layer for layer in layers(engine.store.stores[i]) if isinstance(layer, CachedStore))


def cache_stats(engine):
    return [(cache_of(engine, i).hits, cache_of(engine, i).misses) for i in range(len(engine.store.stores))]


def test_a_repeated_query_is_answered_from_the_cache(tmp_path, flushed, songs):
    # Without the counts copy, whose first load races the first query's counts: here they always
    # go through the cache.
    engine = Engine.from_config(make_config(tmp_path, recognizing={"counts_refresh_s": 0}))
    song_id = engine.fingerprint(io.BytesIO(wav_bytes(songs[0])), "a").song_id
    first = engine.recognize(clip(songs[0])).body()
    second = engine.recognize(clip(songs[0])).body()
    assert cache_stats(engine) == [(1, 1)]
    assert ids(first) == ids(second) == [song_id]
    assert first["results"] == second["results"]
    assert any(k.startswith(b"tstest:lookup:") for k in flushed[0].keys())
    assert any(b":counts:" in k for k in flushed[0].keys())  # the hash counts are cached too
    assert flushed[0].ttl(flushed[0].keys()[0]) > 3000
    engine.close()


def test_ingest_and_delete_invalidate_at_once(tmp_path, flushed, songs):
    engine = Engine.from_config(make_config(tmp_path))
    # Another tempo: synthetic melodies on one note grid share many chance alignments.
    other = music_like(np.random.default_rng(6), 40, note_seconds=0.37, base_hz=150.0)
    engine.fingerprint(io.BytesIO(wav_bytes(other)), "other")
    query = clip(songs[0])
    assert ids(engine.recognize(query).body()) == []  # cached: "not in the catalogue"
    song_id = engine.fingerprint(io.BytesIO(wav_bytes(songs[0])), "a").song_id
    assert ids(engine.recognize(query).body()) == [song_id]  # not the cached "no match"
    assert ids(engine.recognize(query).body()) == [song_id]  # now cached
    assert layers(engine.store.stores[0])[-1].delete_song(song_id)  # in the database, behind the cache
    assert ids(engine.recognize(query).body()) == []  # the cached match is gone at once
    engine.close()


def test_each_instance_has_its_own_generation(tmp_path, flushed, songs):
    engine = Engine.from_config(make_config(tmp_path, instances=2))
    engine.fingerprint(io.BytesIO(wav_bytes(songs[0])), "a")  # instance 0
    engine.fingerprint(io.BytesIO(wav_bytes(songs[1])), "b")  # instance 1
    query = clip(songs[0])
    engine.recognize(query)
    engine.recognize(query)
    assert cache_stats(engine) == [(1, 1), (1, 1)]
    lookups = [[k for k in r.keys() if b":counts:" not in k] for r in flushed[:2]]
    assert len(lookups[0]) == 1 and len(lookups[1]) == 1  # each in its redis_db_index
    engine.fingerprint(io.BytesIO(wav_bytes(songs[2])), "c")  # instance 0 again (fewest songs tie)
    engine.recognize(query)
    assert cache_stats(engine) == [(1, 2), (2, 1)]  # only instance 0 missed
    engine.close()


def test_redis_down_mid_test_then_back(tmp_path, songs, caplog):
    need(servers.redis_ready(), "redis-server binary")
    private = servers.PrivateRedis()
    private.start()
    engine = Engine.from_config(make_config(tmp_path, redis_port=private.port))
    try:
        song_id = engine.fingerprint(io.BytesIO(wav_bytes(songs[0])), "a").song_id
        query = clip(songs[0])
        engine.recognize(query)
        engine.recognize(query)
        assert cache_stats(engine) == [(1, 1)]

        private.stop()
        with caplog.at_level(logging.WARNING):
            assert ids(engine.recognize(query).body()) == [song_id]
        # Asked once, then skipped for the back-off: not asked (and waited for) by every lookup.
        assert sum(r.getMessage().startswith("redis cache unavailable") for r in caplog.records) == 1
        for _ in range(2):
            assert ids(engine.recognize(query).body()) == [song_id]
        assert cache_of(engine).hits == 1

        private.start()  # empty again: the next lookups fill it, then hit
        deadline = time.monotonic() + 10
        while cache_of(engine).hits < 2:
            assert ids(engine.recognize(query).body()) == [song_id]
            assert time.monotonic() < deadline, "cache not used again after Redis returned"
            time.sleep(0.3)
    finally:
        engine.close()
        private.stop()


# --- rate limits ---------------------------------------------------------------------------


def limited_app(tmp_path, redis_port=servers.REDIS_PORT, **rate_limit):
    app = create_app(
        make_config(tmp_path, redis_port=redis_port, rate_limit={"fetching_results": "3 per minute", **rate_limit})
    )
    return app, app.test_client()


def test_over_the_limit_is_429_json_with_retry_after(tmp_path, flushed):
    app, client = limited_app(tmp_path)
    statuses = [client.get("/api/fetch/" + "0" * 34).status_code for _ in range(5)]
    assert statuses == [404, 404, 404, 429, 429]
    resp = client.get("/api/fetch/" + "0" * 34)
    assert resp.get_json() == {"status": "error", "message": "Too many requests"}
    assert 0 < int(resp.headers["Retry-After"]) <= 60
    assert flushed[2].keys("*tstest:limits*")  # the counters are in rate_limit.redis_db_index
    # Other endpoints keep their own limits.
    assert client.post("/api/recognize").status_code == 400
    app.extensions["tunescout"].close()


def test_limits_fall_back_to_memory_when_redis_is_down(tmp_path):
    app, client = limited_app(tmp_path, redis_port=servers.closed_port())
    statuses = [client.get("/api/fetch/" + "0" * 34).status_code for _ in range(5)]
    assert statuses == [404, 404, 404, 429, 429]
    app.extensions["tunescout"].close()


@pytest.mark.parametrize("trust_proxy, expected", [(False, [404, 404, 404, 429]), (True, [404] * 4)])
def test_forwarded_for_is_trusted_only_when_told(tmp_path, flushed, trust_proxy, expected):
    app, client = limited_app(tmp_path, trust_proxy=trust_proxy)
    statuses = [
        client.get("/api/fetch/" + "0" * 34, headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code for i in range(4)
    ]
    assert statuses == expected
    app.extensions["tunescout"].close()


def test_limits_can_be_switched_off(tmp_path, flushed):
    app, client = limited_app(tmp_path, enabled=False)
    assert {client.get("/api/fetch/" + "0" * 34).status_code for _ in range(6)} == {404}
    app.extensions["tunescout"].close()


# --- CORS ----------------------------------------------------------------------------------


def test_cors_allows_listed_origins_only(tmp_path, flushed):
    app = create_app(make_config(tmp_path, allowed_origin=["https://app.example"]))
    client = app.test_client()
    ok = client.get("/api/health", headers={"Origin": "https://app.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = client.get("/api/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = client.options(
        "/api/fingerprint",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization",
        },
    )
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    app.extensions["tunescout"].close()


def test_cors_star_and_off(tmp_path, flushed):
    star = create_app(make_config(tmp_path / "a", allowed_origin=["*"]))
    resp = star.test_client().get("/api/health", headers={"Origin": "https://any.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    off = create_app(make_config(tmp_path / "b"))
    resp = off.test_client().get("/api/health", headers={"Origin": "https://any.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    for app in (star, off):
        app.extensions["tunescout"].close()


def test_cache_entries_round_trip_exactly():
    from tunescout.storage.base import Histogram
    from tunescout.storage.cache import decode, encode

    rng = np.random.default_rng(0)
    hists = [
        Histogram(
            int(s),
            np.sort(rng.choice(np.arange(-500, 5000), 300, replace=False)).astype(np.int64),
            rng.integers(1, 9, 300).astype(np.int64),
        )
        for s in (3, 7, 2**40)
    ]
    back = decode(encode(hists))
    assert [h.song_id for h in back] == [3, 7, 2**40]
    for a, b in zip(hists, back):
        assert (a.deltas == b.deltas).all() and (a.counts == b.counts).all()
    assert decode(encode([])) == []
    assert len(encode(hists)) < 0.4 * 3 * 300 * 16


def test_raw_rows_pass_the_counts_copy_and_are_cached_never_stale(tmp_path, flushed, rng):
    """rows() through an instance's whole stack: cached in Redis under the generation (not counted
    as a lookup), so a song added behind the cache shows at once."""
    from tunescout.storage.base import NewSong
    from tunescout.storage.cache import encode_rows
    from tunescout.storage.snapshot import CountsSnapshot
    from tunescout.storage.stack import open_instance

    def song(hashes, offsets):
        return NewSong("s", rng.bytes(20).hex(), 60.0, np.array(hashes, np.uint32), np.array(offsets, np.int32))

    def row_set(rows):
        return sorted(zip(*(a.tolist() for a in rows)))

    store = open_instance(make_config(tmp_path), 0)
    assert [type(layer) for layer in layers(store)[:2]] == [CountsSnapshot, CachedStore]
    store.ensure_schema("digest-1")
    cache, backend = layers(store)[1:]
    backend.add_song(song([5, 2**30 + 5], [1, 2**31 - 1]))
    values = np.array([2**30 + 5, 5, 5], np.uint32)
    assert row_set(store.rows(values)) == [(5, 1, 1), (2**30 + 5, 1, 2**31 - 1)]
    [key] = flushed[0].keys("*:rows:*")
    flushed[0].set(key, encode_rows((np.array([9], np.uint32), np.ones(1), np.ones(1))))  # a planted answer
    assert row_set(store.rows(np.array([5, 2**30 + 5], np.uint32))) == [(9, 1, 1)]  # the entry answers
    backend.add_song(song([5], [3]))  # behind the cache: a new generation
    assert row_set(store.rows(values)) == [(5, 1, 1), (5, 2, 3), (2**30 + 5, 1, 2**31 - 1)]
    assert (cache.hits, cache.misses) == (0, 0)
    store.close()


def test_health_reports_redis_under_the_counts_copy(tmp_path):
    """With the default counts copy above the cache in each instance's stack, /api/health still
    probes Redis: up while it answers, down (and the service degraded) once it stops."""
    need(servers.redis_ready(), "redis-server binary")
    private = servers.PrivateRedis()
    private.start()
    config = make_config(tmp_path, redis_port=private.port, instances=2)
    assert config.recognizing.counts_refresh_s > 0
    client = create_app(config).test_client()
    try:
        up = client.get("/api/health")
        assert up.status_code == 200 and up.get_json()["redis"] == {"status": "up"}
        assert "degraded" not in up.get_json()
        private.stop()
        down = client.get("/api/health")
        assert down.status_code == 200 and down.get_json()["redis"] == {"status": "down"}
        assert down.get_json()["degraded"] is True
    finally:
        private.stop()
        client.application.extensions["tunescout"].close()


def test_triplet_lookups_are_cached_apart_from_pair_lookups(tmp_path, flushed, songs):
    need(servers.clickhouse_ready(), "ClickHouse on 127.0.0.1:9000 (scripts/start_servers.sh)")
    name = servers.fresh_name()
    instance = {
        "database_type": "clickhouse",
        "redis_db_index": CACHE_DBS[0],
        "database": servers.clickhouse_database(name),
    }
    engine = Engine.from_config(make_config(tmp_path, instances=[instance]))
    try:
        song_id = engine.fingerprint(io.BytesIO(wav_bytes(songs[1])), "b").song_id
        engine.searcher.match = dataclasses.replace(engine.match, triplet_rows_from=0)  # as in a large catalogue
        first = engine.recognize(clip(songs[1])).body()
        second = engine.recognize(clip(songs[1])).body()
        assert ids(first) == ids(second) == [song_id]
        assert "query" not in first["timings"]  # answered by the triplet lookup, both times
        assert cache_stats(engine) == [(1, 1)]
        assert any(b":t:" in k for k in flushed[0].keys())
    finally:
        engine.close()
        servers.drop_clickhouse(name)
