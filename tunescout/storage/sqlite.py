"""SQLiteStore and SQLiteResultStore: the embedded default, one file each (the SQLite dialect of sql.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

from ..config import DatabaseConfig
from ..errors import StorageError
from .base import EXACT_COUNTS_FROM, IdSlot
from .sql import SQLBase, SQLResultStore, SQLStore

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS songs ("
    " song_id INTEGER PRIMARY KEY, song_name TEXT NOT NULL, blob_sha1 TEXT NOT NULL UNIQUE,"
    " total_hashes INTEGER NOT NULL, duration_seconds REAL NOT NULL,"
    " created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')))",
    "CREATE TABLE IF NOT EXISTS fingerprints ("
    " hash INTEGER NOT NULL, song_id INTEGER NOT NULL, offset_frames INTEGER NOT NULL,"
    " PRIMARY KEY (hash, song_id, offset_frames)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS hash_counts (hash INTEGER PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS peaks (song_id INTEGER PRIMARY KEY, data BLOB NOT NULL)",
)
# A set of hash values travels as one JSON array (json_each), which costs half of filling a
# temporary table; CROSS JOIN keeps it the outer loop, so each value is one probe of the key.
_EACH = "json_each({hashes}) AS q CROSS JOIN"


def _path(db: DatabaseConfig | str | Path) -> Path:
    return Path(db.path if isinstance(db, DatabaseConfig) else db)


class _SQLite(SQLBase):
    kind = "sqlite"
    driver_errors = (sqlite3.Error,)

    def __init__(self, db: DatabaseConfig | str | Path):
        self.path = _path(db)
        self._lock_wait_s = db.query_timeout_s if isinstance(db, DatabaseConfig) else DatabaseConfig.query_timeout_s
        SQLBase.__init__(self, f"sqlite {self.path.resolve()}")

    def connect(self, reads: bool = True) -> sqlite3.Connection:
        """A connection in WAL mode, in autocommit (transactions are explicit). Reads and writes
        alike wait up to query_timeout_s for the file's lock."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self._lock_wait_s, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"Cannot open {self.path.name}") from exc
        return conn

    def begin(self, conn: sqlite3.Connection) -> sqlite3.Cursor:
        """BEGIN IMMEDIATE: the file's write lock, waited for up to query_timeout_s."""
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        return cur

    def is_duplicate(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "blob_sha1" in str(exc)


class SQLiteStore(_SQLite, SQLStore):
    """Fingerprints and songs in one SQLite file."""

    p, meta_key, offset = "?", "key", "offset_frames"
    schema = _SCHEMA
    insert_meta_if_absent = "INSERT OR IGNORE INTO meta VALUES (?, ?)"
    set_meta = "INSERT OR REPLACE INTO meta VALUES (?, ?)"
    bump_generation = (
        "INSERT INTO meta VALUES ('generation', '1') ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
    )
    add_counts = "INSERT INTO hash_counts VALUES (?, ?) ON CONFLICT (hash) DO UPDATE SET n = n + excluded.n"
    postings = f"SELECT f.hash, f.song_id, f.offset_frames FROM {_EACH} fingerprints AS f ON f.hash = q.value"
    held_counts = f"SELECT c.hash, c.n FROM {_EACH} hash_counts AS c ON c.hash = q.value"
    row_counts = f"SELECT f.hash, COUNT(*) FROM {_EACH} fingerprints AS f ON f.hash = q.value GROUP BY f.hash"
    drop_rare_counts = (
        f"DELETE FROM hash_counts WHERE n < {EXACT_COUNTS_FROM} AND hash IN (SELECT value FROM json_each({{hashes}}))"
    )

    def __init__(self, db: DatabaseConfig | str | Path, slot: IdSlot = IdSlot(0, 1)):
        _SQLite.__init__(self, db)
        self.slot = slot

    def hash_set(self, values: np.ndarray) -> tuple[str, tuple]:
        return "?", (json.dumps(values.tolist()),)

    def index_bytes(self) -> int:
        return self.query("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")[0][0]

    def compact(self) -> None:
        """VACUUM: pages freed by deletes go back to the file system, tables are stored in order."""
        self.query("PRAGMA wal_checkpoint(TRUNCATE)")
        self.query("VACUUM")
        self.query("PRAGMA optimize")


class SQLiteResultStore(_SQLite, SQLResultStore):
    """Recognition results in one SQLite file."""

    p = "?"
    table = (
        "CREATE TABLE IF NOT EXISTS results (token TEXT PRIMARY KEY, body TEXT NOT NULL,"
        " created REAL DEFAULT (unixepoch()))"
    )
    jobs_table = (
        "CREATE TABLE IF NOT EXISTS scan_jobs (token TEXT NOT NULL, seq INTEGER NOT NULL, written INTEGER NOT NULL,"
        " body TEXT NOT NULL, PRIMARY KEY (token, seq))"
    )

    def __init__(self, db: DatabaseConfig | str | Path):
        """Creates the file and its table at once, so that a path the service cannot write stops it
        at start (StorageError) rather than failing every recognition."""
        _SQLite.__init__(self, db)
        self._ready = False
        self._ensure()
