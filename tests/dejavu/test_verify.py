import numpy as np
import pytest

from dejavu import DEFAULT_PARAMS as P
from dejavu import ParameterError, fingerprint_reference
from dejavu.fingerprint import query_peaks
from dejavu.hashing import generate_hashes
from dejavu.peaks import find_peaks
from dejavu.spectrogram import spectrogram
from dejavu.verify import (
    DEFAULT_VERIFY,
    VerifyParams,
    fit_scales,
    pack_peaks,
    pair_peaks,
    unpack_peaks,
    verdict,
    verify,
)
from tests.conftest import SR, music_like


def test_packed_peaks_come_back_sorted_by_frame(rng):
    frames = np.sort(rng.integers(0, 10_000_000, 5000))  # gaps of any length
    bins = rng.integers(6, 372, 5000)
    got_bins, got_frames = unpack_peaks(pack_peaks(bins[::-1], frames[::-1]))
    order = np.lexsort((bins, frames))
    np.testing.assert_array_equal(got_frames, frames[order])
    np.testing.assert_array_equal(got_bins, bins[order])
    assert [a.size for a in unpack_peaks(pack_peaks(np.zeros(0), np.zeros(0)))] == [0, 0]


@pytest.mark.parametrize("data", [b"", b"\x01\x05\x00\x00\x00garbage", pack_peaks(np.arange(3), np.arange(3))[:-2]])
def test_what_is_not_packed_peaks_is_refused(data):
    with pytest.raises(ParameterError):
        unpack_peaks(data)


def test_the_peaks_of_pair_rows_are_every_peak_that_makes_a_pair(rng):
    samples = music_like(rng, 20.0)
    spec = spectrogram(samples, P)
    freq, frame = find_peaks(spec, P, P.ref_peaks_per_block)
    hashes, offsets = generate_hashes(freq, frame, P, P.ref_fanout, spec[freq - P.min_freq_bin, frame])
    robust_rows = (np.full(50, (1 << 30) + 5, np.uint32), rng.integers(0, 800, 50).astype(np.int32))
    bins, frames = pair_peaks(np.r_[hashes, robust_rows[0]], np.r_[offsets, robust_rows[1]])
    peaks = set(zip(freq.tolist(), frame.tolist()))
    found = set(zip(bins.tolist(), frames.tolist()))
    assert found <= peaks and len(found) >= 0.95 * len(peaks)  # only peaks without a target are missing


def _song_peaks(samples):
    return pair_peaks(*fingerprint_reference(samples, P))


def _smeared(samples, rng, snr_db):
    """The clip in a room (a decaying tail) under white noise at snr_db."""
    tail = np.exp(-np.arange(int(0.4 * SR)) / (0.08 * SR)) * rng.standard_normal(int(0.4 * SR))
    wet = np.convolve(samples, tail / np.abs(tail).sum(), mode="full")[: samples.size]
    wet = 0.5 * samples + 2.0 * wet
    noise = rng.standard_normal(samples.size) * np.sqrt(np.mean(wet**2) / 10 ** (snr_db / 10))
    return (wet + noise).astype(np.float32)


def test_the_true_song_stands_out_of_its_chance_and_the_others_do_not(rng):
    songs = [music_like(rng, 60.0) for _ in range(5)]
    start = 20 * P.sample_rate_hz
    clip = _smeared(songs[0][start : start + 10 * SR], rng, snr_db=0.0)
    true_offset = round(start / P.hop_length)
    candidates = [(1, true_offset + 3, _song_peaks(songs[0]))]  # the pair search's offset, 3 frames off
    candidates += [(i + 1, int(rng.integers(0, 2000)), _song_peaks(s)) for i, s in enumerate(songs[1:], 1)]
    verified = verify(query_peaks(clip, P), candidates)
    best = verdict(verified)
    assert best is not None and best.song_id == 1 and abs(best.offset_frames - true_offset) <= 1
    assert best.hits > best.chance + 5 and best.song_peaks > best.hits // 4
    assert all(v.z < DEFAULT_VERIFY.min_z for v in verified[1:])


def test_a_clip_of_no_candidate_is_no_answer(rng):
    songs = [music_like(rng, 60.0) for _ in range(5)]
    other = music_like(rng, 10.0)
    candidates = [(i + 1, int(rng.integers(0, 2000)), _song_peaks(s)) for i, s in enumerate(songs)]
    verified = verify(query_peaks(other, P), candidates)
    assert len(verified) == 5 and verdict(verified) is None
    assert verdict([]) is None and verify((np.zeros(0), np.zeros(0)), candidates) == []


def test_a_song_too_short_to_measure_its_chance_is_left_out(rng):
    song = music_like(rng, 2.0)  # 86 frames: 87 offsets, all but 6 within chance_gap of the best
    clip = song[: 3 * SR // 2]
    assert verify(query_peaks(clip, P), [(1, 0, _song_peaks(song))], VerifyParams(min_clip_frames=1)) == []
    wide = VerifyParams(chance_gap=0, min_chance_offsets=10, min_clip_frames=1)
    assert abs(verify(query_peaks(clip, P), [(1, 0, _song_peaks(song))], wide)[0].offset_frames) <= 1


def test_a_clip_too_short_to_tell_its_chance_is_not_verified(rng):
    song = music_like(rng, 60.0)
    start = 20 * SR
    candidates = [(1, round(start / P.hop_length), _song_peaks(song))]
    assert verify(query_peaks(song[start : start + 4 * SR], P), candidates)  # 4 s: verified
    assert verify(query_peaks(song[start : start + 2 * SR], P), candidates) == []  # 2 s: too few peaks


@pytest.mark.parametrize(
    "change", [dict(candidates=0), dict(late_frames=-1), dict(min_chance_offsets=500), dict(lead=-1.0)]
)
def test_params_out_of_range_are_refused(change):
    with pytest.raises(ParameterError):
        VerifyParams(**change).validate()


def _clip_of_peaks(rng, song, start, time_scale, frames, frequency_scale=1.0):
    """Half the song's peaks from ``start`` on as a clip played at ``time_scale`` (clip seconds per song
    second) and ``frequency_scale``, up to 3 frames late, among as many peaks of noise."""
    bins, song_frames = song
    at = (song_frames - start) * time_scale
    keep = (at >= 0) & (at < frames) & (rng.random(bins.size) < 0.5)
    late = rng.integers(0, 4, int(keep.sum()))
    noise = rng.integers(0, frames, int(keep.sum())), rng.integers(6, 372, int(keep.sum()))
    moved = np.rint(bins[keep] * frequency_scale).astype(int)
    return np.r_[moved, noise[1]], np.r_[np.floor(at[keep]).astype(int) + late, noise[0]]


@pytest.mark.parametrize("time_scale", [1 / 1.1, 1 / 1.03, 1.08])
def test_a_tempo_change_is_fitted_from_where_the_hashes_aligned(rng, time_scale):
    song = (rng.integers(6, 372, 6000), np.sort(rng.integers(0, 10_000, 6000)))  # 24 peaks a second
    clip = _clip_of_peaks(rng, song, 4000, time_scale, 430)
    aligned_at = 4000 + round(200 * (1 / time_scale - 1))  # where the hashes of clip frame 200 align
    fit = fit_scales(clip, song, aligned_at)
    assert fit.time_scale == pytest.approx(time_scale, rel=0.002) and fit.frequency_scale == 1.0  # pitch kept
    assert fit.offset_frames == pytest.approx(4000, abs=2) and fit.hits > 1.2 * fit.hits_unscaled


@pytest.mark.parametrize("speed", [1.02, 0.975])
def test_a_speed_change_is_fitted_in_time_and_frequency(rng, speed):
    song = (rng.integers(6, 372, 6000), np.sort(rng.integers(0, 10_000, 6000)))
    clip = _clip_of_peaks(rng, song, 4000, 1 / speed, 430, frequency_scale=speed)
    fit = fit_scales(clip, song, 4000 + round(200 * (speed - 1)))
    assert fit.time_scale == pytest.approx(1 / speed, rel=0.002)
    assert fit.frequency_scale == pytest.approx(speed, abs=0.0026)  # the grid's step, 0.5 %, halved


def test_an_unchanged_tempo_stays_one(rng):
    song = (rng.integers(6, 372, 6000), np.sort(rng.integers(0, 10_000, 6000)))
    fit = fit_scales(_clip_of_peaks(rng, song, 4000, 1.0, 430), song, 4001)
    assert fit.time_scale == 1.0 and fit.offset_frames == pytest.approx(4000, abs=2)
    noise = rng.integers(6, 372, 300), rng.integers(0, 430, 300)  # no line at all: no scale either
    assert fit_scales(noise, song, 4000).time_scale == 1.0
