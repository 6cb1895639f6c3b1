"""MySQLStore and MySQLResultStore: one MySQL/MariaDB database per instance (mysqlclient)."""
from __future__ import annotations

import datetime as dt
import math

import MySQLdb
import numpy as np

from dejavu import distinct

from ..config import DatabaseConfig
from ..errors import DuplicateSongError, StorageError
from .base import (Histogram, IdSlot, NewSong, Song, ThreadConnections, arrays_of_counts, check_meta,
                   counts_of_rows, top_histograms_of_postings)

_ER_BAD_DB = 1049
_ER_DUP_ENTRY = 1062

# PRIMARY KEY (hash, song_id, offset) clusters the rows by hash: a lookup reads only the
# matching rows, and the key covers the query (no second index, 49 bytes a row measured).
# `offset` is a reserved word in MariaDB 10.11.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name VARCHAR(64) PRIMARY KEY, value VARCHAR(255) NOT NULL)"
    " ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS songs ("
    " song_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " song_name VARCHAR(255) NOT NULL, blob_sha1 CHAR(40) NOT NULL UNIQUE,"
    " total_hashes INT UNSIGNED NOT NULL, duration_seconds DOUBLE NOT NULL,"
    " created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS fingerprints ("
    " hash INT UNSIGNED NOT NULL, song_id BIGINT UNSIGNED NOT NULL, `offset` INT NOT NULL,"
    " PRIMARY KEY (hash, song_id, `offset`)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS hash_counts (hash INT UNSIGNED NOT NULL PRIMARY KEY, n INT NOT NULL)"
    " ENGINE=InnoDB",
)
_SONG_COLUMNS = "song_id, song_name, blob_sha1, total_hashes, duration_seconds, created"
# The rows of the query's distinct hashes, one range of the clustered primary key each, are joined
# with the query's offsets and grouped in numpy (storage.base.top_histograms_of_postings), as in
# SQLite. The hashes travel inline (`IN (...)`, integers only). Joining and grouping in MariaDB,
# with the pairs in a per-connection MEMORY table, took 3x longer on one of the two instances of
# the 1,000-song benchmark (first step 15.9 -> 5.7 ms, every hash 41 -> 28 ms, 30 clips of 10 s).
_POSTINGS = "SELECT hash, song_id, `offset` FROM fingerprints WHERE hash IN ({values})"
# Rows per hash value, kept in hash_counts in the same transaction as every add and delete: reading
# the counts of a query's hashes is a probe each, where counting their rows took as long as the
# lookup itself (70 vs 78 ms on one of the 2 instances of a 1,000-song catalogue).
_COUNTS = "SELECT hash, n FROM hash_counts WHERE hash IN ({values})"
_ADD_COUNTS = "INSERT INTO hash_counts (hash, n) VALUES (%s, %s) ON DUPLICATE KEY UPDATE n = n + VALUES(n)"
_FILL_COUNTS = "INSERT INTO hash_counts SELECT hash, COUNT(*) FROM fingerprints GROUP BY hash"
# The generation row changes in the same transaction as the songs it counts.
_BUMP = ("INSERT INTO meta VALUES ('generation', '1')"
         " ON DUPLICATE KEY UPDATE value = CAST(value AS UNSIGNED) + 1")
_INSERT_BATCH = 20_000   # rows per multi-row INSERT (well under max_allowed_packet)


def _connect(db: DatabaseConfig, timeout_s: float, slot: IdSlot | None):
    args = dict(host=db.host, port=db.port, user=db.user, password=db.password,
                connect_timeout=max(1, math.ceil(timeout_s)), charset="utf8mb4", autocommit=True)
    try:
        conn = MySQLdb.connect(database=db.database, **args)
    except MySQLdb.OperationalError as exc:
        if exc.args[0] != _ER_BAD_DB:
            raise
        conn = MySQLdb.connect(**args)   # tables (and the database) are created on first use
        conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{db.database}`")
        conn.select_db(db.database)
    if slot is not None:
        # Instance i of n hands out ids = i+1 (mod n): unique across instances, no coordination.
        cur = conn.cursor()
        cur.execute("SET SESSION auto_increment_increment = %s, auto_increment_offset = %s",
                    (slot.count, slot.index + 1))
    return conn


def _song(row) -> Song:
    song_id, name, sha1, total, duration, created = row
    stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(created, dt.datetime) else str(created)
    return Song(int(song_id), name, sha1, int(total), float(duration), stamp)


class _MySQLBase:
    def __init__(self, db: DatabaseConfig, timeout_s: float, slot: IdSlot | None):
        self.name = f"mysql {db.host}:{db.port}/{db.database}"
        self._db = ThreadConnections(lambda: _connect(db, timeout_s, slot), lambda c: c.close())

    def _run(self, sql: str, args=(), many: bool = False) -> list[tuple]:
        """Execute on this thread's connection; a failure drops it and raises StorageError."""
        try:
            cur = self._db.get().cursor()
            if many:
                cur.executemany(sql, args)
            else:
                cur.execute(sql, args)
            return list(cur.fetchall() or ())
        except MySQLdb.Error as exc:
            self._db.drop()
            raise StorageError(f"{self.name}: query failed") from exc

    def close(self) -> None:
        self._db.close()


def _add_counts(cur, values: list[int], counts: list[int]) -> None:
    """hash_counts[value] += count (batched multi-row upserts)."""
    rows = list(zip(values, counts))
    for start in range(0, len(rows), _INSERT_BATCH):
        cur.executemany(_ADD_COUNTS, rows[start:start + _INSERT_BATCH])


class MySQLStore(_MySQLBase):
    """Fingerprints and songs in one MySQL/MariaDB database (InnoDB)."""

    def __init__(self, db: DatabaseConfig, slot: IdSlot = IdSlot(0, 1), timeout_s: float = 5.0):
        super().__init__(db, timeout_s, slot)
        self.slot = slot

    def ensure_schema(self, params_digest: str) -> None:
        for statement in _SCHEMA:
            self._run(statement)
        wanted = {"params_digest": params_digest, "id_slot": str(self.slot)}
        self._run("INSERT IGNORE INTO meta VALUES (%s, %s)", list(wanted.items()), many=True)
        stored = dict(self._run("SELECT name, value FROM meta"))
        check_meta(self.name, stored, wanted)
        if "hash_counts" not in stored:   # an index made before hash_counts existed
            try:
                conn = self._db.get()
                cur = conn.cursor()
                conn.begin()
                # Whoever marks meta first fills the counts (other processes may be opening it too).
                if cur.execute("INSERT IGNORE INTO meta VALUES ('hash_counts', '1')"):
                    cur.execute("DELETE FROM hash_counts")
                    cur.execute(_FILL_COUNTS)
                conn.commit()
            except MySQLdb.Error as exc:
                self._rollback()
                raise StorageError(f"{self.name}: cannot count the hashes") from exc

    def add_song(self, song: NewSong) -> int:
        return self.add_songs([song])[0]

    def add_songs(self, songs: list[NewSong]) -> list[int]:
        ids: list[int] = []
        try:
            conn = self._db.get()
            cur = conn.cursor()
            conn.begin()
            for song in songs:
                cur.execute("INSERT INTO songs (song_name, blob_sha1, total_hashes, duration_seconds)"
                            " VALUES (%s, %s, %s, %s)",
                            (song.song_name, song.blob_sha1, int(song.hashes.size), song.duration_seconds))
                ids.append(int(cur.lastrowid))
                # Distinct pairs in primary-key order; a plain INSERT (not IGNORE, which would
                # also clamp out-of-range values silently) then fails loudly on bad data.
                pairs = sorted(set(zip(song.hashes.tolist(), song.offsets.tolist())))
                rows = [(h, ids[-1], o) for h, o in pairs]
                for start in range(0, len(rows), _INSERT_BATCH):
                    cur.executemany("INSERT INTO fingerprints (hash, song_id, `offset`)"
                                    " VALUES (%s, %s, %s)", rows[start:start + _INSERT_BATCH])
                values, counts = np.unique(np.array([h for h, _ in pairs], np.int64), return_counts=True)
                _add_counts(cur, values.tolist(), counts.tolist())
            cur.execute(_BUMP)
            conn.commit()
            return ids
        except MySQLdb.IntegrityError as exc:
            self._rollback()
            if exc.args[0] == _ER_DUP_ENTRY:
                raise DuplicateSongError(blob_sha1=songs[len(ids)].blob_sha1) from exc
            raise StorageError(f"{self.name}: cannot store the song") from exc
        except MySQLdb.Error as exc:
            self._rollback()
            raise StorageError(f"{self.name}: cannot store the song") from exc
        except BaseException:
            self._rollback()   # never leave a transaction open on a pooled connection
            raise

    def _rollback(self) -> None:
        try:
            self._db.get().rollback()
        except MySQLdb.Error:
            self._db.drop()   # the server discards an open transaction with the connection

    def find_sha1(self, blob_sha1: str) -> Song | None:
        rows = self._run(f"SELECT {_SONG_COLUMNS} FROM songs WHERE blob_sha1 = %s", (blob_sha1,))
        return _song(rows[0]) if rows else None

    def hash_counts(self, values: np.ndarray) -> np.ndarray:
        """Exact counts (kept for every value)."""
        if values.size == 0:
            return np.zeros(0, np.int64)
        return counts_of_rows(values, self._with_hashes(values, _COUNTS))

    def common_hash_counts(self, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
        return arrays_of_counts(self._run("SELECT hash, n FROM hash_counts WHERE n >= %s ORDER BY hash",
                                          (min_rows,)))

    def best_alignments(self, hashes: np.ndarray, offsets: np.ndarray, top_k: int) -> list[Histogram]:
        if hashes.size == 0:
            return []
        postings = self._with_hashes(distinct(hashes), _POSTINGS)
        return top_histograms_of_postings(hashes, offsets, postings, top_k)

    def _with_hashes(self, values: np.ndarray, sql: str) -> list[tuple]:
        """Rows of sql over the distinct hash values, written into it as integers."""
        return self._run(sql.format(values=",".join(map(str, values.astype(np.int64).tolist()))))

    def get_songs(self, song_ids: list[int]) -> dict[int, Song]:
        if not song_ids:
            return {}
        marks = ",".join(["%s"] * len(song_ids))
        rows = self._run(f"SELECT {_SONG_COLUMNS} FROM songs WHERE song_id IN ({marks})", tuple(song_ids))
        return {song.song_id: song for song in map(_song, rows)}

    def count_songs(self) -> int:
        return int(self._run("SELECT COUNT(*) FROM songs")[0][0])

    def list_songs(self, after_id: int, limit: int) -> list[Song]:
        rows = self._run(f"SELECT {_SONG_COLUMNS} FROM songs WHERE song_id > %s ORDER BY song_id LIMIT %s",
                         (after_id, limit))
        return [_song(row) for row in rows]

    def delete_song(self, song_id: int) -> bool:
        try:
            conn = self._db.get()
            cur = conn.cursor()
            conn.begin()
            found = cur.execute("DELETE FROM songs WHERE song_id = %s", (song_id,))
            cur.execute("SELECT hash, COUNT(*) FROM fingerprints WHERE song_id = %s GROUP BY hash", (song_id,))
            counts = cur.fetchall()
            cur.execute("DELETE FROM fingerprints WHERE song_id = %s", (song_id,))
            _add_counts(cur, [h for h, _ in counts], [-n for _, n in counts])
            cur.execute("DELETE FROM hash_counts WHERE n <= 0")
            cur.execute(_BUMP)
            conn.commit()
            return bool(found)
        except MySQLdb.Error as exc:
            self._rollback()
            raise StorageError(f"{self.name}: cannot delete the song") from exc
        except BaseException:
            self._rollback()
            raise

    def stats(self) -> dict:
        songs, hashes = self._run("SELECT COUNT(*), COALESCE(SUM(total_hashes), 0) FROM songs")[0]
        self._run("ANALYZE TABLE songs, fingerprints")   # InnoDB's sizes are estimates refreshed lazily
        size = self._run("SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables"
                         " WHERE table_schema = DATABASE()")[0][0]
        return {"songs": int(songs), "hashes": int(hashes), "index_bytes": int(size)}

    def compact(self) -> None:
        """OPTIMIZE TABLE: InnoDB rebuilds each table online (space freed by deletes comes back)."""
        self._run("OPTIMIZE TABLE songs, fingerprints, hash_counts")

    def generation(self) -> int:
        rows = self._run("SELECT CAST(value AS UNSIGNED) FROM meta WHERE name = 'generation'")
        return int(rows[0][0]) if rows else 0

    def check(self) -> None:
        self._run("SELECT 1")


class MySQLResultStore(_MySQLBase):
    """Recognition results in one MySQL/MariaDB database."""

    def __init__(self, db: DatabaseConfig, timeout_s: float = 5.0):
        super().__init__(db, timeout_s, None)
        self._ready = False

    def _ensure(self) -> None:
        if not self._ready:
            self._run("CREATE TABLE IF NOT EXISTS results (token CHAR(34) PRIMARY KEY,"
                      " body MEDIUMTEXT NOT NULL, created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
                      " ENGINE=InnoDB CHARSET=utf8mb4")
            self._ready = True

    def put_result(self, token: str, body: str) -> None:
        self._ensure()
        self._run("INSERT INTO results (token, body) VALUES (%s, %s)", (token, body))

    def get_result(self, token: str) -> str | None:
        self._ensure()
        rows = self._run("SELECT body FROM results WHERE token = %s", (token,))
        return rows[0][0] if rows else None

    def count_results(self) -> int:
        self._ensure()
        return int(self._run("SELECT COUNT(*) FROM results")[0][0])
