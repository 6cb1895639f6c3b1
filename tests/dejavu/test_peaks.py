import numpy as np

from dejavu import DEFAULT_PARAMS as P
from dejavu.peaks import find_peaks
from dejavu.spectrogram import spectrogram
from tests.conftest import music_like


def test_silence_has_no_peaks():
    freq, frame = find_peaks(spectrogram(np.zeros(P.sample_rate_hz * 3), P), P, 32)
    assert freq.size == 0 and frame.size == 0


def test_every_peak_is_a_local_maximum_and_blocks_are_rationed(rng):
    spec = spectrogram(music_like(rng, 10), P)
    freq, frame = find_peaks(spec, P, 8)
    assert freq.size > 0
    assert np.all(np.diff(frame) >= 0)
    rows = freq - P.min_freq_bin
    for f, t in zip(rows, frame):
        hood = spec[max(f - P.peak_freq_radius, 0):f + P.peak_freq_radius + 1,
                    max(t - P.peak_time_radius, 0):t + P.peak_time_radius + 1]
        assert spec[f, t] == hood.max()
    assert np.bincount(frame // P.block_frames).max() <= 8


def test_query_side_is_a_superset_of_the_reference_side(rng):
    spec = spectrogram(music_like(rng, 10), P)
    ref = set(zip(*find_peaks(spec, P, P.ref_peaks_per_block)))
    query = set(zip(*find_peaks(spec, P, P.query_peaks_per_block)))
    assert ref <= query and len(query) > len(ref)
