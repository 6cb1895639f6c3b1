"""MySQLStore and MySQLResultStore: one MySQL/MariaDB database per instance (the MySQL dialect of sql.py)."""

from __future__ import annotations

import math

import MySQLdb
import numpy as np

from ..config import DatabaseConfig
from ..errors import StorageError
from .base import EXACT_COUNTS_FROM, IdSlot, NewSong
from .sql import SQLBase, SQLResultStore, SQLStore

_ER_BAD_DB = 1049
_ER_DUP_ENTRY = 1062

# PRIMARY KEY (hash, song_id, offset) clusters the rows by hash: a lookup reads only the
# matching rows, and the key covers the query (no second index, 49 bytes a row measured).
# `offset` is a reserved word in MariaDB 10.11.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name VARCHAR(64) PRIMARY KEY, value VARCHAR(255) NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS songs ("
    " song_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " song_name VARCHAR(255) NOT NULL, blob_sha1 CHAR(40) NOT NULL UNIQUE,"
    " total_hashes INT UNSIGNED NOT NULL, duration_seconds DOUBLE NOT NULL,"
    " created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS fingerprints ("
    " hash INT UNSIGNED NOT NULL, song_id BIGINT UNSIGNED NOT NULL, `offset` INT NOT NULL,"
    " PRIMARY KEY (hash, song_id, `offset`)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS hash_counts (hash INT UNSIGNED NOT NULL PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS peaks (song_id BIGINT UNSIGNED NOT NULL PRIMARY KEY, data MEDIUMBLOB NOT NULL)"
    " ENGINE=InnoDB",
)
# Writers to one database take this named lock (GET_LOCK) for their transaction.
_WRITER_LOCK = "CONCAT('tunescout:', LEFT(SHA1(DATABASE()), 32))"


class _MySQL(SQLBase):
    kind = "mysql"
    driver_errors = (MySQLdb.Error,)

    def __init__(self, db: DatabaseConfig, slot: IdSlot | None):
        self.db, self._slot = db, slot
        SQLBase.__init__(self, f"mysql {db.host}:{db.port}/{db.database}")

    def connect(self, reads: bool = True):
        """A connection in autocommit mode (reads: each read fails after query_timeout_s); the
        database is created on first use. Instance i of n hands out ids = i + 1 (mod n) through the
        session's AUTO_INCREMENT settings."""
        db = self.db
        args = dict(
            host=db.host,
            port=db.port,
            user=db.user,
            password=db.password,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=max(1, math.ceil(db.connect_timeout_s)),
        )
        if reads:
            args.update(
                read_timeout=max(1, math.ceil(db.query_timeout_s)), write_timeout=max(1, math.ceil(db.query_timeout_s))
            )
        try:
            try:
                conn = MySQLdb.connect(database=db.database, **args)
            except MySQLdb.OperationalError as exc:
                if exc.args[0] != _ER_BAD_DB:
                    raise
                conn = MySQLdb.connect(**args)
                conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{db.database}`")
                conn.select_db(db.database)
            if self._slot is not None:
                conn.cursor().execute(
                    "SET SESSION auto_increment_increment = %s, auto_increment_offset = %s",
                    (self._slot.count, self._slot.index + 1),
                )
        except MySQLdb.Error as exc:
            raise self.failed("Cannot connect to the database", exc) from exc
        return conn

    def begin(self, conn):
        cur = conn.cursor()
        conn.begin()
        cur.execute(f"SELECT GET_LOCK({_WRITER_LOCK}, %s)", (max(1, math.ceil(self.db.query_timeout_s)),))
        if cur.fetchone()[0] != 1:
            raise StorageError("Another writer holds the database; try again later")
        return cur

    def end(self, conn) -> None:
        try:
            conn.cursor().execute(f"DO RELEASE_LOCK({_WRITER_LOCK})")
        except MySQLdb.Error:
            self._writes.drop()  # the server releases the lock with the connection

    def is_duplicate(self, exc: BaseException) -> bool:
        return isinstance(exc, MySQLdb.IntegrityError) and exc.args[0] == _ER_DUP_ENTRY


class MySQLStore(_MySQL, SQLStore):
    """Fingerprints and songs in one MySQL/MariaDB database (InnoDB)."""

    meta_key, offset = "name", "`offset`"
    schema = _SCHEMA
    insert_meta_if_absent = "INSERT IGNORE INTO meta VALUES (%s, %s)"
    set_meta = "REPLACE INTO meta VALUES (%s, %s)"
    bump_generation = (
        "INSERT INTO meta VALUES ('generation', '1') ON DUPLICATE KEY UPDATE value = CAST(value AS UNSIGNED) + 1"
    )
    add_counts = "INSERT INTO hash_counts (hash, n) VALUES (%s, %s) ON DUPLICATE KEY UPDATE n = n + VALUES(n)"
    # The values travel inline (`IN (...)`, integers only): one range of the clustered key each.
    postings = "SELECT hash, song_id, `offset` FROM fingerprints WHERE hash IN ({hashes})"
    held_counts = "SELECT hash, n FROM hash_counts WHERE hash IN ({hashes})"
    row_counts = "SELECT hash, COUNT(*) FROM fingerprints WHERE hash IN ({hashes}) GROUP BY hash"
    drop_rare_counts = f"DELETE FROM hash_counts WHERE n < {EXACT_COUNTS_FROM} AND hash IN ({{hashes}})"

    def __init__(self, db: DatabaseConfig, slot: IdSlot = IdSlot(0, 1)):
        _MySQL.__init__(self, db, slot)
        self.slot = slot

    def hash_set(self, values: np.ndarray) -> tuple[str, tuple]:
        return ",".join(map(str, values.tolist())), ()

    def insert_song(self, cur, song: NewSong) -> int:
        """AUTO_INCREMENT hands out the slot's next id (never reused: InnoDB keeps the counter)."""
        cur.execute(
            "INSERT INTO songs (song_name, blob_sha1, total_hashes, duration_seconds) VALUES (%s, %s, %s, %s)",
            (song.song_name, song.blob_sha1, int(song.hashes.size), song.duration_seconds),
        )
        return int(cur.lastrowid)

    def index_bytes(self) -> int:
        self.query("ANALYZE TABLE songs, fingerprints")  # InnoDB's sizes are estimates refreshed lazily
        return self.query(
            "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables"
            " WHERE table_schema = DATABASE()"
        )[0][0]

    def compact(self) -> None:
        """OPTIMIZE TABLE: InnoDB rebuilds each table online (space freed by deletes comes back).
        On a connection of its own, without the statement timeout."""
        conn = self.connect(reads=False)
        try:
            cur = conn.cursor()
            cur.execute("OPTIMIZE TABLE songs, fingerprints, hash_counts, peaks")
            cur.fetchall()
        except MySQLdb.Error as exc:
            raise self.failed("Compact failed", exc) from exc
        finally:
            conn.close()


class MySQLResultStore(_MySQL, SQLResultStore):
    """Recognition results in one MySQL/MariaDB database."""

    table = (
        "CREATE TABLE IF NOT EXISTS results (token CHAR(34) PRIMARY KEY, body MEDIUMTEXT NOT NULL,"
        " created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB CHARSET=utf8mb4"
    )
    jobs_table = (
        "CREATE TABLE IF NOT EXISTS scan_jobs (token CHAR(34) NOT NULL, seq BIGINT NOT NULL, written BIGINT NOT NULL,"
        " body MEDIUMTEXT NOT NULL, PRIMARY KEY (token, seq)) ENGINE=InnoDB CHARSET=utf8mb4"
    )

    def __init__(self, db: DatabaseConfig):
        _MySQL.__init__(self, db, None)
        self._ready = False
