"""fingerprint_reference / fingerprint_query: samples -> (hashes, offsets); fingerprint_triplets: a query's
triplet keys; query_peaks: a query's peaks (peak verification)."""

from __future__ import annotations

import numpy as np

from .hashing import (
    distinct,
    generate_hashes,
    jitter_hashes,
    pack_triplet_keys,
    pool_phases,
    triplet_keys,
    unpack_triplet_keys,
)
from .params import FingerprintParams
from .peaks import find_peaks, peak_candidates, ration_peaks
from .spectrogram import spectrogram


def fingerprint_reference(
    samples: np.ndarray, params: FingerprintParams, thirds: bool = False
) -> tuple[np.ndarray, ...]:
    """Sparse hashes of a catalogue song, as stored in the index.

    Parameters
    ----------
    samples : np.ndarray [shape=(n_samples,)], float, mono at ``params.sample_rate_hz``
    params : FingerprintParams
    thirds : bool, also return each pair's third point (:func:`dejavu.hashing.generate_hashes`)

    Returns
    -------
    hashes : np.ndarray [shape=(n,)], uint32
    offsets : np.ndarray [shape=(n,)], int32, frames from the start of the song
    thirds : np.ndarray [shape=(n,)], uint16, only with ``thirds``
    """
    spec = spectrogram(samples, params)
    freq, frame = find_peaks(spec, params, params.ref_peaks_per_block)
    return generate_hashes(freq, frame, params, params.ref_fanout, _levels(spec, freq, frame, params), thirds=thirds)


def fingerprint_triplets(
    samples: np.ndarray, params: FingerprintParams, views: dict | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A query clip's triplet keys (:func:`dejavu.hashing.triplet_keys`): ``query_triplet_peaks_per_block``
    peaks a block, each anchor's first ``query_triplet_targets`` targets, at the first
    ``query_triplet_phases`` of the ``query_shifts`` phases of the hop (``views`` as for
    :func:`fingerprint_query`). A key seen at two phases is sent once.

    Returns
    -------
    hashes (uint32), thirds (uint16), offsets (int32, frames of the first phase's grid)
    """
    kept = {} if views is None else views
    keys = []
    for phase in range(params.query_triplet_phases):
        spec, candidates = phase_view(samples, params, phase, kept)
        freq, frame = ration_peaks(candidates, params, params.query_triplet_peaks_per_block)
        found = triplet_keys(freq, frame, _levels(spec, freq, frame, params), params, params.query_triplet_targets)
        keys.append(pack_triplet_keys(*found))
    return unpack_triplet_keys(distinct(np.concatenate(keys)))


def fingerprint_query(
    samples: np.ndarray, params: FingerprintParams, second: bool = False, views: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Dense hashes of a query clip: a superset of what the index holds for it.

    Denser peaks, more targets per anchor, both level bits for nearly equal peaks, and each
    pair's +-jitter neighbours (:func:`dejavu.hashing.jitter_hashes`), as long as that stays
    within ``query_max_hashes`` (the lookup's cost grows with the hashes sent). A longer clip
    has evidence to spare: it first drops the jitter, then keeps fewer peaks per second (never
    fewer than the index's). Same shapes and units as :func:`fingerprint_reference`; offsets
    count frames from the start of the clip.

    The ``second`` query, for a clip that the first left unanswered but within reach of the bar
    (a room, a crowd), also pairs each peak with fewer targets (never fewer than
    ``query_min_fanout``), both cuts by their square root while both can. Cutting peaks alone
    loses the peaks that noise ranks low, and every pair of each; the index pairs each peak with
    its 3 nearest, about the 8 nearest among the query's denser peaks, so farther targets cost
    less evidence. Those nearer pairs are the index's most common values, which is why the first
    query, read by every clip, keeps its targets (docs/ALGORITHM.md, "Design notes").

    The clip is analysed at ``query_shifts`` phases of the hop (0, 1/2 hop for two), and their
    pairs are pooled. A clip rarely starts on the index's frame grid; between two of its frames
    the spectral peaks and their ranking change, and a clean 10 s clip found 117 of its index
    hashes at one phase and 292 at the phase of the grid (docs/ALGORITHM.md). A pair seen at
    two phases within one frame is kept once, at the first phase (:func:`dejavu.hashing.pool_phases`).
    A clip whose first phase alone, at full peak density and the least fanout, holds more than
    ``query_shifts_up_to`` times the budget (about 7 s of music for the first query, 14 s for the
    second) has evidence to spare and is analysed at that phase only: each phase costs as much
    time as the first.

    ``views``, if given, keeps each phase's spectrogram and peak candidates (``{phase: (spec,
    candidates)}``) and reuses those already there: the second query of a clip, and the robust
    path's phase 0 (:func:`dejavu.robust.fingerprint_query_triplets`), need not compute them again.
    """
    budget, floor = params.query_max_hashes, params.ref_peaks_per_block
    per_block, fanout = params.query_peaks_per_block, params.query_fanout
    least_fanout = min(fanout, params.query_min_fanout) if second else fanout
    kept = {} if views is None else views
    views = [phase_view(samples, params, 0, kept)]
    pairs = _phase_pairs(views[0], params, per_block, fanout)
    lean = pairs if least_fanout == fanout else _phase_pairs(views[0], params, per_block, least_fanout)
    if lean[0].size <= params.query_shifts_up_to * budget:
        views += [phase_view(samples, params, k, kept) for k in range(1, params.query_shifts)]
        pairs = pool_phases([pairs] + [_phase_pairs(view, params, per_block, fanout) for view in views[1:]])
    while True:
        if pairs[0].size <= budget:
            jittered = jitter_hashes(*pairs, params)
            return jittered if jittered[0].size <= budget else pairs
        if fanout <= least_fanout and per_block <= floor:
            return pairs
        # pairs ~ peaks x targets: each takes the square root of the cut while both can
        both = fanout > least_fanout and per_block > floor
        share = (budget / pairs[0].size) ** (0.5 if both else 1.0)
        if fanout > least_fanout:
            fanout = max(least_fanout, min(fanout - 1, int(fanout * share)))
        if per_block > floor:
            per_block = max(floor, min(per_block - 1, int(per_block * share)))
        pairs = pool_phases([_phase_pairs(view, params, per_block, fanout) for view in views])


def query_peaks(
    samples: np.ndarray, params: FingerprintParams, views: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The clip's peaks at query density (``query_peaks_per_block``), from its first sample: ``(bins,
    frames)`` as :func:`dejavu.peaks.find_peaks` gives them; the spectrogram from ``views`` when there."""
    _, candidates = phase_view(samples, params, 0, views)
    return ration_peaks(candidates, params, params.query_peaks_per_block)


def phase_view(samples: np.ndarray, params: FingerprintParams, phase: int, kept: dict | None = None) -> tuple:
    """Spectrogram and peak candidates of the clip from ``phase / query_shifts`` of a hop on; from
    ``kept`` when there, and stored in it."""
    if kept is not None and phase in kept:
        return kept[phase]
    spec = spectrogram(samples[phase * params.hop_length // params.query_shifts :], params)
    view = spec, peak_candidates(spec, params)  # once, however often rationed
    if kept is not None:
        kept[phase] = view
    return view


def _phase_pairs(view: tuple, params: FingerprintParams, per_block: int, fanout: int) -> tuple[np.ndarray, np.ndarray]:
    """The query pairs of one phase's spectrogram and peak candidates, rationed to per_block peaks."""
    spec, candidates = view
    freq, frame = ration_peaks(candidates, params, per_block)
    levels = _levels(spec, freq, frame, params)
    return generate_hashes(freq, frame, params, fanout, levels, params.query_level_margin_db)


def _levels(spec: np.ndarray, freq: np.ndarray, frame: np.ndarray, params: FingerprintParams) -> np.ndarray:
    """Spectrogram level (dB) at each peak (freq are FFT bins, the spectrogram starts at min_freq_bin)."""
    return spec[freq - params.min_freq_bin, frame]
