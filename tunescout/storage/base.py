"""FingerprintStore and ResultStore protocols, and the records they exchange."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import numpy as np

from dejavu import Histogram
from dejavu.verify import pack_peaks, pair_peaks

from ..errors import IndexMismatchError

EXACT_COUNTS_FROM = 8  # hash_counts is exact for values with this many rows or more


# The optional feature (instance meta key -> value) of an index whose pair rows carry their third
# point in the sorted key (dejavu.hashing.generate_hashes with thirds): triplet lookups read few rows.
THIRD_POINT_FEATURE = "third_points"
THIRD_POINT_VERSION = "1"


@dataclasses.dataclass(frozen=True)
class NewSong:
    song_name: str
    blob_sha1: str
    duration_seconds: float
    hashes: np.ndarray  # uint32 [n]
    offsets: np.ndarray  # int32 [n], frames
    thirds: np.ndarray | None = None  # uint16 [n], each pair row's third point (0: none, and robust rows)

    def packed_peaks(self) -> bytes:
        """The peaks of its pair rows, as kept beside them for peak verification (dejavu.verify)."""
        return pack_peaks(*pair_peaks(self.hashes, self.offsets))


@dataclasses.dataclass(frozen=True)
class Song:
    song_id: int
    song_name: str
    blob_sha1: str
    total_hashes: int
    duration_seconds: float
    created: str


@dataclasses.dataclass(frozen=True)
class IdSlot:
    """Instance ``index`` of ``count`` hands out the song ids that are ``index + 1`` mod count.

    Ids stay unique across instances without coordination, and the instance
    holding a song is ``(song_id - 1) % count``.
    """

    index: int
    count: int

    def next_id(self, last_id: int | None) -> int:
        """The id after last_id (None: the first id) in this slot."""
        return self.index + 1 if last_id is None else last_id + self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


SongRows = dict[int, tuple[np.ndarray, np.ndarray]]  # song_id -> (hashes uint32, offsets int64) of its rows


def instance_of(song_id: int, n_instances: int) -> int:
    """Index of the instance that holds song_id."""
    return (song_id - 1) % n_instances


def check_meta(name: str, stored: dict, wanted: dict) -> None:
    """Refuse an index built with other fingerprint parameters or instance layout.

    Raises:
        IndexMismatchError: a stored value differs from the wanted one.
    """
    for key, value in wanted.items():
        if stored.get(key, value) != value:
            raise IndexMismatchError(f"{name}: index has {key} {stored[key]}, this server uses {value}")


def features_to_record(stored: dict, features: dict[str, str], holds_songs: bool) -> dict[str, str]:
    """The optional features to write into an index's meta now: those it lacks, if it holds no songs
    yet (an index made by an earlier release, with songs, keeps lacking them: its songs were stored
    without what the feature adds)."""
    return {} if holds_songs else {key: value for key, value in features.items() if key not in stored}


def recorded_features(name: str, stored: dict, features: dict[str, str]) -> dict[str, str]:
    """The subset of features an index records (its meta, ``stored``), all of the wanted value.

    Raises:
        IndexMismatchError: the index records one of them with another value.
    """
    check_meta(name, stored, features)
    return {key: value for key, value in features.items() if key in stored}


class FingerprintStore(Protocol):
    """One instance of fingerprints and their songs: a backend, or a layer over one (CachedStore,
    CountsSnapshot) that implements every method, passing on what it does not change."""

    name: str  # where the instance lives, for messages ("mysql 10.0.0.13:3306/tunescout")

    def ensure_schema(self, params_digest: str, features: dict[str, str] | None = None) -> dict[str, str]:
        """Create tables on first use; raise IndexMismatchError for other params. Each optional
        feature (meta key -> wanted value, e.g. ``{"robust_digest": ...}``) is recorded in meta if
        missing while the instance holds no songs; present with another value, IndexMismatchError;
        missing on an instance with songs (made by an earlier release), it stays missing. Returns
        the features the instance records (a subset of ``features``)."""

    def add_song(self, song: NewSong) -> int:
        """Store a song and all its hashes atomically, return its id; raise DuplicateSongError."""

    def find_sha1(self, blob_sha1: str) -> Song | None:
        """The song with this PCM digest, if stored here."""

    def hash_counts(self, values: np.ndarray) -> np.ndarray:
        """Index rows of each of the distinct hash ``values`` (int64, same order): exact from
        EXACT_COUNTS_FROM rows on; a rarer value may answer any count below that. A backend that
        deletes in the background (ClickHouse) counts a deleted song's rows until that has run."""

    def common_hash_counts(self, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Every hash value with at least min_rows (>= EXACT_COUNTS_FROM) rows, ascending, and its
        count (int64 arrays): what CountsSnapshot keeps in memory."""

    def best_alignments(self, hashes: np.ndarray, offsets: np.ndarray, top_k: int) -> list[Histogram]:
        """Histograms of the top_k songs with the highest single-delta count."""

    def triplet_alignments(
        self, hashes: np.ndarray, thirds: np.ndarray, offsets: np.ndarray, top_k: int
    ) -> list[Histogram]:
        """best_alignments of the rows whose (hash, third point) is one of the clip's keys; asked only
        of an instance that records THIRD_POINT_FEATURE (a backend that keeps no third points raises
        StorageError)."""

    def rows(self, values: np.ndarray, song_id: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every index row whose hash is one of the distinct ``values`` (uint32), of songs that are
        stored (not of one deleted or half ingested), in any order: (hashes uint32, song_ids int64,
        offsets int64). Offsets come back as stored (0 <= offset < 2**31). With ``song_id``, that
        song's rows only (a scan's boundaries, where one song's alignment is measured)."""

    def rows_between(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every index row whose hash is in ``[lo, hi)``, of stored songs, as rows() gives them: a
        range of the index's sort order, read without scanning the rest (MemoryIndex's loads)."""

    def get_songs(self, song_ids: list[int]) -> dict[int, Song]:
        """Songs by id (missing ids are left out)."""

    def song_peaks(self, song_ids: list[int]) -> dict[int, bytes]:
        """The packed peaks (NewSong.packed_peaks) of those songs that are stored here with them (a
        song stored by an earlier release has none)."""

    def songs_without_peaks(self, after_id: int, limit: int) -> list[int]:
        """Up to limit ids above after_id, ascending, of songs stored here without peaks (by an
        earlier release)."""

    def song_rows(self, song_ids: list[int]) -> SongRows:
        """Every index row of those songs that are stored here: ``{song_id: (hashes uint32, offsets
        int64)}`` in any order, offsets as stored. A backend may read its whole table for one call:
        ask for many songs at once."""

    def add_peaks(self, peaks: dict[int, bytes]) -> int:
        """Store the packed peaks of songs stored here without them (a song deleted meanwhile, or
        one that has peaks, is left as it is); how many were stored."""

    def count_songs(self) -> int:
        """Number of fully stored songs (a new song goes to the instance with the fewest)."""

    def list_songs(self, after_id: int, limit: int) -> list[Song]:
        """Up to limit songs with song_id > after_id, by song_id."""

    def delete_song(self, song_id: int) -> bool:
        """Remove a song and its hashes; False if it is not stored here."""

    def stats(self) -> dict:
        """{"songs", "hashes", "index_bytes"} of this instance."""

    def compact(self) -> None:
        """Rewrite the index in its most compact and quickest form (after a bulk ingest or many
        deletes); may take minutes on a large instance, during which lookups keep working (writes
        wait on SQLite, MariaDB and ClickHouse; PostgreSQL's go on)."""

    def generation(self) -> int:
        """A number that grows with every song added or deleted here, committed with the change
        (the lookup cache keys on it, so a cached answer is never used after a change)."""

    def check(self) -> None:
        """Raise StorageError if the instance's database cannot answer."""

    def services(self) -> dict[str, bool]:
        """The other services this instance uses besides its database (a layer's Redis), each
        probed now: name -> answers. A backend has none."""

    def close(self) -> None:
        """Release connections (and a layer's threads)."""


class StoreLayer:
    """A FingerprintStore over another one (``self.store``): every method passes to it, explicitly;
    a layer overrides what it changes (CachedStore, CountsSnapshot)."""

    def __init__(self, store: FingerprintStore):
        self.store = store
        self.name = store.name

    def ensure_schema(self, params_digest: str, features: dict[str, str] | None = None) -> dict[str, str]:
        return self.store.ensure_schema(params_digest, features)

    def add_song(self, song: NewSong) -> int:
        return self.store.add_song(song)

    def find_sha1(self, blob_sha1: str) -> Song | None:
        return self.store.find_sha1(blob_sha1)

    def hash_counts(self, values: np.ndarray) -> np.ndarray:
        return self.store.hash_counts(values)

    def common_hash_counts(self, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
        return self.store.common_hash_counts(min_rows)

    def best_alignments(self, hashes: np.ndarray, offsets: np.ndarray, top_k: int) -> list[Histogram]:
        return self.store.best_alignments(hashes, offsets, top_k)

    def triplet_alignments(
        self, hashes: np.ndarray, thirds: np.ndarray, offsets: np.ndarray, top_k: int
    ) -> list[Histogram]:
        return self.store.triplet_alignments(hashes, thirds, offsets, top_k)

    def rows(self, values: np.ndarray, song_id: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.store.rows(values, song_id)

    def rows_between(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.store.rows_between(lo, hi)

    def get_songs(self, song_ids: list[int]) -> dict[int, Song]:
        return self.store.get_songs(song_ids)

    def song_peaks(self, song_ids: list[int]) -> dict[int, bytes]:
        return self.store.song_peaks(song_ids)

    def songs_without_peaks(self, after_id: int, limit: int) -> list[int]:
        return self.store.songs_without_peaks(after_id, limit)

    def song_rows(self, song_ids: list[int]) -> SongRows:
        return self.store.song_rows(song_ids)

    def add_peaks(self, peaks: dict[int, bytes]) -> int:
        return self.store.add_peaks(peaks)

    def count_songs(self) -> int:
        return self.store.count_songs()

    def list_songs(self, after_id: int, limit: int) -> list[Song]:
        return self.store.list_songs(after_id, limit)

    def delete_song(self, song_id: int) -> bool:
        return self.store.delete_song(song_id)

    def stats(self) -> dict:
        return self.store.stats()

    def compact(self) -> None:
        self.store.compact()

    def generation(self) -> int:
        return self.store.generation()

    def check(self) -> None:
        self.store.check()

    def services(self) -> dict[str, bool]:
        return self.store.services()

    def close(self) -> None:
        self.store.close()


class ResultStore(Protocol):
    """One shard of recognition results, keyed by token."""

    def put_result(self, token: str, body: str) -> None:
        """Store a JSON body under token."""

    def get_result(self, token: str) -> str | None:
        """The JSON body stored under token, or None."""

    def count_results(self) -> int:
        """Number of stored results."""

    def put_job(self, token: str, seq: int, body: str, written: int) -> None:
        """Append a state of a scan job: its JSON body, numbered seq (a later state has a higher
        number), written at epoch second ``written``."""

    def get_job(self, token: str) -> tuple[int, str] | None:
        """The scan job's latest state (highest seq) as (seq, body), or None."""

    def purge_jobs(self, before: int) -> None:
        """Forget every state of the jobs last written before epoch second ``before``."""

    def close(self) -> None:
        """Release connections."""


def counts_of_rows(values: np.ndarray, rows: list[tuple]) -> np.ndarray:
    """hash_counts' answer from (hash, count) rows in any order (values without a row: 0)."""
    values = np.asarray(values, np.int64)
    counts = np.zeros(values.size, np.int64)
    if rows:
        hashes, n = np.array(rows, dtype=np.int64).reshape(-1, 2).T
        order = np.argsort(values)
        at = order[np.searchsorted(values, hashes, sorter=order)]
        counts[at] = n
    return counts


def arrays_of_rows(rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rows()' answer from (hash, song_id, offset) rows: (hashes uint32, song_ids int64, offsets int64)."""
    flat = np.fromiter(itertools.chain.from_iterable(rows), np.int64, 3 * len(rows)).reshape(-1, 3)
    return flat[:, 0].astype(np.uint32), flat[:, 1].copy(), flat[:, 2].copy()


def rows_by_song(hashes: np.ndarray, song_ids: np.ndarray, offsets: np.ndarray) -> SongRows:
    """song_rows()' answer from the arrays of rows that arrays_of_rows gives: {song_id: (hashes
    uint32, offsets int64)}."""
    order = np.argsort(song_ids, kind="stable")
    song_ids, hashes, offsets = song_ids[order], hashes[order], offsets[order]
    songs, first = np.unique(song_ids, return_index=True)
    ends = np.r_[first[1:], song_ids.size]
    return {
        int(song): (hashes[a:b].astype(np.uint32), offsets[a:b].astype(np.int64))
        for song, a, b in zip(songs, first, ends)
    }


def arrays_of_counts(rows: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """(values, counts) int64 arrays of (hash, count) rows sorted by hash."""
    pairs = np.array(rows, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


C = TypeVar("C")


class ThreadConnections(Generic[C]):
    """One connection per thread, opened on first use; ``drop`` forgets a broken one.

    Database connections of the drivers used here are not thread-safe; the
    fan-out runs one query per instance in a pool of threads.
    """

    def __init__(self, connect: Callable[[], C], close: Callable[[C], None]):
        self._connect = connect
        self._close = close
        self._local = threading.local()
        self._all: list[C] = []
        self._lock = threading.Lock()

    def get(self) -> C:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def drop(self) -> None:
        """Close this thread's connection (after an error); the next get() reconnects."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._lock:
                self._all.remove(conn)
            try:
                self._close(conn)
            except Exception:  # a broken connection may fail to close; it is gone either way
                pass

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                self._close(conn)
            except Exception:
                pass
        self._local = threading.local()
