"""Searcher: a clip's hashes -> the catalogue songs it matches (rarest hashes first, in growing steps), ranked."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

import dejavu
from dejavu import Alignment, FingerprintParams, Histogram, MatchParams, RobustAlignment, RobustParams
from dejavu import robust as triplets
from dejavu import verify as verification
from dejavu.fingerprint import query_peaks
from dejavu.verify import DEFAULT_VERIFY, Verified, VerifyParams

from . import metrics
from .records import Match
from .storage.base import EXACT_COUNTS_FROM, THIRD_POINT_FEATURE, THIRD_POINT_VERSION, Song, instance_of
from .storage.sharded import ShardedStore

TOP_RESULTS = 3
NOT_COUNTED = object()  # Searcher.search's default: the clip's hash counts are not asked yet
ROBUST_FEATURE = "robust_digest"  # the instance meta key that says it holds the robust family
# A song's pair rows over all its rows when both families are stored (174 songs: 0.556, p1-p99
# 0.54-0.57): fingerprinted_confidence counts the pair hashes it expects over the clip's span.
PAIR_ROW_SHARE = 0.556


@dataclasses.dataclass(frozen=True)
class Search:
    """What :meth:`Searcher.search` found, and what it cost."""

    scored: list[tuple[float, Alignment]]  # (no-match margin, alignment), best first
    unanswered: int  # instances that were down, slow or failing
    lookups: int  # steps taken: 1 when the rarest hashes settle it (or one lookup held them all)
    hopeless: bool = False  # no song shares a hash, or a step before the last found the best out of reach
    histograms: tuple[Histogram, ...] = ()  # the last lookup's, per candidate song


class Searcher:
    """The stepwise search over the catalogue's instances (then the robust path), and the ranking of what it found."""

    def __init__(
        self,
        store: ShardedStore,
        params: FingerprintParams,
        match: MatchParams,
        robust: RobustParams = dejavu.DEFAULT_ROBUST,
        verify: VerifyParams = DEFAULT_VERIFY,
    ):
        self.store = store
        self.params = params
        self.match = match
        self.robust = robust
        self.verify = verify

    @property
    def robust(self) -> RobustParams:
        return self._robust

    @robust.setter
    def robust(self, params: RobustParams) -> None:
        # The digest is asked for on every recognition: computed once here (42 us each time otherwise).
        self._robust, self._robust_digest = params, params.digest()

    def robust_instances(self) -> list[bool]:
        """Which instances hold the robust family (their meta records this robust digest)."""
        return [self._holds_robust(i) for i in range(len(self.store.stores))]

    def third_instances(self) -> list[bool]:
        """Which instances keep their pair rows' third points (the triplet lookup needs all of them)."""
        return [
            self.store.features(i).get(THIRD_POINT_FEATURE) == THIRD_POINT_VERSION
            for i in range(len(self.store.stores))
        ]

    def search_triplets(self, hashes: np.ndarray, thirds: np.ndarray, offsets: np.ndarray) -> Search:
        """One lookup of the clip's triplet keys (:func:`dejavu.fingerprint_triplets`) on every instance,
        scored against the bar as the pairs are. A triplet key is some 14 bits more specific than a
        pair: it reads a small share of the rows, and chance alignments stay few (docs/SCALE.md)."""
        lookup = self.store.triplet_lookup(hashes, thirds, offsets, self.match.candidates)
        scored = self.score(lookup.histograms, int(hashes.size))
        return Search(scored, lookup.unanswered, 1, not scored, tuple(lookup.histograms))

    def triplet_outcome(self, search: Search) -> str:
        """What a triplet lookup settles: "answered" (its best song clears the bar by
        ``match.triplet_margin``), "rejected" (with ``match.triplet_reject``, below
        ``match.triplet_reject_margin`` and every instance answering: no answer is searched for
        further), or "passed_on" (to the pair lookup)."""
        match = self.match
        margin = search.scored[0][0] if search.scored else -math.inf
        if margin >= match.triplet_margin:
            return "answered"
        if match.triplet_reject and margin < match.triplet_reject_margin and not search.unanswered:
            return "rejected"
        return "passed_on"

    def _holds_robust(self, instance: int) -> bool:
        return self.store.features(instance).get(ROBUST_FEATURE) == self._robust_digest

    def hash_counts(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The clip's distinct hash values and their index rows over all instances, as the stepwise
        search reads them (None: one lookup of every hash, no counts asked)."""
        if not (self.match.row_budget and hashes.size):
            return None
        values = dejavu.distinct(hashes)
        counts = self.store.hash_counts(values)
        return None if counts is None else (values, counts)

    def search(
        self,
        hashes: np.ndarray,
        offsets: np.ndarray,
        counted: tuple[np.ndarray, np.ndarray] | None | object = NOT_COUNTED,
    ) -> Search:
        """Look the clip's hashes up on every instance, rarest first, and score the candidate songs.

        When the hashes hold more than ``match.row_budget`` index rows, the lookup goes in steps
        (:func:`dejavu.lookup_steps`): the rarest hashes that fit in the budget, then ``row_growth``
        times as many rows at each step, the last step every hash the index may hold. After a step
        that is not the last, a song that clears the bar by ``match.early_stop_margin`` is the
        answer, and a best song out of reach of the bar (:func:`dejavu.out_of_reach`) means there
        is none. Every hash is looked up at once if no instance answers the counts; only a
        backend that counts exactly, ClickHouse, rules hashes out. The bar always counts every
        hash the clip made. ``counted``: :meth:`hash_counts` of these hashes, if already asked (None
        included: asked, and no instance answered).
        """
        n_query, top_k, match = int(hashes.size), self.match.candidates, self.match
        if counted is NOT_COUNTED:
            counted = self.hash_counts(hashes)
        values, counts = counted if counted is not None else (None, None)
        if counts is None:
            lookup = self.store.lookup(hashes, offsets, top_k)
            metrics.search_finished(1)
            scored = self.score(lookup.histograms, n_query)
            return Search(scored, lookup.unanswered, 1, not scored, tuple(lookup.histograms))
        steps = dejavu.lookup_steps(values, counts, match.row_budget, match.row_growth)
        rows = max(int(counts[np.isin(values, steps[-1])].sum()), 1)
        for step, chosen in enumerate(steps, 1):
            wanted = np.isin(hashes, chosen)
            lookup = self.store.lookup(hashes[wanted], offsets[wanted], top_k)
            scored = self.score(lookup.histograms, n_query)
            share = int(counts[np.isin(values, chosen)].sum()) / rows
            if step == len(steps) or self._settled(
                scored, share, n_query, match.chance_test and rows >= match.chance_rows
            ):
                metrics.search_finished(step)
                # no song at all, or the best out of reach before the last step
                hopeless = not scored or (step < len(steps) and scored[0][0] < match.early_stop_margin)
                return Search(scored, lookup.unanswered, step, hopeless, tuple(lookup.histograms))
        raise AssertionError("lookup_steps ends with every held hash")  # pragma: no cover

    def worth_a_second_query(self, search: Search) -> bool:
        """Whether a search that found no song should be run again with the richer second query: its
        best song was never out of reach and ended within ``match.second_query_margin`` of the bar."""
        match = self.match
        return match.second_query and not search.hopeless and search.scored[0][0] >= match.second_query_margin

    def _has_robust_rows(self, song_id: int) -> bool:
        """Whether the song's instance holds the robust family (its songs were stored with both)."""
        return self._holds_robust(instance_of(song_id, len(self.store.stores)))

    def _settled(self, scored: list[tuple[float, Alignment]], share: float, n_query: int, big: bool) -> bool:
        """After a partial lookup of ``share`` of the clip's index rows: a clear answer, or none possible
        (``big``: with ``match.chance_test``, a clip of ``match.chance_rows`` rows or more, judged against
        chance too)."""
        if scored:
            margin, aligned = scored[0][0], scored[0][1].aligned
        else:  # no song shares a hash with these pairs: the lowest bar there is
            margin, aligned = dejavu.match_margin(0, 0, 0, n_query, self.match), 0
        if margin >= self.match.early_stop_margin:
            return True
        if big and share >= self.match.chance_share and margin < self.match.chance_margin:
            return True  # level with chance after the rows a true song needs to lead it
        z = self.match.chance_z if big else self.match.reject_z
        return dejavu.out_of_reach(aligned, margin, min(self.match.evidence_lead * share, 1.0), z)

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

    def search_robust(self, samples: np.ndarray, views: dict | None = None) -> tuple[list[Match], int]:
        """The robust path (docs/ALGORITHM.md, "The robust path"): the clip's triplets, the rarest of their
        lookup values within ``q_row_budget`` rows (or ``q_row_share`` of all their rows, if more), those
        rows from every instance, the vote and fit; the best song if it clears the bar. Also how many
        instances did not answer.

        The rows are read in two steps (:func:`dejavu.robust.lookup_steps`): after the rarest
        ``q_first_share`` of them, a song that clears the bar is the answer, and a best fit out of reach
        (:func:`dejavu.robust.out_of_reach`) means there is none (most clips of unknown audio stop there)."""
        rp = self.robust
        trip = triplets.fingerprint_query_triplets(samples, self.params, rp, views)
        values, owners = triplets.query_lookups(trip, rp)
        distinct = dejavu.distinct(values)
        counts = self.store.hash_counts(distinct) if distinct.size else None
        if counts is None:
            return [], 0
        # Values under EXACT_COUNTS_FROM rows count 1, as the databases report them: the budget and
        # the rarest-first choice were fitted so, and a memory copy's exact counts chose other values
        # (a scan from memory lost plays 2 % fast; docs/SCALE.md, "Scanning long recordings")
        counts = np.where(counts < EXACT_COUNTS_FROM, 1, counts)
        budget = max(rp.q_row_budget, int(rp.q_row_share * counts.sum()))  # grows with the catalogue
        steps = triplets.lookup_steps(distinct, counts, budget, rp.q_first_share)
        answer = None
        for step, chosen in enumerate(steps, 1):
            if answer is None:
                answer = self.store.rows(chosen)
            else:  # the rows of the values the first step did not read
                answer = answer.joined(self.store.rows(np.setdiff1d(chosen, steps[0], assume_unique=True)))
            wanted = np.isin(values, chosen)
            fits = triplets.align_triplets(
                trip, values[wanted], owners[wanted], answer.hashes, answer.song_ids, answer.offsets, rp
            )
            margin = triplets.robust_margin(fits, rp)
            if margin >= 0 or step == len(steps) or triplets.out_of_reach(fits, rp):
                break
        metrics.robust_finished(step)
        if margin < 0:
            return [], answer.unanswered
        songs, unnamed = self.store.get_songs([fits[0].song_id])
        found = [self._robust_match(fits[0], margin, songs[s], trip) for s in songs]
        return found, max(answer.unanswered, unnamed)

    def search_peaks(
        self, samples: np.ndarray, scored: list[tuple[float, Alignment]], views: dict | None = None
    ) -> tuple[list[Match], int]:
        """Peak verification (:mod:`dejavu.verify`): the best ``verify.candidates`` songs of a search
        that answered nothing, re-scored by the clip's peaks against theirs; the best if it clears the
        bar. Songs stored without peaks (by an earlier release) are left out. Also how many instances
        did not answer."""
        top = [a for _, a in scored[: self.verify.candidates]]
        if not top:
            return [], 0
        packed, unanswered = self.store.song_peaks([a.song_id for a in top])
        candidates = [
            (a.song_id, a.offset_frames, verification.unpack_peaks(packed[a.song_id]))
            for a in top
            if a.song_id in packed
        ]
        clip = query_peaks(samples, self.params, views)
        best = verification.verdict(verification.verify(clip, candidates, self.verify), self.verify)
        metrics.peak_verification("none" if best is None else "answered")
        if best is None:
            return [], unanswered
        songs, unnamed = self.store.get_songs([best.song_id])
        found = [self._verified_match(best, songs[s], int(clip[0].size)) for s in songs]
        return found, max(unanswered, unnamed)

    def drifting(self, matches: list[Match], search: Search, query_frames: int) -> list[int]:
        """The answers of a hash search whose matching hashes spread over the drift a tempo change
        gives (``verify.scale_spread`` times the aligned ones, within ``verify.scale_range`` of the
        clip's length): a tempo change that the short pairs survive leaves the offsets drifting along
        the clip. The others are exact copies."""
        drift = math.ceil(query_frames * self.verify.scale_range)
        histograms = {h.song_id: h for h in search.histograms}
        return [m.song_id for m in matches if _drifts(histograms.get(m.song_id), m, drift, self.verify)]

    def tempo_fitted(
        self, matches: list[Match], drifting: list[int], samples: np.ndarray, views: dict | None = None
    ) -> list[Match]:
        """The answers of the ``drifting`` songs (:meth:`drifting`) with their time scale, start and
        frequency scale fitted by the clip's peaks (:func:`dejavu.verify.fit_scales`)."""
        vp = self.verify
        packed, _ = self.store.song_peaks(drifting)
        clip = query_peaks(samples, self.params, views)
        fitted = []
        for m in matches:
            fit = (
                verification.fit_scales(clip, verification.unpack_peaks(packed[m.song_id]), m.offset, vp)
                if m.song_id in packed  # (only the drifting songs)
                else None
            )
            if fit is not None and fit.time_scale != 1.0:  # (at 1.0 the hashes' offset is the finer one)
                frames = fit.offset_frames
                m = dataclasses.replace(
                    m,
                    offset=frames,
                    offset_seconds=round(frames * self.params.frame_seconds, 3),
                    time_scale=round(fit.time_scale, 4),
                    frequency_scale=round(fit.frequency_scale, 4),
                )
            fitted.append(m)
        metrics.tempo_fit(sum(m.time_scale != 1.0 for m in fitted))
        return fitted

    def _verified_match(self, best: Verified, song: Song, clip_peaks: int) -> Match:
        return Match(
            song_id=song.song_id,
            song_name=song.song_name,
            input_total_hashes=clip_peaks,
            fingerprinted_hashes_in_db=song.total_hashes,
            hashes_matched_in_input=best.hits,
            input_confidence=round(best.hits / max(clip_peaks, 1), 4),
            fingerprinted_confidence=round(min(best.hits / max(best.song_peaks, 1), 1.0), 4),
            offset=best.offset_frames,
            offset_seconds=round(best.offset_frames * self.params.frame_seconds, 3),
            blob_sha1=song.blob_sha1,
            confidence=round(dejavu.margin_to_confidence(best.z - self.verify.min_z, self.match), 4),
        )

    def _robust_match(self, fit: RobustAlignment, margin: float, song: Song, trip: triplets.Triplets) -> Match:
        frame_s = self.params.frame_seconds
        clip_frames = float(trip.anchor_frames.max()) / fit.time_scale  # the span it covers, song frames
        expected = song.total_hashes * (1 - PAIR_ROW_SHARE) * min(clip_frames * frame_s / song.duration_seconds, 1.0)
        offset = round(fit.offset_frames)
        return Match(
            song_id=song.song_id,
            song_name=song.song_name,
            input_total_hashes=trip.size,
            fingerprinted_hashes_in_db=song.total_hashes,
            hashes_matched_in_input=fit.score,
            input_confidence=round(fit.score / max(trip.size, 1), 4),
            fingerprinted_confidence=round(min(fit.score / max(expected, 1.0), 1.0), 4),
            offset=offset,
            offset_seconds=round(fit.offset_frames * frame_s, 3),
            blob_sha1=song.blob_sha1,
            confidence=round(dejavu.margin_to_confidence(margin, self.match), 4),
            time_scale=round(fit.time_scale, 4),
            frequency_scale=round(fit.frequency_scale, 4),
        )

    def _match(self, a: Alignment, margin: float, song: Song, n_query: int, query_frames: int) -> Match:
        aligned = min(a.aligned, n_query)
        frame_s = self.params.frame_seconds
        song_frames = max(song.duration_seconds / frame_s, 1.0)
        # Hashes the index holds for the span the clip covers (an estimate: uniform density). A song
        # stored with both families counts both in total_hashes: its pair share is PAIR_ROW_SHARE.
        pair_hashes = song.total_hashes * (PAIR_ROW_SHARE if self._has_robust_rows(song.song_id) else 1.0)
        expected = max(pair_hashes * min(query_frames / song_frames, 1.0), 1.0)
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


def _drifts(histogram: Histogram | None, match: Match, drift: int, params: VerifyParams) -> bool:
    """Whether a song's matching hashes within ``drift`` frames of its offset reach
    ``params.scale_spread`` times those aligned there (a clip whose offsets drift)."""
    if histogram is None:
        return False
    near = np.abs(histogram.deltas - match.offset) <= drift
    return int(histogram.counts[near].sum()) >= params.scale_spread * match.hashes_matched_in_input
