"""CountsSnapshot: common hash counts from memory, lagging changes by at most one refresh."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tunescout.errors import StorageError
from tunescout.storage.base import IdSlot, NewSong
from tunescout.storage.snapshot import CountsSnapshot
from tunescout.storage.sqlite import SQLiteStore

COMMON = np.arange(100, 110, dtype=np.uint32)
PROBE = np.array([100, 105, 2**23 + 1, 5_000_000], np.int64)  # two common values, one absent, one rare


def song(rng, copies: int) -> NewSong:
    """COMMON `copies` times at different offsets, and the rare value 5,000,000 once."""
    hashes = np.concatenate([np.tile(COMMON, copies), np.array([5_000_000], np.uint32)])
    return NewSong("s", rng.bytes(20).hex(), 60.0, hashes, np.arange(hashes.size))


def eventually(check, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not within the time limit"
        time.sleep(0.01)


def test_counts_come_from_memory_and_lag_changes_until_the_next_refresh(tmp_path, rng):
    store = SQLiteStore(tmp_path / "f.sqlite", IdSlot(0, 1))
    store.ensure_schema("digest-1")
    store.add_song(song(rng, 10))
    now = [0.0]
    snapshot = CountsSnapshot(store, refresh_s=30.0, clock=lambda: now[0])
    # No copy yet: the instance answers (and a reload starts in the background).
    assert snapshot.hash_counts(PROBE).tolist() == store.hash_counts(PROBE).tolist()
    snapshot.refresh()
    assert snapshot.hash_counts(PROBE).tolist() == [10, 10, 1, 1]  # rarer values answer 1
    store.add_song(song(rng, 10))
    assert store.hash_counts(PROBE)[:2].tolist() == [20, 20]
    assert snapshot.hash_counts(PROBE)[:2].tolist() == [10, 10]  # not due yet: the old copy
    now[0] = 31.0
    eventually(lambda: snapshot.hash_counts(PROBE)[:2].tolist() == [20, 20])
    snapshot.close()


def test_an_instance_that_fails_a_reload_keeps_its_last_copy(private_store, rng):
    store, private = private_store
    store.add_song(song(rng, 9))
    now = [0.0]
    snapshot = CountsSnapshot(store, refresh_s=30.0, clock=lambda: now[0])
    snapshot.refresh()
    assert snapshot.hash_counts(PROBE).tolist() == [9, 9, 1, 1]
    private.stop()
    now[0] = 31.0
    assert snapshot.hash_counts(PROBE).tolist() == [9, 9, 1, 1]  # the reload it starts fails
    snapshot.refresh()  # so does this one, quietly
    assert snapshot.hash_counts(PROBE).tolist() == [9, 9, 1, 1]
    with pytest.raises(StorageError):
        store.hash_counts(PROBE)  # the instance itself is down
    snapshot.close()
