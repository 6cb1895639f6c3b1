"""Searcher: a clip's hashes -> the catalogue songs it matches (rarest hashes first, in growing steps), ranked."""

from __future__ import annotations

import dataclasses

import numpy as np

import dejavu
from dejavu import Alignment, FingerprintParams, Histogram, MatchParams

from . import metrics
from .records import Match
from .storage.base import Song
from .storage.sharded import ShardedStore

TOP_RESULTS = 3


@dataclasses.dataclass(frozen=True)
class Search:
    """What :meth:`Searcher.search` found, and what it cost."""

    scored: list[tuple[float, Alignment]]  # (no-match margin, alignment), best first
    unanswered: int  # instances that were down, slow or failing
    lookups: int  # steps taken: 1 when the rarest hashes settle it (or one lookup held them all)


class Searcher:
    """The two-step search over the catalogue's instances, and the ranking of what it found."""

    def __init__(self, store: ShardedStore, params: FingerprintParams, match: MatchParams):
        self.store = store
        self.params = params
        self.match = match

    def search(self, hashes: np.ndarray, offsets: np.ndarray) -> Search:
        """Look the clip's hashes up on every instance, rarest first, and score the candidate songs.

        When the hashes hold more than ``match.row_budget`` index rows, the lookup goes in steps
        (:func:`dejavu.lookup_steps`): the rarest hashes that fit in the budget, then ``row_growth``
        times as many rows at each step, the last step every hash the index may hold. After a step
        that is not the last, a song that clears the bar by ``match.early_stop_margin`` is the
        answer, and a best song out of reach of the bar (:func:`dejavu.out_of_reach`) means there
        is none. Every hash is looked up at once if no instance answers the counts; only a
        backend that counts exactly, ClickHouse, rules hashes out. The bar always counts every
        hash the clip made.
        """
        n_query, top_k, match = int(hashes.size), self.match.candidates, self.match
        counts = None
        if match.row_budget and n_query:
            values = dejavu.distinct(hashes)
            counts = self.store.hash_counts(values)
        if counts is None:
            lookup = self.store.lookup(hashes, offsets, top_k)
            metrics.search_finished(1)
            return Search(self.score(lookup.histograms, n_query), lookup.unanswered, 1)
        steps = dejavu.lookup_steps(values, counts, match.row_budget, match.row_growth)
        rows = max(int(counts[np.isin(values, steps[-1])].sum()), 1)
        for step, chosen in enumerate(steps, 1):
            wanted = np.isin(hashes, chosen)
            lookup = self.store.lookup(hashes[wanted], offsets[wanted], top_k)
            scored = self.score(lookup.histograms, n_query)
            share = int(counts[np.isin(values, chosen)].sum()) / rows
            if step == len(steps) or self._settled(scored, share, n_query):
                metrics.search_finished(step)
                return Search(scored, lookup.unanswered, step)
        raise AssertionError("lookup_steps ends with every held hash")  # pragma: no cover

    def _settled(self, scored: list[tuple[float, Alignment]], share: float, n_query: int) -> bool:
        """After a partial lookup of ``share`` of the clip's index rows: a clear answer, or none possible."""
        if scored:
            margin, aligned = scored[0][0], scored[0][1].aligned
        else:  # no song shares a hash with these pairs: the lowest bar there is
            margin, aligned = dejavu.match_margin(0, 0, 0, n_query, self.match), 0
        if margin >= self.match.early_stop_margin:
            return True
        return dejavu.out_of_reach(aligned, margin, min(self.match.evidence_lead * share, 1.0), self.match.reject_z)

    def score(self, histograms: list[Histogram], query_hashes: int) -> list[tuple[float, Alignment]]:
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

    def rank(self, scored: list[tuple[float, Alignment]], n_query: int, query_frames: int) -> tuple[list[Match], int]:
        """The songs that clear the no-match bar, best first (at most TOP_RESULTS); and how many
        instances did not answer for their songs (those matches are left out)."""
        passing = [s for s in scored if s[0] >= 0][:TOP_RESULTS]
        songs, unanswered = self.store.get_songs([a.song_id for _, a in passing])
        matches = [
            self._match(a, margin, songs[a.song_id], n_query, query_frames)
            for margin, a in passing
            if a.song_id in songs
        ]
        return matches, unanswered

    def _match(self, a: Alignment, margin: float, song: Song, n_query: int, query_frames: int) -> Match:
        aligned = min(a.aligned, n_query)
        frame_s = self.params.frame_seconds
        song_frames = max(song.duration_seconds / frame_s, 1.0)
        # Hashes the index holds for the span the clip covers (an estimate: uniform density).
        expected = max(song.total_hashes * min(query_frames / song_frames, 1.0), 1.0)
        return Match(
            song_id=song.song_id,
            song_name=song.song_name,
            input_total_hashes=n_query,
            fingerprinted_hashes_in_db=song.total_hashes,
            hashes_matched_in_input=aligned,
            input_confidence=round(aligned / max(n_query, 1), 4),
            fingerprinted_confidence=round(min(aligned / expected, 1.0), 4),
            offset=a.offset_frames,
            offset_seconds=round(a.offset_frames * frame_s, 3),
            blob_sha1=song.blob_sha1,
            confidence=round(dejavu.margin_to_confidence(margin, self.match), 4),
        )
