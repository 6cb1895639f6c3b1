"""rarest_hashes and lookup_steps (what to look up, in which order), align_matches (histogram -> best
offset per song), and the significance of a match."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .params import MatchParams


@dataclasses.dataclass(frozen=True)
class Alignment:
    """The best time alignment of a query against one song."""

    song_id: int
    offset_frames: int  # song frame at which the query starts (may be < 0 near the start)
    aligned: int  # matches within +-tolerance frames of that offset
    matched: int  # matches of this song at any offset


def rarest_first(values: np.ndarray, counts: np.ndarray, mixed_ties: bool = False) -> np.ndarray:
    """Indices of the values the index holds (count > 0), rarest first.

    Ties keep the values' order, or with ``mixed_ties`` a fixed pseudo-random order (a mix of the
    value's bits), for values whose order follows their bit fields.
    """
    values, counts = np.asarray(values), np.asarray(counts, np.int64)
    if mixed_ties:
        mix = (values.astype(np.uint64) * np.uint64(0x9E3779B1)) & np.uint64(0xFFFFFFFF)
        order = np.lexsort((mix, counts))
    else:
        order = np.argsort(counts, kind="stable")
    return order[counts[order] > 0]


def rarest_hashes(values: np.ndarray, counts: np.ndarray, row_budget: int, mixed_ties: bool = False) -> np.ndarray:
    """The hash values to look up first: the rarest in the index, as many as fit in row_budget rows.

    A rare hash is informative (it points at few songs) and cheap to look up (it has few rows);
    a hash shared by hundreds of songs costs hundreds of rows and adds little but chance
    alignments. Values the index does not hold are left out (nothing to read).

    Parameters
    ----------
    values : np.ndarray [shape=(n,)], the query's distinct hash values
    counts : np.ndarray [shape=(n,)], int, index rows of each value (over all instances)
    row_budget : int, rows the chosen values may hold in all
    mixed_ties : bool, see :func:`rarest_first`

    Returns
    -------
    np.ndarray, the chosen values (a subset of ``values``, rarest first)
    """
    values, counts = np.asarray(values), np.asarray(counts, np.int64)
    order = rarest_first(values, counts, mixed_ties)
    return values[order[np.cumsum(counts[order]) <= row_budget]]


def lookup_steps(values: np.ndarray, counts: np.ndarray, row_budget: int, growth: float) -> list[np.ndarray]:
    """The hash values each step of a search looks up: the rarest within ``row_budget`` rows, then
    each step ``growth`` times the rows of the last, the last step every value the index holds.

    Each step's values include the previous step's. A step that would add no value is left out,
    and so is a first step that holds every value (one lookup is enough). ``row_budget`` 0: one step of every value.

    Parameters
    ----------
    values, counts, row_budget : as for :func:`rarest_hashes`
    growth : float > 1

    Returns
    -------
    list of np.ndarray, one per step (at least one; its last element is every held value)
    """
    values, counts = np.asarray(values), np.asarray(counts, np.int64)
    order = rarest_first(values, counts)
    rows = np.cumsum(counts[order])
    steps, budget, taken = [], float(row_budget), 0
    while row_budget > 0 and taken < order.size:
        within = int(np.searchsorted(rows, budget, side="right"))
        if within > taken:
            steps.append(values[order[:within]])
            taken = within
            budget = float(rows[taken - 1]) * growth
        else:
            budget *= growth
        if budget >= rows[-1]:
            break
    if not steps or steps[-1].size < order.size:
        steps.append(values[order])
    return steps


def out_of_reach(aligned: int, margin: float, share: float, z: float) -> bool:
    """Whether a song short of the bar after a partial lookup cannot clear it with every hash.

    The song aligned ``aligned`` hashes with ``share`` (0-1] of the evidence read, and stands
    ``margin`` (< 0) from the bar. Out of reach: its count plus ``z`` Poisson deviations, scaled
    up to all the evidence, stays below the bar (see MatchParams for what the share is).
    """
    bar = aligned - margin
    return (aligned + z * math.sqrt(aligned + 1)) / max(share, 1e-9) < bar


def align_matches(
    song_ids: np.ndarray, deltas: np.ndarray, counts: np.ndarray, tolerance_frames: int = 1
) -> list[Alignment]:
    """Find each song's best offset in a histogram of offset differences.

    Parameters
    ----------
    song_ids, deltas, counts : np.ndarray [shape=(n,)], int
        One row per ``(song, delta)`` bin with its number of matching hashes;
        ``delta`` is the song frame minus the query frame of a matching hash.
        Each ``(song, delta)`` appears at most once.
    tolerance_frames : int
        Matches within this many frames of the offset also count (onset jitter).

    Returns
    -------
    list of Alignment, best ``aligned`` first (ties: more ``matched`` first). A song's offset is
    the one with the most matches within the tolerance; of equal ones, the one with the most at
    exactly that delta, then the earliest.
    """
    if len(song_ids) == 0:
        return []
    song_ids = np.asarray(song_ids, np.int64)
    deltas = np.asarray(deltas, np.int64)
    counts = np.asarray(counts, np.int64)
    key = (song_ids << 32) + (deltas + (1 << 31))
    order = np.argsort(key, kind="stable")
    key, counts, song_ids, deltas = key[order], counts[order], song_ids[order], deltas[order]
    window = counts.copy()
    for shift in range(-tolerance_frames, tolerance_frames + 1):
        if shift:
            window += _count_at(key, counts, key + shift)
    first = np.flatnonzero(np.r_[True, song_ids[1:] != song_ids[:-1]])  # song_ids are sorted now
    songs = song_ids[first]
    matched = np.add.reduceat(counts, first)
    # Ties between offsets (a passage that repeats) go to the tighter one: more hashes at exactly
    # that delta (docs/ALGORITHM.md, "Offsets").
    best = _argmax_per_group(window * (int(counts.max()) + 1) + counts, first)
    result = [Alignment(int(s), int(deltas[b]), int(window[b]), int(m)) for s, b, m in zip(songs, best, matched)]
    result.sort(key=lambda a: (-a.aligned, -a.matched, a.song_id))
    return result


def _count_at(sorted_key: np.ndarray, counts: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    pos = np.clip(np.searchsorted(sorted_key, wanted), 0, sorted_key.size - 1)
    return np.where(sorted_key[pos] == wanted, counts[pos], 0)


def _argmax_per_group(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    ends = np.r_[first[1:], values.size]
    return np.array([f + int(np.argmax(values[f:e])) for f, e in zip(first, ends)], dtype=np.int64)


def match_margin(aligned: int, matched: int, runner_up: int, query_hashes: int, params: MatchParams) -> float:
    """Aligned hashes above the no-match bar (>= 0: a match), see :class:`MatchParams`.

    Parameters
    ----------
    aligned : int, distinct hashes at the best offset (tolerance window included)
    matched : int, hashes of the song that match at any offset
    runner_up : int, ``aligned`` of the best other song (0 if none)
    query_hashes : int, hashes the query sent
    params : MatchParams
    """
    bar = (
        params.min_aligned
        + params.runner_up_weight * runner_up
        + params.query_hashes_weight * math.log(max(query_hashes, 1) / 1000)
        + params.matched_weight * math.sqrt(matched)
    )
    return aligned - bar


def margin_to_confidence(margin: float, params: MatchParams) -> float:
    """Map a margin to [0, 1]: 0.5 at the no-match bar, rising with the margin."""
    return 1.0 / (1.0 + math.exp(-margin / params.confidence_scale))
