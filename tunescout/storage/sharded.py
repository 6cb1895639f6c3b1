"""ShardedStore: N fingerprint instances queried in parallel, with back-off for failing ones."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np

from ..errors import DuplicateSongError, IndexMismatchError, StorageError
from .backoff import Backoff
from .base import FingerprintStore, Histogram, NewSong, Song, instance_of

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Lookup:
    histograms: list[Histogram]
    unanswered: int  # instances that were down, slow or failing


@dataclasses.dataclass(frozen=True)
class RowsAnswer:
    """Raw index rows of a set of hash values, concatenated over the instances that answered."""

    hashes: np.ndarray  # uint32 [n]
    song_ids: np.ndarray  # int64 [n]
    offsets: np.ndarray  # int64 [n], as stored
    unanswered: int  # instances that were down, slow or failing

    def joined(self, more: RowsAnswer) -> RowsAnswer:
        """These rows and more's (of other values), as one answer."""
        return RowsAnswer(
            np.concatenate([self.hashes, more.hashes]),
            np.concatenate([self.song_ids, more.song_ids]),
            np.concatenate([self.offsets, more.offsets]),
            max(self.unanswered, more.unanswered),
        )


class ShardedStore:
    """The catalogue over N FingerprintStore instances (each its whole stack).

    Not a FingerprintStore itself: it answers for all instances at once, so a lookup also says
    how many instances did not answer, and a catalogue page which instances are missing. Every
    read asks the instances in parallel and waits at most ``timeout_s`` for them; a failing or slow
    instance is skipped (Backoff) and probed again within seconds. Writes and maintenance go to
    the one instance concerned and wait for it.
    """

    def __init__(
        self,
        stores: list[FingerprintStore],
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[int, str], None] = lambda index, kind: None,
    ):
        self.stores = stores
        self.on_failure = on_failure  # (instance index, "error" | "timeout")
        self.timeout_s = timeout_s
        self.health = Backoff(len(stores), clock)
        self._digest: str | None = None
        self._wanted: dict[str, str] = {}  # optional features asked of every instance
        self._ready = [False] * len(stores)  # schema created and parameters checked
        self._features: list[dict[str, str]] = [{} for _ in stores]  # what each prepared instance records
        self._pool = cf.ThreadPoolExecutor(max_workers=max(2, 2 * len(stores)), thread_name_prefix="shard")

    def ensure_schema(self, params_digest: str, features: dict[str, str] | None = None) -> None:
        """Prepare every reachable instance, recording the optional features where it can
        (FingerprintStore.ensure_schema; features(i) says what instance i has); an unreachable one
        is marked down and prepared when it first answers. Called again, it prepares every instance
        again with what it is given.

        Raises:
            IndexMismatchError: an instance holds an index of other parameters or feature values.
        """
        self._digest, self._wanted = params_digest, dict(features or {})
        self._ready = [False] * len(self.stores)  # called again (other features): prepared again
        for i in range(len(self.stores)):
            try:
                self.prepared(i)
                self.health.ok(i)
            except IndexMismatchError:
                raise
            except StorageError:
                self._failed(i, "error")

    def _failed(self, i: int, kind: str) -> None:
        """Instance i failed ("error" or "timeout"): count it and back off."""
        self.on_failure(i, kind)
        self.health.failed(i)

    def prepared(self, i: int) -> FingerprintStore:
        """Store i, its schema ensured once (an instance down at start is prepared on return)."""
        if not self._ready[i] and self._digest is not None:
            self._features[i] = self.stores[i].ensure_schema(self._digest, self._wanted)
            self._ready[i] = True
        return self.stores[i]

    def features(self, i: int) -> dict[str, str]:
        """The optional features instance i records ({} until it is prepared: down since start)."""
        return dict(self._features[i])

    def hash_counts(self, values: np.ndarray) -> np.ndarray | None:
        """Index rows of each distinct hash value, summed over the instances that answer (None if
        none does)."""
        answers = [a for a in self._fan_out(lambda s: s.hash_counts(values)) if a is not None]
        return np.sum(answers, axis=0) if answers else None

    def lookup(self, hashes: np.ndarray, offsets: np.ndarray, top_k: int) -> Lookup:
        """Ask every usable instance for its best candidates, in parallel."""
        answers = self._fan_out(lambda s: s.best_alignments(hashes, offsets, top_k))
        histograms = [h for answer in answers if answer is not None for h in answer]
        return Lookup(histograms, sum(answer is None for answer in answers))

    def triplet_lookup(self, hashes: np.ndarray, thirds: np.ndarray, offsets: np.ndarray, top_k: int) -> Lookup:
        """lookup of a clip's triplet keys (FingerprintStore.triplet_alignments), in parallel."""
        answers = self._fan_out(lambda s: s.triplet_alignments(hashes, thirds, offsets, top_k))
        histograms = [h for answer in answers if answer is not None for h in answer]
        return Lookup(histograms, sum(answer is None for answer in answers))

    def rows(self, values: np.ndarray, song_id: int | None = None) -> RowsAnswer:
        """Every usable instance's raw rows of the hash values (FingerprintStore.rows), in parallel;
        with ``song_id``, that song's from its own instance."""
        if song_id is None:
            answers = self._fan_out(lambda s: s.rows(values))
        else:
            mine = instance_of(song_id, len(self.stores))
            answers = [self._fan_out_each({mine: lambda s: s.rows(values, song_id)})[mine]]
        got = [a for a in answers if a is not None]
        empty = (np.zeros(0, np.uint32), np.zeros(0, np.int64), np.zeros(0, np.int64))
        hashes, song_ids, offsets = (np.concatenate(parts) for parts in zip(empty, *got))
        return RowsAnswer(hashes, song_ids, offsets, len(answers) - len(got))

    def add_song(self, song: NewSong) -> int:
        """Store the song on the usable instance with the fewest songs.

        Raises:
            DuplicateSongError: an instance already holds this audio.
            StorageError: an instance could not be checked, or none can take it.
        """
        answers = self._fan_out(lambda s: (s.find_sha1(song.blob_sha1), s.count_songs()))
        if any(a is not None and a[0] is not None for a in answers):
            raise DuplicateSongError(blob_sha1=song.blob_sha1)
        if any(a is None for a in answers):
            # A duplicate could hide on the missing instance: refuse rather than store twice.
            raise StorageError("A fingerprint instance is unavailable; try again later")
        target = min(range(len(self.stores)), key=lambda i: (answers[i][1], i))
        return self.prepared(target).add_song(song)

    def find_sha1(self, blob_sha1: str) -> Song | None:
        """The song with this digest on any instance."""
        return next((f for f in self._fan_out(lambda s: s.find_sha1(blob_sha1)) if f), None)

    def get_songs(self, song_ids: list[int]) -> tuple[dict[int, Song], int]:
        """Songs by id, each read from the instance its id names, in parallel, even one in back-off
        (the id names no other place to ask); and how many of those instances did not answer in
        time (their songs are left out)."""
        return self._by_id(song_ids, lambda s, ids: s.get_songs(ids), backed_off_too=True)

    def song_peaks(self, song_ids: list[int]) -> tuple[dict[int, bytes], int]:
        """The packed peaks of those songs that have them, each read from the instance its id names,
        in parallel; and how many of those instances did not answer in time."""
        return self._by_id(song_ids, lambda s, ids: s.song_peaks(ids))

    def keep_peaks(self) -> list[bool | None]:
        """Whether each instance keeps every song's peaks (None: it did not answer)."""
        return self._fan_out(lambda s: not s.songs_without_peaks(0, 1))

    def list_songs(self, after_id: int, limit: int) -> tuple[list[Song], int]:
        """Up to limit songs with ids above after_id, by id, across instances; and how many
        instances did not answer (their songs are missing from the page)."""
        pages = self._fan_out(lambda s: s.list_songs(after_id, limit))
        songs = sorted((song for page in pages if page for song in page), key=lambda s: s.song_id)
        return songs[:limit], sum(page is None for page in pages)

    def delete_song(self, song_id: int) -> bool:
        """Remove a song from the instance its id names.

        Raises:
            StorageError: that instance does not answer.
        """
        if song_id < 1:
            return False
        return self.prepared(instance_of(song_id, len(self.stores))).delete_song(song_id)

    def stats(self) -> list[dict | None]:
        """Each instance's stats (None where it does not answer)."""
        return self._fan_out(lambda s: s.stats())

    def count_songs(self) -> int:
        """Songs on the instances that answer."""
        return sum(c for c in self._fan_out(lambda s: s.count_songs()) if c is not None)

    def compact(self, i: int) -> tuple[int, int]:
        """Compact instance i without the lookup timeout (a maintenance task): its index bytes
        before and after.

        Raises:
            StorageError: the instance does not answer.
        """
        store = self.prepared(i)
        before = store.stats()["index_bytes"]
        store.compact()
        return before, store.stats()["index_bytes"]

    def services(self) -> dict[str, bool]:
        """The services the instances use besides their databases (Redis), probed now in
        parallel: name -> every instance's probe answered."""
        futures = [self._pool.submit(store.services) for store in self.stores]
        done, _ = cf.wait(futures, timeout=self.timeout_s)
        up: dict[str, bool] = {}
        for future in futures:
            answer = future.result() if future in done and future.exception() is None else None
            for name, ok in (answer or {}).items():
                up[name] = up.get(name, True) and ok
        return up

    def check_all(self) -> list[float | None]:
        """Probe every instance (down ones too): its round-trip in ms, or None if it does not answer."""

        def probe(i: int) -> float:
            start = time.perf_counter()
            self.prepared(i).check()
            return (time.perf_counter() - start) * 1000

        futures = [self._pool.submit(probe, i) for i in range(len(self.stores))]
        done, _ = cf.wait(futures, timeout=self.timeout_s)
        latencies = [f.result() if f in done and f.exception() is None else None for f in futures]
        for i, ms in enumerate(latencies):
            if ms is None:
                self._failed(i, "error" if futures[i].done() else "timeout")
            else:
                self.health.ok(i)
        return latencies

    def close(self) -> None:
        """Close every instance and the worker pool."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for store in self.stores:
            store.close()

    def _by_id(self, song_ids: list[int], call: Callable, backed_off_too: bool = False) -> tuple[dict, int]:
        """call(store, ids) on the instance each id names, in parallel, the {id: value} answers
        merged; and how many of those instances did not answer in time."""
        by_instance: dict[int, list[int]] = {}
        for song_id in song_ids:
            by_instance.setdefault(instance_of(song_id, len(self.stores)), []).append(song_id)
        calls = {i: lambda s, ids=ids: call(s, ids) for i, ids in by_instance.items()}
        answers = self._fan_out_each(calls, backed_off_too)
        merged = {song_id: value for answer in answers if answer for song_id, value in answer.items()}
        return merged, sum(answers[i] is None for i in by_instance)

    def _fan_out(self, call: Callable[[FingerprintStore], object]) -> list:
        """call(store) on every usable instance in parallel; None where it failed."""
        return self._fan_out_each({i: call for i in range(len(self.stores))})

    def _fan_out_each(
        self, calls: dict[int, Callable[[FingerprintStore], object]], backed_off_too: bool = False
    ) -> list:
        """calls[i](store i) on each usable instance i (each i, with backed_off_too) in parallel;
        None where it failed, timed out or was not asked."""
        futures = {
            i: self._pool.submit(lambda i=i, call=call: call(self.prepared(i)))
            for i, call in calls.items()
            if backed_off_too or self.health.usable(i)
        }
        done, _ = cf.wait(futures.values(), timeout=self.timeout_s)
        results: list = [None] * len(self.stores)
        for i, future in futures.items():
            if future in done and future.exception() is None:
                results[i] = future.result()
                self.health.ok(i)
            else:
                error = future.exception() if future in done else "timed out"
                log.warning("fingerprint instance %d skipped: %s", i, error)
                self._failed(i, "error" if future in done else "timeout")
        return results
