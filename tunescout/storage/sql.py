"""SQLStore and SQLResultStore: what the SQL backends share; each dialect module holds only its dialect.

The tables (names of the dialect's own, so that an index made by an earlier release opens as is):

    meta          key -> value: params_digest, id_slot, generation, last_song_id, hash_counts, and
                  the optional features the index was made with (ensure_schema's ``features``)
    songs         song_id, song_name, blob_sha1 (unique), total_hashes, duration_seconds, created
    fingerprints  (hash, song_id, offset), primary key in that order: a lookup reads only the rows
                  of the clip's hashes, and the key covers it
    hash_counts   hash -> rows, for the values with EXACT_COUNTS_FROM rows or more
    peaks         song_id -> the peaks of its pair rows, packed (dejavu.verify.pack_peaks): what
                  peak verification reads for a few candidate songs

A song's row, its hashes, its peaks, its counts and the generation change in one transaction: a song is
visible to recognition only complete, and a crash leaves nothing behind. Writers to one database
are serialised (the dialect's ``begin`` takes a lock), so ids, counts and the generation never race.

hash_counts upkeep, the same rule in every dialect: the table holds every value with at least
EXACT_COUNTS_FROM rows, exactly. Adding a song adds its rows per value to the values held; a value
not held had fewer rows, so it is counted afresh in fingerprints (cheap: few rows) and kept if it
now reaches the bound. Deleting a song subtracts its rows and drops the values that fall under
the bound. A value not held answers 1: reading a count is one probe, where counting the rows of a
clip's hashes walks them all, and the table stays small (2 % of an SQLite index).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np

from dejavu import Histogram, distinct, histograms_of_postings

from ..errors import DuplicateSongError, StorageError
from .base import (
    EXACT_COUNTS_FROM,
    THIRD_POINT_FEATURE,
    IdSlot,
    NewSong,
    Song,
    SongRows,
    ThreadConnections,
    arrays_of_counts,
    arrays_of_rows,
    check_meta,
    counts_of_rows,
    features_to_record,
    recorded_features,
    rows_by_song,
)

log = logging.getLogger(__name__)
FETCH_ROWS = 50_000  # index rows fetched and converted at a time (query_rows)
SONG_COLUMNS = "song_id, song_name, blob_sha1, total_hashes, duration_seconds, created"


def distinct_pairs(hashes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (hash, offset) pairs, sorted by hash then offset (sorted keys load fast into a
    B-tree), as int64 arrays."""
    key = distinct((np.asarray(hashes).astype(np.int64) << 32) | np.asarray(offsets).astype(np.int64).astype(np.uint32))
    return key >> 32, (key & 0xFFFFFFFF).astype(np.int32).astype(np.int64)


class SQLBase:
    """Connections and error handling of one SQL database; a dialect sets the class attributes
    and implements connect().

    Each thread has two connections: one for reads, whose statements fail after the database's
    query_timeout_s, and one for writes, whose statements may run as long as they take (filling the
    counts of an old index, a delete's scan) and whose wait for the writer lock is bounded instead.
    A client sees a generic message; the log names the database and the driver's error.
    """

    kind: ClassVar[str]  # for messages: "sqlite", "mysql", "postgres"
    driver_errors: ClassVar[tuple[type[BaseException], ...]]

    def __init__(self, name: str):
        self.name = name
        self._db: ThreadConnections = ThreadConnections(self.connect, self.disconnect)
        self._writes: ThreadConnections = ThreadConnections(lambda: self.connect(reads=False), self.disconnect)
        self._write = threading.Lock()  # one writer per process; begin() locks out other processes

    def connect(self, reads: bool = True):
        """A new connection in autocommit mode (reads: with the statement timeout; else a writer's);
        raise StorageError if the database cannot be reached."""
        raise NotImplementedError

    @staticmethod
    def disconnect(conn) -> None:
        conn.close()

    def failed(self, message: str, exc: BaseException) -> StorageError:
        """The StorageError a client sees for a driver error (the log keeps what and where)."""
        log.warning("%s: %s: %s", self.name, message, exc)
        return StorageError(message)

    def query_rows(self, sql: str, args: Any = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hash, song_id, offset) rows of one read as arrays_of_rows gives them, fetched and
        converted FETCH_ROWS at a time: a lookup of a million rows never holds them all as Python
        tuples (about 150 bytes a row against 16)."""

        def fetch(cur) -> list:
            parts = [arrays_of_rows([])]
            while chunk := cur.fetchmany(FETCH_ROWS):
                parts.append(arrays_of_rows(chunk))
            return parts

        hashes, song_ids, offsets = (np.concatenate(columns) for columns in zip(*self._read(sql, args, fetch)))
        return hashes, song_ids, offsets

    def query(self, sql: str, args: Any = ()) -> list[tuple]:
        """Rows of one read (or single-statement write) on this thread's connection; a failure
        drops the connection and raises StorageError."""
        return self._read(sql, args, lambda cur: list(cur.fetchall()) if cur.description else [])

    def _read(self, sql: str, args: Any, fetch: Callable[[Any], Any]) -> Any:
        """fetch(cursor) after executing one statement on this thread's connection; a failure
        drops the connection and raises StorageError."""
        try:
            cur = self._db.get().cursor()
            cur.execute(sql, args)
            return fetch(cur)
        except self.driver_errors as exc:
            self._db.drop()
            raise self.failed("Storage query failed", exc) from exc

    @contextlib.contextmanager
    def transaction(self, message: str, duplicates: bool = False) -> Iterator[Any]:
        """A cursor inside one write transaction, holding the database's writer lock. Any exception
        rolls back (a pooled connection never keeps a transaction open); a database error becomes
        StorageError(message), except, with ``duplicates``, the unique blob_sha1 refusing a song
        (the driver's error is raised for the caller to name the song)."""
        with self._write:
            conn = self._writes.get()
            try:
                cur = self.begin(conn)
            except BaseException as exc:
                self._writes.drop()  # what begin() left open (a transaction, a lock) goes with the connection
                if isinstance(exc, self.driver_errors):
                    raise self.failed(message, exc) from exc
                raise
            try:
                yield cur
                conn.commit()
            except BaseException as exc:
                self._rollback(conn)
                if isinstance(exc, self.driver_errors):
                    if duplicates and self.is_duplicate(exc):
                        raise
                    raise self.failed(message, exc) from exc
                raise
            finally:
                self.end(conn)

    def begin(self, conn):
        """Open a write transaction on conn and take the database's writer lock; return a cursor."""
        raise NotImplementedError

    def end(self, conn) -> None:
        """After commit or rollback: release a writer lock that outlives the transaction."""

    def _rollback(self, conn) -> None:
        try:
            conn.rollback()
        except self.driver_errors:
            self._writes.drop()  # the server discards an open transaction (and its locks) with the connection

    def is_duplicate(self, exc: BaseException) -> bool:
        """Whether a driver error is the unique blob_sha1 refusing a song stored already."""
        raise NotImplementedError

    def close(self) -> None:
        self._db.close()
        self._writes.close()


class SQLStore(SQLBase):
    """A FingerprintStore in one SQL database. The dialect supplies its tables, statements and the
    few operations that differ (ids, bulk insert, sizes, compaction)."""

    p: ClassVar[str] = "%s"  # parameter placeholder
    meta_key: ClassVar[str] = "name"  # meta's key column
    offset: ClassVar[str] = "offset_frames"  # fingerprints' offset column
    schema: ClassVar[tuple[str, ...]]  # CREATE TABLE IF NOT EXISTS statements
    insert_meta_if_absent: ClassVar[str]  # (key, value): no change if the key is there
    set_meta: ClassVar[str]  # (key, value): insert or replace
    bump_generation: ClassVar[str]
    add_counts: ClassVar[str]  # (hash, n): n added to the value's count, inserted if absent
    # Statements over a set of hash values, written {hashes} where the dialect's hash_set() goes.
    postings: ClassVar[str]  # (hash, song_id, offset) rows of the values
    held_counts: ClassVar[str]  # (hash, n) rows of hash_counts of the values
    row_counts: ClassVar[str]  # (hash, rows) counted in fingerprints, for the values
    drop_rare_counts: ClassVar[str]  # delete the values' counts under EXACT_COUNTS_FROM

    def __init__(self, name: str, slot: IdSlot):
        super().__init__(name)
        self.slot = slot

    # --- dialect hooks
    def hash_set(self, values: np.ndarray) -> tuple[str, tuple]:
        """A set of distinct hash values (int64) as the dialect writes it in a statement, and the
        parameters that text takes."""
        raise NotImplementedError

    def _over(self, sql: str, values: np.ndarray) -> tuple[str, tuple]:
        """A statement over a non-empty set of hash values, and its parameters."""
        fragment, args = self.hash_set(np.asarray(values, np.int64))
        return sql.format(hashes=fragment), args

    def song_of_row(self, row) -> Song:
        """A Song from a row of SONG_COLUMNS."""
        song_id, name, sha1, total, duration, created = row
        stamp = created if isinstance(created, str) else created.strftime("%Y-%m-%dT%H:%M:%SZ")
        return Song(int(song_id), name, sha1, int(total), float(duration), stamp)

    def insert_song(self, cur, song: NewSong) -> int:
        """Insert the song's row with the next id of this instance's slot; return the id. Ids are
        never reused, even the last one after a delete (meta keeps the last handed out)."""
        p, k = self.p, self.meta_key
        cur.execute(f"SELECT value FROM meta WHERE {k} = 'last_song_id'")
        row = cur.fetchone()
        song_id = self.slot.next_id(int(row[0]) if row else None)
        cur.execute(
            f"INSERT INTO songs (song_id, song_name, blob_sha1, total_hashes, duration_seconds)"
            f" VALUES ({p}, {p}, {p}, {p}, {p})",
            (song_id, song.song_name, song.blob_sha1, int(song.hashes.size), song.duration_seconds),
        )
        cur.execute(self.set_meta, ("last_song_id", str(song_id)))
        return song_id

    def insert_fingerprints(self, cur, song_id: int, hashes: np.ndarray, offsets: np.ndarray) -> None:
        """Insert the (hash, song_id, offset) rows of one song (distinct, sorted by hash)."""
        p = self.p
        cur.executemany(
            f"INSERT INTO fingerprints (hash, song_id, {self.offset}) VALUES ({p}, {p}, {p})",
            [(h, song_id, o) for h, o in zip(hashes.tolist(), offsets.tolist())],
        )

    def index_bytes(self) -> int:
        raise NotImplementedError

    def compact(self) -> None:
        raise NotImplementedError

    # --- FingerprintStore
    def ensure_schema(self, params_digest: str, features: dict[str, str] | None = None) -> dict[str, str]:
        """Tables, meta and features in one transaction under the writer lock: no song can arrive
        between finding the index empty and recording a feature."""
        wanted = {"params_digest": params_digest, "id_slot": str(self.slot)}
        # The SQL layouts keep no third points: that feature is left out.
        features = {k: v for k, v in (features or {}).items() if k != THIRD_POINT_FEATURE}
        for statement in self.schema:  # outside the transaction: MySQL commits at every CREATE
            self.query(statement)
        with self.transaction("Cannot prepare the index") as cur:
            for item in wanted.items():
                cur.execute(self.insert_meta_if_absent, item)
            cur.execute(f"SELECT {self.meta_key}, value FROM meta")
            stored = dict(cur.fetchall())
            check_meta(self.name, stored, wanted)  # raised inside: nothing is written to another index
            if "hash_counts" not in stored:  # a new index, or one made before hash_counts existed
                cur.execute("DELETE FROM hash_counts")
                cur.execute(
                    "INSERT INTO hash_counts SELECT hash, COUNT(*) FROM fingerprints GROUP BY hash"
                    f" HAVING COUNT(*) >= {EXACT_COUNTS_FROM}"
                )
                cur.execute(self.insert_meta_if_absent, ("hash_counts", "1"))
            if any(key not in stored for key in features):
                cur.execute("SELECT 1 FROM songs LIMIT 1")
                new = features_to_record(stored, features, holds_songs=bool(cur.fetchall()))
                for item in new.items():
                    cur.execute(self.insert_meta_if_absent, item)
                stored.update(new)
        return recorded_features(self.name, stored, features)

    def add_song(self, song: NewSong) -> int:
        return self.add_songs([song])[0]

    def add_songs(self, songs: list[NewSong]) -> list[int]:
        """Store several songs in one transaction, all or none (a bulk load: bench/shards.py).

        Raises:
            DuplicateSongError: one of them is stored already (none is stored).
        """
        ids: list[int] = []
        try:
            with self.transaction("Cannot store the song", duplicates=True) as cur:
                for song in songs:
                    song_id = self.insert_song(cur, song)
                    hashes, offsets = distinct_pairs(song.hashes, song.offsets)
                    self.insert_fingerprints(cur, song_id, hashes, offsets)
                    cur.execute(
                        f"INSERT INTO peaks (song_id, data) VALUES ({self.p}, {self.p})", (song_id, song.packed_peaks())
                    )
                    values, rows = np.unique(hashes, return_counts=True)
                    self._update_counts(cur, values, rows, removed=False)
                    ids.append(song_id)
                cur.execute(self.bump_generation)
        except self.driver_errors as exc:  # only a duplicate passes transaction() unchanged
            raise DuplicateSongError(blob_sha1=songs[len(ids)].blob_sha1) from exc
        return ids

    def _update_counts(self, cur, values: np.ndarray, rows: np.ndarray, removed: bool) -> None:
        """hash_counts after a song's rows of each value (distinct, ascending) were added or removed."""
        if values.size == 0:
            return
        cur.execute(*self._over(self.held_counts, values))
        is_held = np.isin(values, np.array([h for h, _ in cur.fetchall()], np.int64))
        sign = -1 if removed else 1
        cur.executemany(self.add_counts, list(zip(values[is_held].tolist(), (sign * rows[is_held]).tolist())))
        if removed and is_held.any():
            cur.execute(*self._over(self.drop_rare_counts, values[is_held]))
        elif not removed and not is_held.all():
            cur.execute(*self._over(self.row_counts, values[~is_held]))
            cur.executemany(self.add_counts, [(h, n) for h, n in cur.fetchall() if n >= EXACT_COUNTS_FROM])

    def find_sha1(self, blob_sha1: str) -> Song | None:
        rows = self.query(f"SELECT {SONG_COLUMNS} FROM songs WHERE blob_sha1 = {self.p}", (blob_sha1,))
        return self.song_of_row(rows[0]) if rows else None

    def hash_counts(self, values: np.ndarray) -> np.ndarray:
        if values.size == 0:
            return np.zeros(0, np.int64)
        return np.maximum(counts_of_rows(values, self.query(*self._over(self.held_counts, values))), 1)

    def common_hash_counts(self, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
        return arrays_of_counts(
            self.query(f"SELECT hash, n FROM hash_counts WHERE n >= {self.p} ORDER BY hash", (min_rows,))
        )

    def triplet_alignments(
        self, hashes: np.ndarray, thirds: np.ndarray, offsets: np.ndarray, top_k: int
    ) -> list[Histogram]:
        raise StorageError(f"{self.name} keeps no third points")

    def best_alignments(self, hashes: np.ndarray, offsets: np.ndarray, top_k: int) -> list[Histogram]:
        """The index rows of the clip's distinct hashes, joined with its offsets and grouped in
        numpy (dejavu.histograms_of_postings): faster than GROUP BY with COUNT(DISTINCT) in SQLite
        (25 %) and MariaDB (3x, with the pairs in a temporary table), and the gap grows with the rows."""
        if hashes.size == 0:
            return []
        postings = self.query_rows(*self._over(self.postings, distinct(hashes)))
        return histograms_of_postings(hashes, offsets, postings, top_k)

    def rows(self, values: np.ndarray, song_id: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The lookups' query of raw rows (a delete removes a song's rows with it); one song's by the
        primary key (hash, song_id, offset)."""
        values = distinct(values)
        if not values.size:
            return arrays_of_rows([])
        if song_id is None:
            return self.query_rows(*self._over(self.postings, values))
        sql, args = self._over(self.postings + f" AND song_id = {self.p}", values)
        return self.query_rows(sql, (*args, int(song_id)))

    def rows_between(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A range of the (hash, song_id, offset) primary key."""
        p = self.p
        return self.query_rows(
            f"SELECT f.hash, f.song_id, f.{self.offset} FROM fingerprints f WHERE f.hash >= {p} AND f.hash < {p}"
            " AND f.song_id IN (SELECT song_id FROM songs)",
            (int(lo), int(hi)),
        )

    def get_songs(self, song_ids: list[int]) -> dict[int, Song]:
        if not song_ids:
            return {}
        marks = ",".join([self.p] * len(song_ids))
        rows = self.query(f"SELECT {SONG_COLUMNS} FROM songs WHERE song_id IN ({marks})", tuple(song_ids))
        return {song.song_id: song for song in map(self.song_of_row, rows)}

    def song_peaks(self, song_ids: list[int]) -> dict[int, bytes]:
        if not song_ids:
            return {}
        marks = ",".join([self.p] * len(song_ids))
        rows = self.query(f"SELECT song_id, data FROM peaks WHERE song_id IN ({marks})", tuple(song_ids))
        return {int(song_id): bytes(data) for song_id, data in rows}

    def songs_without_peaks(self, after_id: int, limit: int) -> list[int]:
        p = self.p
        rows = self.query(
            f"SELECT s.song_id FROM songs s LEFT JOIN peaks k ON k.song_id = s.song_id"
            f" WHERE k.song_id IS NULL AND s.song_id > {p} ORDER BY s.song_id LIMIT {p}",
            (after_id, limit),
        )
        return [int(song_id) for (song_id,) in rows]

    def song_rows(self, song_ids: list[int]) -> SongRows:
        """One pass over the fingerprints (no index leads with song_id), grouped in numpy."""
        if not song_ids:
            return {}
        marks = ",".join([self.p] * len(song_ids))
        rows = self.query_rows(
            f"SELECT f.hash, f.song_id, f.{self.offset} FROM fingerprints f"
            f" WHERE f.song_id IN ({marks}) AND f.song_id IN (SELECT song_id FROM songs)",
            tuple(song_ids),
        )
        return rows_by_song(*rows)

    def add_peaks(self, peaks: dict[int, bytes]) -> int:
        p, stored = self.p, 0
        with self.transaction("Cannot store the peaks") as cur:
            for song_id, data in peaks.items():
                cur.execute(
                    f"INSERT INTO peaks (song_id, data) SELECT song_id, {p} FROM songs WHERE song_id = {p}"
                    f" AND song_id NOT IN (SELECT song_id FROM peaks)",
                    (data, song_id),
                )
                stored += max(cur.rowcount, 0)
        return stored

    def count_songs(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM songs")[0][0])

    def list_songs(self, after_id: int, limit: int) -> list[Song]:
        rows = self.query(
            f"SELECT {SONG_COLUMNS} FROM songs WHERE song_id > {self.p} ORDER BY song_id LIMIT {self.p}",
            (after_id, limit),
        )
        return [self.song_of_row(row) for row in rows]

    def delete_song(self, song_id: int) -> bool:
        p = self.p
        with self.transaction("Cannot delete the song") as cur:
            cur.execute(f"DELETE FROM songs WHERE song_id = {p}", (song_id,))
            found = cur.rowcount > 0
            cur.execute(
                f"SELECT hash, COUNT(*) FROM fingerprints WHERE song_id = {p} GROUP BY hash ORDER BY hash", (song_id,)
            )
            counts = np.array(cur.fetchall(), np.int64).reshape(-1, 2)
            cur.execute(f"DELETE FROM fingerprints WHERE song_id = {p}", (song_id,))
            cur.execute(f"DELETE FROM peaks WHERE song_id = {p}", (song_id,))
            self._update_counts(cur, counts[:, 0], counts[:, 1], removed=True)
            cur.execute(self.bump_generation)
        return found

    def stats(self) -> dict:
        songs, hashes = self.query("SELECT COUNT(*), COALESCE(SUM(total_hashes), 0) FROM songs")[0]
        return {"songs": int(songs), "hashes": int(hashes), "index_bytes": int(self.index_bytes())}

    def generation(self) -> int:
        rows = self.query(f"SELECT value FROM meta WHERE {self.meta_key} = 'generation'")
        return int(rows[0][0]) if rows else 0

    def check(self) -> None:
        self.query("SELECT 1")

    def services(self) -> dict[str, bool]:
        return {}


class SQLResultStore(SQLBase):
    """Recognition results in one SQL database; the table is created on first use."""

    p: ClassVar[str] = "%s"
    table: ClassVar[str]  # CREATE TABLE IF NOT EXISTS results (token, body, created)
    jobs_table: ClassVar[str]  # CREATE TABLE IF NOT EXISTS scan_jobs (token, seq, written, body), key (token, seq)

    def __init__(self, name: str):
        super().__init__(name)
        self._ready = False

    def _ensure(self) -> None:
        if not self._ready:
            self.query(self.table)
            self.query(self.jobs_table)
            self._ready = True

    def put_result(self, token: str, body: str) -> None:
        self._ensure()
        self.query(f"INSERT INTO results (token, body) VALUES ({self.p}, {self.p})", (token, body))

    def get_result(self, token: str) -> str | None:
        self._ensure()
        rows = self.query(f"SELECT body FROM results WHERE token = {self.p}", (token,))
        return rows[0][0] if rows else None

    def count_results(self) -> int:
        self._ensure()
        return int(self.query("SELECT COUNT(*) FROM results")[0][0])

    def put_job(self, token: str, seq: int, body: str, written: int) -> None:
        self._ensure()
        p = self.p
        sql = f"INSERT INTO scan_jobs (token, seq, written, body) VALUES ({p}, {p}, {p}, {p})"
        self.query(sql, (token, seq, written, body))

    def get_job(self, token: str) -> tuple[int, str] | None:
        self._ensure()
        rows = self.query(f"SELECT seq, body FROM scan_jobs WHERE token = {self.p} ORDER BY seq DESC LIMIT 1", (token,))
        return (int(rows[0][0]), rows[0][1]) if rows else None

    def purge_jobs(self, before: int) -> None:
        self._ensure()
        done = f"SELECT token FROM scan_jobs GROUP BY token HAVING MAX(written) < {self.p}"
        tokens = [row[0] for row in self.query(done, (before,))]
        for token in tokens:
            self.query(f"DELETE FROM scan_jobs WHERE token = {self.p}", (token,))
