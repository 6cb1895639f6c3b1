"""Engine: the only module that wires dejavu, storage, results and audio together."""
from __future__ import annotations

import dataclasses
import functools
import json
import re
import time
from pathlib import PurePath

import numpy as np

import dejavu
from dejavu import Alignment, FingerprintParams, MatchParams

from . import metrics
from .audio import Decoded, decode_audio, decode_query
from .cache import CachedStore, redis_client
from .config import Config
from .errors import BadRequestError, NotFoundError, StorageError
from .results import ResultShards
from .storage import open_result_store, open_store
from .storage.base import NewSong, Song, instance_of
from .storage.sharded import ShardedStore
from .storage.snapshot import CountsSnapshot

TOP_RESULTS = 3
MAX_SONG_ID = 2**53   # larger ids are never handed out (and overflow some drivers)
_UNSAFE = re.compile(r"[^\w\s.,()&'+-]+")


def safe_song_name(name: str) -> str:
    """A display name without path parts or control characters (at most 200 chars)."""
    name = PurePath(name.replace("\\", "/")).name if name else ""
    name = _UNSAFE.sub("_", name).strip(" ._")
    return name[:200] or "untitled"


def analyse(source, name: str, params: FingerprintParams = dejavu.DEFAULT_PARAMS) -> NewSong:
    """Decode and fingerprint one song, without storing it (what :meth:`Engine.fingerprint` stores).

    A plain function of picklable arguments, so that bulk ingest can run it in a pool of processes
    (decoding and fingerprinting are CPU-bound) and store the results from one place.

    Raises:
        BadAudioError: undecodable input.
    """
    decoded = decode_audio(source, params.sample_rate_hz)
    hashes, offsets = dejavu.fingerprint_reference(decoded.samples, params)
    return NewSong(name, decoded.pcm_sha1, decoded.duration_seconds, hashes, offsets)


class Engine:
    """Fingerprint songs, recognise clips, keep results."""

    def __init__(self, config: Config, store: ShardedStore, results: ResultShards,
                 params: FingerprintParams = dejavu.DEFAULT_PARAMS,
                 match: MatchParams = dejavu.DEFAULT_MATCH):
        self.config = config
        self.store = store
        self.results = results
        self.params = params
        self.match = match
        store.ensure_schema(params.digest())

    @classmethod
    def from_config(cls, config: Config) -> "Engine":
        """Open every configured instance and result shard."""
        stores = [open_store(config, i) for i in range(len(config.instances))]
        if config.redis.host:
            stores = [CachedStore(store, redis_client(config.redis, instance.redis_db_index),
                                  config.redis.prefix, config.redis.ttl_s)
                      for store, instance in zip(stores, config.instances)]
        if config.recognizing.counts_refresh_s:
            stores = [CountsSnapshot(store, config.recognizing.counts_refresh_s,
                                     on_load=functools.partial(metrics.counts_copy_loaded, i))
                      for i, store in enumerate(stores)]
        shards = [open_result_store(config, i) for i in range(len(config.results))]
        return cls(config, ShardedStore(stores, config.recognizing.instance_timeout_s,
                                        on_failure=metrics.instance_failed),
                   ResultShards(shards))

    def fingerprint(self, source, name: str) -> dict:
        """Decode, fingerprint and store one song.

        Raises:
            BadAudioError: undecodable input.
            DuplicateSongError: the same audio is already stored.
            StorageError: no instance can take it.
        """
        return self.store_song(analyse(source, name, self.params))

    def fingerprint_packed(self, data: bytes, name: str) -> dict:
        """Store a song fingerprinted by the client (dejavu.pack_fingerprint format).

        Raises:
            BadRequestError: not that format, or made with other fingerprint parameters.
            DuplicateSongError: the same audio is already stored.
            StorageError: no instance can take it.
        """
        try:
            packed = dejavu.unpack_fingerprint(data)
        except dejavu.FormatError as exc:
            raise BadRequestError(f"Invalid fingerprint: {exc}") from None
        served = self.params.digest()
        if packed.params_digest != served:
            raise BadRequestError(f"Fingerprint parameters {packed.params_digest} are not served here "
                                  f"(this server uses {served})", params_digest=served)
        if packed.hashes.size and int(packed.hashes.max()) >= 1 << dejavu.HASH_BITS:
            raise BadRequestError("Invalid fingerprint: hash out of range")
        return self.store_song(NewSong(name, packed.pcm_sha1, packed.duration_seconds, packed.hashes,
                                       packed.offsets))

    def store_song(self, song: NewSong) -> dict:
        """Store a song made by :func:`analyse` (or unpacked from a client's fingerprint).

        Raises:
            DuplicateSongError: the same audio is already stored.
            StorageError: no instance can take it.
        """
        song = dataclasses.replace(song, song_name=safe_song_name(song.song_name),
                                   duration_seconds=round(song.duration_seconds, 3))
        song_id = self.store.add_song(song)
        return {"status": "success", "song_id": song_id, "song_name": song.song_name,
                "blob_sha1": song.blob_sha1, "total_hashes": int(song.hashes.size)}

    def recognize(self, data: bytes, start_seconds: float = 0.0,
                  duration_seconds: float | None = None) -> dict:
        """Recognise a clip, store the result, and return it with its token.

        Raises:
            BadRequestError: start or duration out of range.
            BadAudioError: undecodable input.
            StorageError: no result shard can store the result.
        """
        max_duration = self.config.recognizing.max_duration
        if start_seconds < 0 or (duration_seconds is not None and duration_seconds <= 0):
            raise BadRequestError("start must be >= 0 and duration > 0")
        duration = min(duration_seconds or max_duration, max_duration)
        clock = _Stopwatch()
        decoded = decode_query(data, self.params.sample_rate_hz, start_seconds, duration)
        clock.lap("decode")
        body = self.match_samples(decoded, clock)
        token = self.results.save(lambda t: json.dumps({**body, "token": t}))
        return {"status": "success", "token": token, **body}

    def match_samples(self, decoded: Decoded, clock: "_Stopwatch | None" = None) -> dict:
        """The result fields for decoded query audio (no result stored)."""
        clock = clock or _Stopwatch()
        hashes, offsets = dejavu.fingerprint_query(decoded.samples, self.params)
        clock.lap("fingerprint")
        search = self.search(hashes, offsets)
        clock.lap("query")
        query_frames = decoded.samples.shape[0] // self.params.hop_length
        results = self._rank(search.scored, int(hashes.size), query_frames)
        clock.lap("align")
        body = {"results": results, "timings": clock.laps}
        if search.unanswered:
            body.update(degraded=True, instances_unanswered=search.unanswered)
        return body

    def search(self, hashes: np.ndarray, offsets: np.ndarray) -> "Search":
        """Look the query's hashes up on every instance and score the candidate songs.

        When the hashes hold more than ``match.row_budget`` index rows (or ``match.row_budget_share``
        of their rows, if more), the rarest of them are looked up first, as many as the budget
        holds (they point at few songs and cost few rows); a song that then clears the
        bar by ``match.early_stop_margin`` is the answer. Otherwise every hash the index holds is
        looked up (all of them if no instance answers the counts). The bar always counts every
        hash the query made.
        """
        n_query, top_k, budget = int(hashes.size), self.match.candidates, self.match.row_budget
        lookups, counts = 1, None
        if budget and n_query:
            values = dejavu.distinct(hashes)
            counts = self.store.hash_counts(values)
        if counts is not None:
            rows = int(counts.sum())
            budget = max(budget, int(self.match.row_budget_share * rows))
            if rows > budget:
                first = np.isin(hashes, dejavu.rarest_hashes(values, counts, budget))
                lookup = self.store.lookup(hashes[first], offsets[first], top_k)
                scored = self.score_candidates(lookup.histograms, n_query)
                if scored and scored[0][0] >= self.match.early_stop_margin:
                    metrics.search_finished(1)
                    return Search(scored, lookup.unanswered, 1)
                lookups = 2
            held = np.isin(hashes, values[counts > 0])
            hashes, offsets = hashes[held], offsets[held]
        lookup = self.store.lookup(hashes, offsets, top_k)
        metrics.search_finished(lookups)
        return Search(self.score_candidates(lookup.histograms, n_query), lookup.unanswered, lookups)

    def fetch(self, token: str) -> dict:
        """The stored result of a token.

        Raises:
            NotFoundError: malformed or unknown token.
        """
        return {"status": "success", **json.loads(self.results.load(token))}

    def health(self) -> dict:
        """Status and round-trip of every fingerprint instance, result shard and Redis cache.

        Raises:
            StorageError: no fingerprint instance or no result shard answers (503).
        """
        def entry(i, instance, ms):
            return {"index": i, "database_type": instance.database_type,
                    "status": "up" if ms is not None else "down",
                    "latency_ms": round(ms, 2) if ms is not None else None}
        instances = [entry(i, inst, ms) for i, (inst, ms) in
                     enumerate(zip(self.config.instances, self.store.check_all()))]
        shards = [entry(i, inst, ms) for i, (inst, ms) in
                  enumerate(zip(self.config.results, self.results.check_all()))]
        body = {"status": "ok", "params_digest": self.params.digest(), "instances": instances,
                "results": shards}
        caches = [s for s in self.store.stores if isinstance(s, CachedStore)]
        if caches:
            up = [c.redis_up() for c in caches]
            body["redis"] = {"status": "up" if all(up) else "down"}
        parts = [*instances, *shards]
        if not any(e["status"] == "up" for e in instances) or not any(e["status"] == "up" for e in shards):
            raise StorageError("No storage answers", **body)
        if any(e["status"] == "down" for e in parts) or body.get("redis", {}).get("status") == "down":
            body["degraded"] = True
        return body

    def list_songs(self, limit: int, cursor: str | None) -> dict:
        """A page of the catalogue by song id; ``next_cursor`` continues it (stable across instances).

        Raises:
            BadRequestError: malformed cursor or limit.
        """
        if not 1 <= limit <= 1000:
            raise BadRequestError("limit must be between 1 and 1000")
        after = 0
        if cursor:
            if not re.fullmatch(r"[0-9]{1,18}", cursor):
                raise BadRequestError("Malformed cursor")
            after = int(cursor)
        songs, unanswered = self.store.list_songs(after, limit)
        body = {"status": "success", "songs": [self._song(s) for s in songs],
                "next_cursor": str(songs[-1].song_id) if len(songs) == limit else None}
        if unanswered:
            body.update(degraded=True, instances_unanswered=unanswered)
        return body

    def get_song(self, song_id: int) -> dict:
        """One song of the catalogue.

        Raises:
            NotFoundError: no such song.
        """
        songs = self.store.get_songs([song_id]) if 1 <= song_id <= MAX_SONG_ID else {}
        if song_id not in songs:
            raise NotFoundError("Song not found")
        return {"status": "success", "song": self._song(songs[song_id])}

    def delete_song(self, song_id: int) -> dict:
        """Remove a song and its hashes; its clips stop matching at once (cached answers included).

        Raises:
            NotFoundError: no such song.
            StorageError: its instance does not answer.
        """
        if not 1 <= song_id <= MAX_SONG_ID or not self.store.delete_song(song_id):
            raise NotFoundError("Song not found")
        return {"status": "success", "deleted": song_id}

    def stats(self) -> dict:
        """Songs, hashes and index bytes per instance; results per shard."""
        per_instance = self.store.stats()
        results = self.results.count_results()
        instances = [{"index": i, "database_type": inst.database_type,
                      **(st if st is not None else {"status": "down"})}
                     for i, (inst, st) in enumerate(zip(self.config.instances, per_instance))]
        up = [st for st in per_instance if st is not None]
        return {"status": "success",
                "songs": sum(st["songs"] for st in up), "hashes": sum(st["hashes"] for st in up),
                "index_bytes": sum(st["index_bytes"] for st in up), "instances": instances,
                "results": [{"index": i, "stored": n} if n is not None else {"index": i, "status": "down"}
                            for i, n in enumerate(results)],
                "results_stored": sum(n for n in results if n is not None)}

    def compact(self) -> dict:
        """Compact every instance in turn, without the lookup timeout (a maintenance task).

        An instance that fails is reported as down; the others are compacted all the same.
        """
        instances = []
        for i in range(len(self.store.stores)):
            start = time.perf_counter()
            try:
                store = self.store.prepared(i)
                before = store.stats()["index_bytes"]
                store.compact()
                after = store.stats()["index_bytes"]
            except StorageError:
                instances.append({"index": i, "status": "down"})
                continue
            instances.append({"index": i, "index_bytes_before": before, "index_bytes": after,
                              "seconds": round(time.perf_counter() - start, 3)})
        status = "success" if all("seconds" in inst for inst in instances) else "degraded"
        return {"status": status, "instances": instances}

    def _song(self, song: Song) -> dict:
        return {"song_id": song.song_id, "song_name": song.song_name, "blob_sha1": song.blob_sha1,
                "total_hashes": song.total_hashes, "duration": song.duration_seconds,
                "instance": instance_of(song.song_id, len(self.config.instances)), "created": song.created}

    def close(self) -> None:
        self.store.close()
        self.results.close()

    def score_candidates(self, histograms, query_hashes: int) -> list[tuple[float, Alignment]]:
        """Every candidate song's best alignment with its no-match margin, best first."""
        if not histograms:
            return []
        song_ids = np.concatenate([np.full(h.deltas.size, h.song_id) for h in histograms])
        deltas = np.concatenate([h.deltas for h in histograms])
        counts = np.concatenate([h.counts for h in histograms])
        alignments = dejavu.align_matches(song_ids, deltas, counts, self.match.tolerance_frames)
        scored = []
        for rank, a in enumerate(alignments):
            runner_up = alignments[1 if rank == 0 else 0].aligned if len(alignments) > 1 else 0
            scored.append((dejavu.match_margin(a.aligned, a.matched, runner_up, query_hashes, self.match), a))
        return sorted(scored, key=lambda s: -s[0])

    def _rank(self, scored: list[tuple[float, Alignment]], n_query: int, query_frames: int) -> list[dict]:
        passing = [s for s in scored if s[0] >= 0][:TOP_RESULTS]
        songs = self.store.get_songs([a.song_id for _, a in passing])
        return [self._result(a, margin, songs[a.song_id], n_query, query_frames)
                for margin, a in passing if a.song_id in songs]

    def _result(self, a: Alignment, margin: float, song: Song, n_query: int,
                query_frames: int) -> dict:
        aligned = min(a.aligned, n_query)
        frame_s = self.params.frame_seconds
        song_frames = max(song.duration_seconds / frame_s, 1.0)
        # Hashes the index holds for the span the clip covers (an estimate: uniform density).
        expected = max(song.total_hashes * min(query_frames / song_frames, 1.0), 1.0)
        return {"song_id": song.song_id, "song_name": song.song_name,
                "input_total_hashes": n_query, "fingerprinted_hashes_in_db": song.total_hashes,
                "hashes_matched_in_input": aligned,
                "input_confidence": round(aligned / max(n_query, 1), 4),
                "fingerprinted_confidence": round(min(aligned / expected, 1.0), 4),
                "offset": a.offset_frames, "offset_seconds": round(a.offset_frames * frame_s, 3),
                "blob_sha1": song.blob_sha1,
                "confidence": round(dejavu.margin_to_confidence(margin, self.match), 4)}


@dataclasses.dataclass(frozen=True)
class Search:
    """What :meth:`Engine.search` found, and what it cost."""

    scored: list            # (margin, Alignment), best first
    unanswered: int         # instances that were down, slow or failing
    lookups: int            # 1: answered by the rarest hashes, or all looked up at once; 2: both


@dataclasses.dataclass
class _Stopwatch:
    laps: dict = dataclasses.field(default_factory=dict)
    last: float = dataclasses.field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round((now - self.last) * 1000, 2)
        self.last = now
