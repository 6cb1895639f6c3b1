import dataclasses

import numpy as np

from dejavu import (
    DEFAULT_MATCH,
    align_matches,
    lookup_steps,
    margin_to_confidence,
    match_margin,
    out_of_reach,
    rarest_hashes,
)


def test_best_offset_sums_the_tolerance_window():
    songs = np.array([1, 1, 1, 1, 2, 2])
    deltas = np.array([10, 11, 12, 50, 7, 300])
    counts = np.array([4, 5, 3, 6, 8, 1])
    best = align_matches(songs, deltas, counts, tolerance_frames=1)
    assert (best[0].song_id, best[0].offset_frames, best[0].aligned, best[0].matched) == (1, 11, 12, 18)
    assert (best[1].song_id, best[1].aligned, best[1].matched) == (2, 8, 9)
    assert align_matches(songs, deltas, counts, tolerance_frames=0)[0].song_id == 2


def test_empty_histogram():
    assert align_matches(np.array([]), np.array([]), np.array([])) == []


def test_the_bar_follows_the_runner_up_and_busy_songs_not_the_hashes_sent():
    assert match_margin(20, 25, 0, 1000, DEFAULT_MATCH) > 0
    assert match_margin(4, 25, 0, 1000, DEFAULT_MATCH) < 0
    # a clip where another song also aligns well needs more, by more than the runner-up's count
    assert match_margin(20, 25, 0, 1000, DEFAULT_MATCH) - match_margin(20, 25, 5, 1000, DEFAULT_MATCH) > 5
    # a busy song (many matches at other offsets) needs more
    assert match_margin(20, 900, 0, 1000, DEFAULT_MATCH) < match_margin(20, 25, 0, 1000, DEFAULT_MATCH)
    # the hashes sent do not move it ...
    assert match_margin(10, 25, 3, 4000, DEFAULT_MATCH) == match_margin(10, 25, 3, 500, DEFAULT_MATCH)


def test_the_bar_can_also_rise_with_the_hashes_sent():
    # ... unless weighted: then a long query needs more than a short one
    weighted = dataclasses.replace(DEFAULT_MATCH, query_hashes_weight=3.0)
    assert match_margin(10, 25, 3, 4000, weighted) < match_margin(10, 25, 3, 500, weighted)


def test_confidence_is_monotone_in_0_1():
    values = [margin_to_confidence(m, DEFAULT_MATCH) for m in (-50, -2, 0, 2, 50)]
    assert values == sorted(values) and 0 <= values[0] and values[-1] <= 1
    assert values[2] == 0.5


def test_rarest_hashes_fill_the_budget_rarest_first_and_skip_absent_values():
    values = np.array([10, 11, 12, 13, 14], np.uint32)
    counts = np.array([50, 0, 3, 7, 3])
    assert rarest_hashes(values, counts, 6).tolist() == [12, 14]  # 3 + 3 rows
    assert rarest_hashes(values, counts, 13).tolist() == [12, 14, 13]  # + 7
    assert rarest_hashes(values, counts, 2).tolist() == []
    assert rarest_hashes(values, counts, 10**6).tolist() == [12, 14, 13, 10]  # never the absent 11


def test_of_two_offsets_with_equal_windows_the_tighter_one_wins():
    # Song 1 at delta 100: 4 + 4 + 4 within +-1 frame; at delta 300: 12 at exactly that delta.
    deltas = np.array([99, 100, 101, 300])
    got = align_matches(np.ones(4, np.int64), deltas, np.array([4, 4, 4, 12]), tolerance_frames=1)
    assert (got[0].offset_frames, got[0].aligned) == (300, 12)
    # Reversed, the earlier offset is the tighter one and still wins.
    got = align_matches(np.ones(4, np.int64), np.array([100, 299, 300, 301]), np.array([12, 4, 4, 4]), 1)
    assert (got[0].offset_frames, got[0].aligned) == (100, 12)


def test_lookup_steps_grow_rarest_first_and_end_with_every_held_value():
    values = np.array([10, 11, 12, 13, 14, 15], np.uint32)
    counts = np.array([50, 0, 3, 7, 3, 400])
    steps = [s.tolist() for s in lookup_steps(values, counts, 6, 4.0)]
    # 6 rows, then up to 4 x 6 = 24 (+7), then 4 x 13 = 52 (+50), then the rest
    assert steps == [[12, 14], [12, 14, 13], [12, 14, 13, 10], [12, 14, 13, 10, 15]]
    assert [s.tolist() for s in lookup_steps(values, counts, 0, 4.0)] == [[12, 14, 13, 10, 15]]
    assert [s.tolist() for s in lookup_steps(values, counts, 10**6, 4.0)] == [[12, 14, 13, 10, 15]]
    # a budget below the rarest value's rows grows until it holds one
    assert lookup_steps(values, counts, 1, 2.0)[0].tolist() == [12]  # 1, 2, then 4 rows hold 3
    assert [s.tolist() for s in lookup_steps(values, np.zeros(6), 8, 4.0)] == [[]]


def test_a_best_song_is_out_of_reach_only_when_far_below_the_bar():
    # 2 aligned of a tenth of the pairs, 10 below the bar of 12: scaled up, 20 + would clear it
    assert not out_of_reach(2, -10.0, 0.1, 1.0)
    # the same count from half the pairs: at most about 7, short of 12
    assert out_of_reach(2, -10.0, 0.5, 1.0)
    # more deviations of allowance keep it in reach
    assert not out_of_reach(2, -10.0, 0.5, 4.0)
    # no song at all, from a third of the pairs: the allowance alone (1 / 0.33 = 3) is short of 12
    assert out_of_reach(0, -12.0, 0.33, 1.0)
