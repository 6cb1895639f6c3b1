"""Postings: index rows held in memory, grouped by hash value; their counts, rows and joins with a query."""

from __future__ import annotations

import dataclasses

import numpy as np

from .histogram import ragged_arange


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
        at = np.searchsorted(self.values, values)
        held = at < self.values.size
        held[held] = self.values[at[held]] == values[held]
        at = np.where(held, at, 0)
        lo = self.starts[at] if self.values.size else np.zeros(values.size, np.int64)
        n = np.where(held, self.starts[at + 1] - lo, 0) if self.values.size else lo
        return lo, n

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
