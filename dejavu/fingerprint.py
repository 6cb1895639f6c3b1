"""fingerprint_reference / fingerprint_query: samples -> (hashes, offsets)."""
from __future__ import annotations

import numpy as np

from .hashing import generate_hashes, jitter_hashes
from .params import FingerprintParams
from .peaks import find_peaks, peak_candidates, ration_peaks
from .spectrogram import spectrogram


def fingerprint_reference(samples: np.ndarray, params: FingerprintParams
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Sparse hashes of a catalogue song, as stored in the index.

    Parameters
    ----------
    samples : np.ndarray [shape=(n_samples,)], float, mono at ``params.sample_rate_hz``
    params : FingerprintParams

    Returns
    -------
    hashes : np.ndarray [shape=(n,)], uint32
    offsets : np.ndarray [shape=(n,)], int32, frames from the start of the song
    """
    spec = spectrogram(samples, params)
    freq, frame = find_peaks(spec, params, params.ref_peaks_per_block)
    return generate_hashes(freq, frame, params, params.ref_fanout, _levels(spec, freq, frame, params))


def fingerprint_query(samples: np.ndarray, params: FingerprintParams
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Dense hashes of a query clip: a superset of what the index holds for it.

    Denser peaks, more targets per anchor, and each pair's +-jitter neighbours
    (:func:`dejavu.hashing.jitter_hashes`). A clip that would give more than
    ``query_max_hashes`` is sampled with fewer peaks per second (a long clip has evidence to
    spare, and the lookup's cost grows with the hashes sent). Same shapes and units as
    :func:`fingerprint_reference`; offsets count frames from the start of the clip.
    """
    spec = spectrogram(samples, params)
    candidates = peak_candidates(spec, params)   # once, however often rationed
    per_block = params.query_peaks_per_block
    while True:
        freq, frame = ration_peaks(candidates, params, per_block)
        pairs = generate_hashes(freq, frame, params, params.query_fanout, _levels(spec, freq, frame, params),
                                params.query_level_margin_db)
        hashes, offsets = jitter_hashes(*pairs, params)
        if hashes.size <= params.query_max_hashes or per_block <= params.ref_peaks_per_block:
            return hashes, offsets
        # Too many for one lookup (a long clip): fewer peaks per second, never below the index's.
        per_block = max(params.ref_peaks_per_block,
                        min(per_block - 1, int(per_block * params.query_max_hashes / hashes.size)))


def _levels(spec: np.ndarray, freq: np.ndarray, frame: np.ndarray, params: FingerprintParams) -> np.ndarray:
    """Spectrogram level (dB) at each peak (freq are FFT bins, the spectrogram starts at min_freq_bin)."""
    return spec[freq - params.min_freq_bin, frame]
