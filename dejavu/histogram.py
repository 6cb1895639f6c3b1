"""Histogram: a candidate song's offset-difference histogram; histograms_of_postings builds them from index rows."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np


@dataclasses.dataclass(frozen=True)
class Histogram:
    """Offset-difference histogram of one candidate song: distinct matching hashes per delta."""

    song_id: int
    deltas: np.ndarray  # int64 [k], song frame - query frame
    counts: np.ndarray  # int64 [k]


def histograms_of_postings(
    q_hashes: np.ndarray, q_offsets: np.ndarray, postings: list[tuple], top_k: int
) -> list[Histogram]:
    """The query's offset histograms from the raw index rows of its hashes, grouped in numpy.

    The same counts as the databases' ``GROUP BY song_id, song_offset - query_offset`` with
    ``COUNT(DISTINCT hash)``: every query pair is joined with every posting of its hash.

    Parameters
    ----------
    q_hashes, q_offsets : np.ndarray [shape=(n,)], the query's (hash, offset) pairs
    postings : list of (hash, song_id, offset) index rows of the query's hashes
    top_k : int
    """
    if not postings or q_hashes.size == 0:
        return []
    # fromiter over the flattened rows: half the time of np.array on a list of tuples.
    flat = np.fromiter(itertools.chain.from_iterable(postings), np.int64, 3 * len(postings))
    p_hash, p_song, p_offset = flat.reshape(-1, 3).T
    order = np.argsort(q_hashes, kind="stable")
    q_hash, q_offset = q_hashes[order].astype(np.int64), q_offsets[order].astype(np.int64)
    lo = np.searchsorted(q_hash, p_hash, "left")
    n = np.searchsorted(q_hash, p_hash, "right") - lo  # query pairs per posting
    posting = np.repeat(np.arange(p_hash.size), n)
    pair = np.repeat(lo, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    song, delta, hashes = p_song[posting], p_offset[posting] - q_offset[pair], p_hash[posting]
    # Distinct (song, delta, hash), then count per (song, delta). delta and hash share one int64:
    # |delta| < 2**30 frames (centuries of audio) and hashes have < 32 bits.
    low = ((delta + (1 << 30)) << 32) | hashes
    order = np.lexsort((low, song))
    song, low = song[order], low[order]
    distinct = np.r_[True, (song[1:] != song[:-1]) | (low[1:] != low[:-1])]
    song, group = song[distinct], low[distinct] >> 32
    starts = np.flatnonzero(np.r_[True, (song[1:] != song[:-1]) | (group[1:] != group[:-1])])
    counts = np.diff(np.r_[starts, song.size])
    return top_histograms(song[starts], group[starts] - (1 << 30), counts, top_k)


def top_histograms(song_ids: np.ndarray, deltas: np.ndarray, counts: np.ndarray, top_k: int) -> list[Histogram]:
    """Split grouped (song, delta, count) rows, sorted by song then delta, into the top_k songs' histograms."""
    if len(song_ids) == 0:
        return []
    song_ids, deltas, counts = (np.asarray(a, np.int64) for a in (song_ids, deltas, counts))
    first = np.flatnonzero(np.r_[True, song_ids[1:] != song_ids[:-1]])
    songs = song_ids[first]
    peak = np.maximum.reduceat(counts, first)
    chosen = np.argsort(-peak, kind="stable")[:top_k]
    ends = np.r_[first[1:], song_ids.size]
    return [Histogram(int(songs[i]), deltas[first[i] : ends[i]], counts[first[i] : ends[i]]) for i in chosen]
