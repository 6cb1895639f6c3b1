"""Engine: the only module that wires dejavu, storage, results and audio together; ingest, recognition,
the catalogue and its operations, each returning a record of tunescout.records."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable
from pathlib import PurePath

import numpy as np

import dejavu
from dejavu import FingerprintParams, MatchParams, RobustParams
from dejavu import robust as triplets
from dejavu.verify import pack_peaks, pair_peaks

from . import metrics
from .audio import MAX_START_SECONDS, Decoded, decode_audio, decode_query
from .config import Config, FingerprintingConfig
from .contract import MAX_PAGE_SIZE
from .duplicates import Duplicate, duplicates_of
from .errors import BadRequestError, NotFoundError, StorageError, UnprocessableError
from .records import (
    Compacted,
    Compaction,
    Deleted,
    Health,
    InstanceStats,
    Part,
    PeaksAdded,
    Recognition,
    SongInfo,
    SongPage,
    Stats,
    StoredSong,
    Upgrade,
)
from .results import ResultShards
from .search import ROBUST_FEATURE, Search, Searcher
from .storage.base import THIRD_POINT_FEATURE, THIRD_POINT_VERSION, FingerprintStore, NewSong, Song, instance_of
from .storage.memindex import MemoryIndex
from .storage.sharded import ShardedStore
from .storage.stack import layers, open_catalogue, open_result_stores

MAX_SONG_ID = 2**53  # larger ids are never handed out (and overflow some drivers)
UPGRADE_BATCH = 500  # songs whose rows one read of `tunescout upgrade` takes (a full scan on some backends)
_UNSAFE = re.compile(r"[^\w\s.,()&'+-]+")


def safe_song_name(name: str) -> str:
    """A display name without path parts or control characters (at most 200 chars)."""
    name = PurePath(name.replace("\\", "/")).name if name else ""
    name = _UNSAFE.sub("_", name).strip(" ._")
    return name[:200] or "untitled"


def analyse(
    source,
    name: str,
    params: FingerprintParams = dejavu.DEFAULT_PARAMS,
    max_seconds: float = FingerprintingConfig.max_duration,
    robust: RobustParams | None = dejavu.DEFAULT_ROBUST,
) -> NewSong:
    """Decode and fingerprint one song, without storing it (what :meth:`Engine.fingerprint` stores):
    its pair rows with their third points, then its robust (triplet) rows unless robust is None, from
    one spectrogram.

    A plain function of picklable arguments, so that bulk ingest can run it in a pool of processes
    (decoding and fingerprinting are CPU-bound) and store the results from one place. No more than
    max_seconds of audio is decoded (fingerprinting.max_duration): a song longer than that is refused
    rather than stored cut, whose end would then never match.

    Raises:
        BadAudioError: undecodable input.
        UnprocessableError: longer than max_seconds.
    """
    decoded = decode_audio(source, params.sample_rate_hz, max_seconds=max_seconds)
    if decoded.truncated:
        raise UnprocessableError(
            f"The audio is longer than fingerprinting.max_duration ({max_seconds:g} s); raise it to store this song"
        )
    if robust is None:
        hashes, offsets, thirds = dejavu.fingerprint_reference(decoded.samples, params, thirds=True)
    else:
        (hashes, offsets, thirds), robust_rows = triplets.fingerprint_reference_families(
            decoded.samples, params, robust, thirds=True
        )
        hashes, offsets = np.concatenate([hashes, robust_rows[0]]), np.concatenate([offsets, robust_rows[1]])
        thirds = np.concatenate([thirds, np.zeros(robust_rows[0].size, np.uint16)])
    return NewSong(name, decoded.pcm_sha1, decoded.duration_seconds, hashes, offsets, thirds)


class Engine:
    """Fingerprint songs, recognise clips, keep results, list and maintain the catalogue."""

    def __init__(
        self,
        config: Config,
        store: ShardedStore,
        results: ResultShards,
        params: FingerprintParams = dejavu.DEFAULT_PARAMS,
        match: MatchParams = dejavu.DEFAULT_MATCH,
        robust: RobustParams = dejavu.DEFAULT_ROBUST,
    ):
        self.config = config
        self.store = store
        self.results = results
        self.params = params
        self.robust = robust
        self.searcher = Searcher(store, params, match, robust)
        # A new instance records the robust family's digest, and (ClickHouse) that its pair rows carry
        # third points; one made by an earlier release that holds songs does not, and keeps what it
        # has (only the songs' audio could add the rest).
        store.ensure_schema(
            params.digest(), {ROBUST_FEATURE: robust.digest(), THIRD_POINT_FEATURE: THIRD_POINT_VERSION}
        )

    @classmethod
    def from_config(cls, config: Config, params: FingerprintParams = dejavu.DEFAULT_PARAMS) -> Engine:
        """Open every configured instance's stack and result shard (tunescout.storage.stack); ``params``
        another fingerprint design than the default (bench/quality.py --params)."""
        store = open_catalogue(
            config,
            on_failure=metrics.instance_failed,
            on_counts_load=metrics.counts_copy_loaded,
            on_memory_load=metrics.memory_index_loaded,
        )
        recognizing = config.recognizing
        # Pairs from memory cost less than the triplet keys' lookup in the databases (docs/SCALE.md):
        # the triplet keys are looked up first only to reject on them.
        match = dataclasses.replace(
            dejavu.DEFAULT_MATCH,
            triplets=recognizing.reject_on_triplets or not recognizing.memory_index,
            triplet_reject=recognizing.reject_on_triplets,
            chance_test=recognizing.reject_at_chance,
        )
        return cls(config, store, ResultShards(open_result_stores(config)), params=params, match=match)

    @property
    def match(self) -> MatchParams:
        return self.searcher.match

    def fingerprint(self, source, name: str) -> StoredSong:
        """Decode, fingerprint and store one song.

        Raises:
            BadAudioError: undecodable input.
            UnprocessableError: longer than fingerprinting.max_duration, or too few hashes.
            DuplicateSongError: the same audio is already stored.
            StorageError: no instance can take it.
        """
        return self.store_song(analyse(source, name, self.params, self.config.fingerprinting.max_duration, self.robust))

    def fingerprint_packed(self, data: bytes, name: str) -> StoredSong:
        """Store a song fingerprinted by the client (dejavu.pack_fingerprint format).

        Raises:
            BadRequestError: not that format, or made with other fingerprint parameters.
            UnprocessableError: the index rejects clips on their triplet keys, which such a fingerprint
                lacks (recognizing.reject_on_triplets): the song would never be found.
            DuplicateSongError: the same audio is already stored.
            StorageError: no instance can take it.
        """
        if self.match.triplets and self.match.triplet_reject and all(self.searcher.third_instances()):
            raise UnprocessableError(
                "This index answers clips from their triplet keys (recognizing.reject_on_triplets), which a "
                "client-made fingerprint does not carry: send the audio file instead"
            )
        try:
            packed = dejavu.unpack_fingerprint(data)
        except dejavu.FormatError as exc:
            raise BadRequestError(f"Invalid fingerprint: {exc}") from None
        served = self.params.digest()
        if packed.params_digest != served:
            raise BadRequestError(
                f"Fingerprint parameters {packed.params_digest} are not served here (this server uses {served})",
                params_digest=served,
            )
        robust = triplets.is_triplet_hash(packed.hashes)
        pair_range = packed.hashes[~robust] < 1 << dejavu.HASH_BITS
        robust_range = packed.hashes[robust] < triplets.TAG + (1 << 25)
        if not (pair_range.all() and robust_range.all()):
            raise BadRequestError("Invalid fingerprint: hash out of range")
        if robust.any() and packed.robust_digest != self.robust.digest():
            # rows of other robust parameters would never match here: store the pair family only
            packed = dataclasses.replace(packed, hashes=packed.hashes[~robust], offsets=packed.offsets[~robust])
        return self.store_song(NewSong(name, packed.pcm_sha1, packed.duration_seconds, packed.hashes, packed.offsets))

    def store_song(self, song: NewSong) -> StoredSong:
        """Store a song made by :func:`analyse` (or unpacked from a client's fingerprint).

        Raises:
            UnprocessableError: fewer hashes than fingerprinting.min_hashes (silence gives none).
            DuplicateSongError: the same audio is already stored.
            StorageError: no instance can take it.
        """
        least = self.config.fingerprinting.min_hashes
        pair = ~triplets.is_triplet_hash(song.hashes)
        if np.count_nonzero(pair) < least:
            raise UnprocessableError(
                f"The audio gives {np.count_nonzero(pair)} fingerprint hashes, fewer than the {least} a song needs "
                "to be recognised (silence or near-silence?)"
            )
        if not all(self.searcher.robust_instances()):
            # Its instance is chosen by the store: on an index with some instances of 1.0, the pair
            # family only, so that no instance holds rows its meta does not vouch for.
            thirds = None if song.thirds is None else song.thirds[pair]
            song = dataclasses.replace(song, hashes=song.hashes[pair], offsets=song.offsets[pair], thirds=thirds)
        if not all(self.searcher.third_instances()):
            song = dataclasses.replace(song, thirds=None)  # the same: third points only where all keep them
        song = dataclasses.replace(
            song, song_name=safe_song_name(song.song_name), duration_seconds=round(song.duration_seconds, 3)
        )
        song_id = self.store.add_song(song)
        return StoredSong(song_id, song.song_name, song.blob_sha1, int(song.hashes.size))

    def recognize(self, data: bytes, start_seconds: float = 0.0, duration_seconds: float | None = None) -> Recognition:
        """Recognise a clip and store the result under a new token.

        Raises:
            BadRequestError: start or duration out of range.
            BadAudioError: undecodable input.
            StorageError: no result shard can store the result.
        """
        max_duration = self.config.recognizing.max_duration
        if not 0 <= start_seconds <= MAX_START_SECONDS or (duration_seconds is not None and duration_seconds <= 0):
            raise BadRequestError(f"start must be between 0 and {MAX_START_SECONDS:g} seconds, and duration > 0")
        duration = min(duration_seconds or max_duration, max_duration)
        clock = _Stopwatch()
        decoded = decode_query(data, self.params.sample_rate_hz, start_seconds, duration)
        clock.lap("decode")
        found = self.match_samples(decoded, clock)
        token = self.results.save(lambda t: json.dumps(dataclasses.replace(found, token=t).body()))
        return dataclasses.replace(found, token=token)

    def match_samples(self, decoded: Decoded, clock: _Stopwatch | None = None) -> Recognition:
        """What decoded clip audio matches (no result stored)."""
        clock = clock or _Stopwatch()
        views: dict = {}  # the clip's spectrograms and peaks, shared by its queries and the robust path
        query_frames = decoded.samples.shape[0] // self.params.hop_length
        hashes, offsets = dejavu.fingerprint_query(decoded.samples, self.params, views=views)
        clock.lap("fingerprint")
        counted = self.searcher.hash_counts(hashes)
        if self._triplets_first(counted):
            # The pairs would read many rows: the triplet keys first (docs/ALGORITHM.md, step 6).
            keys = dejavu.fingerprint_triplets(decoded.samples, self.params, views)
            first = self.searcher.search_triplets(*keys)
            clock.lap("triplets")
            outcome = self.searcher.triplet_outcome(first)
            metrics.triplet_search(outcome)
            if outcome == "answered":
                results, unnamed = self.searcher.rank(first.scored, int(keys[0].size), query_frames)
                results = self._tempo_fitted(results, first, decoded, query_frames, views, clock)
                return Recognition(results, clock.laps, max(first.unanswered, unnamed))
            if outcome == "rejected":
                return Recognition([], clock.laps, first.unanswered)
        search = self.searcher.search(hashes, offsets, counted)
        clock.lap("query")
        results, unnamed = self.searcher.rank(search.scored, int(hashes.size), query_frames)
        clock.lap("align")
        unanswered = max(search.unanswered, unnamed)  # an instance that failed both counts once
        if not results and self.searcher.worth_a_second_query(search):
            # Near the bar: ask again with the richer query (docs/ALGORITHM.md).
            metrics.second_query()
            hashes, offsets = dejavu.fingerprint_query(decoded.samples, self.params, second=True, views=views)
            search = self.searcher.search(hashes, offsets)
            results, unnamed = self.searcher.rank(search.scored, int(hashes.size), query_frames)
            clock.lap("second")
            unanswered = max(unanswered, search.unanswered, unnamed)
        results = self._tempo_fitted(results, search, decoded, query_frames, views, clock)
        if not results and any(self.searcher.robust_instances()):
            # The pair path found no song: try speed, tempo and pitch changes (docs/ALGORITHM.md).
            results, robust_unanswered = self.searcher.search_robust(decoded.samples, views)
            clock.lap("robust")
            unanswered = max(unanswered, robust_unanswered)
        if not results and self.match.peak_verification:
            # Nothing answered: the best candidates re-scored by their peaks (docs/ALGORITHM.md).
            results, verify_unanswered = self.searcher.search_peaks(decoded.samples, search.scored, views)
            clock.lap("verify")
            unanswered = max(unanswered, verify_unanswered)
        return Recognition(results, clock.laps, unanswered)

    def _tempo_fitted(
        self, results: list, search: Search, decoded: Decoded, query_frames: int, views: dict, clock: _Stopwatch
    ) -> list:
        """A hash search's answers, those whose matches drift (a tempo change the hashes survive) with
        their scales fitted by the clip's peaks (docs/ALGORITHM.md, "The tempo of pair answers")."""
        if not (drifting := self.searcher.drifting(results, search, query_frames)):
            return results
        fitted = self.searcher.tempo_fitted(results, drifting, decoded.samples, views)
        clock.lap("tempo")
        return fitted

    def _triplets_first(self, counted: tuple[np.ndarray, np.ndarray] | None) -> bool:
        """Whether a clip's triplet keys are looked up before its pairs: every instance keeps third
        points, and the clip's pair hashes hold at least ``match.triplet_rows_from`` rows (in a small
        catalogue the pairs' first step costs less than the triplet lookup)."""
        match = self.match
        if not (match.triplets and all(self.searcher.third_instances())):
            return False
        return counted is None or int(counted[1].sum()) >= match.triplet_rows_from

    def fetch(self, token: str) -> dict:
        """The stored JSON body of a token's result.

        Raises:
            NotFoundError: malformed or unknown token.
        """
        return {"status": "success", **json.loads(self.results.load(token))}

    def health(self) -> Health:
        """Status and round trip of every fingerprint instance and result shard, and whether the
        other services they use (Redis) answer."""
        instances = [
            Part(i, inst.database_type, ms, robust, third, peaks, *_memory_copy(store))
            for i, (inst, ms, robust, third, peaks, store) in enumerate(
                zip(
                    self.config.instances,
                    self.store.check_all(),
                    self.searcher.robust_instances(),
                    self.searcher.third_instances(),
                    self.store.keep_peaks(),
                    self.store.stores,
                )
            )
        ]
        shards = [
            Part(i, inst.database_type, ms)
            for i, (inst, ms) in enumerate(zip(self.config.results, self.results.check_all()))
        ]
        return Health(self.params.digest(), instances, shards, self.store.services())

    def list_songs(self, limit: int, cursor: str | None) -> SongPage:
        """A page of the catalogue by song id; ``next_cursor`` continues it (stable across instances).

        Raises:
            BadRequestError: malformed cursor or limit.
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise BadRequestError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        after = 0
        if cursor:
            if not re.fullmatch(r"[0-9]{1,18}", cursor):
                raise BadRequestError("Malformed cursor")
            after = int(cursor)
        songs, unanswered = self.store.list_songs(after, limit)
        return SongPage(
            [self._info(s) for s in songs], str(songs[-1].song_id) if len(songs) == limit else None, unanswered
        )

    def get_song(self, song_id: int) -> SongInfo:
        """One song of the catalogue.

        Raises:
            NotFoundError: no such song.
            StorageError: the instance its id names does not answer.
        """
        songs, unanswered = self.store.get_songs([song_id]) if 1 <= song_id <= MAX_SONG_ID else ({}, 0)
        if unanswered:
            raise StorageError("The fingerprint instance that holds this song does not answer")
        if song_id not in songs:
            raise NotFoundError("Song not found")
        return self._info(songs[song_id])

    def duplicates(self, song_id: int) -> list[Duplicate]:
        """The songs that share audio with one song, most shared first (:mod:`tunescout.duplicates`).

        Raises:
            NotFoundError: no such song.
            StorageError: the instance its id names does not answer.
        """
        self.get_song(song_id)
        return duplicates_of(self, song_id)

    def delete_song(self, song_id: int) -> Deleted:
        """Remove a song and its hashes; its clips stop matching at once (cached answers included).

        Raises:
            NotFoundError: no such song.
            StorageError: its instance does not answer.
        """
        if not 1 <= song_id <= MAX_SONG_ID or not self.store.delete_song(song_id):
            raise NotFoundError("Song not found")
        return Deleted(song_id)

    def stats(self) -> Stats:
        """Songs, hashes and index bytes per instance; results per shard."""
        instances = [
            InstanceStats(
                i,
                inst.database_type,
                *((st["songs"], st["hashes"], st["index_bytes"]) if st is not None else (None, None, None)),
            )
            for i, (inst, st) in enumerate(zip(self.config.instances, self.store.stats()))
        ]
        return Stats(instances, self.results.count_results())

    def compact(self) -> Compaction:
        """Compact every instance in turn, without the lookup timeout (a maintenance task).

        An instance that fails is reported as down; the others are compacted all the same.
        """
        done = []
        for i in range(len(self.store.stores)):
            start = time.perf_counter()
            try:
                before, after = self.store.compact(i)
            except StorageError:
                done.append(Compacted(i, None, None, None))
                continue
            done.append(Compacted(i, before, after, round(time.perf_counter() - start, 3)))
        return Compaction(done)

    def upgrade(self, progress: Callable[[int], None] = lambda songs: None) -> Upgrade:
        """Bring every instance up to this release without audio: songs stored without peaks (by an
        earlier release) get the peaks of their stored pair rows, ``UPGRADE_BATCH`` at a time
        (``progress`` is told each batch's size). Recognition and ingest go on meanwhile; run again,
        it goes on where it stopped. An instance that fails is reported as down."""
        done = []
        for i in range(len(self.store.stores)):
            start = time.perf_counter()
            try:
                songs = _add_peaks(self.store.prepared(i), progress)
            except StorageError:
                done.append(PeaksAdded(i, None, None))
                continue
            done.append(PeaksAdded(i, songs, round(time.perf_counter() - start, 3)))
        return Upgrade(done)

    def _info(self, song: Song) -> SongInfo:
        return SongInfo(
            song.song_id,
            song.song_name,
            song.blob_sha1,
            song.total_hashes,
            song.duration_seconds,
            instance_of(song.song_id, len(self.config.instances)),
            song.created,
        )

    def close(self) -> None:
        self.store.close()
        self.results.close()


def _memory_copy(store: FingerprintStore) -> tuple[bool | None, int | None]:
    """Whether an instance's memory index (recognizing.memory_index) holds its copy, and its rows;
    (None, None) without one."""
    memory = next((layer for layer in layers(store) if isinstance(layer, MemoryIndex)), None)
    if memory is None:
        return None, None
    held = memory.held
    return held is not None, 0 if held is None else held.rows


def _add_peaks(store: FingerprintStore, progress: Callable[[int], None]) -> int:
    """Peaks for the songs of one instance that have none, from their stored rows; how many."""
    after, added = 0, 0
    while ids := store.songs_without_peaks(after, UPGRADE_BATCH):
        rows = store.song_rows(ids)  # a song deleted meanwhile has none: it is skipped
        added += store.add_peaks({i: pack_peaks(*pair_peaks(*rows[i])) for i in ids if i in rows})
        progress(len(ids))
        after = ids[-1]
    return added


@dataclasses.dataclass
class _Stopwatch:
    laps: dict = dataclasses.field(default_factory=dict)
    last: float = dataclasses.field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round((now - self.last) * 1000, 2)
        self.last = now
