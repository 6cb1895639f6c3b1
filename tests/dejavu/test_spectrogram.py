import numpy as np

from dejavu import DEFAULT_PARAMS as P
from dejavu.spectrogram import spectrogram


def test_a_tone_peaks_at_its_bin():
    t = np.arange(P.sample_rate_hz) / P.sample_rate_hz
    spec = spectrogram(np.sin(2 * np.pi * 1000 * t), P)
    expected_bin = round(1000 * P.n_fft / P.sample_rate_hz)
    assert np.all(spec.argmax(axis=0) + P.min_freq_bin == expected_bin)


def test_frame_count_and_short_input():
    n = 5 * P.sample_rate_hz
    assert spectrogram(np.zeros(n), P).shape == (P.max_freq_bin - P.min_freq_bin, 1 + (n - P.n_fft) // P.hop_length)
    assert spectrogram(np.zeros(10), P).shape[1] == 0
