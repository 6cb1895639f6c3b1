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
        hood = spec[
            max(f - P.peak_freq_radius, 0) : f + P.peak_freq_radius + 1,
            max(t - P.peak_time_radius, 0) : t + P.peak_time_radius + 1,
        ]
        assert spec[f, t] == hood.max()
    assert np.bincount(frame // P.block_frames).max() <= 8


def test_query_side_is_a_superset_of_the_reference_side(rng):
    spec = spectrogram(music_like(rng, 10), P)
    ref = set(zip(*find_peaks(spec, P, P.ref_peaks_per_block)))
    query = set(zip(*find_peaks(spec, P, P.query_peaks_per_block)))
    assert ref <= query and len(query) > len(ref)


def test_tilt_prefers_a_lower_peak_by_its_db_per_octave():
    import dataclasses

    def kept(spec, params):
        return list(zip(*(a.tolist() for a in find_peaks(spec, params, 1))))

    flat = dataclasses.replace(P, peak_tilt_db_per_octave=0.0)
    # Rows 20 and 300 (bins 26 and 306) in one block: 3.6 octaves, 17.8 dB of tilt apart.
    assert P.peak_tilt_db_per_octave * np.log2(306 / 26) > 10
    spec = np.full((P.max_freq_bin - P.min_freq_bin, 43), -60.0)
    spec[20, 10], spec[300, 30] = -20.0, -10.0  # the higher one 10 dB louder
    assert kept(spec, flat) == [(306, 30)]
    assert kept(spec, P) == [(26, 10)]
    spec[300, 30] = 0.0  # and now 20 dB louder: more than the tilt
    assert kept(spec, P) == [(306, 30)]


def test_no_pair_joins_two_peaks_of_the_same_bin(rng):
    from dejavu import fingerprint_reference
    from dejavu.hashing import unpack_hashes

    hashes, _ = fingerprint_reference(music_like(rng, 10), P)
    _, df, _ = unpack_hashes(hashes)
    assert hashes.size > 0 and np.all(np.abs(df) >= P.min_df_bins) and P.min_df_bins >= 1


def test_sliding_max_equals_scipys_maximum_filter(rng):
    from scipy import ndimage

    from dejavu.peaks import sliding_max

    for shape in [(40, 300), (5, 3), (20, 1), (1, 40)]:
        x = rng.normal(size=shape).astype(np.float32)
        for radius in (0, 1, 4, 8, 30):
            for axis in (0, 1):
                want = ndimage.maximum_filter1d(x, 2 * radius + 1, axis=axis, mode="nearest")
                np.testing.assert_array_equal(sliding_max(x, radius, axis), want)
