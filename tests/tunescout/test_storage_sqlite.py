"""SQLiteStore: atomic ingest, duplicates, parameter digests, alignment in SQL."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tunescout.errors import DuplicateSongError, IndexMismatchError
from tunescout.storage.base import IdSlot, NewSong
from tunescout.storage.sqlite import SQLiteStore


def song(rng, n=2000, sha="a" * 40):
    return NewSong("s", sha, 60.0, rng.integers(0, 2**23, n).astype(np.uint32),
                   np.sort(rng.integers(0, 2500, n)).astype(np.int32))


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
    child = textwrap.dedent(f"""
        import numpy as np, sys
        from tunescout.storage.sqlite import SQLiteStore
        from tunescout.storage.base import NewSong
        s = SQLiteStore({str(tmp_path / 'f.sqlite')!r}); s.ensure_schema("digest-1")
        n = 3_000_000
        rng = np.random.default_rng(0)
        print("go", flush=True)
        s.add_song(NewSong("big", "b" * 40, 999.0, rng.integers(0, 2**23, n).astype(np.uint32),
                           np.arange(n, dtype=np.int32)))
        print("done", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "go"
    time.sleep(1.0)
    assert store.count_songs() == 0          # mid-ingest: invisible to readers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    fresh = SQLiteStore(tmp_path / "f.sqlite")
    fresh.ensure_schema("digest-1")
    assert fresh.count_songs() == 0
    assert fresh._query("SELECT COUNT(*) FROM fingerprints", ())[0][0] == 0
    fresh.close()
