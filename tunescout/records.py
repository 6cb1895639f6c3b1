"""The records the engine returns, and body(): each one's JSON body on the wire (API and CLI alike)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Match:
    """One song a clip matched (the fields of a result in TuneScout's wire format)."""

    song_id: int
    song_name: str
    input_total_hashes: int  # hashes of the clip
    fingerprinted_hashes_in_db: int  # hashes stored for the song
    hashes_matched_in_input: int  # clip hashes that agree on the winning offset
    input_confidence: float  # their share of the clip's hashes
    fingerprinted_confidence: float  # their share of the song's hashes over the clip's span (estimate)
    offset: int  # frames of the song, in the song's own time, where the clip starts
    offset_seconds: float  # the same in seconds of the song's own time
    blob_sha1: str
    confidence: float  # in [0, 1]: 0.5 at the no-match bar, rising with the margin
    time_scale: float = 1.0  # clip seconds per song second (> 1: the clip plays slower)
    frequency_scale: float = 1.0  # clip Hz per song Hz (> 1: the clip sounds higher); 1.0 on the pair path


@dataclasses.dataclass(frozen=True)
class Recognition:
    """What a clip matched (best first; empty: not in the catalogue) and what each step took."""

    results: list[Match]
    timings: dict[str, float]  # ms per step: decode, fingerprint, query, align
    unanswered: int = 0  # instances that were down, slow or failing
    token: str | None = None  # where the result is stored (GET /api/fetch/<token>)

    def body(self) -> dict:
        body = {"status": "success"} if self.token is None else {"status": "success", "token": self.token}
        body.update(results=[dataclasses.asdict(m) for m in self.results], timings=self.timings)
        if self.unanswered:
            body.update(degraded=True, instances_unanswered=self.unanswered)
        return body


@dataclasses.dataclass(frozen=True)
class StoredSong:
    """A song just fingerprinted into the catalogue."""

    song_id: int
    song_name: str
    blob_sha1: str
    total_hashes: int

    def body(self) -> dict:
        return {"status": "success", **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class SongInfo:
    """A song of the catalogue."""

    song_id: int
    song_name: str
    blob_sha1: str
    total_hashes: int
    duration: float  # seconds
    instance: int  # the fingerprint instance that holds it
    created: str  # ISO 8601, UTC

    def body(self) -> dict:
        return {"status": "success", "song": dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class SongPage:
    """A page of the catalogue by song id."""

    songs: list[SongInfo]
    next_cursor: str | None  # continues the listing; None on the last page
    unanswered: int = 0  # instances whose songs are missing from the page

    def body(self) -> dict:
        body = {
            "status": "success",
            "songs": [dataclasses.asdict(s) for s in self.songs],
            "next_cursor": self.next_cursor,
        }
        if self.unanswered:
            body.update(degraded=True, instances_unanswered=self.unanswered)
        return body


@dataclasses.dataclass(frozen=True)
class Deleted:
    song_id: int

    def body(self) -> dict:
        return {"status": "success", "deleted": self.song_id}


@dataclasses.dataclass(frozen=True)
class Part:
    """One fingerprint instance or result shard: its state and round trip."""

    index: int
    database_type: str
    latency_ms: float | None  # None: it did not answer
    speed_pitch_robust: bool | None = None  # fingerprint instances: holds the robust family (None: a result shard)
    triplet_keys: bool | None = None  # fingerprint instances: its pair rows carry third points
    peaks: bool | None = None  # fingerprint instances: every song keeps its peaks (None: a shard, or no answer)
    memory_loaded: bool | None = None  # with recognizing.memory_index: this worker's copy is in (None: no copy)
    memory_rows: int | None = None  # ... and the rows it holds

    @property
    def up(self) -> bool:
        return self.latency_ms is not None

    def body(self) -> dict:
        return {
            "index": self.index,
            "database_type": self.database_type,
            "status": "up" if self.up else "down",
            "latency_ms": round(self.latency_ms, 2) if self.up else None,
        } | {
            name: value
            for name, value in (
                ("speed_pitch_robust", self.speed_pitch_robust),
                ("triplet_keys", self.triplet_keys),
                ("peaks", self.peaks),
                ("memory_loaded", self.memory_loaded),
                ("memory_rows", self.memory_rows),
            )
            if value is not None
        }


@dataclasses.dataclass(frozen=True)
class Health:
    """Every part the service depends on, probed now."""

    params_digest: str
    instances: list[Part]
    results: list[Part]
    services: dict[str, bool]  # other services in use ("redis") -> answers

    @property
    def serving(self) -> bool:
        """At least one fingerprint instance and one result shard answer."""
        return any(p.up for p in self.instances) and any(p.up for p in self.results)

    @property
    def degraded(self) -> bool:
        return not all(p.up for p in (*self.instances, *self.results)) or not all(self.services.values())

    @property
    def speed_pitch_robust(self) -> bool | str:
        """Whether the index answers speed, tempo and pitch changes: True on every instance, False on
        none (an index made by an earlier release), "partial" on some."""
        robust = [bool(p.speed_pitch_robust) for p in self.instances]
        return all(robust) if all(robust) or not any(robust) else "partial"

    @property
    def peak_verification(self) -> bool | str:
        """Whether peak verification and the tempo fit reach every song: True when every instance
        that answered keeps every song's peaks, False when none does (songs stored by an earlier
        release: `tunescout upgrade` gives them peaks), "partial" otherwise."""
        peaks = [p.peaks for p in self.instances if p.peaks is not None]
        return all(peaks) if all(peaks) or not any(peaks) else "partial"

    @property
    def triplet_keys(self) -> bool:
        """Whether the triplet lookup runs: every instance keeps its pair rows' third points."""
        return all(bool(p.triplet_keys) for p in self.instances)

    def body(self) -> dict:
        body = {
            "status": "ok" if self.serving else "error",
            "params_digest": self.params_digest,
            "speed_pitch_robust": self.speed_pitch_robust,
            "triplet_keys": self.triplet_keys,
            "peak_verification": self.peak_verification,
            "instances": [p.body() for p in self.instances],
            "results": [p.body() for p in self.results],
        }
        body.update({name: {"status": "up" if up else "down"} for name, up in self.services.items()})
        if self.degraded:
            body["degraded"] = True
        return body


@dataclasses.dataclass(frozen=True)
class InstanceStats:
    index: int
    database_type: str
    songs: int | None  # None: the instance did not answer
    hashes: int | None
    index_bytes: int | None

    def body(self) -> dict:
        if self.songs is None:
            return {"index": self.index, "database_type": self.database_type, "status": "down"}
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Stats:
    """Songs, hashes and index bytes per instance; results stored per shard (None: down)."""

    instances: list[InstanceStats]
    results: list[int | None]

    def body(self) -> dict:
        up = [s for s in self.instances if s.songs is not None]
        return {
            "status": "success",
            "songs": sum(s.songs for s in up),
            "hashes": sum(s.hashes for s in up),
            "index_bytes": sum(s.index_bytes for s in up),
            "instances": [s.body() for s in self.instances],
            "results": [
                {"index": i, "stored": n} if n is not None else {"index": i, "status": "down"}
                for i, n in enumerate(self.results)
            ],
            "results_stored": sum(n for n in self.results if n is not None),
        }


@dataclasses.dataclass(frozen=True)
class Compacted:
    """One instance compacted (index bytes before and after), or down (None)."""

    index: int
    index_bytes_before: int | None
    index_bytes: int | None
    seconds: float | None

    def body(self) -> dict:
        if self.seconds is None:
            return {"index": self.index, "status": "down"}
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PeaksAdded:
    """One instance's songs given the peaks of their stored rows, or down (None)."""

    index: int
    songs: int | None
    seconds: float | None

    def body(self) -> dict:
        if self.seconds is None:
            return {"index": self.index, "status": "down"}
        return {"index": self.index, "songs_given_peaks": self.songs, "seconds": self.seconds}


@dataclasses.dataclass(frozen=True)
class Maintenance:
    """A maintenance task run on every instance in turn: each one's record (Compacted, PeaksAdded),
    whose ``seconds`` is None where the instance was down."""

    instances: list

    @property
    def complete(self) -> bool:
        return all(c.seconds is not None for c in self.instances)

    def body(self) -> dict:
        return {"status": "success" if self.complete else "degraded", "instances": [c.body() for c in self.instances]}


class Compaction(Maintenance):
    """`tunescout compact`: each instance's index bytes before and after."""


class Upgrade(Maintenance):
    """`tunescout upgrade`: each instance's songs given peaks."""
