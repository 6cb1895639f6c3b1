"""CachedStore: a fingerprint instance's lookups cached in its own Redis database, never stale.

Key: ``{prefix}:lookup:{instance}:{generation}:{sha1 of the query's hashes, offsets, top_k}``
(hash counts: ``...:{generation}:counts:{sha1 of the hash values}``; raw rows:
``...:{generation}:rows:{sha1 of the distinct hash values}``).
The generation is read from the instance's database, where every add and delete bumps it in the
same transaction as the change, so once a change is visible no cached answer from before it can
be found, even if Redis missed the moment of the change. Entries expire after ``redis.ttl_s``;
old generations simply age out (run Redis with ``maxmemory`` and ``allkeys-lru`` to bound memory).
When Redis is down or slow, lookups go straight to the database and Redis is probed again after a
back-off.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from dejavu import distinct

from ..config import RedisConfig
from .backoff import Backoff
from .base import FingerprintStore, Histogram, StoreLayer

log = logging.getLogger(__name__)
MAX_ENTRY_BYTES = 256 * 1024  # larger answers are not worth the memory


def redis_client(config: RedisConfig, db: int) -> redis.Redis:
    """A client of one Redis database with short timeouts (the cache must never slow a query)."""
    return redis.Redis(
        host=config.host,
        port=config.port,
        db=db,
        username=config.user or None,
        password=config.password or None,
        socket_timeout=config.timeout_s,
        socket_connect_timeout=config.timeout_s,
        retry=Retry(NoBackoff(), 0),
    )  # no retries: a miss is cheaper than waiting


def encode(histograms: list[Histogram]) -> bytes:
    """Histograms as one zlib-compressed int64 array: per song [song_id, n, deltas..., counts...]
    (deltas as differences from the previous one, which compress well)."""
    parts = [np.concatenate(([h.song_id, h.deltas.size], np.diff(h.deltas, prepend=0), h.counts)) for h in histograms]
    return zlib.compress(np.concatenate(parts).astype("<i8").tobytes(), 1) if parts else b""


def decode(payload: bytes) -> list[Histogram]:
    values = np.frombuffer(zlib.decompress(payload), dtype="<i8") if payload else np.zeros(0, np.int64)
    out, i = [], 0
    while i < values.size:
        song_id, n = int(values[i]), int(values[i + 1])
        out.append(Histogram(song_id, np.cumsum(values[i + 2 : i + 2 + n]), values[i + 2 + n : i + 2 + 2 * n].copy()))
        i += 2 + 2 * n
    return out


def encode_rows(rows: tuple[np.ndarray, np.ndarray, np.ndarray]) -> bytes | None:
    """rows()' arrays zlib-compressed: the row count, hashes (uint32), song ids (int64), offsets
    (int32, as the index stores them); None for more rows than an entry can hold (about 24,000:
    zlib leaves 55-65 % of their 16 bytes each, 5 ms for 16,000 rows, so it is not tried beyond)."""
    hashes, song_ids, offsets = rows
    if hashes.size * 16 > MAX_ENTRY_BYTES * 3 // 2:
        return None
    parts = (np.array([hashes.size], "<i8"), hashes.astype("<u4"), song_ids.astype("<i8"), offsets.astype("<i4"))
    return zlib.compress(b"".join(part.tobytes() for part in parts), 1)


def decode_rows(payload: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    raw = zlib.decompress(payload)
    n = int(np.frombuffer(raw, "<i8", 1)[0])
    hashes = np.frombuffer(raw, "<u4", n, 8).astype(np.uint32)
    song_ids = np.frombuffer(raw, "<i8", n, 8 + 4 * n).astype(np.int64)
    return hashes, song_ids, np.frombuffer(raw, "<i4", n, 8 + 12 * n).astype(np.int64)


def query_digest(hashes: np.ndarray, offsets: np.ndarray, top_k: int) -> str:
    h = hashlib.sha1(np.ascontiguousarray(hashes, "<u4" if hashes.dtype.itemsize <= 4 else "<u8").tobytes())
    h.update(np.ascontiguousarray(offsets, "<i4").tobytes())
    h.update(str(top_k).encode())
    return h.hexdigest()


class CachedStore(StoreLayer):
    """A FingerprintStore whose hash_counts, best_alignments and rows answers are cached in Redis; every
    other method passes to the store below, and services() adds Redis."""

    def __init__(self, store: FingerprintStore, client: redis.Redis, prefix: str, ttl_s: int, clock=time.monotonic):
        super().__init__(store)
        self.client = client
        self.ttl_s = ttl_s
        instance = hashlib.sha1(store.name.encode()).hexdigest()[:12]
        self.namespace = f"{prefix}:lookup:{instance}"
        self.redis_health = Backoff(1, clock)
        self.hits = self.misses = 0

    def hash_counts(self, values: np.ndarray) -> np.ndarray:
        digest = hashlib.sha1(np.ascontiguousarray(values, "<u4").tobytes()).hexdigest()
        return self._cached(
            f"{self.store.generation()}:counts:{digest}",
            lambda: self.store.hash_counts(values),
            lambda counts: zlib.compress(np.asarray(counts, "<i8").tobytes(), 1),
            lambda payload: np.frombuffer(zlib.decompress(payload), "<i8").astype(np.int64),
            tally=False,
        )

    def rows(self, values: np.ndarray, song_id: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cached like hash counts, keyed on the distinct values and the song (not tallied: hits
        and misses count lookups)."""
        values = distinct(values)
        digest = hashlib.sha1(np.ascontiguousarray(values, "<u4").tobytes()).hexdigest()
        return self._cached(
            f"{self.store.generation()}:rows:{digest}" + ("" if song_id is None else f":{int(song_id)}"),
            lambda: self.store.rows(values, song_id),
            encode_rows,
            decode_rows,
            tally=False,
        )

    def best_alignments(self, hashes: np.ndarray, offsets: np.ndarray, top_k: int) -> list[Histogram]:
        return self._cached(
            f"{self.store.generation()}:{query_digest(hashes, offsets, top_k)}",
            lambda: self.store.best_alignments(hashes, offsets, top_k),
            encode,
            decode,
        )

    def triplet_alignments(
        self, hashes: np.ndarray, thirds: np.ndarray, offsets: np.ndarray, top_k: int
    ) -> list[Histogram]:
        keys = (hashes.astype(np.uint64) << np.uint64(16)) | thirds.astype(np.uint64)
        return self._cached(
            f"{self.store.generation()}:t:{query_digest(keys, offsets, top_k)}",
            lambda: self.store.triplet_alignments(hashes, thirds, offsets, top_k),
            encode,
            decode,
        )

    def _cached(self, key: str, compute, dump, load, tally: bool = True):
        """load(Redis's value of key) if there is one, else compute() (stored for next time);
        tally: count it in hits and misses (lookups are counted, hash counts are not)."""
        key = f"{self.namespace}:{key}"
        payload = self._redis(lambda: self.client.get(key))
        if payload is not None:
            self.hits += tally
            return load(payload)
        self.misses += tally
        answer = compute()
        value = dump(answer)  # None: not worth keeping
        if value is not None and len(value) <= MAX_ENTRY_BYTES:
            self._redis(lambda: self.client.set(key, value, ex=self.ttl_s))
        return answer

    def redis_up(self) -> bool:
        """Probe Redis now (for health); True if it answers."""
        return self._redis(self.client.ping, force=True) is True

    def services(self) -> dict[str, bool]:
        return {**self.store.services(), "redis": self.redis_up()}

    def _redis(self, call, force: bool = False):
        """call() unless Redis is backed off; None on any Redis error."""
        if not force and not self.redis_health.usable(0):
            return None
        try:
            result = call()
        except redis.RedisError as exc:
            log.warning("redis cache unavailable, querying the database directly: %s", exc)
            self.redis_health.failed(0)
            return None
        self.redis_health.ok(0)
        return result
