"""fingerprint_reference / fingerprint_query: samples -> (hashes, offsets)."""
from __future__ import annotations

import numpy as np

from .hashing import generate_hashes
from .params import FingerprintParams
from .peaks import find_peaks
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
    freq, frame = find_peaks(spectrogram(samples, params), params, params.ref_peaks_per_block)
    return generate_hashes(freq, frame, params, params.ref_fanout)


def fingerprint_query(samples: np.ndarray, params: FingerprintParams
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Dense hashes of a query clip: a superset of what the index holds for it.

    Same shapes and units as :func:`fingerprint_reference`; offsets count frames
    from the start of the clip.
    """
    freq, frame = find_peaks(spectrogram(samples, params), params, params.query_peaks_per_block)
    return generate_hashes(freq, frame, params, params.query_fanout)
