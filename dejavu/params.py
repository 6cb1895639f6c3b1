"""FingerprintParams: every knob that changes the hashes, frozen, with a digest."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from .errors import ParameterError


@dataclasses.dataclass(frozen=True)
class FingerprintParams:
    """All settings of spectrogram, peak picking and hashing.

    The reference side (what is stored) and the query side (what a clip is
    turned into) share the spectrogram and hash layout, but the query side
    extracts denser peaks and pairs each anchor with every target in the zone,
    so that a sparse index is still found by a noisy or short clip.
    """

    sample_rate_hz: int = 11025
    n_fft: int = 1024
    hop_length: int = 256
    min_freq_bin: int = 6  # ~65 Hz at 11025 Hz / 1024
    max_freq_bin: int = 372  # ~4 kHz: phone band and MP3 keep it
    peak_freq_radius: int = 8  # local maximum over +-bins ...
    peak_time_radius: int = 4  # ... and +-frames
    whiten_freq_radius: int = 24  # bins of the local floor a peak is measured against
    peak_tilt_db_per_octave: float = 5.0  # rank peaks 5 dB higher per octave down: music outlasts noise there
    block_frames: int = 43  # ~1 s: peaks are rationed per block
    ref_peaks_per_block: int = 12
    query_peaks_per_block: int = 32
    ref_fanout: int = 3  # targets per anchor stored in the index
    query_fanout: int = 16  # targets per anchor tried by a query ...
    query_min_fanout: int = 8  # ... and at least, by a second query over its hash budget
    max_dt_frames: int = 40  # target zone: 1..max_dt_frames after the anchor
    max_df_bins: int = 100  # and within +-max_df_bins of it
    min_df_bins: int = 1  # but not in the same bin: a held note says little, matches much
    level_bit: bool = True  # one hash bit: does the target outsound the anchor? ...
    query_level_margin_db: float = 3.0  # ... a query looks up both values when they differ by less
    query_dt_jitter: int = 1  # a query pair also looks up dt +- this many frames ...
    query_df_jitter: int = 0  # ... and df +- this many bins (peaks move by one at a new phase)
    query_max_hashes: int = 3000  # a longer clip is sampled sparser: lookup cost follows hashes
    query_shifts: int = 2  # a clip is analysed at this many phases of the hop, the index at one ...
    query_shifts_up_to: float = 1.5  # ... unless its first phase alone holds more than this many budgets
    query_triplet_peaks_per_block: int = 16  # triplet keys (an index with third points): peaks a block, ...
    query_triplet_targets: int = 5  # ... each anchor's first targets, two of which make a key, ...
    query_triplet_phases: int = 1  # ... at this many of the query_shifts phases

    def validate(self) -> FingerprintParams:
        """Check ranges and the hash layout; return self.

        Raises
        ------
        ParameterError
            If a value is out of range or does not fit the hash bit fields.
        """
        if not 0 < self.hop_length <= self.n_fft:
            raise ParameterError("hop_length must be in (0, n_fft]")
        if not 0 <= self.min_freq_bin < self.max_freq_bin <= self.n_fft // 2:
            raise ParameterError("need 0 <= min_freq_bin < max_freq_bin <= n_fft // 2")
        if self.max_freq_bin >= 1 << FREQ_BITS:
            raise ParameterError(f"max_freq_bin must be < {1 << FREQ_BITS}")
        if not 1 <= self.max_dt_frames < 1 << DT_BITS:
            raise ParameterError(f"max_dt_frames must be in [1, {(1 << DT_BITS) - 1}]")
        if not 0 < self.max_df_bins < 1 << (DF_BITS - 1):
            raise ParameterError(f"max_df_bins must be in (0, {1 << (DF_BITS - 1)})")
        if not 0 <= self.min_df_bins <= self.max_df_bins:
            raise ParameterError("min_df_bins must be in [0, max_df_bins]")
        if not 1 <= self.query_shifts <= self.hop_length or self.query_shifts_up_to <= 0:
            raise ParameterError("query_shifts must be in [1, hop_length], query_shifts_up_to > 0")
        if self.query_triplet_targets < 2 or not 1 <= self.query_triplet_phases <= self.query_shifts:
            raise ParameterError("query_triplet_targets must be >= 2, query_triplet_phases in [1, query_shifts]")
        if not 0 <= self.query_dt_jitter < self.max_dt_frames or self.query_df_jitter < 0:
            raise ParameterError("query_dt_jitter must be in [0, max_dt_frames), query_df_jitter >= 0")
        for name in (
            "query_max_hashes",
            "ref_peaks_per_block",
            "query_peaks_per_block",
            "ref_fanout",
            "query_fanout",
            "query_min_fanout",
            "query_triplet_peaks_per_block",
            "block_frames",
            "peak_freq_radius",
            "peak_time_radius",
            "whiten_freq_radius",
        ):
            if getattr(self, name) < 1:
                raise ParameterError(f"{name} must be >= 1")
        return self

    def digest(self) -> str:
        """Return a short stable digest of what the stored hashes depend on.

        An index built with other reference-side params has another digest; the
        query-side knobs (``query_*``) are left out: changing them needs no re-index.
        """
        stored = {k: v for k, v in dataclasses.asdict(self).items() if not k.startswith("query_")}
        blob = json.dumps(stored, sort_keys=True).encode()
        return hashlib.sha1(b"dejavu-v1:" + blob).hexdigest()[:16]

    @property
    def frame_seconds(self) -> float:
        """Seconds between two spectrogram frames."""
        return self.hop_length / self.sample_rate_hz


# Hash layout (see hashing.pack_hashes): anchor bin | df + 2**(DF_BITS-1) | dt.
FREQ_BITS = 9
DF_BITS = 8
DT_BITS = 6
LEVEL_BITS = 1
HASH_BITS = LEVEL_BITS + FREQ_BITS + DF_BITS + DT_BITS  # hashes are < 2**HASH_BITS

DEFAULT_PARAMS = FingerprintParams().validate()


@dataclasses.dataclass(frozen=True)
class MatchParams:
    """The no-match decision: how many aligned hashes a real match needs.

    A song passes when ``aligned >= min_aligned + runner_up_weight * runner_up
    + query_hashes_weight * ln(query_hashes / 1000) + matched_weight * sqrt(matched)``.
    ``runner_up`` is the best other song's aligned count: how far chance (or a shared
    background) reaches for this very clip. It grows with what raises chance alignments (more
    hashes sent, a bigger catalogue), so the bar follows it more than one for one, and the hashes
    sent are not weighted again: a noisy or reverberant clip, whose true song aligns few of the
    many hashes it sends, is not held to a bar set by its hash count. ``matched`` (what the song
    shares with the clip at any offset) raises the bar a little for busy songs, which collect
    chance alignments.
    Calibrated on clips of songs not in the catalogue; see docs/ALGORITHM.md.

    The lookup goes in steps, rarest hashes first (they point at few songs and cost few rows),
    when the query's hashes hold more than ``row_budget`` index rows: the first step looks up
    the rarest hashes that fit in ``row_budget`` rows, each further step ``row_growth`` times the
    rows of the last, the last step every hash. After each step the candidates are scored against
    the bar of the whole query: a song that clears it by ``early_stop_margin`` is the answer; a
    best song so far behind that it cannot reach the bar is no answer. "So far behind": even its
    aligned count plus ``reject_z`` standard deviations (Poisson), scaled up from the share of
    the clip's index rows looked up to all of them, stays below the bar. A true song's aligned
    hashes follow the rows, not the query pairs (the rarest values are mostly the clip's own
    noise, absent from the index), and run ahead of them: from a share s <= 1/4 of the rows, 9 in
    10 clips of catalogue songs had more than ``evidence_lead`` x s of their final count
    (docs/SCALE.md), so the share is taken as ``evidence_lead`` x s. Clear clips stop after the
    first step or two, clips of unknown audio once about a quarter of their rows are read.

    With ``chance_test``, a clip whose hashes hold ``chance_rows`` index rows or more (a big
    catalogue, where every row costs) is judged more tightly: once ``chance_share`` of its rows is
    read, a best song still ``chance_margin`` or further below the bar (no further ahead of the
    runner-up than chance puts it) is no answer, and its out-of-reach test allows ``chance_z``
    deviations. A true song leads its runner-up from the first rows (docs/SCALE.md, "Clips of
    unknown audio"); in a small catalogue the weak matches of 1-3 s clips, which the allowance
    keeps, cost little to read on for. Off by default: clips in rooms and crowds, which the second
    query finds near the bar, are then given up before it (100,000 songs: chatter at 0 dB 90 -> 57 %).

    A clip that ends with no song over the bar, its best song never out of reach and within
    ``-second_query_margin`` of the bar, is searched again with the richer second query
    (:func:`dejavu.fingerprint_query` with ``second=True``): rooms and crowds leave clips there, and
    the clips of catalogue songs it found on the real-world set all ended within 4.6 of the bar.

    A clip that no search answered has its best candidates re-scored by their single peaks
    (``peak_verification``; :mod:`dejavu.verify`, whose ``VerifyParams`` hold how).
    """

    tolerance_frames: int = 1
    min_aligned: float = 4.0
    runner_up_weight: float = 1.2
    query_hashes_weight: float = 0.0
    matched_weight: float = 0.05
    confidence_scale: float = 2.0  # margin (hashes) per e-fold of the confidence odds
    candidates: int = 20  # songs each instance returns
    row_budget: int = 8000  # index rows of the first lookup (0: one lookup of every hash)
    row_growth: float = 4.0  # rows of each further lookup, times those of the last
    early_stop_margin: float = 3.0  # margin over the bar that ends the search before the last lookup
    reject_z: float = 1.0  # a best song this many deviations short of the bar ends it with no answer
    evidence_lead: float = 2.0  # a true song's share of its aligned hashes over the share of rows read
    chance_test: bool = False  # judge big clips against chance (recognizing.reject_at_chance): ...
    chance_rows: int = 200_000  # ... a clip whose hashes hold this many index rows (a big catalogue) ...
    chance_share: float = 0.05  # ... once this share of them is read, with its best song still ...
    chance_margin: float = -4.0  # ... this far below the bar (level with the runner-up: chance), is no answer;
    chance_z: float = 0.0  # ... and its out-of-reach test allows this many deviations, not reject_z
    second_query: bool = True  # a clip left unanswered but not out of reach is asked again, richer, ...
    second_query_margin: float = -5.0  # ... when its best song ended at least this close to the bar
    triplets: bool = True  # on an index with third points, look the triplet keys up first ...
    triplet_rows_from: int = 200_000  # ... for a clip whose pair hashes hold this many index rows: ...
    triplet_margin: float = 5.0  # ... a song this far over their bar is the answer, without the pairs; ...
    triplet_reject: bool = False  # ... and, if set, a best song further below it than ...
    triplet_reject_margin: float = -3.0  # ... this is no answer, without the pairs or the robust path
    peak_verification: bool = True  # a clip nothing answered: its best candidates re-scored by their peaks

    def validate(self) -> MatchParams:
        """Check ranges; return self.

        Raises
        ------
        ParameterError
        """
        if self.tolerance_frames < 0 or self.candidates < 1 or self.confidence_scale <= 0:
            raise ParameterError("tolerance_frames >= 0, candidates >= 1, confidence_scale > 0")
        if self.row_budget < 0 or self.early_stop_margin < 0 or self.row_growth <= 1 or self.reject_z < 0:
            raise ParameterError("row_budget >= 0, early_stop_margin >= 0, row_growth > 1, reject_z >= 0")
        if self.evidence_lead < 1 or not 0 < self.chance_share <= 1 or self.chance_margin >= self.early_stop_margin:
            raise ParameterError("evidence_lead >= 1, chance_share in (0, 1], chance_margin < early_stop_margin")
        if self.chance_rows < 0 or self.chance_z < 0:
            raise ParameterError("chance_rows >= 0, chance_z >= 0")
        if self.triplet_reject_margin >= self.triplet_margin or self.triplet_rows_from < 0:
            raise ParameterError("triplet_reject_margin < triplet_margin, triplet_rows_from >= 0")
        return self


DEFAULT_MATCH = MatchParams().validate()
