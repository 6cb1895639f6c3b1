"""ClickHouseStore and ClickHouseResultStore: one ClickHouse database per instance (native protocol)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from dejavu import distinct

from ..config import DatabaseConfig
from ..errors import DuplicateSongError, StorageError
from .base import (
    THIRD_POINT_FEATURE,
    Histogram,
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

# Fingerprints sorted by hash, then by the pair's third point (0 for none), so that a triplet key
# (hash, third) is read from its own granules (docs/SCALE.md). Song ids and offsets are split into a
# high part, which repeats along the sorted rows (LZ4 all but removes it), and a low UInt16: 4.6
# bytes a row on disk against 8.8 for (hash UInt32, song_id UInt64, offset UInt32), since LZ4 cannot
# shrink a column of small random integers padded to 4 or 8 bytes. Granules of 1,024 rows were as
# fast as 256 (the server profile's 1-4 kB compression blocks keep a granule cheap to decompress)
# and keep the marks small. Measured on the 1,000-song benchmark index, docs/SCALE.md.
_FINGERPRINTS = (
    "CREATE TABLE IF NOT EXISTS {table} (hash UInt32, third UInt16, song_hi UInt64, song_lo UInt16,"
    " offset_hi UInt16, offset_lo UInt16) ENGINE = MergeTree"
    " ORDER BY (hash, third, song_hi, song_lo, offset_hi, offset_lo) SETTINGS index_granularity = 1024"
)
_SPLIT = 65536
_SONG_ID = f"song_hi * {_SPLIT} + song_lo"
_OFFSET = f"toInt64(offset_hi) * {_SPLIT} + offset_lo"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name String, value String) ENGINE = MergeTree ORDER BY name",
    "CREATE TABLE IF NOT EXISTS songs (song_id UInt64, song_name String, blob_sha1 String,"
    " total_hashes UInt32, duration_seconds Float64, created DateTime DEFAULT now())"
    " ENGINE = MergeTree ORDER BY song_id SETTINGS index_granularity = 256",
    _FINGERPRINTS.format(table="fingerprints"),
    "CREATE TABLE IF NOT EXISTS peaks (song_id UInt64, data String) ENGINE = MergeTree ORDER BY song_id"
    " SETTINGS index_granularity = 256",
)
_SONG_COLUMNS = "song_id, song_name, blob_sha1, total_hashes, duration_seconds, created"
# The query's pairs travel as an external table. `hash IN (SELECT ...)` lets the primary key
# skip granules (a bare JOIN scans the table), as PREWHERE: the other columns are read only for the
# rows that pass (first step 28 -> 24 ms, one lookup of every hash 53 -> 46 ms, 1,000 songs).
# Offsets are unsigned, so they become Int64 before subtracting. The (song, delta) groups are keyed
# by one UInt64, song_id << 33 | (delta + 2**32) (offsets are UInt32, so |delta| < 2**32): one
# 64-bit key aggregates faster than the pair of columns (10,000 songs, 10 s clips, ~400,000 rows a
# clip on one instance: 297 -> 189 ms p50, the same histograms).
# A song's hashes are written before its songs row, so the songs filter hides a song until it
# is complete (and forever, if its ingest died half way). The filter runs on the grouped songs,
# not on the joined rows (77 -> 56 ms p50 at 1,000 songs).
_DELTA_BITS = 33
_GROUP = f"bitShiftLeft({_SONG_ID}, {_DELTA_BITS}) + toUInt64({_OFFSET} - toInt64(q_offset) + {1 << 32})"


def _aligned(joined: str, key: str) -> str:
    """The top songs' offset histograms of ``joined`` rows (each index row with its query offset),
    counting the distinct ``key`` values of each (song, delta) group."""
    return f"""
SELECT song_id, groupArray(delta), groupArray(cnt), max(cnt) AS peak FROM (
    SELECT bitShiftRight(k, {_DELTA_BITS}) AS song_id,
        toInt64(bitAnd(k, {(1 << _DELTA_BITS) - 1})) - {1 << 32} AS delta, cnt FROM (
        SELECT {_GROUP} AS k, uniqExact({key}) AS cnt FROM {joined} GROUP BY k))
GROUP BY song_id HAVING song_id IN (SELECT song_id FROM songs) ORDER BY peak DESC, song_id LIMIT %(top_k)s
"""


_ALIGN = _aligned("fingerprints ALL INNER JOIN q USING (hash) PREWHERE hash IN (SELECT hash FROM q)", "hash")
# A clip's triplet keys: the rows whose (hash, third) the clip sends, grouped as in _ALIGN. The
# (hash, third) prefix of the sort order lets each key read only its own granules (100,000 songs,
# ~1,900 keys, one instance: 0.8-1.3 M rows read in 68-111 ms, against 1.5-4.5 M in 121-290 ms
# reading every granule of the keys' hashes); each key is joined as one UInt64, hash << 16 | third.
_ALIGN_TRIPLETS = _aligned(
    "(SELECT bitShiftLeft(toUInt64(hash), 16) + third AS key, song_hi, song_lo, offset_hi, offset_lo"
    " FROM fingerprints PREWHERE (hash, third) IN (SELECT hash, third FROM q)) ALL INNER JOIN q USING (key)",
    "key",
)
# Rows per hash value, counted in fingerprints itself: reading the hash column of the granules
# the lookup reads anyway cost no more than the separate counts table of the previous layout
# (5.5 vs 5.8 ms on one part), which took 2 kB per minute of audio. Rows of a song being deleted
# count until the background delete has run: their values look a little more common meanwhile.
_COUNTS = "SELECT hash, count() FROM fingerprints PREWHERE hash IN (SELECT hash FROM q) GROUP BY hash"
# Raw rows of a set of values, of stored songs only (a song being deleted or ingested is hidden, as
# in _ALIGN; here the filter runs on the rows, which are not grouped).
_ROWS = f"""
SELECT hash, {_SONG_ID} AS song_id, {_OFFSET} FROM fingerprints
PREWHERE hash IN (SELECT hash FROM q) WHERE song_id IN (SELECT song_id FROM songs)
"""
_QUERY_STRUCTURE = [("hash", "UInt32"), ("q_offset", "UInt32")]
_TRIPLET_STRUCTURE = [("key", "UInt64"), ("hash", "UInt32"), ("third", "UInt16"), ("q_offset", "UInt32")]
_ERRORS = (ch_errors.Error, OSError, EOFError)
_MUTATION_WAIT_S = 30.0
log = logging.getLogger(__name__)


_MAINTENANCE_TIMEOUT_S = 24 * 3600  # compact merges every part of a table: minutes on a large instance
_COMPACT_TRIES = 5  # OPTIMIZE ... FINAL, again while the table has more than one part
_MERGE_POLL_S = 1.0  # how often compact looks whether the table's background merges have ended


def _connect(db: DatabaseConfig, query_timeout_s: float | None = None, database: str | None = None) -> Client:
    """A client (it connects on first use): connect_timeout_s to connect, query_timeout_s (the
    database's, unless given) for each statement."""
    return Client(
        host=db.host,
        port=db.port,
        user=db.user or "default",
        password=db.password,
        database=db.database if database is None else database,
        connect_timeout=db.connect_timeout_s,
        send_receive_timeout=query_timeout_s or db.query_timeout_s,
        sync_request_timeout=db.connect_timeout_s,
    )


# The writer locks' folder: fixed, so that every process of this host finds the same lock whatever
# its TMPDIR (gunicorn workers, `tunescout ingest` and a cron job seldom share an environment), and
# shared by every user (the files are made readable by all; flock needs no write access).
WRITER_LOCK_DIR = Path("/tmp")


def _lock_file(path: Path) -> int:
    """An open descriptor of path holding its exclusive flock (made if missing); close it to release."""
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            try:  # O_EXCL: an O_CREAT open of another user's file in /tmp is refused (protected_regular)
                fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.fchmod(fd, 0o644)  # whatever the umask
            except FileExistsError:
                continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # removed (a temp cleaner) while we waited: lock the file that is there now


def _song(row) -> Song:
    song_id, name, sha1, total, duration, created = row
    return Song(int(song_id), name, sha1, int(total), float(duration), created.strftime("%Y-%m-%dT%H:%M:%SZ"))


class _ClickHouseBase:
    def __init__(self, db: DatabaseConfig):
        self.db = db
        self.name = f"clickhouse {db.host}:{db.port}/{db.database}"
        self._clients = ThreadConnections(lambda: _connect(db), lambda c: c.disconnect())
        self._ready = False

    def _run(self, sql: str, params=None, **kw) -> list:
        """Execute with this thread's client; a failure drops it and raises StorageError."""
        try:
            return self._clients.get().execute(sql, params, **kw)
        except _ERRORS as exc:
            self._clients.drop()
            if isinstance(exc, ch_errors.ServerException) and exc.code == ch_errors.ErrorCodes.UNKNOWN_DATABASE:
                self._ready = False
            raise self._failed("Storage query failed", exc) from exc

    def _failed(self, message: str, exc: BaseException) -> StorageError:
        """The StorageError a client sees (the log keeps what and where)."""
        log.warning("%s: %s: %s", self.name, message, exc)
        return StorageError(message)

    def _create(self, statements) -> None:
        """Create the database and tables on first use."""
        if self._ready:
            return
        try:
            bootstrap = _connect(self.db, database="default")
            try:
                bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS `{self.db.database}`")
            finally:
                bootstrap.disconnect()
        except _ERRORS as exc:
            raise self._failed("Cannot create the database", exc) from exc
        for statement in statements:
            self._run(statement)
        self._ready = True

    def close(self) -> None:
        self._clients.close()


class ClickHouseStore(_ClickHouseBase):
    """Fingerprints and songs in one ClickHouse database (MergeTree tables)."""

    def __init__(self, db: DatabaseConfig, slot: IdSlot = IdSlot(0, 1)):
        super().__init__(db)
        self.slot = slot
        self._has_thirds = False  # the fingerprints table has the third column (known once prepared)
        key = hashlib.sha1(self.name.encode()).hexdigest()[:16]
        self._lock_path = WRITER_LOCK_DIR / f"tunescout-clickhouse-{key}.lock"

    def ensure_schema(self, params_digest: str, features: dict[str, str] | None = None) -> dict[str, str]:
        """Under the writer lock, which add_songs takes too: no song can arrive between finding the
        index empty and recording a feature. A fingerprints table without third points (made by an
        earlier release) keeps them missing while it holds rows: the third-point feature is left out."""
        self._create(_SCHEMA)
        wanted, features = {"params_digest": params_digest, "id_slot": str(self.slot)}, dict(features or {})
        with self._writer():
            stored = dict(
                self._run(
                    "SELECT name, any(value) FROM meta WHERE name IN %(names)s GROUP BY name",
                    {"names": (*wanted, *features)},
                )
            )
            check_meta(self.name, stored, wanted)
            self._upgrade()
            if not self._has_thirds:
                features.pop(THIRD_POINT_FEATURE, None)
            new = {k: v for k, v in wanted.items() if k not in stored}
            if any(key not in stored for key in features):
                holds_songs = bool(self._run("SELECT 1 FROM songs LIMIT 1"))
                new.update(features_to_record(stored, features, holds_songs))
            if new:
                self._run("INSERT INTO meta (name, value) VALUES", list(new.items()))
        return recorded_features(self.name, {**stored, **new}, features)

    def _columns(self) -> set[str]:
        rows = self._run(
            "SELECT name FROM system.columns WHERE database = %(db)s AND table = 'fingerprints'",
            {"db": self.db.database},
        )
        return {name for (name,) in rows}

    def _upgrade(self) -> None:
        """Rewrite an index of an earlier layout into the current one: whole song_id and offset
        columns (and a hash_counts table) into split ones; an empty table without third points into
        one with them (a table that holds rows keeps its layout: its rows have no third points).
        Called with the writer lock held; an upgrade that died half way starts again from the old
        table, which is dropped last."""
        columns = self._columns()
        if "song_id" in columns:
            self._run("DROP TABLE IF EXISTS fingerprints_new")
            self._run(_FINGERPRINTS.format(table="fingerprints_new"))
            self._run(
                "INSERT INTO fingerprints_new (hash, song_hi, song_lo, offset_hi, offset_lo)"
                f" SELECT hash, intDiv(song_id, {_SPLIT}), song_id % {_SPLIT}, intDiv(offset, {_SPLIT}),"
                f" offset % {_SPLIT} FROM fingerprints"
            )
            self._run("RENAME TABLE fingerprints TO fingerprints_old, fingerprints_new TO fingerprints")
        elif "third" not in columns and not self._run("SELECT 1 FROM fingerprints LIMIT 1"):
            self._run("DROP TABLE fingerprints")
            self._run(_FINGERPRINTS.format(table="fingerprints"))
        self._run("DROP TABLE IF EXISTS fingerprints_old")
        self._run("DROP TABLE IF EXISTS hash_counts")
        self._has_thirds = "third" in self._columns()

    @contextlib.contextmanager
    def _writer(self):
        """Serialise writes to this instance across threads and processes of this host.

        ClickHouse has no transactions: choosing the next id and writing a song must not
        interleave with another writer's.
        """
        fd = _lock_file(self._lock_path)
        try:
            yield
        finally:
            os.close(fd)  # releases the lock

    def add_song(self, song: NewSong) -> int:
        return self.add_songs([song])[0]

    def add_songs(self, songs: list[NewSong]) -> list[int]:
        """One columnar insert of every song's hashes, then their songs rows (visible at once): a
        bulk load (bench/shards.py) makes one part, where a song at a time makes one each."""
        with self._writer():
            known = self._run(
                "SELECT blob_sha1 FROM songs WHERE blob_sha1 IN %(sha1s)s", {"sha1s": tuple(s.blob_sha1 for s in songs)}
            )
            if known:
                raise DuplicateSongError(blob_sha1=known[0][0])
            # Ids past every id ever handed out: the last one is recorded in meta before any hash
            # is written, so a deleted song's id and the hashes of an ingest that died are never
            # reused (and the fingerprints table need not be scanned).
            last = self._meta_max("last_song_id") or None
            ids = []
            for _ in songs:
                last = self.slot.next_id(last)
                ids.append(last)
            self._run("INSERT INTO meta (name, value) VALUES", [("last_song_id", str(last))])
            hashes = np.concatenate([s.hashes for s in songs]).astype(np.int64)
            offsets = np.concatenate([s.offsets for s in songs]).astype(np.int64)
            thirds = np.concatenate(
                [np.zeros(s.hashes.size, np.int64) if s.thirds is None else s.thirds for s in songs]
            )
            song_ids = np.repeat(np.array(ids, np.int64), [s.hashes.size for s in songs])
            order = np.lexsort((thirds, hashes))
            hashes, offsets, song_ids, thirds = hashes[order], offsets[order], song_ids[order], thirds[order]
            columns = [
                hashes.tolist(),
                (song_ids // _SPLIT).tolist(),
                (song_ids % _SPLIT).tolist(),
                (offsets // _SPLIT).tolist(),
                (offsets % _SPLIT).tolist(),
            ]
            names = "hash, song_hi, song_lo, offset_hi, offset_lo"
            if self._has_thirds:
                columns.append(thirds.astype(np.int64).tolist())
                names += ", third"
            self._run(f"INSERT INTO fingerprints ({names}) VALUES", columns, columnar=True)
            self._run("INSERT INTO peaks (song_id, data) VALUES", [(i, s.packed_peaks()) for i, s in zip(ids, songs)])
            self._run(
                "INSERT INTO songs (song_id, song_name, blob_sha1, total_hashes, duration_seconds) VALUES",
                [(i, s.song_name, s.blob_sha1, int(s.hashes.size), s.duration_seconds) for i, s in zip(ids, songs)],
            )
            self._bump()
        return ids

    def find_sha1(self, blob_sha1: str) -> Song | None:
        rows = self._run(f"SELECT {_SONG_COLUMNS} FROM songs WHERE blob_sha1 = %(sha1)s LIMIT 1", {"sha1": blob_sha1})
        return _song(rows[0]) if rows else None

    def hash_counts(self, values: np.ndarray) -> np.ndarray:
        """Exact counts, counted in the fingerprints table (see _COUNTS)."""
        if values.size == 0:
            return np.zeros(0, np.int64)
        query = {"name": "q", "structure": [("hash", "UInt32")], "data": [{"hash": h} for h in values.tolist()]}
        return counts_of_rows(values, self._run(_COUNTS, external_tables=[query]))

    def common_hash_counts(self, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
        return arrays_of_counts(
            self._run(
                "SELECT hash, count() AS n FROM fingerprints GROUP BY hash HAVING n >= %(min)s ORDER BY hash",
                {"min": int(min_rows)},
            )
        )

    def best_alignments(self, hashes: np.ndarray, offsets: np.ndarray, top_k: int) -> list[Histogram]:
        if hashes.size == 0:
            return []
        query = {
            "name": "q",
            "structure": _QUERY_STRUCTURE,
            "data": [{"hash": h, "q_offset": o} for h, o in zip(hashes.tolist(), offsets.tolist())],
        }
        rows = self._run(_ALIGN, {"top_k": int(top_k)}, external_tables=[query])
        return [
            Histogram(int(song_id), np.asarray(deltas, np.int64), np.asarray(counts, np.int64))
            for song_id, deltas, counts, _ in rows
        ]

    def triplet_alignments(
        self, hashes: np.ndarray, thirds: np.ndarray, offsets: np.ndarray, top_k: int
    ) -> list[Histogram]:
        """best_alignments of a clip's triplet keys (see _ALIGN_TRIPLETS): only on an index whose
        rows carry their third points (the third-point feature)."""
        if hashes.size == 0:
            return []
        query = {
            "name": "q",
            "structure": _TRIPLET_STRUCTURE,
            "data": [
                {"key": h << 16 | t, "hash": h, "third": t, "q_offset": o}
                for h, t, o in zip(hashes.tolist(), thirds.tolist(), offsets.tolist())
            ],
        }
        rows = self._run(_ALIGN_TRIPLETS, {"top_k": int(top_k)}, external_tables=[query])
        return [
            Histogram(int(song_id), np.asarray(deltas, np.int64), np.asarray(counts, np.int64))
            for song_id, deltas, counts, _ in rows
        ]

    def rows(self, values: np.ndarray, song_id: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows of the values (an external table, PREWHERE as in _COUNTS) of stored songs."""
        values = distinct(values)
        if values.size == 0:
            return arrays_of_rows([])
        query = {"name": "q", "structure": [("hash", "UInt32")], "data": [{"hash": h} for h in values.tolist()]}
        sql, params = (_ROWS, None) if song_id is None else (_ROWS + " AND song_id = %(song)s", {"song": int(song_id)})
        columns = self._run(sql, params, external_tables=[query], columnar=True)
        if not columns:
            return arrays_of_rows([])
        hashes, song_ids, offsets = columns
        return np.array(hashes, np.uint32), np.array(song_ids, np.int64), np.array(offsets, np.int64)

    def rows_between(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The granules of a range of hashes (the sort key's prefix), of stored songs."""
        columns = self._run(
            f"SELECT hash, {_SONG_ID} AS song_id, {_OFFSET} FROM fingerprints"
            " PREWHERE hash >= %(lo)s AND hash < %(hi)s WHERE song_id IN (SELECT song_id FROM songs)",
            {"lo": int(lo), "hi": int(hi)},
            columnar=True,
        )
        if not columns:
            return arrays_of_rows([])
        hashes, song_ids, offsets = columns
        return np.array(hashes, np.uint32), np.array(song_ids, np.int64), np.array(offsets, np.int64)

    def get_songs(self, song_ids: list[int]) -> dict[int, Song]:
        if not song_ids:
            return {}
        rows = self._run(
            f"SELECT {_SONG_COLUMNS} FROM songs WHERE song_id IN %(ids)s", {"ids": tuple(int(i) for i in song_ids)}
        )
        return {song.song_id: song for song in map(_song, rows)}

    def song_peaks(self, song_ids: list[int]) -> dict[int, bytes]:
        if not song_ids:
            return {}
        rows = self._run(
            "SELECT song_id, data FROM peaks WHERE song_id IN %(ids)s"
            " AND song_id IN (SELECT song_id FROM songs)",  # a deleted song's peaks go in the background
            {"ids": tuple(int(i) for i in song_ids)},
            settings={"strings_as_bytes": True},
        )
        return {int(song_id): data for song_id, data in rows}

    def songs_without_peaks(self, after_id: int, limit: int) -> list[int]:
        rows = self._run(
            "SELECT song_id FROM songs WHERE song_id > %(after)s AND song_id NOT IN (SELECT song_id FROM peaks)"
            " ORDER BY song_id LIMIT %(limit)s",
            {"after": int(after_id), "limit": int(limit)},
        )
        return [int(song_id) for (song_id,) in rows]

    def song_rows(self, song_ids: list[int]) -> SongRows:
        """One scan of the fingerprints (sorted by hash, not by song), of the songs still stored."""
        if not song_ids:
            return {}
        columns = self._run(
            f"SELECT hash, {_SONG_ID} AS song_id, {_OFFSET} FROM fingerprints"
            " WHERE song_id IN %(ids)s AND song_id IN (SELECT song_id FROM songs)",
            {"ids": tuple(int(i) for i in song_ids)},
            columnar=True,
        )
        if not columns:
            return {}
        return rows_by_song(*(np.array(c, np.int64) for c in columns))

    def add_peaks(self, peaks: dict[int, bytes]) -> int:
        if not peaks:
            return 0
        with self._writer():
            wanted = self._run(
                "SELECT song_id FROM songs WHERE song_id IN %(ids)s AND song_id NOT IN (SELECT song_id FROM peaks)",
                {"ids": tuple(int(i) for i in peaks)},
            )
            wanted = {int(song_id) for (song_id,) in wanted}
            if wanted:
                self._run("INSERT INTO peaks (song_id, data) VALUES", [(i, peaks[i]) for i in sorted(wanted)])
        return len(wanted)

    def count_songs(self) -> int:
        return int(self._run("SELECT count() FROM songs")[0][0])

    def list_songs(self, after_id: int, limit: int) -> list[Song]:
        rows = self._run(
            f"SELECT {_SONG_COLUMNS} FROM songs WHERE song_id > %(after)s ORDER BY song_id LIMIT %(limit)s",
            {"after": int(after_id), "limit": int(limit)},
        )
        return [_song(row) for row in rows]

    def delete_song(self, song_id: int) -> bool:
        """Hide the song at once (its songs row goes first), then drop its hashes in the background."""
        with self._writer():
            if not self.get_songs([song_id]):
                return False
            self._mutate("songs", song_id)
            self._bump()
            self._run("ALTER TABLE peaks DELETE WHERE song_id = %(id)s", {"id": int(song_id)})
            self._run(
                "ALTER TABLE fingerprints DELETE WHERE song_hi = %(hi)s AND song_lo = %(lo)s",
                {"hi": int(song_id) // _SPLIT, "lo": int(song_id) % _SPLIT},
            )
        return True

    def _mutate(self, table: str, song_id: int) -> None:
        """ALTER ... DELETE and wait until the mutation is applied (18.16 has no mutations_sync)."""
        self._run(f"ALTER TABLE {table} DELETE WHERE song_id = %(id)s", {"id": int(song_id)})
        deadline = time.monotonic() + _MUTATION_WAIT_S
        while self._run(
            "SELECT count() FROM system.mutations WHERE database = %(db)s AND table = %(table)s AND is_done = 0",
            {"db": self.db.database, "table": table},
        )[0][0]:
            if time.monotonic() > deadline:
                raise StorageError("The delete did not finish in time")
            time.sleep(0.02)

    def stats(self) -> dict:
        songs, hashes = self._run("SELECT count(), sum(total_hashes) FROM songs")[0]
        size = self._run(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = %(db)s", {"db": self.db.database}
        )[0][0]
        return {"songs": int(songs), "hashes": int(hashes or 0), "index_bytes": int(size or 0)}

    def compact(self) -> None:
        """Merge each table into one part: every lookup pays for each part it reads (10 s clip at
        1,000 songs: first step 22 -> 15 ms, 4 parts -> 1 per instance). ClickHouse skips an
        OPTIMIZE, silently, while background merges of the table run (after a bulk load they run
        for minutes): it waits for them, and tries again while more than one part is left."""
        client = _connect(self.db, _MAINTENANCE_TIMEOUT_S)
        where = {"db": self.db.database}
        try:
            with self._writer():
                for table in ("meta", "songs", "fingerprints"):
                    for _ in range(_COMPACT_TRIES):
                        while client.execute(
                            "SELECT count() FROM system.merges WHERE database = %(db)s AND table = %(table)s",
                            {**where, "table": table},
                        )[0][0]:
                            time.sleep(_MERGE_POLL_S)
                        client.execute(f"OPTIMIZE TABLE {table} FINAL")
                        parts = client.execute(
                            "SELECT count() FROM system.parts WHERE active AND database = %(db)s AND table = %(table)s",
                            {**where, "table": table},
                        )[0][0]
                        if parts <= 1:
                            break
        except _ERRORS as exc:
            raise self._failed("Compact failed", exc) from exc
        finally:
            client.disconnect()

    def generation(self) -> int:
        return self._meta_max("generation")

    def _meta_max(self, name: str) -> int:
        return int(self._run("SELECT max(toUInt64OrZero(value)) FROM meta WHERE name = %(name)s", {"name": name})[0][0])

    def _bump(self) -> None:
        """After the change is visible (no transactions: a reader that sees the new generation
        also sees the change). Called with the writer lock held."""
        self._run("INSERT INTO meta (name, value) VALUES", [("generation", str(self.generation() + 1))])

    def check(self) -> None:
        self._run("SELECT 1")

    def services(self) -> dict[str, bool]:
        return {}


class ClickHouseResultStore(_ClickHouseBase):
    """Recognition results in one ClickHouse database."""

    _TABLES = (
        "CREATE TABLE IF NOT EXISTS results (token String, body String, created DateTime DEFAULT now())"
        " ENGINE = MergeTree ORDER BY token SETTINGS index_granularity = 256",
        "CREATE TABLE IF NOT EXISTS scan_jobs (token String, seq Int64, written Int64, body String)"
        " ENGINE = MergeTree ORDER BY (token, seq) SETTINGS index_granularity = 256",
    )

    def __init__(self, db: DatabaseConfig):
        super().__init__(db)

    def put_result(self, token: str, body: str) -> None:
        self._create(self._TABLES)
        self._run("INSERT INTO results (token, body) VALUES", [(token, body)])

    def get_result(self, token: str) -> str | None:
        self._create(self._TABLES)
        rows = self._run("SELECT body FROM results WHERE token = %(token)s LIMIT 1", {"token": token})
        return rows[0][0] if rows else None

    def count_results(self) -> int:
        self._create(self._TABLES)
        return int(self._run("SELECT count() FROM results")[0][0])

    def put_job(self, token: str, seq: int, body: str, written: int) -> None:
        self._create(self._TABLES)
        self._run("INSERT INTO scan_jobs (token, seq, written, body) VALUES", [(token, seq, written, body)])

    def get_job(self, token: str) -> tuple[int, str] | None:
        self._create(self._TABLES)
        sql = "SELECT seq, body FROM scan_jobs WHERE token = %(token)s ORDER BY seq DESC LIMIT 1"
        rows = self._run(sql, {"token": token})
        return (int(rows[0][0]), rows[0][1]) if rows else None

    def purge_jobs(self, before: int) -> None:
        self._create(self._TABLES)
        # a mutation, applied in the background (no one waits for a purge)
        done = "SELECT token FROM scan_jobs GROUP BY token HAVING max(written) < %(before)s"
        self._run(f"ALTER TABLE scan_jobs DELETE WHERE token IN ({done})", {"before": int(before)})
