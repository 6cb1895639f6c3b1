import dataclasses
import math

import numpy as np
import pytest
from scipy import signal

from dejavu import DEFAULT_PARAMS as P
from dejavu import ParameterError, fingerprint_query, fingerprint_reference
from dejavu import robust as R
from tests.conftest import music_like

RP = R.DEFAULT_ROBUST
SONG_SECONDS = 30


def _index(songs: dict[int, np.ndarray]):
    """Reference triplet rows of the songs: (hashes, song ids, offsets)."""
    rows = [(*R.fingerprint_reference_families(x, P, RP)[1], song_id) for song_id, x in songs.items()]
    return (
        np.concatenate([h for h, _, _ in rows]),
        np.concatenate([np.full(h.size, s, np.int64) for h, _, s in rows]),
        np.concatenate([o for _, o, _ in rows]).astype(np.int64),
    )


def _search(clip: np.ndarray, index) -> tuple[list[R.RobustAlignment], float]:
    """The whole robust path against an in-memory index, with exact counts."""
    hashes, song_ids, offsets = index
    trip = R.fingerprint_query_triplets(clip, P, RP)
    values, owners = R.query_lookups(trip, RP)
    distinct = np.unique(values)
    counts = np.array([np.count_nonzero(hashes == v) for v in distinct])
    chosen = R.rarest_values(distinct, counts, RP.q_row_budget)
    looked_up = np.isin(values, chosen)
    held = np.isin(hashes, chosen)
    fits = R.align_triplets(trip, values[looked_up], owners[looked_up], hashes[held], song_ids[held], offsets[held], RP)
    return fits, R.robust_margin(fits, RP)


@pytest.fixture(scope="module")
def songs():
    return {song_id: music_like(np.random.default_rng(song_id), SONG_SECONDS) for song_id in (1, 2, 3)}


@pytest.fixture(scope="module")
def index(songs):
    return _index(songs)


def test_hashes_and_offsets_fit_their_bits_apart_from_the_pair_family(index):
    hashes, _, offsets = index
    assert hashes.size > 1000
    assert hashes.min() >= R.TAG and hashes.max() < R.TAG + (1 << 25) < 2**31
    assert R.is_triplet_hash(hashes).all() and not R.is_triplet_hash(np.arange(1 << 24, step=4099)).any()
    assert offsets.min() >= 0 and offsets.max() < 2**31


def test_unpack_offsets_inverts_pack_offsets(rng):
    frames, spans, position = rng.integers(0, 1 << 17, 50), rng.integers(0, 64, 50), rng.integers(0, 256, 50)
    assert [a.tolist() for a in R.unpack_offsets(R.pack_offsets(frames, spans, position))] == [
        frames.tolist(),
        spans.tolist(),
        position.tolist(),
    ]


def test_pair_family_is_the_pair_path_unchanged(rng):
    audio = music_like(rng, 10)
    pairs, _ = R.fingerprint_reference_families(audio, P, RP)
    assert [a.tolist() for a in pairs] == [a.tolist() for a in fingerprint_reference(audio, P)]


def test_digest_follows_reference_knobs_only_and_the_pair_digest_is_unchanged():
    assert P.digest() == "e20071e54d2ade53"  # indexes of earlier releases keep opening
    assert RP.digest() == dataclasses.replace(RP, q_row_budget=5, vote_candidates=2, min_score=20).digest()
    assert RP.digest() != dataclasses.replace(RP, ref_targets=4).digest() != P.digest()
    with pytest.raises(ParameterError):
        dataclasses.replace(RP, ref_targets=2).validate()


def _clip(songs, song_id: int, start_s: float, seconds: float) -> np.ndarray:
    return songs[song_id][int(start_s * P.sample_rate_hz) : int((start_s + seconds) * P.sample_rate_hz)]


def test_a_clip_played_5_percent_faster_is_found_with_its_scales(songs, index):
    clip = _clip(songs, 2, 8.0, 10.5)
    faster = signal.resample(clip, round(clip.size / 1.05)).astype(np.float32)  # pitch and tempo x 1.05
    fits, margin = _search(faster, index)
    assert margin >= 0 and fits[0].song_id == 2
    assert fits[0].time_scale == pytest.approx(1 / 1.05, rel=0.01)
    assert fits[0].frequency_scale == pytest.approx(1.05, rel=0.01)
    assert fits[0].offset_frames * P.frame_seconds == pytest.approx(8.0, abs=0.1)  # in the song's own time


def test_a_clip_a_semitone_higher_is_found_with_its_scales():
    semitone = 2 ** (1 / 12)
    song = music_like(np.random.default_rng(7), SONG_SECONDS)
    higher = music_like(np.random.default_rng(7), SONG_SECONDS, base_hz=110.0 * semitone)  # the same notes, higher
    index = _index({7: song, 8: music_like(np.random.default_rng(8), SONG_SECONDS)})
    fits, margin = _search(higher[5 * P.sample_rate_hz : 15 * P.sample_rate_hz], index)
    assert margin >= 0 and fits[0].song_id == 7
    assert fits[0].time_scale == pytest.approx(1.0, rel=0.01)
    assert fits[0].frequency_scale == pytest.approx(semitone, rel=0.01)
    assert fits[0].offset_frames * P.frame_seconds == pytest.approx(5.0, abs=0.1)


def test_an_unknown_clip_is_no_match(index):
    fits, margin = _search(music_like(np.random.default_rng(99), 10), index)
    assert margin < 0


def test_silence_gives_no_triplets_and_no_fit():
    trip = R.fingerprint_query_triplets(np.zeros(3 * P.sample_rate_hz, np.float32), P, RP)
    assert trip.size == 0 and R.query_lookups(trip, RP)[0].size == 0
    assert R.robust_margin(R.align_triplets(trip, *(np.zeros(0),) * 5, RP), RP) == -math.inf


def test_rarest_values_fit_the_budget_and_skip_absent_values():
    values = np.arange(10, dtype=np.uint32) | R.TAG
    counts = np.array([0, 5, 1, 1, 9, 1, 0, 3, 2, 1])
    chosen = R.rarest_values(values, counts, 6)
    assert set(chosen.tolist()) == set(values[[2, 3, 5, 9, 8]].tolist())


def test_lookup_steps_read_the_rarest_share_first_then_the_rest_of_the_budget():
    values = np.arange(10, dtype=np.uint32) | R.TAG
    counts = np.array([0, 5, 1, 1, 9, 1, 0, 3, 2, 1])
    first, every = R.lookup_steps(values, counts, 12, 0.5)
    assert set(first.tolist()) == set(values[[2, 3, 5, 9, 8]].tolist())  # 6 of the 12 rows
    assert set(first.tolist()) < set(every.tolist()) == set(R.rarest_values(values, counts, 12).tolist())
    assert [s.tolist() for s in R.lookup_steps(values, counts, 12, 1.0)] == [every.tolist()]
    only = R.lookup_steps(values, counts, 3, 0.2)  # the first step holds nothing: one step
    assert len(only) == 1 and only[0].size == 3


def test_fit_finds_a_known_line(rng):
    clip_frames = rng.uniform(0, 400, 300).round()
    line = rng.random(300) < 0.3  # 30 % on t_song = 1000 + t_clip / 0.93, the rest chance
    song_frames = np.where(line, 1000 + clip_frames / 0.93, rng.uniform(900, 1500, 300))
    matches = R._Matches(np.ones(300, np.int64), clip_frames, song_frames, np.zeros(300), np.zeros(300))
    fit = R.fit_song(1, matches, RP)
    assert fit.time_scale == pytest.approx(0.93, rel=0.002) and fit.offset_frames == pytest.approx(1000, abs=1)
    assert fit.score >= np.unique(clip_frames[line]).size - 2


def test_a_packed_fingerprint_carries_both_families_and_the_robust_digest(rng):
    from dejavu import pack_fingerprint, unpack_fingerprint

    (pair_h, pair_o), (trip_h, trip_o) = R.fingerprint_reference_families(music_like(rng, 10), P, RP)
    hashes, offsets = np.concatenate([pair_h, trip_h]), np.concatenate([pair_o, trip_o])
    packed = unpack_fingerprint(pack_fingerprint(hashes, offsets, P.digest(), "ab" * 20, 10.0, RP.digest()))
    assert packed.robust_digest == RP.digest()
    assert sorted(zip(packed.hashes.tolist(), packed.offsets.tolist())) == sorted(
        zip(hashes.tolist(), offsets.tolist())
    )
    assert unpack_fingerprint(pack_fingerprint(pair_h, pair_o, P.digest(), "ab" * 20, 10.0)).robust_digest == ""


def test_query_triplets_read_the_pair_paths_phase_0_spectrogram_and_are_the_same(rng):
    clip = music_like(rng, 5)
    views = {}
    fingerprint_query(clip, P, views=views)
    spec = views[0][0]
    shared = R.fingerprint_query_triplets(clip, P, RP, views)
    alone = R.fingerprint_query_triplets(clip, P, RP)
    assert views[0][0] is spec
    assert all(np.array_equal(getattr(shared, f.name), getattr(alone, f.name)) for f in dataclasses.fields(alone))


@pytest.mark.parametrize(
    ("scores", "ends"),
    [
        ((), True),  # nothing met
        ((2,), True),  # under the least score
        ((9, 2), False),  # a clear lead
        ((5, 4), True),  # chance at a big catalogue: over the least score, level with the runner-up
        ((8, 4), False),  # twice the runner-up
    ],
)
def test_the_first_rows_end_the_search_on_a_fit_low_or_level_with_the_runner_up(scores, ends):
    fits = [
        R.RobustAlignment(song_id=i, score=s, time_scale=1.0, frequency_scale=1.0, offset_frames=0.0)
        for i, s in enumerate(scores)
    ]
    assert R.out_of_reach(fits, RP) is ends
