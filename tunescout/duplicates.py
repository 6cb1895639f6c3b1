"""Duplicates inside the catalogue: songs that hold each other's audio, found from the index alone.

A song's own pair rows are looked up as if they were a clip: every other song's rows of the same
hash values, joined with the song's, vote for (other song, offset between them). The same audio in
two songs puts many rows on one offset, over the whole span the two share; chance puts one or two.
A shared span is where those rows lie, split where they stop for ``gap_seconds``: a re-encode covers
both songs, an edit several spans of the longer version, a song inside a compilation one span of it.
No audio is read. Clips played at another speed are not found (pair hashes need the same time scale).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

import dejavu
from dejavu import robust as triplets
from dejavu.hashing import ragged_arange

from .storage.base import instance_of

PAGE = 100  # songs listed at a time


@dataclasses.dataclass(frozen=True)
class DuplicateParams:
    """What counts as shared audio between two songs."""

    min_aligned: int = 25  # rows on one offset in one span (chance: 1-2 at 100,000 songs)
    min_seconds: float = 5.0  # the shortest shared span reported
    gap_seconds: float = 4.0  # a span ends where its rows stop for this long ...
    edge_rows: int = 3  # ... its edges are rows with this many within edge_seconds
    edge_seconds: float = 2.0
    tolerance_frames: int = 1  # rows within this many frames of an offset vote for it
    max_offsets: int = 8  # offsets looked at per pair of songs (an edit of many cuts: one each)


@dataclasses.dataclass(frozen=True)
class Span:
    """Audio two songs share: where it lies in each, and the rows that agree on it."""

    start_seconds: float  # in the song checked
    end_seconds: float
    other_start_seconds: float  # in the other song
    other_end_seconds: float
    aligned: int


@dataclasses.dataclass(frozen=True)
class Duplicate:
    """A pair of songs that share audio, with every span they share."""

    song_id: int
    song_name: str
    other_id: int
    other_name: str
    spans: tuple[Span, ...]

    @property
    def key(self) -> tuple[int, int]:
        return min(self.song_id, self.other_id), max(self.song_id, self.other_id)

    def body(self) -> dict:
        return {
            "song_id": self.song_id,
            "song_name": self.song_name,
            "other_id": self.other_id,
            "other_name": self.other_name,
            "shared_seconds": round(sum(s.end_seconds - s.start_seconds for s in self.spans), 2),
            "spans": [dataclasses.asdict(s) for s in self.spans],
        }


def duplicates_of(engine, song_id: int, params: DuplicateParams = DuplicateParams()) -> list[Duplicate]:
    """The songs that share audio with one song, most shared first (none for an unknown song).

    Raises:
        StorageError: the song's instance does not answer.
    """
    store = engine.store
    rows = store.prepared(instance_of(song_id, len(store.stores))).song_rows([song_id])
    if song_id not in rows:
        return []
    hashes, offsets = rows[song_id]
    pair = ~triplets.is_triplet_hash(hashes)
    hashes, offsets = hashes[pair].astype(np.uint32), offsets[pair].astype(np.int64)
    index = store.rows(dejavu.distinct(hashes))
    found = shared_spans(song_id, hashes, offsets, index, params, engine.params.frame_seconds)
    if not found:
        return []
    songs, _ = store.get_songs([song_id, *found])
    if song_id not in songs:
        return []
    out = [
        Duplicate(song_id, songs[song_id].song_name, other, songs[other].song_name, tuple(spans))
        for other, spans in found.items()
        if other in songs
    ]
    return sorted(out, key=lambda d: -sum(s.end_seconds - s.start_seconds for s in d.spans))


def shared_spans(
    song_id: int, hashes: np.ndarray, offsets: np.ndarray, index, params: DuplicateParams, frame_s: float
) -> dict[int, list[Span]]:
    """{other song: the spans it shares with this one}, from the song's pair rows and the index's rows
    (``RowsAnswer``) of their hash values."""
    other = (index.song_ids != song_id) & ~triplets.is_triplet_hash(index.hashes)
    order = np.argsort(index.hashes[other], kind="stable")
    r_hashes, r_songs, r_offsets = (a[other][order] for a in (index.hashes, index.song_ids, index.offsets))
    lo = np.searchsorted(r_hashes, hashes, "left")
    n = np.searchsorted(r_hashes, hashes, "right") - lo
    mine = np.repeat(np.arange(hashes.size), n)
    at = np.repeat(lo, n) + ragged_arange(n)
    songs, at_song, deltas = r_songs[at], offsets[mine], r_offsets[at] - offsets[mine]
    out: dict[int, list[Span]] = {}
    for other_id, delta, _ in _voted(songs, deltas, params):
        near = (songs == other_id) & (np.abs(deltas - delta) <= params.tolerance_frames)
        for first, last, aligned in _runs(np.sort(at_song[near]), params, frame_s):
            span = Span(
                round(first * frame_s, 2),
                round(last * frame_s, 2),
                round((first + delta) * frame_s, 2),
                round((last + delta) * frame_s, 2),
                aligned,
            )
            out.setdefault(int(other_id), []).append(span)
    return {k: sorted(v, key=lambda s: s.start_seconds) for k, v in out.items()}


def _voted(songs: np.ndarray, deltas: np.ndarray, params: DuplicateParams) -> Iterator[tuple[int, int, int]]:
    """(other song, offset, rows) of every offset that at least min_aligned rows agree on (within
    tolerance_frames), up to max_offsets per song, the strongest first."""
    if not songs.size:
        return
    tol = params.tolerance_frames
    shift = int(deltas.min()) - tol
    width = int(deltas.max()) - shift + tol + 1
    keys, counts = np.unique(songs * width + (deltas - shift), return_counts=True)
    cumulative = np.r_[0, np.cumsum(counts)]
    near = cumulative[np.searchsorted(keys, keys + tol, "right")] - cumulative[np.searchsorted(keys, keys - tol)]
    strong = near >= params.min_aligned
    taken: dict[int, list[int]] = {}
    for i in np.flatnonzero(strong)[np.argsort(-near[strong], kind="stable")]:
        song, delta = divmod(int(keys[i]), width)
        delta += shift
        mine = taken.setdefault(song, [])
        if len(mine) < params.max_offsets and all(abs(delta - d) > 2 * tol for d in mine):
            mine.append(delta)
            yield song, delta, int(near[i])


def _runs(frames: np.ndarray, params: DuplicateParams, frame_s: float) -> Iterator[tuple[int, int, int]]:
    """(first, last, rows) of the runs of sorted frames without a gap of gap_seconds, each long and
    dense enough; a run's edges are its first and last rows with edge_rows rows within edge_seconds
    (a lone chance row next to a span does not stretch it)."""
    if not frames.size:
        return
    edge = params.edge_seconds / frame_s
    dense_after = np.searchsorted(frames, frames + edge, "right") - np.arange(frames.size) >= params.edge_rows
    dense_before = np.arange(frames.size) + 1 - np.searchsorted(frames, frames - edge) >= params.edge_rows
    breaks = np.flatnonzero(np.diff(frames) > params.gap_seconds / frame_s)
    for lo, hi in zip(np.r_[0, breaks + 1], np.r_[breaks + 1, frames.size]):
        starts, ends = np.flatnonzero(dense_after[lo:hi]), np.flatnonzero(dense_before[lo:hi])
        if not starts.size or not ends.size:
            continue
        first, last = int(frames[lo + starts[0]]), int(frames[lo + ends[-1]])
        rows = int(ends[-1] - starts[0] + 1)
        if rows >= params.min_aligned and (last - first) * frame_s >= params.min_seconds:
            yield first, last, rows


@dataclasses.dataclass
class DuplicateRun:
    """A check of the whole catalogue (or of the songs added since a date), song by song, that can
    stop and go on: ``after`` is the last song id checked, ``reported`` the pairs already found."""

    since: str | None = None
    after: int = 0
    checked: int = 0
    reported: list = dataclasses.field(default_factory=list)  # [song_id, other_id], smaller first

    @classmethod
    def load(cls, path: Path | None, since: str | None) -> DuplicateRun:
        """The run a state file holds (a new one if there is none, or it was for another --since)."""
        if path is None or not path.exists():
            return cls(since)
        state = cls(**json.loads(path.read_text()))
        return state if state.since == since else cls(since)

    def save(self, path: Path | None) -> None:
        if path is not None:
            partial = path.with_suffix(path.suffix + ".part")
            partial.write_text(json.dumps(dataclasses.asdict(self)))
            partial.replace(path)


def check_catalogue(
    engine,
    run: DuplicateRun,
    params: DuplicateParams = DuplicateParams(),
    checked: Callable[[DuplicateRun], None] = lambda run: None,
) -> Iterator[Duplicate]:
    """Every pair of songs sharing audio, each once, checking the songs after ``run.after`` (those
    created from ``run.since`` on, if given) against the whole catalogue; ``checked(run)`` after each
    song (to save the run, to show progress)."""
    since = _parse_time(run.since) if run.since else None
    reported = {tuple(pair) for pair in run.reported}
    while True:
        page, _ = engine.store.list_songs(run.after, PAGE)
        if not page:
            return
        for song in page:
            if since is None or _parse_time(song.created) >= since:
                for found in duplicates_of(engine, song.song_id, params):
                    if found.key not in reported:
                        reported.add(found.key)
                        run.reported.append(list(found.key))
                        yield found
            run.after, run.checked = song.song_id, run.checked + 1
            checked(run)


def _parse_time(text: str) -> datetime.datetime:
    """A song's ``created`` or a --since date (UTC), naive."""
    parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed.astimezone(datetime.timezone.utc).replace(tzinfo=None) if parsed.tzinfo else parsed
