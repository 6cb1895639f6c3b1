"""spectrogram(samples, params) -> log-magnitude spectrogram of the analysed band."""

from __future__ import annotations

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

from .errors import ParameterError
from .params import FingerprintParams

_EPS = 1e-5  # magnitude floor: silence sits at -100 dB instead of -inf
_CHUNK_FRAMES = 512


def spectrogram(samples: np.ndarray, params: FingerprintParams) -> np.ndarray:
    """Short-time log-magnitude spectrum of mono samples.

    Parameters
    ----------
    samples : np.ndarray [shape=(n_samples,)], float, full scale +-1.0
        Mono audio at ``params.sample_rate_hz``.
    params : FingerprintParams
        Uses ``n_fft``, ``hop_length``, ``min_freq_bin`` and ``max_freq_bin``.

    Returns
    -------
    spec : np.ndarray [shape=(max_freq_bin - min_freq_bin, n_frames)], float32, dB
        Row ``i`` is FFT bin ``min_freq_bin + i``; column ``t`` starts at sample
        ``t * hop_length``. Zero frames when the input is shorter than ``n_fft``.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ParameterError("samples must be one-dimensional (mono)")
    n_bins = params.max_freq_bin - params.min_freq_bin
    if samples.shape[0] < params.n_fft:
        return np.zeros((n_bins, 0), dtype=np.float32)
    frames = sliding_window_view(samples.astype(np.float32, copy=False), params.n_fft)[:: params.hop_length]
    window = _window(params.n_fft)
    spec = np.empty((n_bins, frames.shape[0]), dtype=np.float32)
    # In chunks of frames: the temporaries stay a few MB (reused by the allocator, in cache)
    # instead of whole-song arrays of 40+ MB that are mapped and faulted in on every call.
    for start in range(0, frames.shape[0], _CHUNK_FRAMES):
        chunk = frames[start : start + _CHUNK_FRAMES] * window
        spectrum = scipy.fft.rfft(chunk, axis=1)[:, params.min_freq_bin : params.max_freq_bin]
        magnitude = np.abs(spectrum)
        np.maximum(magnitude, _EPS, out=magnitude)
        spec[:, start : start + chunk.shape[0]] = (20.0 * np.log10(magnitude)).T
    return spec


def _window(n_fft: int) -> np.ndarray:
    return np.hanning(n_fft).astype(np.float32)
