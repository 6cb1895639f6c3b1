"""The speed/tempo/pitch-robust hash family: triplets of spectral peaks, their lookups and the Hough vote.

Three peaks a, b, c (a first in time; b before c, both among the first zone peaks after a) have a
shape that scaling time by ``ts`` or frequency by ``fs`` leaves alone:

* ``r = (t_b - t_a) / (t_c - t_a)`` does not change with any time scale;
* ``d1 = L_b - L_a`` and ``d2 = L_c - L_a`` (L: log-frequency in semitones, sub-bin) do not change
  with any frequency scale.

Those three fields make the hash, with two coarse fields that move only a little over the range the
path covers (time +-12 %, frequency +-2.3 semitones): the anchor's log-frequency band and the log2
of the span ``t_c - t_a``. A query looks up every cell its tolerances reach.

Hash layout (tag bit 30, then r 4 | d1 7 | d2 7 | band 4 | span cell 3 = 25 bits): every value is
in ``[2**30, 2**30 + 2**25)``, apart from the pair family's (``< 2**HASH_BITS = 2**24``) and below
2**31 (PostgreSQL stores hashes as signed 32-bit integers). Offset layout (< 2**31): anchor frame 17
bits | span frames 6 bits << 17 | the anchor's position inside its band, 8 bits << 23. The vote reads
the scales of each match from those fields (docs/ALGORITHM.md, "The robust path").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np

from .align import rarest_first, rarest_hashes
from .errors import ParameterError
from .fingerprint import _levels, phase_view
from .hashing import generate_hashes, ragged_arange
from .params import FingerprintParams
from .peaks import peak_candidates, ration_peaks
from .spectrogram import spectrogram

TAG = 1 << 30  # the family's hash values have this bit set; pair hashes are < 2**24
R_BITS, D_BITS, BAND_BITS, SPAN_BITS = 4, 7, 4, 3
FRAME_BITS, SPAN_FRAME_BITS, RESID_BITS = 17, 6, 8
MAX_ANCHOR_FRAME = (1 << FRAME_BITS) - 1  # ~50 min at 11025 Hz / 256: later anchors are not stored
_OFF_BIAS = 1 << 16  # coarse offset bins are biased by this (chance matches land before 0)
_FS_BIAS = 16  # coarse frequency-scale bins likewise


@dataclasses.dataclass(frozen=True)
class RobustParams:
    """Every knob of the triplet family. Reference-side knobs change the index (and ``digest()``);
    ``q_*`` (query side), ``vote_*`` and the no-match bar do not."""

    ref_peaks_per_block: int = 10  # peaks per block that anchor reference triplets
    ref_targets: int = 3  # the first k zone peaks after the anchor: k(k-1)/2 triplets each
    max_dt_frames: int = 48  # zone: 1..max_dt_frames after the anchor ...
    max_dl_semitones: float = 30.0  # ... and within +- this many semitones
    min_span_frames: int = 6  # t_c - t_a at least this (r needs a span to be precise)
    r_levels: int = 12  # quantisation of r in [0, 1]
    d_step: float = 0.5  # semitones per d1 / d2 cell
    band_semitones: float = 6.0  # anchor band width
    span_octaves: float = 0.5  # span cell width (log2)
    q_peaks_per_block: int = 12
    q_targets: int = 4
    q_max_time_scale: float = 1.12  # the time range a query covers (cells looked up) ...
    q_max_semitones: float = 2.3  # ... and the frequency range
    q_r_err_frames: float = 0.8  # r tolerance: this many frames of error over the span
    q_d_err: float = 0.12  # d tolerance: semitones, plus q_d_err_bins bins' worth at each peak
    q_d_err_bins: float = 0.15
    q_max_triplets: int = 4000  # a longer clip keeps its strongest anchors only
    q_row_budget: int = 20000  # index rows looked up, rarest first, as counted (a value under 8 rows counts 1)
    q_row_share: float = 0.1  # ... or this share of the rows of all the clip's values, if more (docs/SCALE.md)
    q_first_share: float = 0.25  # the rarest this share of those rows is read first (1: one step) ...
    q_first_min_score: int = 3  # ... and a best fit scoring under this there ends the search: no match, ...
    q_first_min_ratio: float = 2.0  # ... as does one under this many times the runner-up's (chance, at any size)
    vote_fs_bin: float = 0.5  # semitones per frequency-scale bin of the coarse vote
    vote_off_bin: int = 16  # frames per offset bin of the coarse vote
    vote_candidates: int = 6  # songs whose time-scale fit is refined
    vote_ts_step: float = 0.004  # fine time-scale grid step (natural log), then least squares
    vote_inlier_frames: float = 1.5  # a match is on the fitted line within this many frames
    min_score: int = 10  # no-match bar: distinct clip anchors on the line ...
    min_ratio: float = 2.0  # ... and this many times the runner-up's

    def validate(self) -> RobustParams:
        """Check ranges; return self.

        Raises
        ------
        ParameterError
        """
        if not 3 <= self.ref_targets <= self.q_targets or self.ref_peaks_per_block > self.q_peaks_per_block:
            raise ParameterError("need 3 <= ref_targets <= q_targets and ref_peaks_per_block <= q_peaks_per_block")
        if not 1 <= self.min_span_frames <= self.max_dt_frames < 1 << SPAN_FRAME_BITS:
            raise ParameterError(f"need 1 <= min_span_frames <= max_dt_frames < {1 << SPAN_FRAME_BITS}")
        if not 1 < self.r_levels <= 1 << R_BITS or self.d_step <= 0 or self.band_semitones <= 0:
            raise ParameterError(f"r_levels in (1, {1 << R_BITS}], d_step > 0, band_semitones > 0")
        if self.q_max_time_scale < 1 or self.q_max_semitones < 0 or self.span_octaves <= 0:
            raise ParameterError("q_max_time_scale >= 1, q_max_semitones >= 0, span_octaves > 0")
        if self.q_row_budget < 1 or self.vote_candidates < 1 or self.min_score < 1 or self.min_ratio < 1:
            raise ParameterError("q_row_budget, vote_candidates, min_score >= 1 and min_ratio >= 1")
        if not 0 <= self.q_row_share <= 1 or not 0 < self.q_first_share <= 1 or self.q_first_min_ratio < 0:
            raise ParameterError("q_row_share must be in [0, 1], q_first_share in (0, 1], q_first_min_ratio >= 0")
        return self

    def digest(self) -> str:
        """A short stable digest of what the stored triplet hashes depend on (reference-side knobs)."""
        query_side = ("q_", "vote_", "min_score", "min_ratio")
        stored = {k: v for k, v in dataclasses.asdict(self).items() if not k.startswith(query_side)}
        blob = json.dumps(stored, sort_keys=True).encode()
        return hashlib.sha1(b"dejavu-robust-v1:" + blob).hexdigest()[:16]


DEFAULT_ROBUST = RobustParams().validate()


@dataclasses.dataclass(frozen=True)
class Triplets:
    """Triplets of peaks (one row each). Frames are spectrogram frames; L is semitones above
    ``min_freq_bin``; bins are fractional FFT bins."""

    anchor_frames: np.ndarray  # int64 [n]
    span_frames: np.ndarray  # int64 [n], t_c - t_a
    r: np.ndarray  # float64 [n], (t_b - t_a) / (t_c - t_a)
    d1: np.ndarray  # float64 [n], L_b - L_a, semitones
    d2: np.ndarray  # float64 [n], L_c - L_a, semitones
    anchor_semitones: np.ndarray  # float64 [n], L_a
    bins: np.ndarray  # float64 [3, n], fractional FFT bin of a, b, c

    @property
    def size(self) -> int:
        return int(self.anchor_frames.size)


@dataclasses.dataclass(frozen=True)
class RobustAlignment:
    """A song's best fit ``t_song = offset_frames + t_clip / time_scale`` (frames)."""

    song_id: int
    score: int  # distinct clip anchor frames on the fitted line
    time_scale: float  # clip seconds per song second (> 1: the clip plays slower)
    frequency_scale: float  # clip Hz per song Hz (> 1: the clip sounds higher)
    offset_frames: float  # song frame, in the song's own time, where the clip starts


def refined_peaks(
    spec: np.ndarray, candidates: tuple, params: FingerprintParams, per_block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pair path's rationed peaks, with a sub-bin frequency (a parabola through 3 bins).

    Parameters
    ----------
    spec : np.ndarray [shape=(n_freq, n_frames)], float, dB
    candidates : the output of :func:`dejavu.peaks.peak_candidates` for ``spec``
    params : FingerprintParams
    per_block : int, peaks kept per block

    Returns
    -------
    frames : np.ndarray [shape=(n,)], int32, sorted
    semitones : np.ndarray [shape=(n,)], float64, log-frequency above ``min_freq_bin``
    bins : np.ndarray [shape=(n,)], float64, fractional FFT bin
    """
    freq, frame = ration_peaks(candidates, params, per_block)
    if freq.size == 0:
        return frame, np.zeros(0), np.zeros(0)
    row, n_rows = freq - params.min_freq_bin, spec.shape[0]
    a = spec[np.clip(row - 1, 0, n_rows - 1), frame]
    b = spec[row, frame]
    c = spec[np.clip(row + 1, 0, n_rows - 1), frame]
    den = a - 2 * b + c
    curved = den < -1e-6
    delta = np.where(curved, 0.5 * (a - c) / np.where(curved, den, -1.0), 0.0)
    delta = np.clip(delta, -0.5, 0.5)
    delta[(row == 0) | (row == n_rows - 1)] = 0.0
    bins = freq + delta
    return frame.astype(np.int32), 12.0 * np.log2(bins / params.min_freq_bin), bins


def _zone_table(frames: np.ndarray, semitones: np.ndarray, k: int, rp: RobustParams) -> np.ndarray:
    """``table[i, j]``: index of the j-th peak after peak i in its zone (time order), or -1."""
    n = frames.size
    ends = np.searchsorted(frames, frames + rp.max_dt_frames, side="right")
    taken = np.zeros(n, np.int32)
    table = np.full((n, k), -1, np.int64)
    idx = np.arange(n)
    for step in range(1, int((ends - idx).max(initial=1)) + 1):
        anchors = np.flatnonzero((idx + step < ends) & (taken < k))
        if anchors.size == 0:
            break
        targets = anchors + step
        near = np.abs(semitones[targets] - semitones[anchors]) <= rp.max_dl_semitones
        ok = (frames[targets] > frames[anchors]) & near
        anchors, targets = anchors[ok], targets[ok]
        table[anchors, taken[anchors]] = targets
        taken[anchors] += 1
    return table


def find_triplets(frames: np.ndarray, semitones: np.ndarray, bins: np.ndarray, k: int, rp: RobustParams) -> Triplets:
    """Every (a, b, c) with b, c two of the first ``k`` zone peaks of anchor a, b before c, and a
    span of at least ``min_span_frames``. Inputs as returned by :func:`refined_peaks`."""
    if frames.size < 3:
        z = np.zeros(0)
        return Triplets(z.astype(np.int64), z.astype(np.int64), z, z, z, z, np.zeros((3, 0)))
    table = _zone_table(frames, semitones, k, rp)
    p, q = np.triu_indices(k, 1)
    a = np.repeat(np.arange(frames.size), p.size)
    b, c = table[:, p].ravel(), table[:, q].ravel()
    ok = (b >= 0) & (c >= 0)
    a, b, c = a[ok], b[ok], c[ok]
    span = (frames[c] - frames[a]).astype(np.int64)
    ok = span >= rp.min_span_frames
    a, b, c, span = a[ok], b[ok], c[ok], span[ok]
    return Triplets(
        frames[a].astype(np.int64),
        span,
        (frames[b] - frames[a]) / span,
        semitones[b] - semitones[a],
        semitones[c] - semitones[a],
        semitones[a],
        np.stack([bins[a], bins[b], bins[c]]),
    )


def _d_cell(d: np.ndarray, rp: RobustParams) -> np.ndarray:
    return np.clip(np.floor(d / rp.d_step).astype(np.int64) + (1 << (D_BITS - 1)), 0, (1 << D_BITS) - 1)


def _span_cell(span: np.ndarray, rp: RobustParams) -> np.ndarray:
    cell = np.floor(np.log2(np.maximum(span, 1)) / rp.span_octaves).astype(np.int64) - 4
    return np.clip(cell, 0, (1 << SPAN_BITS) - 1)


def pack_triplet_hashes(r_cell, d1_cell, d2_cell, band, span_cell) -> np.ndarray:
    """Hash values (uint32, tag bit 30 set) of quantised triplet fields (int arrays, each within its bits)."""
    h = (
        (np.asarray(r_cell, np.int64) << (2 * D_BITS + BAND_BITS + SPAN_BITS))
        | (np.asarray(d1_cell, np.int64) << (D_BITS + BAND_BITS + SPAN_BITS))
        | (np.asarray(d2_cell, np.int64) << (BAND_BITS + SPAN_BITS))
        | (np.asarray(band, np.int64) << SPAN_BITS)
        | np.asarray(span_cell, np.int64)
    )
    return (h | TAG).astype(np.uint32)


def band_of(hashes: np.ndarray) -> np.ndarray:
    """The anchor band cell of triplet hash values (int64)."""
    return (np.asarray(hashes).astype(np.int64) >> SPAN_BITS) & ((1 << BAND_BITS) - 1)


def is_triplet_hash(hashes: np.ndarray) -> np.ndarray:
    """Which hash values belong to this family (bool)."""
    return (np.asarray(hashes).astype(np.int64) & TAG) != 0


def pack_offsets(anchor_frames: np.ndarray, span_frames: np.ndarray, band_position: np.ndarray) -> np.ndarray:
    """Offset field (int32, < 2**31): anchor frame | span frames << 17 | position in the band (0-255) << 23."""
    span = np.minimum(np.asarray(span_frames, np.int64), (1 << SPAN_FRAME_BITS) - 1)
    packed = (
        np.asarray(anchor_frames, np.int64)
        | (span << FRAME_BITS)
        | (np.asarray(band_position, np.int64) << (FRAME_BITS + SPAN_FRAME_BITS))
    )
    return packed.astype(np.int32)


def unpack_offsets(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_offsets`: (anchor frames, span frames, position in the band), int64."""
    o = np.asarray(offsets).astype(np.int64)
    return (
        o & MAX_ANCHOR_FRAME,
        (o >> FRAME_BITS) & ((1 << SPAN_FRAME_BITS) - 1),
        (o >> (FRAME_BITS + SPAN_FRAME_BITS)) & ((1 << RESID_BITS) - 1),
    )


def reference_hashes(trip: Triplets, rp: RobustParams) -> tuple[np.ndarray, np.ndarray]:
    """Index rows of a song's triplets: one (hash, offset) each, distinct, anchors past
    ``MAX_ANCHOR_FRAME`` left out.

    Returns
    -------
    hashes : np.ndarray [shape=(n,)], uint32, in ``[2**30, 2**31)``
    offsets : np.ndarray [shape=(n,)], int32, packed (:func:`unpack_offsets`), in ``[0, 2**31)``
    """
    keep = trip.anchor_frames <= MAX_ANCHOR_FRAME
    if not keep.all():
        trip = Triplets(*(getattr(trip, f.name)[..., keep] for f in dataclasses.fields(trip)))
    if trip.size == 0:
        return np.zeros(0, np.uint32), np.zeros(0, np.int32)
    r_cell = np.minimum((trip.r * rp.r_levels).astype(np.int64), rp.r_levels - 1)
    band_position = trip.anchor_semitones / rp.band_semitones
    band = np.minimum(np.floor(band_position).astype(np.int64), (1 << BAND_BITS) - 1)
    resid = np.clip(((band_position - band) * (1 << RESID_BITS)).astype(np.int64), 0, (1 << RESID_BITS) - 1)
    spans = _span_cell(trip.span_frames, rp)
    hashes = pack_triplet_hashes(r_cell, _d_cell(trip.d1, rp), _d_cell(trip.d2, rp), band, spans)
    offsets = pack_offsets(trip.anchor_frames, trip.span_frames, resid)
    key = np.unique((offsets.astype(np.int64) << 32) | hashes.astype(np.int64))
    return (key & 0xFFFFFFFF).astype(np.uint32), (key >> 32).astype(np.int32)


def fingerprint_reference_families(
    samples: np.ndarray, params: FingerprintParams, rp: RobustParams, thirds: bool = False
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, np.ndarray]]:
    """Both families' index rows of a catalogue song, from one spectrogram and one set of peak candidates.

    Parameters
    ----------
    samples : np.ndarray [shape=(n_samples,)], float, mono at ``params.sample_rate_hz``
    thirds : bool, the pair rows with their third points

    Returns
    -------
    (pair_hashes, pair_offsets[, pair_thirds]), (triplet_hashes, triplet_offsets)
        The first is exactly :func:`dejavu.fingerprint_reference`'s; the second
        :func:`reference_hashes`'s. Hashes uint32, offsets int32, thirds uint16.
    """
    spec = spectrogram(samples, params)
    candidates = peak_candidates(spec, params)
    freq, frame = ration_peaks(candidates, params, params.ref_peaks_per_block)
    pairs = generate_hashes(freq, frame, params, params.ref_fanout, _levels(spec, freq, frame, params), thirds=thirds)
    frames, semitones, bins = refined_peaks(spec, candidates, params, rp.ref_peaks_per_block)
    return pairs, reference_hashes(find_triplets(frames, semitones, bins, rp.ref_targets, rp), rp)


def fingerprint_query_triplets(
    samples: np.ndarray, params: FingerprintParams, rp: RobustParams, views: dict | None = None
) -> Triplets:
    """A clip's query triplets (denser than the index's), thinned to ``q_max_triplets`` by keeping fewer
    peaks per block (never fewer than the index's).

    Parameters
    ----------
    samples : np.ndarray [shape=(n_samples,)], float, mono at ``params.sample_rate_hz``
    views : dict, optional
        The clip's phase views as :func:`dejavu.fingerprint_query` keeps them: phase 0's spectrogram
        and peak candidates are read from there when the pair path made them.
    """
    spec, candidates = phase_view(samples, params, 0, views)
    per_block = rp.q_peaks_per_block
    while True:
        trip = find_triplets(*refined_peaks(spec, candidates, params, per_block), rp.q_targets, rp)
        if trip.size <= rp.q_max_triplets or per_block <= rp.ref_peaks_per_block:
            return trip
        per_block = max(rp.ref_peaks_per_block, min(per_block - 1, int(per_block * rp.q_max_triplets / trip.size)))


def _expand(lo: np.ndarray, hi: np.ndarray, owner: np.ndarray, cells: list) -> tuple[np.ndarray, list]:
    """Cartesian step: each row gets every value in [lo, hi] of one more field."""
    n = hi - lo + 1
    rep = np.repeat(np.arange(owner.size), n)
    return owner[rep], [c[rep] for c in cells] + [lo[rep] + ragged_arange(n)]


def _query_cells(trip: Triplets, rp: RobustParams) -> list[tuple[np.ndarray, np.ndarray]]:
    """(lowest, highest) cell of each hash field a query triplet may have been indexed under."""
    span = trip.span_frames.astype(np.float64)
    r_err = rp.q_r_err_frames / span
    top = rp.r_levels - 1
    r_lo = np.clip(np.floor((trip.r - r_err) * rp.r_levels), 0, top).astype(np.int64)
    r_hi = np.clip(np.floor((trip.r + r_err) * rp.r_levels), 0, top).astype(np.int64)
    bin_err = 12 * np.log2(1 + rp.q_d_err_bins / trip.bins)  # semitones of q_d_err_bins at each peak
    d1_err = rp.q_d_err + bin_err[0] + bin_err[1]
    d2_err = rp.q_d_err + bin_err[0] + bin_err[2]
    f_err = rp.q_max_semitones + bin_err[0]
    la, top_band = trip.anchor_semitones, (1 << BAND_BITS) - 1
    b_lo = np.clip(np.floor((la - f_err) / rp.band_semitones), 0, top_band).astype(np.int64)
    b_hi = np.clip(np.floor((la + f_err) / rp.band_semitones), 0, top_band).astype(np.int64)
    s_lo = _span_cell(np.floor(span / rp.q_max_time_scale - 1), rp)
    s_hi = _span_cell(np.ceil(span * rp.q_max_time_scale + 1), rp)
    return [
        (r_lo, r_hi),
        (_d_cell(trip.d1 - d1_err, rp), _d_cell(trip.d1 + d1_err, rp)),
        (_d_cell(trip.d2 - d2_err, rp), _d_cell(trip.d2 + d2_err, rp)),
        (b_lo, b_hi),
        (s_lo, s_hi),
    ]


def query_lookups(trip: Triplets, rp: RobustParams) -> tuple[np.ndarray, np.ndarray]:
    """Every hash value a query triplet may have been indexed under, over the time and frequency
    range the path covers (``q_max_time_scale``, ``q_max_semitones``) and the fields' tolerances.

    Returns
    -------
    values : np.ndarray [shape=(m,)], uint32, triplet hashes (not distinct)
    owners : np.ndarray [shape=(m,)], int64, the query triplet of each value
    """
    if trip.size == 0:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64)
    owners, cells = np.arange(trip.size), []
    for lo, hi in _query_cells(trip, rp):
        owners, cells = _expand(lo[owners], hi[owners], owners, cells)
    return pack_triplet_hashes(*cells), owners


def lookup_steps(values: np.ndarray, counts: np.ndarray, row_budget: int, first_share: float) -> list[np.ndarray]:
    """The values each step of the robust path reads: the rarest within ``first_share`` of
    ``row_budget`` rows, then the rarest within all of it (which include the first). One step when
    the first already holds them all.

    Returns
    -------
    list of np.ndarray, uint32, one or two steps (each a :func:`rarest_values` choice)
    """
    values, counts = np.asarray(values, np.uint32), np.asarray(counts, np.int64)
    order = rarest_first(values, counts, mixed_ties=True)  # one sort for both steps
    rows = np.cumsum(counts[order])
    chosen = values[order[rows <= row_budget]]
    first = values[order[rows <= int(first_share * row_budget)]]
    return [first, chosen] if 0 < first.size < chosen.size else [chosen]


def rarest_values(values: np.ndarray, counts: np.ndarray, row_budget: int) -> np.ndarray:
    """The distinct values to look up: the rarest, as many as fit in ``row_budget`` index rows.

    Values of equal count are taken in a fixed pseudo-random order (a mix of the value's bits), not
    by value: the values' order follows the hash fields, and the index's counts of rare values are
    often all 1 (a counts snapshot keeps only common values exactly), so the budget would otherwise
    favour low ``r`` cells.

    Parameters
    ----------
    values : np.ndarray [shape=(n,)], uint32, distinct
    counts : np.ndarray [shape=(n,)], int, index rows of each value (0: none)
    row_budget : int

    Returns
    -------
    np.ndarray, uint32, the chosen values
    """
    return rarest_hashes(np.asarray(values, np.uint32), counts, row_budget, mixed_ties=True)


@dataclasses.dataclass(frozen=True)
class _Matches:
    """Index rows joined with the query triplets that looked them up, and each one's scales."""

    song_ids: np.ndarray  # int64 [m]
    clip_frames: np.ndarray  # float64 [m], query anchor frame
    song_frames: np.ndarray  # float64 [m], reference anchor frame
    log_fs: np.ndarray  # float64 [m], semitones, query L_a minus song L_a
    log_ts: np.ndarray  # float64 [m], ln(query span / song span): rough, +-1 frame over the span

    def take(self, mask: np.ndarray) -> _Matches:
        return _Matches(*(getattr(self, f.name)[mask] for f in dataclasses.fields(self)))


def _join(values: np.ndarray, owners: np.ndarray, row_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (row, owner) pair whose row hash is the owner's looked-up value."""
    order = np.argsort(values, kind="stable")
    values, owners = values[order], owners[order]
    lo = np.searchsorted(values, row_hashes, side="left")
    n = np.searchsorted(values, row_hashes, side="right") - lo
    rows = np.repeat(np.arange(row_hashes.size), n)
    at = np.repeat(lo, n) + ragged_arange(n)
    return rows, owners[at]


def _matches(trip: Triplets, values, owners, row_hashes, row_song_ids, row_offsets, rp: RobustParams) -> _Matches:
    """Join the rows to the query and keep the matches whose scales are within the covered range."""
    rows, t = _join(np.asarray(values, np.uint32), np.asarray(owners), np.asarray(row_hashes, np.uint32))
    song_frames, song_spans, resid = unpack_offsets(np.asarray(row_offsets)[rows])
    band = band_of(np.asarray(row_hashes)[rows])
    song_la = (band + (resid + 0.5) / (1 << RESID_BITS)) * rp.band_semitones
    log_fs = trip.anchor_semitones[t] - song_la
    log_ts = np.log(trip.span_frames[t] / np.maximum(song_spans, 1))
    found = _Matches(
        np.asarray(row_song_ids, np.int64)[rows],
        trip.anchor_frames[t].astype(np.float64),
        song_frames.astype(np.float64),
        log_fs,
        log_ts,
    )
    near = (np.abs(log_fs) <= rp.q_max_semitones + 0.3) & (np.abs(log_ts) <= math.log(rp.q_max_time_scale) + 0.15)
    return found.take(near)


def _vote(m: _Matches, mid_frame: float, rp: RobustParams) -> list[np.ndarray]:
    """Hough vote over (song, frequency-scale bin, song frame of the clip's middle): one vote per distinct
    clip anchor frame and cell, each cell smoothed with its 8 neighbours. The clip's middle is where the
    rough per-match time scale moves the offset least. Returns the masks of the matches near the best
    cells of the ``vote_candidates`` best songs, best first."""
    max_log_ts = math.log(rp.q_max_time_scale)
    middle = m.song_frames + (mid_frame - m.clip_frames) / np.exp(np.clip(m.log_ts, -max_log_ts, max_log_ts))
    fs_bin = np.floor(m.log_fs / rp.vote_fs_bin).astype(np.int64) + _FS_BIAS
    off_bin = np.floor(middle / rp.vote_off_bin).astype(np.int64) + _OFF_BIAS
    cell = (m.song_ids << 32) | (fs_bin << 24) | off_bin
    cells, votes = np.unique(np.unique((cell << 12) | m.clip_frames.astype(np.int64)) >> 12, return_counts=True)
    smooth = votes.copy()
    for d_fs in (-1, 0, 1):
        for d_off in (-1, 0, 1):
            if d_fs or d_off:
                near = cells + (d_fs << 24) + d_off
                at = np.searchsorted(cells, near).clip(0, cells.size - 1)
                smooth += np.where(cells[at] == near, votes[at], 0)
    best = cells[np.argsort(-smooth, kind="stable")]
    _, first = np.unique(best >> 32, return_index=True)
    masks = []
    for c in best[np.sort(first)][: rp.vote_candidates]:
        c_fs = ((int(c >> 24) & 0xFF) - _FS_BIAS + 0.5) * rp.vote_fs_bin
        c_off = ((int(c) & 0xFFFFFF) - _OFF_BIAS + 0.5) * rp.vote_off_bin
        masks.append(
            (m.song_ids == c >> 32)
            & (np.abs(m.log_fs - c_fs) <= 1.5 * rp.vote_fs_bin + 0.3)
            & (np.abs(middle - c_off) <= 1.5 * rp.vote_off_bin + 4)
        )
    return masks


def _densest(offsets: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``offsets`` [g, m]: the start of the window of ``width`` holding the most values, and
    which values it holds (bool [g, m])."""
    g, m = offsets.shape
    ordered = np.sort(offsets, axis=1)
    flat = ordered + (np.arange(g)[:, None] * (np.ptp(ordered) + 4 * width + 1))
    ends = np.searchsorted(flat.ravel(), (flat + width).ravel(), side="right").reshape(g, m)
    held = ends - (np.arange(g)[:, None] * m + np.arange(m)[None, :])
    start = ordered[np.arange(g), np.argmax(held, axis=1)]
    inside = (offsets >= start[:, None]) & (offsets <= start[:, None] + width)
    return start, inside


def _distinct_per_row(inside: np.ndarray, clip_frames: np.ndarray) -> np.ndarray:
    """Distinct clip anchor frames among the values each row holds (int64 [g])."""
    rows, cols = np.nonzero(inside)
    keys = np.unique((rows.astype(np.int64) << 24) | clip_frames[cols].astype(np.int64))
    return np.bincount((keys >> 24).astype(np.int64), minlength=inside.shape[0])


def fit_song(song_id: int, m: _Matches, rp: RobustParams) -> RobustAlignment:
    """The line ``t_song = offset + t_clip / ts`` through the most distinct clip anchors: a grid over
    ln(ts) in steps of ``vote_ts_step`` (all at once), the middle of the best run of ties, then least
    squares through its inliers."""
    if m.song_ids.size == 0:
        return RobustAlignment(song_id, 0, 1.0, 1.0, 0.0)
    max_log_ts = math.log(rp.q_max_time_scale) + 0.5 * rp.vote_ts_step
    grid = np.arange(-max_log_ts, max_log_ts + 1e-9, rp.vote_ts_step)
    offsets = m.song_frames[None, :] - m.clip_frames[None, :] * np.exp(-grid)[:, None]
    _, inside = _densest(offsets, 2 * rp.vote_inlier_frames)
    scores = _distinct_per_row(inside, m.clip_frames)
    top = np.flatnonzero(scores == scores.max())
    run = top[top - top[0] == np.arange(top.size)]  # the first run of ties: a short clip ties neighbours
    g = int(run[run.size // 2])
    inl = inside[g]
    ts, offset = math.exp(grid[g]), float(np.median(offsets[g][inl]))
    fs = 2 ** (float(np.median(m.log_fs[inl])) / 12)
    if scores[g] >= 4 and np.ptp(m.clip_frames[inl]) > 20:
        slope, intercept = np.polyfit(m.clip_frames[inl], m.song_frames[inl], 1)
        if slope > 0 and abs(math.log(1 / slope / ts)) <= 2 * rp.vote_ts_step:
            ts, offset = float(1 / slope), float(intercept)
    return RobustAlignment(song_id, int(scores[g]), ts, fs, offset)


def align_triplets(
    trip: Triplets,
    values: np.ndarray,
    owners: np.ndarray,
    row_hashes: np.ndarray,
    row_song_ids: np.ndarray,
    row_offsets: np.ndarray,
    rp: RobustParams,
) -> list[RobustAlignment]:
    """The best fits of the songs a clip's triplet lookups met, best first.

    Parameters
    ----------
    trip : Triplets, the clip's (:func:`fingerprint_query_triplets`)
    values, owners : np.ndarray [shape=(m,)], the looked-up values and their triplets (a subset of
        :func:`query_lookups`'s)
    row_hashes, row_song_ids, row_offsets : np.ndarray [shape=(n,)], the index rows of those values
        (uint32, int64, packed offsets as stored)
    rp : RobustParams

    Returns
    -------
    list of RobustAlignment, at most ``vote_candidates``, by score (highest first)
    """
    if trip.size == 0 or np.asarray(row_hashes).size == 0:
        return []
    m = _matches(trip, values, owners, row_hashes, row_song_ids, row_offsets, rp)
    if m.song_ids.size == 0:
        return []
    masks = _vote(m, 0.5 * float(trip.anchor_frames.max()), rp)
    fits = [fit_song(int(m.song_ids[mask][0]), m.take(mask), rp) for mask in masks]
    return sorted(fits, key=lambda a: -a.score)


def out_of_reach(fits: list[RobustAlignment], rp: RobustParams) -> bool:
    """Whether the fits of the first, rarest rows end the search with no match: the best scores under
    ``q_first_min_score`` or under ``q_first_min_ratio`` times the runner-up's. A true song leads the
    runner-up there by far; chance fits rise with the rows read, so the ratio keeps the test as the
    catalogue grows, where a fixed score lets most clips of unknown audio read on (docs/SCALE.md)."""
    if not fits:
        return True
    runner_up = fits[1].score if len(fits) > 1 else 0
    return fits[0].score < max(rp.q_first_min_score, rp.q_first_min_ratio * runner_up)


def robust_margin(fits: list[RobustAlignment], rp: RobustParams) -> float:
    """How far the best fit clears the no-match bar (>= 0: a match): its score over ``min_score``,
    and over ``min_ratio`` times the runner-up's, whichever is less. -inf with no fit.

    Fitted on clips of songs not in the catalogue (docs/ALGORITHM.md): of the 480 real-world ones that
    the pair path leaves, the best that met the ratio scored 8.
    """
    if not fits:
        return -math.inf
    runner_up = fits[1].score if len(fits) > 1 else 0
    return float(min(fits[0].score - rp.min_score, fits[0].score - rp.min_ratio * runner_up))
