"""One contract for every FingerprintStore and ResultStore: SQLite, MySQL, PostgreSQL and ClickHouse, real servers."""

from __future__ import annotations

import collections
import time

import numpy as np
import pytest

from dejavu.verify import pack_peaks, pair_peaks, unpack_peaks
from tests import servers
from tests.conftest import need
from tunescout.config import DatabaseConfig
from tunescout.errors import DuplicateSongError, IndexMismatchError, StorageError
from tunescout.storage import result_store_class, store_class
from tunescout.storage.base import THIRD_POINT_FEATURE, IdSlot, NewSong

BACKENDS = ("sqlite", "mysql", "postgres", "clickhouse")


class Backend:
    """Opens stores of one backend on databases of the test's own, dropped afterwards."""

    def __init__(self, kind: str, tmp_path):
        self.kind, self.tmp_path, self.names = kind, tmp_path, []

    def location(self, name: str | None = None):
        name = name or servers.fresh_name()
        if name not in self.names:
            self.names.append(name)
        if self.kind == "sqlite":
            return self.tmp_path / f"{name}.sqlite"
        if self.kind == "mysql":
            return DatabaseConfig(**servers.mysql_database(name))
        if self.kind == "postgres":
            return DatabaseConfig(**servers.postgres_database(name))
        return DatabaseConfig(**servers.clickhouse_database(name))

    def store(self, name=None, slot=IdSlot(0, 1), digest="digest-1"):
        store = store_class(self.kind)(self.location(name), slot)
        store.ensure_schema(digest)
        return store

    def result_store(self, name=None):
        return result_store_class(self.kind)(self.location(name))

    def cleanup(self):
        drop = {
            "mysql": servers.drop_mysql,
            "postgres": servers.drop_postgres,
            "clickhouse": servers.drop_clickhouse,
        }.get(self.kind)
        for name in self.names if drop else ():
            drop(name)


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    if request.param == "mysql":
        need(servers.mysql_ready(), "MariaDB on its unix socket (scripts/start_servers.sh)")
    if request.param == "postgres":
        need(servers.postgres_ready(), "PostgreSQL on 127.0.0.1:5432 (scripts/start_servers.sh)")
    if request.param == "clickhouse":
        need(servers.clickhouse_ready(), "ClickHouse on 127.0.0.1:9000 (scripts/start_servers.sh)")
    b = Backend(request.param, tmp_path)
    yield b
    b.cleanup()


@pytest.fixture
def store(backend):
    s = backend.store()
    yield s
    s.close()


def make_song(rng, n=3000, sha=None, name="song", frames=2500):
    return NewSong(
        name,
        sha or rng.bytes(20).hex(),
        60.0,
        rng.integers(0, 2**23, n).astype(np.uint32),
        np.sort(rng.integers(0, frames, n)).astype(np.int32),
    )


def test_lookup_finds_the_song_and_its_offset(store, rng):
    songs = [make_song(rng) for _ in range(3)]
    ids = [store.add_song(s) for s in songs]
    pick = slice(500, 800)
    hist = store.best_alignments(songs[1].hashes[pick], songs[1].offsets[pick] - 40, top_k=5)
    assert hist[0].song_id == ids[1]
    assert hist[0].deltas[hist[0].counts.argmax()] == 40
    assert hist[0].counts.max() == len(set(songs[1].hashes[pick].tolist()))


def test_offsets_before_the_query_start_are_negative_deltas(store, rng):
    new = make_song(rng)
    song_id = store.add_song(new)
    pick = slice(0, 200)
    hist = store.best_alignments(new.hashes[pick], new.offsets[pick] + 1000, top_k=1)
    assert hist[0].song_id == song_id and hist[0].deltas[hist[0].counts.argmax()] == -1000


def test_only_the_top_k_songs_come_back(store, rng):
    songs = [make_song(rng) for _ in range(6)]
    ids = [store.add_song(s) for s in songs]
    # The query shares 50, 40, 30, ... hashes with songs 0, 1, 2, ...
    parts = [(s.hashes[: 50 - 10 * i], s.offsets[: 50 - 10 * i]) for i, s in enumerate(songs[:5])]
    hashes = np.concatenate([p[0] for p in parts])
    offsets = np.concatenate([p[1] for p in parts])
    hist = store.best_alignments(hashes, offsets, top_k=3)
    assert [h.song_id for h in hist] == ids[:3]


def test_same_histograms_as_sqlite(backend, rng, tmp_path):
    """Every backend computes exactly the histogram the embedded default computes."""
    from tunescout.storage.sqlite import SQLiteStore

    reference = SQLiteStore(tmp_path / "reference.sqlite")
    reference.ensure_schema("digest-1")
    store = backend.store()
    songs = [make_song(rng, n=4000, frames=400) for _ in range(4)]  # dense: many shared hashes
    for s in songs:
        assert store.add_song(s) == reference.add_song(s)
    query_h = np.concatenate([songs[0].hashes[:300], rng.integers(0, 2**23, 500).astype(np.uint32)])
    query_o = np.concatenate([songs[0].offsets[:300] - 7, rng.integers(0, 400, 500).astype(np.int32)])
    query_o = np.maximum(query_o, 0)
    got = {
        h.song_id: dict(zip(h.deltas.tolist(), h.counts.tolist()))
        for h in store.best_alignments(query_h, query_o, top_k=10)
    }
    want = {
        h.song_id: dict(zip(h.deltas.tolist(), h.counts.tolist()))
        for h in reference.best_alignments(query_h, query_o, top_k=10)
    }
    assert got == want and len(got) == 4  # song 0, and chance matches on each of the others
    store.close()
    reference.close()


def test_duplicates_are_refused(store, rng):
    new = make_song(rng)
    store.add_song(new)
    with pytest.raises(DuplicateSongError):
        store.add_song(make_song(rng, sha=new.blob_sha1))
    assert store.count_songs() == 1


def test_songs_round_trip(store, rng):
    new = make_song(rng, name="Zoë & the Ünïcode (live)")
    song_id = store.add_song(new)
    got = store.get_songs([song_id, 999_999])
    assert list(got) == [song_id]
    song = got[song_id]
    assert (song.song_name, song.blob_sha1, song.total_hashes) == (new.song_name, new.blob_sha1, 3000)
    assert song.duration_seconds == pytest.approx(60.0) and song.created.endswith("Z")
    assert store.find_sha1(new.blob_sha1) == song
    assert store.find_sha1("0" * 40) is None


def test_ids_follow_the_instance_slot(backend, rng):
    store = backend.store(slot=IdSlot(1, 3))
    ids = [store.add_song(make_song(rng, n=100)) for _ in range(3)]
    assert ids == [2, 5, 8]
    store.close()


def test_other_params_or_layout_are_refused(backend):
    name = servers.fresh_name()
    backend.store(name).close()
    with pytest.raises(IndexMismatchError):
        backend.store(name, digest="digest-2")
    with pytest.raises(IndexMismatchError):
        backend.store(name, slot=IdSlot(0, 2))
    backend.store(name).close()  # the original layout still opens


def test_list_delete_and_stats(store, rng):
    songs = [make_song(rng) for _ in range(5)]
    ids = [store.add_song(s) for s in songs]
    page = store.list_songs(after_id=0, limit=2)
    assert [s.song_id for s in page] == ids[:2]
    assert [s.song_id for s in store.list_songs(page[-1].song_id, 10)] == ids[2:]
    stats = store.stats()
    assert stats["songs"] == 5 and stats["hashes"] == 5 * 3000 and stats["index_bytes"] > 0

    assert store.delete_song(ids[2]) is True
    assert store.delete_song(ids[2]) is False
    assert store.get_songs([ids[2]]) == {} and store.count_songs() == 4
    hist = store.best_alignments(songs[2].hashes[:300], songs[2].offsets[:300], top_k=5)
    assert ids[2] not in [h.song_id for h in hist]
    # A new song never takes a deleted song's hashes.
    new_id = store.add_song(make_song(rng))
    assert new_id not in ids


def test_each_song_keeps_its_peaks_until_it_is_deleted(store, rng):
    songs = [make_song(rng) for _ in range(3)]
    ids = [store.add_song(s) for s in songs]
    peaks = store.song_peaks([ids[0], ids[2], 10**9])
    assert sorted(peaks) == [ids[0], ids[2]] and store.song_peaks([]) == {}
    for i in (0, 2):
        for got, want in zip(unpack_peaks(peaks[ids[i]]), pair_peaks(songs[i].hashes, songs[i].offsets)):
            np.testing.assert_array_equal(got, want)
    assert store.delete_song(ids[0])
    assert store.song_peaks([ids[0], ids[1]]).keys() == {ids[1]}


def _reopened_without_peaks(backend, store, name):
    """The store's database without its peaks table, as one made before it existed, opened again
    (which creates the table empty)."""
    if backend.kind == "clickhouse":
        store._run("DROP TABLE peaks")
    else:
        with store.transaction("test") as cur:
            cur.execute("DROP TABLE peaks")
    store.close()
    return backend.store(name)


def test_songs_stored_without_peaks_get_them_from_their_rows(backend, rng):
    name = servers.fresh_name()
    songs = [make_song(rng, name=f"s{i}") for i in range(4)]
    first = backend.store(name)
    ids = [first.add_song(s) for s in songs]
    store = _reopened_without_peaks(backend, first, name)
    assert store.song_peaks(ids) == {} and store.songs_without_peaks(0, 10) == ids
    assert store.songs_without_peaks(ids[1], 2) == ids[2:4]

    rows = store.song_rows([ids[0], ids[2], 10**9])
    assert sorted(rows) == [ids[0], ids[2]] and store.song_rows([]) == {}
    for i in (0, 2):
        got = sorted(zip(rows[ids[i]][0].tolist(), rows[ids[i]][1].tolist()))
        assert got == sorted(set(zip(songs[i].hashes.tolist(), songs[i].offsets.tolist())))

    assert store.delete_song(ids[3])  # deleted meanwhile: its peaks are not stored
    packed = {i: pack_peaks(*pair_peaks(*rows[i])) for i in rows} | {ids[3]: b"x"}
    assert store.add_peaks(packed) == 2 and store.add_peaks(packed) == 0  # once only
    assert store.songs_without_peaks(0, 10) == [ids[1]]
    assert store.song_peaks(ids).keys() == {ids[0], ids[2]}
    want = pair_peaks(songs[2].hashes, songs[2].offsets)
    for got, expected in zip(unpack_peaks(store.song_peaks([ids[2]])[ids[2]]), want):
        np.testing.assert_array_equal(got, expected)
    store.close()


def test_empty_query_and_empty_index(store):
    empty = np.zeros(0, np.uint32)
    assert store.best_alignments(empty, empty.astype(np.int32), top_k=3) == []
    assert store.best_alignments(np.array([1, 2], np.uint32), np.array([0, 1], np.int32), top_k=3) == []
    assert store.list_songs(0, 10) == [] and store.count_songs() == 0


def test_result_store_round_trip(backend):
    results = backend.result_store()
    token = "ab" * 17
    assert results.get_result(token) is None
    results.put_result(token, '{"results": [], "name": "Zoë"}')
    assert results.get_result(token) == '{"results": [], "name": "Zoë"}'
    assert results.count_results() == 1
    results.close()


def test_result_store_keeps_the_latest_state_of_a_scan_job(backend):
    results = backend.result_store()
    token, other = "cd" * 17, "ef" * 17
    assert results.get_job(token) is None
    results.put_job(token, 0, '{"state": "queued"}', 1_000)
    results.put_job(token, 2, '{"state": "running", "name": "Zoë"}', 1_002)
    results.put_job(token, 1, '{"state": "out of order"}', 1_003)
    results.put_job(other, 0, '{"state": "queued"}', 5_000)
    assert results.get_job(token) == (2, '{"state": "running", "name": "Zoë"}')
    results.purge_jobs(1_003)  # last written at 1,003: kept
    assert results.get_job(token) is not None
    results.purge_jobs(1_004)
    for _ in range(50):  # ClickHouse applies the delete in the background
        if results.get_job(token) is None:
            break
        time.sleep(0.1)
    assert results.get_job(token) is None
    assert results.get_job(other) == (0, '{"state": "queued"}')
    assert results.count_results() == 0  # the jobs are not results
    results.close()


@pytest.mark.parametrize("backend", ["mysql", "postgres", "clickhouse"], indirect=True)
def test_an_unreachable_server_raises_storage_error(backend):
    location = backend.location()
    down = type(location)(**{**location.__dict__, "port": servers.closed_port()})
    store = store_class(backend.kind)(down, IdSlot(0, 1))
    with pytest.raises(StorageError):
        store.ensure_schema("digest-1")
    with pytest.raises(StorageError):
        store.best_alignments(np.array([1], np.uint32), np.array([0], np.int32), 3)


def test_bulk_add_is_all_or_nothing_on_duplicates(store, rng):
    first = make_song(rng)
    store.add_song(first)
    batch = [make_song(rng) for _ in range(3)]
    ids = store.add_songs(batch)
    assert len(set(ids)) == 3 and store.count_songs() == 4
    with pytest.raises(DuplicateSongError):
        store.add_songs([make_song(rng), make_song(rng, sha=first.blob_sha1)])
    assert store.count_songs() == 4
    hist = store.best_alignments(batch[2].hashes[:200], batch[2].offsets[:200], top_k=1)
    assert hist[0].song_id == ids[2]


def test_generation_grows_with_every_change_and_ids_are_never_reused(store, rng):
    g0 = store.generation()
    first = store.add_song(make_song(rng))
    g1 = store.generation()
    last = store.add_song(make_song(rng))
    g2 = store.generation()
    assert g0 < g1 < g2
    assert store.delete_song(last)
    g3 = store.generation()
    assert g3 > g2
    assert store.delete_song(last) is False
    again = store.add_song(make_song(rng))
    assert (first, last, again) == (1, 2, 3) and store.generation() > g3  # 2 is not handed out again


def test_a_failure_inside_a_write_leaves_no_transaction_open(backend, store, rng):
    """A non-database exception half way through a write rolls back; the store keeps working."""
    bad = NewSong(
        "bad", rng.bytes(20).hex(), 60.0, np.array([1, 2], np.uint32), np.array([0, 2**70], dtype=object)
    )  # an offset no column can hold
    with pytest.raises(OverflowError):
        store.add_songs([make_song(rng), bad])
    assert store.count_songs() == 0
    if backend.kind == "sqlite":  # its driver cannot bind the id: the delete fails inside its transaction
        with pytest.raises(OverflowError):
            store.delete_song(2**70)
    else:  # the server takes the id and finds no such song
        assert store.delete_song(2**70) is False
    song_id = store.add_song(make_song(rng))  # the next write is not stuck behind an open one
    assert store.count_songs() == 1 and store.delete_song(song_id) is True


def test_hash_counts_follow_adds_and_deletes(backend, rng):
    """Exact for common values (EXACT_COUNTS_FROM rows or more), under that bound for rare ones,
    through adds and deletes (ClickHouse's, once its background delete has run)."""
    from tunescout.storage.base import EXACT_COUNTS_FROM

    store = backend.store()
    common = np.arange(100, 120, dtype=np.uint32)
    songs = []
    for k in range(6):  # each song holds every common value twice (at two offsets) and rare ones
        rare = rng.integers(2**20, 2**23, 300).astype(np.uint32)
        hashes = np.concatenate([common, common, rare])
        offsets = np.concatenate([np.arange(20), np.arange(20) + 500, np.arange(300) + 30]).astype(np.int32)
        songs.append(NewSong(f"s{k}", rng.bytes(20).hex(), 60.0, hashes, offsets))
    ids = [store.add_song(s) for s in songs]

    def naive(values):
        return np.array(
            [sum(int((s.hashes == v).sum()) for s, i in zip(songs, ids) if i in alive) for v in values.tolist()]
        )

    alive = set(ids)
    probe = np.concatenate([common, songs[0].hashes[40:60], np.array([2**23 + 5], np.uint32)])
    probe = np.unique(probe)
    for step in range(3):
        if backend.kind == "clickhouse":
            servers.wait_clickhouse_mutations(backend.names[-1])
        got, want = store.hash_counts(probe), naive(probe)
        stored = collections.Counter(v for s, i in zip(songs, ids) if i in alive for v in s.hashes.tolist())
        common, counts = store.common_hash_counts(EXACT_COUNTS_FROM)
        assert (np.diff(common) > 0).all()
        assert dict(zip(common.tolist(), counts.tolist())) == {
            v: n for v, n in stored.items() if n >= EXACT_COUNTS_FROM
        }
        exact = want >= EXACT_COUNTS_FROM
        assert exact.sum() == (common.size if len(alive) * 2 >= EXACT_COUNTS_FROM else 0)
        assert (got[exact] == want[exact]).all()
        assert (got[~exact] < EXACT_COUNTS_FROM).all()
        if step < 2:  # 12 rows per common value, then 8, then 4
            assert store.delete_song(ids[step * 2]) and store.delete_song(ids[step * 2 + 1])
            alive -= {ids[step * 2], ids[step * 2 + 1]}
    store.close()


def test_compact_keeps_every_answer(backend, rng):
    """After adds and a delete, compacting changes no lookup, count or listing."""
    store = backend.store()
    songs = [make_song(rng) for _ in range(4)]
    ids = [store.add_song(s) for s in songs]
    assert store.delete_song(ids[2])
    if backend.kind == "clickhouse":
        servers.wait_clickhouse_mutations(backend.names[-1])
    probe, probe_offsets = songs[1].hashes[100:400], songs[1].offsets[100:400] - 7

    def answers():
        hists = store.best_alignments(probe, probe_offsets, top_k=5)
        return (
            [(h.song_id, sorted(zip(h.deltas.tolist(), h.counts.tolist()))) for h in hists],
            store.hash_counts(np.unique(probe)).tolist(),
            [s.song_id for s in store.list_songs(0, 10)],
        )

    before = answers()
    store.compact()
    assert answers() == before
    assert before[2] == [ids[0], ids[1], ids[3]] and before[0][0][0] == ids[1]
    store.close()


ROBUST = 2**30  # robust hash values have this bit set; pair hashes are below 2**24


def song_of_rows(rng, hashes, offsets, name="song") -> NewSong:
    return NewSong(name, rng.bytes(20).hex(), 60.0, np.asarray(hashes, np.uint32), np.asarray(offsets, np.int32))


def row_set(rows) -> list[tuple[int, int, int]]:
    hashes, song_ids, offsets = rows
    assert (hashes.dtype, song_ids.dtype, offsets.dtype) == (np.uint32, np.int64, np.int64)
    return sorted(zip(hashes.tolist(), song_ids.tolist(), offsets.tolist()))


def test_rows_are_exactly_the_rows_stored_for_the_values(store, rng):
    """Pair and robust values alike, each value's rows of every song, offsets up to 2**31 - 1."""
    shared = [7, ROBUST + 7]  # in both songs
    pairs = np.array([*shared, 11, 11, 12, 2**24 - 1], np.uint32)  # 11 twice: two rows of one song
    robust = np.array([*shared, ROBUST + 1, ROBUST + 1, ROBUST + 2**29, 2**31 - 1], np.uint32)
    big = np.array([0, 2**31 - 1, 2**30 + 12345, 2**31 - 2, 99, 2**31 - 1])
    a = store.add_song(
        song_of_rows(rng, np.r_[pairs, rng.integers(2**20, 2**23, 200)], np.r_[5, 6, 0, 40, 9, 9, range(200)])
    )
    b = store.add_song(song_of_rows(rng, robust, big))
    absent = [13, ROBUST + 13, 2**31 + 7, 2**32 - 1]  # the last two: above any stored value
    asked = np.array([*pairs[[0, 1, 2, 5]], *robust[[2, 4, 5]], *absent, 11, 7], np.uint32)  # repeats too
    assert row_set(store.rows(asked)) == sorted(
        [(7, a, 5), (ROBUST + 7, a, 6), (11, a, 0), (11, a, 40), (2**24 - 1, a, 9)]
        + [(7, b, 0), (ROBUST + 7, b, 2**31 - 1), (ROBUST + 1, b, 2**30 + 12345), (ROBUST + 1, b, 2**31 - 2)]
        + [(ROBUST + 2**29, b, 99), (2**31 - 1, b, 2**31 - 1)]
    )
    assert row_set(store.rows(np.array(absent, np.uint32))) == []
    assert row_set(store.rows(np.zeros(0, np.uint32))) == []
    # one song's rows only (a scan's boundaries)
    assert row_set(store.rows(asked, b)) == sorted(
        [(7, b, 0), (ROBUST + 7, b, 2**31 - 1), (ROBUST + 1, b, 2**30 + 12345), (ROBUST + 1, b, 2**31 - 2)]
        + [(ROBUST + 2**29, b, 99), (2**31 - 1, b, 2**31 - 1)]
    )
    assert row_set(store.rows(asked, a)) == sorted(
        [(7, a, 5), (ROBUST + 7, a, 6), (11, a, 0), (11, a, 40), (2**24 - 1, a, 9)]
    )
    assert row_set(store.rows(asked, max(a, b) + 100)) == []


def test_rows_leave_out_a_deleted_song_at_once(store, rng):
    """At once: ClickHouse's rows of a deleted song stay until its background delete has run, hidden."""
    values = np.array([3, 4, ROBUST + 3], np.uint32)
    kept = store.add_song(song_of_rows(rng, values, [1, 2, 3]))
    gone = store.add_song(song_of_rows(rng, values, [4, 5, 2**31 - 1]))
    assert len(row_set(store.rows(values))) == 6
    assert store.delete_song(gone)
    assert row_set(store.rows(values)) == [(3, kept, 1), (4, kept, 2), (ROBUST + 3, kept, 3)]


def test_rows_of_an_empty_index(store):
    assert row_set(store.rows(np.array([1, ROBUST + 1], np.uint32))) == []
    assert row_set(store.rows_between(0, 2**32)) == []


def test_rows_between_are_the_rows_of_a_range_of_values(store, rng):
    """Ranges that tile the values give every row of the stored songs once; a deleted song's none."""
    values = np.array([0, 5, 5, 6, 2**24 - 1, ROBUST, ROBUST + 9, 2**31 - 1], np.uint32)
    offsets = [3, 1, 2, 0, 2**31 - 1, 7, 8, 9]
    a = store.add_song(song_of_rows(rng, values, offsets))
    gone = store.add_song(song_of_rows(rng, values[:3], [4, 5, 6]))
    assert store.delete_song(gone)
    mine = sorted(zip(values.tolist(), [a] * 8, offsets))
    assert row_set(store.rows_between(0, 2**32)) == mine
    assert row_set(store.rows_between(5, 6)) == [(5, a, 1), (5, a, 2)]  # hi is left out
    assert row_set(store.rows_between(7, ROBUST)) == [(2**24 - 1, a, 2**31 - 1)]
    cuts = [0, 1, 6, 7, ROBUST + 9, 2**31 - 1, 2**32]
    tiled = [row for lo, hi in zip(cuts, cuts[1:]) for row in row_set(store.rows_between(lo, hi))]
    assert sorted(tiled) == mine


def test_a_feature_is_recorded_on_an_empty_index_and_a_mismatch_refused(backend, rng):
    name = servers.fresh_name()
    store = store_class(backend.kind)(backend.location(name), IdSlot(0, 1))
    assert store.ensure_schema("digest-1", {"robust_digest": "ab12"}) == {"robust_digest": "ab12"}
    store.add_song(make_song(rng, n=100))
    # Recorded: a later start finds it (with songs now), and one that does not ask is not told.
    assert store.ensure_schema("digest-1", {"robust_digest": "ab12", "later": "1"}) == {"robust_digest": "ab12"}
    assert store.ensure_schema("digest-1") == {}
    with pytest.raises(IndexMismatchError, match="robust_digest"):
        store.ensure_schema("digest-1", {"robust_digest": "cd34"})
    store.close()


def test_a_feature_stays_missing_on_an_index_that_holds_songs(backend, rng):
    """An index made by the previous release keeps lacking the feature: its songs have no such rows."""
    name = servers.fresh_name()
    old = backend.store(name)
    old.add_song(make_song(rng, n=100))
    old.close()
    store = store_class(backend.kind)(backend.location(name), IdSlot(0, 1))
    assert store.ensure_schema("digest-1", {"robust_digest": "ab12"}) == {}
    assert store.ensure_schema("digest-1", {"robust_digest": "cd34"}) == {}  # still missing, so no mismatch
    store.close()


def test_an_index_of_other_params_gets_no_feature(backend):
    name = servers.fresh_name()
    backend.store(name).close()
    store = store_class(backend.kind)(backend.location(name), IdSlot(0, 1))
    with pytest.raises(IndexMismatchError, match="params_digest"):
        store.ensure_schema("digest-2", {"robust_digest": "ab12"})
    assert store.ensure_schema("digest-1", {"robust_digest": "cd34"}) == {"robust_digest": "cd34"}
    store.close()


def test_only_clickhouse_records_third_points(backend):
    store = store_class(backend.kind)(backend.location(), IdSlot(0, 1))
    recorded = store.ensure_schema("digest-1", {THIRD_POINT_FEATURE: "1"})
    assert recorded == ({THIRD_POINT_FEATURE: "1"} if backend.kind == "clickhouse" else {})
    if backend.kind != "clickhouse":
        with pytest.raises(StorageError, match="third points"):
            store.triplet_alignments(np.array([1], np.uint32), np.array([1], np.uint16), np.array([0], np.int32), 3)
    store.close()
