"""SQLiteStore: atomic ingest, duplicates, parameter digests, alignment in SQL."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tunescout.errors import DuplicateSongError, IndexMismatchError
from tunescout.storage.base import IdSlot, NewSong
from tunescout.storage.sqlite import SQLiteStore


def song(rng, n=2000, sha="a" * 40):
    return NewSong(
        "s", sha, 60.0, rng.integers(0, 2**23, n).astype(np.uint32), np.sort(rng.integers(0, 2500, n)).astype(np.int32)
    )


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "f.sqlite")
    s.ensure_schema("digest-1")
    yield s
    s.close()


def test_lookup_finds_the_offset(store, rng):
    new = song(rng)
    song_id = store.add_song(new)
    pick = slice(100, 300)
    hist = store.best_alignments(new.hashes[pick], new.offsets[pick] - 40, top_k=5)
    assert hist[0].song_id == song_id
    assert hist[0].deltas[hist[0].counts.argmax()] == 40


def test_duplicates_are_refused(store, rng):
    store.add_song(song(rng))
    with pytest.raises(DuplicateSongError):
        store.add_song(song(rng))
    assert store.count_songs() == 1


def test_other_params_are_refused(store, tmp_path):
    with pytest.raises(IndexMismatchError):
        SQLiteStore(tmp_path / "f.sqlite").ensure_schema("digest-2")


def test_id_slots_interleave():
    slot = IdSlot(2, 3)
    assert slot.next_id(None) == 3 and slot.next_id(3) == 6


def test_a_killed_ingest_leaves_nothing_visible(store, tmp_path):
    # The child stops at the COMMIT of its song, every row written, and waits there to be killed.
    child = textwrap.dedent(f"""
        import sqlite3, time
        import numpy as np
        from tunescout.storage.sqlite import SQLiteStore
        from tunescout.storage.base import NewSong
        connect, wrote = sqlite3.connect, []

        def stop_at_commit(sql):
            if not wrote and sql.upper().startswith("INSERT INTO FINGERPRINTS"):
                wrote.append(True)
            elif wrote and sql.upper() == "COMMIT":
                print("committing", flush=True)
                time.sleep(600)

        def traced(*args, **kwargs):
            conn = connect(*args, **kwargs)
            conn.set_trace_callback(stop_at_commit)
            return conn
        sqlite3.connect = traced
        s = SQLiteStore({str(tmp_path / "f.sqlite")!r}); s.ensure_schema("digest-1")
        n = 20_000
        rng = np.random.default_rng(0)
        s.add_song(NewSong("big", "b" * 40, 999.0, rng.integers(0, 2**23, n).astype(np.uint32),
                           np.arange(n, dtype=np.int32)))
        print("done", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "committing"
        assert store.count_songs() == 0  # written but not committed: invisible to readers
    finally:
        proc.kill()
        proc.wait()
    fresh = SQLiteStore(tmp_path / "f.sqlite")
    fresh.ensure_schema("digest-1")
    assert fresh.count_songs() == 0
    assert fresh.query("SELECT COUNT(*) FROM fingerprints")[0][0] == 0
    fresh.close()


def test_histograms_of_postings_count_distinct_hashes_per_song_and_offset(rng):
    from collections import defaultdict

    from dejavu import histograms_of_postings

    q_hashes = rng.integers(0, 30, 200).astype(np.uint32)  # few values: repeated hashes
    q_offsets = rng.integers(0, 50, 200).astype(np.int32)
    postings = [
        (int(h), int(s), int(o))
        for h, s, o in zip(
            rng.integers(0, 30, 2000), rng.integers(1, 2**40, 2000) % 7 + 2**40, rng.integers(0, 500, 2000)
        )
    ]
    want = defaultdict(set)
    for qh, qo in zip(q_hashes.tolist(), q_offsets.tolist()):
        for h, s, o in postings:
            if h == qh:
                want[(s, o - qo)].add(h)
    got = {}
    as_arrays = tuple(np.array(column, np.int64) for column in zip(*postings))
    for hist in histograms_of_postings(q_hashes, q_offsets, as_arrays, top_k=100):
        for d, c in zip(hist.deltas.tolist(), hist.counts.tolist()):
            got[(hist.song_id, d)] = c
    assert got == {k: len(v) for k, v in want.items()}
    assert max(got.values()) > 1


def index_without_counts(tmp_path, rng):
    """An index as the previous release left it: no hash_counts; value 77 has 30 rows."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    store = SQLiteStore(path)
    store.ensure_schema("digest-1")
    for k in range(3):
        hashes = np.concatenate([np.full(10, 77, np.uint32), rng.integers(2**20, 2**23, 100).astype(np.uint32)])
        store.add_song(NewSong("s", f"{k:040d}", 60.0, hashes, np.arange(110, dtype=np.int32)))
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE hash_counts")
    conn.execute("DELETE FROM meta WHERE key = 'hash_counts'")
    conn.commit()
    conn.close()
    return path


def test_an_index_made_before_hash_counts_gets_them_on_open(tmp_path, rng):
    path = index_without_counts(tmp_path, rng)
    store = SQLiteStore(path)
    store.ensure_schema("digest-1")
    assert store.hash_counts(np.array([77, 2**23 + 1], np.uint32)).tolist() == [30, 1]
    store.close()


def test_processes_opening_an_old_index_together_fill_the_counts_once(tmp_path, rng, monkeypatch):
    import contextlib
    import threading

    path = index_without_counts(tmp_path, rng)
    stores = [SQLiteStore(path) for _ in range(4)]  # as gunicorn workers starting at once
    errors = []
    # All four have created the tables (no counts yet) before any of them starts filling.
    barrier, transaction = threading.Barrier(4, timeout=10), SQLiteStore.transaction

    @contextlib.contextmanager
    def after_all_opened(self, message):
        barrier.wait()
        with transaction(self, message) as cur:
            yield cur

    monkeypatch.setattr(SQLiteStore, "transaction", after_all_opened)

    def open_it(s):
        try:
            s.ensure_schema("digest-1")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [s.hash_counts(np.array([77], np.uint32)).tolist() for s in stores] == [[30]] * 4
    for s in stores:
        s.close()
