"""SQLiteStore and SQLiteResultStore: the embedded default, one file each."""
from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import threading
from pathlib import Path

import numpy as np

from dejavu import distinct

from ..errors import DuplicateSongError, StorageError
from .base import (EXACT_COUNTS_FROM, Histogram, IdSlot, NewSong, Song, ThreadConnections, arrays_of_counts,
                   check_meta, counts_of_rows, top_histograms_of_postings)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS songs (
    song_id INTEGER PRIMARY KEY, song_name TEXT NOT NULL, blob_sha1 TEXT NOT NULL UNIQUE,
    total_hashes INTEGER NOT NULL, duration_seconds REAL NOT NULL,
    created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')));
CREATE TABLE IF NOT EXISTS fingerprints (
    hash INTEGER NOT NULL, song_id INTEGER NOT NULL, offset_frames INTEGER NOT NULL,
    PRIMARY KEY (hash, song_id, offset_frames)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hash_counts (hash INTEGER PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
"""
# A song's hashes and its row are written in one transaction, so a song is
# visible to recognition only complete, and a crash leaves nothing behind.
# The index rows of the query's distinct hashes; the join with the query's offsets and the grouping
# run in numpy (storage.base.top_histograms_of_postings): 25 % faster than GROUP BY with
# COUNT(DISTINCT) in SQLite, and the gap grows with the rows. The hashes travel as one JSON array
# (json_each), which costs half of filling a temporary table; CROSS JOIN keeps it the outer loop.
_POSTINGS = """
SELECT f.hash, f.song_id, f.offset_frames
FROM json_each(?) AS q CROSS JOIN fingerprints AS f ON f.hash = q.value
"""
# Rows per hash value, for hash_counts: kept in a table with every add and delete (same transaction)
# for the values with at least EXACT_COUNTS_FROM rows, which are few (36 k of 318 k values at 174
# songs: 2 % of the file); rarer values are not kept and answer 1. Reading a count is one probe,
# where counting the rows of a query's hashes walks them all (3x slower at 1,000 songs).
_COUNTS = "SELECT c.hash, c.n FROM json_each(?) AS q CROSS JOIN hash_counts AS c ON c.hash = q.value"
_ADD_COUNT = "UPDATE hash_counts SET n = n + ?2 WHERE hash = ?1"
# A value not in the table is counted afresh (it had fewer rows than EXACT_COUNTS_FROM: cheap).
_NEW_COUNT = ("INSERT INTO hash_counts SELECT hash, COUNT(*) FROM fingerprints"
              " WHERE hash = ?1 AND NOT EXISTS (SELECT 1 FROM hash_counts WHERE hash = ?1)"
              f" HAVING COUNT(*) >= {EXACT_COUNTS_FROM}")
_DROP_COUNT = f"DELETE FROM hash_counts WHERE hash = ?1 AND n < {EXACT_COUNTS_FROM}"
# Indexes made before hash_counts existed get it filled on open.
_FILL_COUNTS = ("INSERT INTO hash_counts SELECT hash, COUNT(*) FROM fingerprints GROUP BY hash"
                f" HAVING COUNT(*) >= {EXACT_COUNTS_FROM}")


def _connections(path: Path) -> ThreadConnections[sqlite3.Connection]:
    """Per-thread connections to one SQLite file, in WAL mode."""
    def connect() -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"Cannot open {path.name}") from exc
        return conn
    return ThreadConnections(connect, sqlite3.Connection.close)


def _distinct_pairs(hashes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (hash, offset) pairs, sorted by hash then offset."""
    key = distinct((hashes.astype(np.int64) << 32) | offsets.astype(np.int64).astype(np.uint32))
    return key >> 32, (key & 0xFFFFFFFF).astype(np.int32)


class SQLiteStore:
    """Fingerprints and songs in one SQLite file."""

    def __init__(self, path: Path, slot: IdSlot = IdSlot(0, 1), timeout_s: float = 30.0):
        self._path = Path(path)
        self.name = f"sqlite {self._path.resolve()}"
        self._db = _connections(self._path)
        self._write = threading.Lock()
        self.slot = slot

    def ensure_schema(self, params_digest: str) -> None:
        conn = self._db.get()
        wanted = {"params_digest": params_digest, "id_slot": str(self.slot)}
        try:
            with self._write:
                conn.executescript(_SCHEMA)
                conn.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", wanted.items())
            stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if "hash_counts" not in stored:
                # Whoever marks meta first fills the counts (other processes may be opening it too).
                with self._write, self._transaction(conn, f"Cannot count the hashes of {self._path.name}"):
                    if conn.execute("INSERT OR IGNORE INTO meta VALUES ('hash_counts', '1')").rowcount:
                        conn.execute("DELETE FROM hash_counts")
                        conn.execute(_FILL_COUNTS)
        except sqlite3.Error as exc:
            raise StorageError(f"Cannot open {self._path.name}") from exc
        check_meta(self._path.name, stored, wanted)

    def add_song(self, song: NewSong) -> int:
        return self.add_songs([song])[0]

    def add_songs(self, songs: list[NewSong]) -> list[int]:
        conn = self._db.get()
        ids: list[int] = []
        with self._write, self._transaction(conn, "Cannot store the song"):
            try:
                # Ids are never reused, even the last one after a delete.
                last = conn.execute("SELECT MAX(CAST(value AS INTEGER)) FROM meta"
                                    " WHERE key = 'last_song_id'").fetchone()[0]
                for song in songs:
                    last = self.slot.next_id(last)
                    conn.execute(
                        "INSERT INTO songs (song_id, song_name, blob_sha1, total_hashes, duration_seconds)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (last, song.song_name, song.blob_sha1, int(song.hashes.size), song.duration_seconds))
                    # Distinct pairs, sorted by hash: sorted keys load fast into the B-tree.
                    hashes, offsets = _distinct_pairs(song.hashes, song.offsets)
                    conn.executemany("INSERT INTO fingerprints VALUES (?, ?, ?)",
                                     zip(hashes.tolist(), itertools.repeat(last), offsets.tolist()))
                    values, counts = np.unique(hashes, return_counts=True)
                    conn.executemany(_ADD_COUNT, zip(values.tolist(), counts.tolist()))
                    conn.executemany(_NEW_COUNT, ((v,) for v in values.tolist()))
                    ids.append(last)
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('last_song_id', ?)", (str(last),))
                self._bump(conn)
            except sqlite3.IntegrityError as exc:
                raise DuplicateSongError(blob_sha1=songs[len(ids)].blob_sha1) from exc
        return ids

    @staticmethod
    @contextlib.contextmanager
    def _transaction(conn: sqlite3.Connection, message: str):
        """BEGIN IMMEDIATE ... COMMIT; any exception rolls back (never leave a transaction open)."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(message) from exc
        try:
            yield
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StorageError(message) from exc
            raise

    def find_sha1(self, blob_sha1: str) -> Song | None:
        row = self._query("SELECT * FROM songs WHERE blob_sha1 = ?", (blob_sha1,))
        return Song(*row[0]) if row else None

    def hash_counts(self, values: np.ndarray) -> np.ndarray:
        return np.maximum(counts_of_rows(values, self._with_hashes(values, _COUNTS)), 1)

    def common_hash_counts(self, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
        return arrays_of_counts(self._query("SELECT hash, n FROM hash_counts WHERE n >= ? ORDER BY hash",
                                            (min_rows,)))

    def best_alignments(self, hashes: np.ndarray, offsets: np.ndarray, top_k: int) -> list[Histogram]:
        postings = self._with_hashes(distinct(hashes), _POSTINGS)
        return top_histograms_of_postings(hashes, offsets, postings, top_k)

    def _with_hashes(self, values: np.ndarray, sql: str) -> list[tuple]:
        """Rows of sql, whose one parameter is the distinct hash values as a JSON array."""
        try:
            return self._db.get().execute(sql, (json.dumps(values.tolist()),)).fetchall()
        except sqlite3.Error as exc:
            raise StorageError("Fingerprint lookup failed") from exc

    def get_songs(self, song_ids: list[int]) -> dict[int, Song]:
        if not song_ids:
            return {}
        marks = ",".join("?" * len(song_ids))
        rows = self._query(f"SELECT * FROM songs WHERE song_id IN ({marks})", tuple(song_ids))
        return {row[0]: Song(*row) for row in rows}

    def count_songs(self) -> int:
        return self._query("SELECT COUNT(*) FROM songs", ())[0][0]

    def list_songs(self, after_id: int, limit: int) -> list[Song]:
        rows = self._query("SELECT * FROM songs WHERE song_id > ? ORDER BY song_id LIMIT ?", (after_id, limit))
        return [Song(*row) for row in rows]

    def delete_song(self, song_id: int) -> bool:
        conn = self._db.get()
        with self._write, self._transaction(conn, "Cannot delete the song"):
            found = conn.execute("DELETE FROM songs WHERE song_id = ?", (song_id,)).rowcount
            counts = conn.execute("SELECT hash, COUNT(*) FROM fingerprints WHERE song_id = ? GROUP BY hash",
                                  (song_id,)).fetchall()
            conn.execute("DELETE FROM fingerprints WHERE song_id = ?", (song_id,))
            conn.executemany(_ADD_COUNT, ((h, -n) for h, n in counts))
            conn.executemany(_DROP_COUNT, ((h,) for h, _ in counts))
            self._bump(conn)
        return bool(found)

    def stats(self) -> dict:
        songs, hashes = self._query("SELECT COUNT(*), COALESCE(SUM(total_hashes), 0) FROM songs", ())[0]
        pages = self._query("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()", ())
        return {"songs": songs, "hashes": hashes, "index_bytes": pages[0][0]}

    def compact(self) -> None:
        """VACUUM: pages freed by deletes go back to the file system, tables are stored in order."""
        self._query("PRAGMA wal_checkpoint(TRUNCATE)", ())
        self._query("VACUUM", ())
        self._query("PRAGMA optimize", ())

    def generation(self) -> int:
        row = self._query("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'generation'", ())
        return row[0][0] if row else 0

    @staticmethod
    def _bump(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta VALUES ('generation', '1') ON CONFLICT (key)"
                     " DO UPDATE SET value = CAST(value AS INTEGER) + 1")

    def check(self) -> None:
        self._query("SELECT 1", ())

    def close(self) -> None:
        self._db.close()

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        try:
            return self._db.get().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StorageError("Storage query failed") from exc


class SQLiteResultStore:
    """Recognition results in one SQLite file."""

    def __init__(self, path: Path, timeout_s: float = 30.0):
        self._path = Path(path)
        self._db = _connections(self._path)
        try:
            self._db.get().execute("CREATE TABLE IF NOT EXISTS results (token TEXT PRIMARY KEY,"
                                   " body TEXT NOT NULL, created REAL DEFAULT (unixepoch()))")
        except sqlite3.Error as exc:
            raise StorageError("Cannot open the result store") from exc

    def put_result(self, token: str, body: str) -> None:
        try:
            self._db.get().execute("INSERT INTO results (token, body) VALUES (?, ?)", (token, body))
        except sqlite3.Error as exc:
            raise StorageError("Cannot store the result") from exc

    def get_result(self, token: str) -> str | None:
        try:
            row = self._db.get().execute("SELECT body FROM results WHERE token = ?", (token,)).fetchone()
        except sqlite3.Error as exc:
            raise StorageError("Cannot read the result") from exc
        return row[0] if row else None

    def count_results(self) -> int:
        try:
            return self._db.get().execute("SELECT COUNT(*) FROM results").fetchone()[0]
        except sqlite3.Error as exc:
            raise StorageError("Cannot read the result store") from exc

    def close(self) -> None:
        self._db.close()
