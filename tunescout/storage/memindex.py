"""MemoryIndex: an instance's index rows in memory, its lookups answered there, kept up to date in the background."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from dejavu import Histogram, distinct
from dejavu.histogram import histograms_of_rows
from dejavu.postings import Postings

from ..errors import StorageError
from .base import EXACT_COUNTS_FROM, FingerprintStore, NewSong, Song, StoreLayer

log = logging.getLogger(__name__)

LOAD_ROWS = 2_000_000  # rows read from the instance at once, about (a backend hands them over as Python objects)
RANGE_FROM = 0.25  # new songs holding this share of the rows or more are read by hash ranges, not by song
HASH_END = 1 << 32  # hashes are below
RARE_WIDTH = LOAD_ROWS // (2 * EXACT_COUNTS_FROM)  # values of fewer rows in a range this wide: < LOAD_ROWS / 2
LIST_PAGE = 10_000  # songs listed at once when the held copy is compared with the instance


@dataclasses.dataclass(frozen=True)
class Held:
    """One consistent copy of an instance's rows. A song is a small number (its place in
    ``song_ids``, ascending with the ids), so that the grouping key packs."""

    song_ids: np.ndarray  # int64 [s]: the ids of the songs held, by number
    alive: np.ndarray  # bool [s]: False once a song is deleted (its rows stay until a merge)
    segments: tuple[Postings, ...]  # largest first; a lookup reads them all
    all_alive: bool = True

    @property
    def rows(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.segments) + self.song_ids.nbytes + self.alive.nbytes

    def alive_ids(self) -> set[int]:
        return set(self.song_ids[self.alive].tolist())

    def holds(self, song_id: int) -> bool:
        return bool((self.alive & (self.song_ids == song_id)).any())

    def with_songs(self, song_ids: list[int], rows: dict[int, tuple[np.ndarray, np.ndarray]]) -> Held:
        """This copy and those songs (ids ascending, each with its ``(hashes, offsets)``) added."""
        return self.with_held(
            Held(np.asarray(song_ids, np.int64), np.ones(len(song_ids), bool), (_segment(song_ids, rows),))
        )

    def with_held(self, other: Held) -> Held:
        """This copy and another's songs (numbered from 0 there) after its own."""
        first, segments = self.song_ids.size, self.segments
        for segment in other.segments:
            if segment.size:
                segments = _pushed(segments, segment.renumbered(first))
        return Held(
            np.r_[self.song_ids, other.song_ids],
            np.r_[self.alive, other.alive],
            segments,
            self.all_alive and other.all_alive,
        )

    def without(self, song_ids: set[int]) -> Held:
        """This copy with those songs marked deleted."""
        alive = self.alive & ~np.isin(self.song_ids, np.fromiter(song_ids, np.int64, len(song_ids)))
        return dataclasses.replace(self, alive=alive, all_alive=bool(alive.all()))

    def join(self, hashes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Postings.join over every segment, rows of deleted songs left out."""
        if not self.segments:
            return np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64)
        parts = [s.join(hashes, offsets) for s in self.segments]
        songs, deltas, joined = (np.concatenate([p[i] for p in parts]) for i in range(3))
        if not self.all_alive:
            keep = self.alive[songs]
            songs, deltas, joined = songs[keep], deltas[keep], joined[keep]
        return songs, deltas, joined


EMPTY = Held(np.zeros(0, np.int64), np.zeros(0, bool), ())


def _pushed(segments: tuple[Postings, ...], new: Postings) -> tuple[Postings, ...]:
    """Segments with a new one added last, the last two merged while the newer holds at least half
    the rows of the older: few segments (log2 of the rows), each row merged log2 times."""
    segs = [*segments, new]
    while len(segs) > 1 and 2 * segs[-1].size >= segs[-2].size:
        segs[-2:] = [Postings.merged(segs[-2:])]
    return tuple(segs)


def _segment(song_ids: list[int], rows: dict[int, tuple[np.ndarray, np.ndarray]]) -> Postings:
    """The rows of those songs, numbered 0, 1, ... in that order."""
    return Postings.build(
        np.concatenate([rows[s][0] for s in song_ids] or [np.zeros(0, np.uint32)]),
        np.concatenate(
            [np.full(rows[s][0].size, i, np.int32) for i, s in enumerate(song_ids)] or [np.zeros(0, np.int32)]
        ),
        np.concatenate([rows[s][1] for s in song_ids] or [np.zeros(0, np.int32)]),
    )


class MemoryIndex(StoreLayer):
    """A FingerprintStore whose lookups (best_alignments, rows, hash_counts) are answered from a copy
    of the instance's rows in memory; every other method passes to the store below.

    A database joins and groups a clip's index rows at some 250 ns a row (ClickHouse, one core);
    numpy does it on rows in memory several times faster, and the cost of a clip follows its rows
    (docs/SCALE.md). The copy takes about 8 bytes a row in each worker. Songs added or deleted
    through this layer are seen at once; every ``refresh_s`` a background thread compares the copy
    with the instance (its generation, then its song ids) and reads the rows of songs added
    elsewhere, so those are found within ``refresh_s`` plus their read. The first load starts when the
    layer is made (a worker's start); until it is in, and for triplet keys (the copy keeps no third
    points), the instance answers.
    """

    def __init__(
        self,
        store: FingerprintStore,
        refresh_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_load: Callable[[int, int], None] = lambda rows, nbytes: None,
    ):
        super().__init__(store)
        self.refresh_s = refresh_s
        self.on_load = on_load  # called with the rows and bytes held after each load that changed them
        self._clock = clock
        self._held: Held | None = None
        self._generation: int | None = None  # the instance's generation the copy was compared at
        self._write = threading.Lock()  # one change of the copy at a time (writes and refreshes)
        self._due = clock() + refresh_s
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-index")
        self._pending: cf.Future | None = self._pool.submit(self._load)  # the first load starts at once

    @property
    def held(self) -> Held | None:
        """The current copy (None until the first load)."""
        return self._held

    def best_alignments(self, hashes: np.ndarray, offsets: np.ndarray, top_k: int) -> list[Histogram]:
        held = self._current()
        if held is None:
            return self.store.best_alignments(hashes, offsets, top_k)
        histograms = histograms_of_rows(*held.join(hashes, offsets), top_k)
        return [Histogram(int(held.song_ids[h.song_id]), h.deltas, h.counts) for h in histograms]

    def rows(self, values: np.ndarray, song_id: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        held = self._current()
        if held is None:
            return self.store.rows(values, song_id)
        values = distinct(np.asarray(values, np.int64))
        parts = [s.rows(values) for s in held.segments]
        hashes, songs, offsets = (np.concatenate([p[i] for p in parts] or [np.zeros(0)]) for i in range(3))
        songs = songs.astype(np.int64)
        if not held.all_alive:
            keep = held.alive[songs]
            hashes, songs, offsets = hashes[keep], songs[keep], offsets[keep]
        if song_id is not None:
            keep = held.song_ids[songs] == song_id
            hashes, songs, offsets = hashes[keep], songs[keep], offsets[keep]
        return hashes.astype(np.uint32), held.song_ids[songs], offsets.astype(np.int64)

    def hash_counts(self, values: np.ndarray) -> np.ndarray:
        held = self._current()
        if held is None:
            return self.store.hash_counts(values)
        counts = sum((s.counts(values) for s in held.segments), np.zeros(len(values), np.int64))
        return np.maximum(counts, 1)  # a value no copy holds may be held by a song added elsewhere

    def add_song(self, song: NewSong) -> int:
        song_id = self.store.add_song(song)
        with self._write:
            if self._held is not None and not self._held.holds(song_id):  # (a refresh may have read it)
                rows = {song_id: (song.hashes, song.offsets.astype(np.int64))}
                self._held = self._held.with_songs([song_id], rows)
        return song_id

    def delete_song(self, song_id: int) -> bool:
        deleted = self.store.delete_song(song_id)
        with self._write:
            if deleted and self._held is not None:
                self._held = self._held.without({song_id})
        return deleted

    def refresh(self) -> None:
        """Bring the copy up to date now (load it, the first time)."""
        self._pool.submit(self._load).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.store.close()

    def _current(self) -> Held | None:
        if self._clock() >= self._due and (self._pending is None or self._pending.done()):
            self._due = self._clock() + self.refresh_s
            self._pending = self._pool.submit(self._load)
        return self._held

    def _load(self) -> None:
        try:
            generation = self.store.generation()
            if self._held is not None and generation == self._generation:
                return
            started = time.perf_counter()
            stored = self._stored_songs()
            held = self._held or EMPTY
            known = held.alive_ids()
            new = [s for s in stored if s.song_id not in known]
            gone = known - {s.song_id for s in stored}
            new_rows = sum(s.total_hashes for s in new)
            if new_rows >= RANGE_FROM * max(sum(s.total_hashes for s in stored), 1):
                loaded = self._read_ranges([s.song_id for s in new])
            else:
                loaded = self._read_songs(new)
            if len(loaded.segments) > 1:  # one segment: each costs a lookup its own search (4: 10 -> 22 ms)
                loaded = dataclasses.replace(loaded, segments=(Postings.merged(list(loaded.segments)),))
            added = loaded.song_ids.tolist()
            with self._write:
                held = self._held or EMPTY
                twice = held.alive_ids() & set(added)  # written through this layer meanwhile
                held = held.with_held(loaded)
                if twice:  # the copy written through the layer stays
                    alive = held.alive.copy()
                    alive[held.song_ids.size - loaded.song_ids.size + np.flatnonzero(np.isin(added, list(twice)))] = (
                        False
                    )
                    held = dataclasses.replace(held, alive=alive, all_alive=False)
                if gone:
                    held = held.without(gone)
                self._held, self._generation = held, generation
            if added or gone:
                log.info(
                    "%s: memory index holds %d rows (%.0f MB) after %d songs added, %d deleted, in %.1f s",
                    self.name,
                    held.rows,
                    held.nbytes / 1e6,
                    len(added),
                    len(gone),
                    time.perf_counter() - started,
                )
                self.on_load(held.rows, held.nbytes)
        except StorageError as exc:  # keep the old copy (or none); the next refresh tries again
            log.warning("memory index of %s not refreshed: %s", self.name, exc)
        except Exception:  # (MemoryError, a defect): logged, not lost in the thread's future
            log.exception("memory index of %s not refreshed", self.name)

    def _read_songs(self, songs: list[Song]) -> Held:
        """Those songs' rows (numbered from 0), read song by song: a few new songs among many. A
        backend reads its whole table for each read (no index leads with the song)."""
        loaded = EMPTY
        for batch in _batches(songs, LOAD_ROWS):
            rows = self.store.song_rows(batch)
            loaded = loaded.with_songs([s for s in batch if s in rows], rows)
        return loaded

    def _read_ranges(self, song_ids: list[int]) -> Held:
        """Those songs' rows (numbered from 0, ids ascending), read by ranges of hash values: the
        whole index once, in its own order (a first load; 50,000 songs on ClickHouse read song by song
        took 930 s). The instance's common values (common_hash_counts) end each range before it holds
        LOAD_ROWS / 2 of their rows, and a range is at most RARE_WIDTH values wide, in which values
        of fewer rows hold under LOAD_ROWS / 2; after a range with no rows, the next may be twice as
        wide (values run in families with long empty gaps between)."""
        ids = np.asarray(song_ids, np.int64)
        common, counts = self.store.common_hash_counts(EXACT_COUNTS_FROM)
        held_before = np.r_[0, np.cumsum(counts)]  # rows of the common values before each one
        segments: tuple[Postings, ...] = ()
        lo, width = 0, RARE_WIDTH
        while lo < HASH_END:
            first = int(np.searchsorted(common, lo))  # the first common value from lo on
            # the common values first .. last - 1 hold at most LOAD_ROWS / 2 rows
            last = int(np.searchsorted(held_before, held_before[first] + LOAD_ROWS // 2, "right")) - 1
            if last == common.size:
                end = HASH_END
            elif last > first:
                end = int(common[last])
            else:  # one value holds more: a range of its own (and of the rarer ones before it)
                end = int(common[first]) + 1
            hi = max(min(lo + width, end, HASH_END), lo + 1)
            hashes, row_songs, offsets = self.store.rows_between(lo, hi)
            numbers = np.minimum(np.searchsorted(ids, row_songs), max(ids.size - 1, 0))
            wanted = ids[numbers] == row_songs if ids.size else np.zeros(row_songs.size, bool)
            if wanted.any():
                segments = _pushed(segments, Postings.build(hashes[wanted], numbers[wanted], offsets[wanted]))
            lo, width = hi, 2 * width if hashes.size == 0 else RARE_WIDTH
        return Held(ids, np.ones(ids.size, bool), segments)

    def _stored_songs(self) -> list[Song]:
        songs: list[Song] = []
        while page := self.store.list_songs(songs[-1].song_id if songs else 0, LIST_PAGE):
            songs.extend(page)
        return songs


def _batches(songs: list[Song], rows: int) -> list[list[int]]:
    """The songs' ids in runs whose songs hold about ``rows`` rows together (at least one song a run):
    a backend hands a read's rows over as Python objects, 100 bytes or more a row."""
    runs: list[list[int]] = [[]]
    held = 0
    for song in songs:
        if runs[-1] and held + song.total_hashes > rows:
            runs.append([])
            held = 0
        runs[-1].append(song.song_id)
        held += song.total_hashes
    return [run for run in runs if run]
