"""PostgresStore and PostgresResultStore: one PostgreSQL database per instance (the PostgreSQL dialect of sql.py)."""

from __future__ import annotations

import math

import numpy as np
import psycopg
from psycopg import errors as pg_errors

from ..config import DatabaseConfig
from .base import EXACT_COUNTS_FROM, IdSlot
from .sql import SQLBase, SQLResultStore, SQLStore

# The fingerprints' primary key (hash, song_id, offset_frames) is a B-tree beside the table: a
# lookup reads the matching index entries only (an index-only scan, once VACUUM has marked the
# pages all-visible). The table's columns are ordered widest first, so that a row carries no
# alignment padding (40 bytes with its header instead of 48). `offset` is reserved.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS songs ("
    " song_id BIGINT PRIMARY KEY, song_name TEXT NOT NULL, blob_sha1 TEXT NOT NULL UNIQUE,"
    " total_hashes INTEGER NOT NULL, duration_seconds DOUBLE PRECISION NOT NULL,"
    " created TIMESTAMPTZ NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS fingerprints ("
    " song_id BIGINT NOT NULL, hash INTEGER NOT NULL, offset_frames INTEGER NOT NULL,"
    " PRIMARY KEY (hash, song_id, offset_frames))",
    "CREATE TABLE IF NOT EXISTS hash_counts (hash INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS peaks (song_id BIGINT PRIMARY KEY, data BYTEA NOT NULL)",
)
# Writers to one database take this transaction-scoped advisory lock (the key is arbitrary).
_WRITER_LOCK = "SELECT pg_advisory_xact_lock(7438020116)"


class _Postgres(SQLBase):
    kind = "postgres"
    driver_errors = (psycopg.Error,)

    def __init__(self, db: DatabaseConfig):
        self.db = db
        SQLBase.__init__(self, f"postgres {db.host}:{db.port}/{db.database}")

    def connect(self, reads: bool = True) -> psycopg.Connection:
        """A connection in autocommit mode, times in UTC; the database is created on first use.
        Every wait for a lock fails after query_timeout_s, and so does every read."""
        db = self.db
        lock_ms = int(db.query_timeout_s * 1000)
        statement_ms = lock_ms if reads else 0
        args = dict(
            host=db.host,
            port=db.port,
            user=db.user or None,
            password=db.password or None,
            connect_timeout=max(1, math.ceil(db.connect_timeout_s)),
            autocommit=True,
            options=f"-c statement_timeout={statement_ms} -c lock_timeout={lock_ms} -c TimeZone=UTC",
        )
        try:
            try:
                return psycopg.connect(dbname=db.database, **args)
            except psycopg.OperationalError as exc:
                if f'database "{db.database}" does not exist' not in str(exc):
                    raise
            with psycopg.connect(dbname="postgres", **args) as admin:
                try:
                    admin.execute(f'CREATE DATABASE "{db.database}"')
                except pg_errors.DuplicateDatabase:
                    pass  # made by another process meanwhile
            return psycopg.connect(dbname=db.database, **args)
        except psycopg.Error as exc:
            raise self.failed("Cannot connect to the database", exc) from exc

    def begin(self, conn: psycopg.Connection) -> psycopg.Cursor:
        cur = conn.cursor()
        cur.execute("BEGIN")
        cur.execute(_WRITER_LOCK)
        return cur

    def is_duplicate(self, exc: BaseException) -> bool:
        return isinstance(exc, pg_errors.UniqueViolation) and "blob_sha1" in str(exc)


class PostgresStore(_Postgres, SQLStore):
    """Fingerprints and songs in one PostgreSQL database."""

    meta_key, offset = "name", "offset_frames"
    schema = _SCHEMA
    insert_meta_if_absent = "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (name) DO NOTHING"
    set_meta = "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET value = excluded.value"
    bump_generation = (
        "INSERT INTO meta VALUES ('generation', '1')"
        " ON CONFLICT (name) DO UPDATE SET value = (meta.value::bigint + 1)::text"
    )
    add_counts = (
        "INSERT INTO hash_counts VALUES (%s, %s) ON CONFLICT (hash) DO UPDATE SET n = hash_counts.n + excluded.n"
    )
    # A set of values is one array parameter; `= ANY` probes the primary key once per value.
    postings = "SELECT hash, song_id, offset_frames FROM fingerprints WHERE hash = ANY({hashes})"
    held_counts = "SELECT hash, n FROM hash_counts WHERE hash = ANY({hashes})"
    row_counts = "SELECT hash, COUNT(*) FROM fingerprints WHERE hash = ANY({hashes}) GROUP BY hash"
    drop_rare_counts = f"DELETE FROM hash_counts WHERE n < {EXACT_COUNTS_FROM} AND hash = ANY({{hashes}})"

    def __init__(self, db: DatabaseConfig, slot: IdSlot = IdSlot(0, 1)):
        _Postgres.__init__(self, db)
        self.slot = slot

    def hash_set(self, values: np.ndarray) -> tuple[str, tuple]:
        """hash is a signed INTEGER: no row holds a value from 2**31 on, and the array's cast would
        refuse one, so such values are left out of the set."""
        return "%s::integer[]", (values[values < 2**31].tolist(),)

    def insert_fingerprints(self, cur, song_id: int, hashes: np.ndarray, offsets: np.ndarray) -> None:
        """COPY: several times faster than INSERT for thousands of rows."""
        with cur.copy("COPY fingerprints (hash, song_id, offset_frames) FROM STDIN") as copy:
            for h, o in zip(hashes.tolist(), offsets.tolist()):
                copy.write_row((h, song_id, o))

    def index_bytes(self) -> int:
        return self.query(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace s ON s.oid = c.relnamespace"
            " WHERE s.nspname = current_schema() AND c.relkind = 'r'"
        )[0][0]

    def compact(self) -> None:
        """VACUUM (ANALYZE), then REINDEX CONCURRENTLY: the space of deleted rows is reused, the pages
        are marked all-visible (lookups read the index only), the statistics are fresh, and the
        indexes, which grow a third larger than needed when rows arrive in hash order per song, are
        rebuilt packed. Lookups and writes go on meanwhile (VACUUM FULL would lock the tables out).
        On a connection of its own, without the statement timeout."""
        try:
            with self.connect(reads=False) as conn:
                conn.execute("VACUUM (ANALYZE) meta, songs, fingerprints, hash_counts, peaks")
                conn.execute("REINDEX TABLE CONCURRENTLY fingerprints")
                conn.execute("REINDEX TABLE CONCURRENTLY hash_counts")
        except psycopg.Error as exc:
            raise self.failed("Compact failed", exc) from exc


class PostgresResultStore(_Postgres, SQLResultStore):
    """Recognition results in one PostgreSQL database."""

    table = (
        "CREATE TABLE IF NOT EXISTS results (token TEXT PRIMARY KEY, body TEXT NOT NULL,"
        " created TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    jobs_table = (
        "CREATE TABLE IF NOT EXISTS scan_jobs (token TEXT NOT NULL, seq BIGINT NOT NULL, written BIGINT NOT NULL,"
        " body TEXT NOT NULL, PRIMARY KEY (token, seq))"
    )

    def __init__(self, db: DatabaseConfig):
        _Postgres.__init__(self, db)
        self._ready = False
