"""Histogram: a candidate song's offset-difference histogram; histograms_of_rows builds them from joined index rows."""

from __future__ import annotations

import dataclasses

import numpy as np

from .hashing import ragged_arange


@dataclasses.dataclass(frozen=True)
class Histogram:
    """Offset-difference histogram of one candidate song: distinct matching hashes per delta."""

    song_id: int
    deltas: np.ndarray  # int64 [k], song frame - query frame
    counts: np.ndarray  # int64 [k]


def histograms_of_postings(
    q_hashes: np.ndarray, q_offsets: np.ndarray, postings: tuple[np.ndarray, np.ndarray, np.ndarray], top_k: int
) -> list[Histogram]:
    """The query's offset histograms from the raw index rows of its hashes, grouped in numpy.

    The same counts as the databases' ``GROUP BY song_id, song_offset - query_offset`` with
    ``COUNT(DISTINCT hash)``: every query pair is joined with every posting of its hash.

    Parameters
    ----------
    q_hashes, q_offsets : np.ndarray [shape=(n,)], the query's (hash, offset) pairs
    postings : (hashes, song_ids, offsets), the index rows of the query's hashes
    top_k : int
    """
    p_hash, p_song, p_offset = (np.asarray(a, np.int64) for a in postings)
    if p_hash.size == 0 or q_hashes.size == 0:
        return []
    order = np.argsort(q_hashes, kind="stable")
    q_hash, q_offset = q_hashes[order].astype(np.int64), q_offsets[order].astype(np.int64)
    lo = np.searchsorted(q_hash, p_hash, "left")
    n = np.searchsorted(q_hash, p_hash, "right") - lo  # query pairs per posting
    posting = np.repeat(np.arange(p_hash.size), n)
    pair = np.repeat(lo, n) + ragged_arange(n)
    return histograms_of_rows(p_song[posting], p_offset[posting] - q_offset[pair], p_hash[posting], top_k)


# histograms_of_rows packs (song, delta, hash) into one uint64 when each fits its field: one sort
# of a single key instead of a lexsort of two (650,000 rows: about 4 times faster).
_PACK_HASH_BITS = 24  # pair hashes (dejavu.params.HASH_BITS)
_PACK_DELTA_BITS = 20  # |delta| < 2**19 frames: over three hours of audio at the default hop
_PACK_SONG_BITS = 64 - _PACK_HASH_BITS - _PACK_DELTA_BITS


def histograms_of_rows(songs: np.ndarray, deltas: np.ndarray, hashes: np.ndarray, top_k: int) -> list[Histogram]:
    """The top_k songs' offset histograms from joined rows: per (song, delta), the distinct hashes.

    Parameters
    ----------
    songs : np.ndarray [shape=(n,)], int, >= 0: each joined row's song
    deltas : np.ndarray [shape=(n,)], int, frames: the row's song offset minus its query offset
    hashes : np.ndarray [shape=(n,)], int, >= 0: the hash the row was joined on
    top_k : int
    """
    if songs.size == 0:
        return []
    bias = 1 << (_PACK_DELTA_BITS - 1)
    if (
        songs.min() >= 0
        and songs.max() < 1 << _PACK_SONG_BITS
        and hashes.min() >= 0
        and hashes.max() < 1 << _PACK_HASH_BITS
        and -bias <= deltas.min()
        and deltas.max() < bias
    ):
        key = songs.astype(np.uint64)  # built in place: each temporary costs a pass over the rows
        key <<= np.uint64(_PACK_DELTA_BITS)
        key += (deltas + bias).astype(np.uint64)
        key <<= np.uint64(_PACK_HASH_BITS)
        key |= hashes.astype(np.uint64)
        key.sort()
        group = key[np.r_[True, key[1:] != key[:-1]]]  # distinct (song, delta, hash)
        group >>= np.uint64(_PACK_HASH_BITS)
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        counts = np.diff(np.r_[starts, group.size])
        firsts = group[starts]  # each (song, delta) once
        song = firsts >> np.uint64(_PACK_DELTA_BITS)
        delta_mask = np.uint64((1 << _PACK_DELTA_BITS) - 1)
        return [  # the deltas of the chosen songs only
            Histogram(int(song[a]), (firsts[a:b] & delta_mask).astype(np.int64) - bias, counts[a:b])
            for a, b in _top_runs(song, counts, top_k)
        ]
    # Distinct (song, delta, hash), then count per (song, delta). delta and hash share one int64:
    # |delta| < 2**30 frames (centuries of audio) and hashes have < 32 bits.
    songs, deltas, hashes = (np.asarray(a, np.int64) for a in (songs, deltas, hashes))
    low = ((deltas + (1 << 30)) << 32) | hashes
    order = np.lexsort((low, songs))
    songs, low = songs[order], low[order]
    distinct = np.r_[True, (songs[1:] != songs[:-1]) | (low[1:] != low[:-1])]
    songs, group = songs[distinct], low[distinct] >> 32
    starts = np.flatnonzero(np.r_[True, (songs[1:] != songs[:-1]) | (group[1:] != group[:-1])])
    counts = np.diff(np.r_[starts, songs.size])
    return top_histograms(songs[starts], group[starts] - (1 << 30), counts, top_k)


def top_histograms(song_ids: np.ndarray, deltas: np.ndarray, counts: np.ndarray, top_k: int) -> list[Histogram]:
    """Split grouped (song, delta, count) rows, sorted by song then delta, into the top_k songs' histograms."""
    if len(song_ids) == 0:
        return []
    song_ids, deltas, counts = (np.asarray(a, np.int64) for a in (song_ids, deltas, counts))
    return [Histogram(int(song_ids[a]), deltas[a:b], counts[a:b]) for a, b in _top_runs(song_ids, counts, top_k)]


def _top_runs(song_ids: np.ndarray, counts: np.ndarray, top_k: int) -> list[tuple[int, int]]:
    """Where the top_k songs' rows run in arrays sorted by song: ``(start, end)`` of each, by the
    song's highest count (ties: the lower song first)."""
    first = np.flatnonzero(np.r_[True, song_ids[1:] != song_ids[:-1]])
    peak = np.maximum.reduceat(counts, first)
    chosen = np.argsort(-peak, kind="stable")[:top_k]
    ends = np.r_[first[1:], song_ids.size]
    return [(int(first[i]), int(ends[i])) for i in chosen]
