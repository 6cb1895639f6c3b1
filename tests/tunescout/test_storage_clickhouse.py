"""ClickHouse specifics on a real server: the split columns and the upgrade of the previous layout."""

from __future__ import annotations

import numpy as np
import pytest
from clickhouse_driver import Client

from tests import servers
from tests.conftest import need
from tunescout.config import DatabaseConfig
from tunescout.storage.base import THIRD_POINT_FEATURE, IdSlot, NewSong
from tunescout.storage.clickhouse import ClickHouseStore


@pytest.fixture
def name():
    need(servers.clickhouse_ready(), "ClickHouse on 127.0.0.1:9000 (scripts/start_servers.sh)")
    name = servers.fresh_name()
    yield name
    servers.drop_clickhouse(name)


def open_store(name: str, slot=IdSlot(0, 1)) -> ClickHouseStore:
    store = ClickHouseStore(DatabaseConfig(**servers.clickhouse_database(name)), slot)
    store.ensure_schema("digest-1")
    return store


def test_ids_and_offsets_past_16_bits_survive_the_split_columns(name):
    """Song ids and offsets are stored as a high and a low part: both must come back whole."""
    store = open_store(name, IdSlot(70_000, 100_000))  # first id 70,001: past 65,535
    offsets = np.array([5, 65_535, 65_536, 200_000, 2**32 - 1], np.int64)
    hashes = np.full(offsets.size, 4242, np.uint32)
    song_id = store.add_song(NewSong("long", "ab" * 20, 3600.0, hashes, offsets))
    assert song_id > 65_535
    [hist] = store.best_alignments(np.array([4242], np.uint32), np.array([0], np.uint32), top_k=5)
    assert hist.song_id == song_id
    assert sorted(hist.deltas.tolist()) == offsets.tolist()
    assert store.hash_counts(np.array([4242, 4243])).tolist() == [5, 0]
    assert store.delete_song(song_id)
    servers.wait_clickhouse_mutations(name)
    assert store.hash_counts(np.array([4242])).tolist() == [0]
    store.close()


def make_old_index(name: str, rng) -> list[tuple[int, int, int]]:
    """An index as the previous release left it: whole song_id and offset columns, hash_counts,
    and a half-written table of an upgrade that died (it must be redone, not trusted)."""
    client = Client("127.0.0.1", port=servers.CLICKHOUSE_PORT)
    client.execute(f"CREATE DATABASE `{name}`")
    client = Client("127.0.0.1", port=servers.CLICKHOUSE_PORT, database=name)
    client.execute("CREATE TABLE meta (name String, value String) ENGINE = MergeTree ORDER BY name")
    client.execute(
        "CREATE TABLE songs (song_id UInt64, song_name String, blob_sha1 String,"
        " total_hashes UInt32, duration_seconds Float64, created DateTime DEFAULT now())"
        " ENGINE = MergeTree ORDER BY song_id"
    )
    client.execute(
        "CREATE TABLE fingerprints (hash UInt32, song_id UInt64, offset UInt32)"
        " ENGINE = MergeTree ORDER BY (hash, song_id, offset) SETTINGS index_granularity = 256"
    )
    client.execute("CREATE TABLE hash_counts (hash UInt32, n Int32) ENGINE = SummingMergeTree ORDER BY hash")
    client.execute("CREATE TABLE fingerprints_new (hash UInt32) ENGINE = MergeTree ORDER BY hash")
    client.execute("INSERT INTO fingerprints_new VALUES", [(1,)])
    rows = [
        (int(h), song_id, int(o))
        for song_id in (1, 70_001)
        for h, o in zip(rng.integers(0, 2**23, 300), rng.integers(0, 80_000, 300))
    ]
    rows += [(77, 1, 10), (77, 1, 20), (77, 70_001, 66_000)]
    client.execute("INSERT INTO fingerprints (hash, song_id, offset) VALUES", rows)
    client.execute(
        "INSERT INTO songs (song_id, song_name, blob_sha1, total_hashes, duration_seconds) VALUES",
        [(1, "one", "a" * 40, 302, 60.0), (70_001, "two", "b" * 40, 301, 60.0)],
    )
    client.execute(
        "INSERT INTO meta (name, value) VALUES",
        [("params_digest", "digest-1"), ("id_slot", str(IdSlot(0, 1))), ("last_song_id", "70001")],
    )
    client.disconnect()
    return rows


def test_an_index_of_the_previous_layout_is_rewritten_on_open(name, rng):
    rows = make_old_index(name, rng)
    store = open_store(name)
    tables = {t for (t,) in store._run("SHOW TABLES")}
    assert tables == {"meta", "songs", "fingerprints", "peaks"}
    assert store.stats()["songs"] == 2
    assert int(store._run("SELECT count() FROM fingerprints")[0][0]) == len(rows)
    assert store.hash_counts(np.array([77])).tolist() == [3]
    hists = {h.song_id: h for h in store.best_alignments(np.array([77], np.uint32), np.array([0], np.uint32), 5)}
    assert sorted(hists) == [1, 70_001]
    assert sorted(hists[1].deltas.tolist()) == [10, 20]
    assert hists[70_001].deltas.tolist() == [66_000]
    assert store.add_song(NewSong("three", "c" * 40, 60.0, np.array([77], np.uint32), np.array([3]))) == 70_002
    store.close()
    assert open_store(name).hash_counts(np.array([77])).tolist() == [4]  # a second open keeps it


def test_compact_merges_the_parts_that_each_lookup_pays_for(name, rng):
    store = open_store(name)
    for k in range(4):  # one insert, one part each
        store.add_song(
            NewSong(f"s{k}", rng.bytes(20).hex(), 60.0, rng.integers(0, 2**23, 500).astype(np.uint32), np.arange(500))
        )
    parts = "SELECT count() FROM system.parts WHERE active AND database = %(db)s AND table = 'fingerprints'"
    assert store._run(parts, {"db": name})[0][0] > 1
    store.compact()
    assert store._run(parts, {"db": name})[0][0] == 1
    assert store.count_songs() == 4
    store.close()


def triplet_song(rng, n=2000, sha=None):
    hashes = rng.integers(0, 2**23, n).astype(np.uint32)
    thirds = rng.integers(1, 2**14, n).astype(np.uint16)
    return NewSong(
        "t", sha or rng.bytes(20).hex(), 60.0, hashes, np.sort(rng.integers(0, 2500, n)).astype(np.int32), thirds
    )


def test_triplet_keys_find_the_rows_with_their_third_point_only(name, rng):
    store = ClickHouseStore(DatabaseConfig(**servers.clickhouse_database(name)), IdSlot(0, 1))
    assert store.ensure_schema("digest-1", {THIRD_POINT_FEATURE: "1"}) == {THIRD_POINT_FEATURE: "1"}
    songs = [triplet_song(rng) for _ in range(3)]
    ids = [store.add_song(s) for s in songs]
    song, pick = songs[1], slice(300, 600)
    hists = store.triplet_alignments(song.hashes[pick], song.thirds[pick], song.offsets[pick] - 40, top_k=5)
    assert hists[0].song_id == ids[1]
    assert hists[0].deltas[hists[0].counts.argmax()] == 40
    assert hists[0].counts.max() == 300
    # the same pairs with other third points match nothing; as pairs they still do
    other = (song.thirds[pick] ^ np.uint16(1)).astype(np.uint16)
    assert store.triplet_alignments(song.hashes[pick], other, song.offsets[pick], top_k=5) == []
    assert store.best_alignments(song.hashes[pick], song.offsets[pick] - 40, top_k=1)[0].counts.max() == 300
    store.close()


def test_a_table_without_third_points_keeps_its_rows_and_lacks_the_feature(name, rng):
    """A fingerprints table made by the previous release: emptied, it is remade with third points."""
    store = open_store(name)
    store._run("DROP TABLE fingerprints")
    store._run(
        "CREATE TABLE fingerprints (hash UInt32, song_hi UInt64, song_lo UInt16, offset_hi UInt16, offset_lo UInt16)"
        " ENGINE = MergeTree ORDER BY (hash, song_hi, song_lo, offset_hi, offset_lo)"
    )
    store.close()
    store = ClickHouseStore(DatabaseConfig(**servers.clickhouse_database(name)), IdSlot(0, 1))
    assert store.ensure_schema("digest-1") == {}
    song = triplet_song(rng)
    song_id = store.add_song(song)  # its third points have nowhere to go: the pairs are stored
    assert store.ensure_schema("digest-1", {THIRD_POINT_FEATURE: "1"}) == {}
    assert store.best_alignments(song.hashes[:100], song.offsets[:100], top_k=1)[0].song_id == song_id
    assert store.delete_song(song_id)
    store._run("OPTIMIZE TABLE fingerprints FINAL")
    store._run("TRUNCATE TABLE songs")
    store._run("ALTER TABLE meta DELETE WHERE name = 'last_song_id'")
    store.close()
    store = ClickHouseStore(DatabaseConfig(**servers.clickhouse_database(name)), IdSlot(0, 1))
    assert store.ensure_schema("digest-1", {THIRD_POINT_FEATURE: "1"}) == {THIRD_POINT_FEATURE: "1"}
    song_id = store.add_song(song)
    hists = store.triplet_alignments(song.hashes[:100], song.thirds[:100], song.offsets[:100], top_k=1)
    assert hists[0].song_id == song_id and hists[0].counts.max() == 100
    store.close()
