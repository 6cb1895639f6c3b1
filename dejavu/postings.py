"""Postings: index rows held in memory, grouped by hash value; their counts, rows and joins with a query."""

from __future__ import annotations

import dataclasses

import numpy as np

from .hashing import distinct, ragged_arange


@dataclasses.dataclass(frozen=True)
class Postings:
    """Index rows sorted by hash value: the rows of ``values[i]`` are ``starts[i]:starts[i + 1]``.

    Songs are numbers the holder gives (small ones pack into the grouping key of
    :func:`dejavu.histogram.histograms_of_rows`); offsets are as stored. About 8 bytes a row, plus
    12 a distinct value.
    """

    values: np.ndarray  # uint32 [v], ascending, distinct
    starts: np.ndarray  # int64 [v + 1]
    songs: np.ndarray  # int32 [n]
    offsets: np.ndarray  # int32 [n]

    @classmethod
    def build(cls, hashes: np.ndarray, songs: np.ndarray, offsets: np.ndarray) -> Postings:
        """Postings of rows given in any order.

        Parameters
        ----------
        hashes : np.ndarray [shape=(n,)], uint32
        songs : np.ndarray [shape=(n,)], int, in ``[0, 2**31)``
        offsets : np.ndarray [shape=(n,)], int, in ``[0, 2**31)``
        """
        hashes = np.asarray(hashes, np.uint32)
        order = np.argsort(hashes, kind="stable")
        hashes = hashes[order]
        first = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]]) if hashes.size else np.zeros(0, np.int64)
        return cls(
            values=hashes[first],
            starts=np.r_[first, hashes.size].astype(np.int64),
            songs=np.asarray(songs, np.int32)[order],
            offsets=np.asarray(offsets, np.int32)[order],
        )

    @classmethod
    def merged(cls, parts: list[Postings], chunk_rows: int = 1 << 24) -> Postings:
        """One Postings of the parts' rows; a value's rows in the order of the parts. Each part's rows
        are copied straight to their place, ``chunk_rows`` at a time: besides the parts and the
        result, it takes 8 bytes a row of one chunk."""
        values = distinct(np.concatenate([p.values for p in parts]))
        counts = np.zeros(values.size, np.int64)
        ats = [np.searchsorted(values, p.values) for p in parts]
        for p, at in zip(parts, ats):
            counts[at] += np.diff(p.starts)
        starts = np.r_[0, np.cumsum(counts)].astype(np.int64)
        songs, offsets = np.empty(int(starts[-1]), np.int32), np.empty(int(starts[-1]), np.int32)
        filled = starts[:-1].copy()  # where each value's next rows go
        for p, at in zip(parts, ats):
            n = np.diff(p.starts)
            value = 0
            while value < p.values.size:  # whole values, about chunk_rows rows at a time
                end = max(int(np.searchsorted(p.starts, p.starts[value] + chunk_rows, "right")) - 1, value + 1)
                end = min(end, p.values.size)
                dest = np.repeat(filled[at[value:end]], n[value:end]) + ragged_arange(n[value:end])
                rows = slice(int(p.starts[value]), int(p.starts[end]))
                songs[dest], offsets[dest] = p.songs[rows], p.offsets[rows]
                value = end
            filled[at] += n
        return cls(values.astype(np.uint32), starts, songs, offsets)

    def renumbered(self, first: int) -> Postings:
        """These rows with ``first`` added to every song number."""
        return dataclasses.replace(self, songs=self.songs + np.int32(first))

    @property
    def size(self) -> int:
        """Rows held."""
        return int(self.songs.size)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.values, self.starts, self.songs, self.offsets))

    def spans(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each value's rows start and how many there are (0 for a value not held)."""
        values = np.asarray(values, np.int64)
        if not self.values.size:
            return np.zeros(values.size, np.int64), np.zeros(values.size, np.int64)
        held = (values >= 0) & (values < 1 << 32)
        # searched as uint32, the held values' own type: an int64 search would convert all of them
        at = np.searchsorted(self.values, np.where(held, values, 0).astype(np.uint32))
        held &= at < self.values.size
        held[held] = self.values[at[held]] == values[held]
        at = np.where(held, at, 0)
        lo = self.starts[at]
        return lo, np.where(held, self.starts[at + 1] - lo, 0)

    def counts(self, values: np.ndarray) -> np.ndarray:
        """Rows of each value (int64, same order)."""
        return self.spans(values)[1]

    def rows(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rows of the distinct ``values``: (hashes uint32, songs int32, offsets int32)."""
        values = np.asarray(values, np.int64)
        lo, n = self.spans(values)
        at = np.repeat(lo, n) + ragged_arange(n)
        return np.repeat(values, n).astype(np.uint32), self.songs[at], self.offsets[at]

    def join(self, q_hashes: np.ndarray, q_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every query pair with every row of its hash: (songs, deltas, hashes) of the joined rows,
        deltas = row offset - query offset (frames), as a database's join of the two tables gives."""
        q_hashes, q_offsets = np.asarray(q_hashes, np.int64), np.asarray(q_offsets, np.int64)
        lo, n = self.spans(q_hashes)
        at = np.repeat(lo, n) + ragged_arange(n)
        pair = np.repeat(np.arange(q_hashes.size), n)
        return self.songs[at], self.offsets[at] - q_offsets[pair], q_hashes[pair]
