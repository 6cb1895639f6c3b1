import dataclasses

import numpy as np

from dejavu import DEFAULT_PARAMS as P
from dejavu import HASH_BITS, fingerprint_query, fingerprint_reference, fingerprint_triplets
from dejavu.hashing import (
    distinct,
    generate_hashes,
    pack_hashes,
    pool_phases,
    third_codes,
    triplet_keys,
    unpack_hashes,
)
from tests.conftest import music_like


def test_pack_and_unpack_are_inverse(rng):
    anchor = rng.integers(0, 512, 1000)
    df = rng.integers(-127, 128, 1000)
    dt = rng.integers(1, 64, 1000)
    hashes = pack_hashes(anchor, df, dt)
    assert hashes.dtype == np.uint32
    for got, want in zip(unpack_hashes(hashes), (anchor, df, dt)):
        np.testing.assert_array_equal(got, want)


def naive_pairs(freq, frame, fanout, levels=None, margin_db=0.0):
    """(hash, offset) of every pair; with levels, the top bit set when the target is louder, and
    pairs closer than margin_db in level also given the other bit."""
    out = set()
    top = 1 << (HASH_BITS - 1)
    for i in range(len(freq)):
        taken = 0
        for j in range(i + 1, len(freq)):
            dt, df = frame[j] - frame[i], freq[j] - freq[i]
            if dt > P.max_dt_frames or taken == fanout:
                break
            if dt >= 1 and P.min_df_bins <= abs(df) <= P.max_df_bins:
                h = int(pack_hashes(np.array([freq[i]]), np.array([df]), np.array([dt]))[0])
                if levels is not None:
                    step = levels[j] - levels[i]
                    h |= top if step > 0 else 0
                    if abs(step) < margin_db:
                        out.add((h ^ top, int(frame[i])))
                out.add((h, int(frame[i])))
                taken += 1
    return out


def test_vectorised_pairs_match_the_naive_oracle(rng):
    frame = np.sort(rng.integers(0, 400, 300)).astype(np.int32)
    freq = rng.integers(P.min_freq_bin, P.max_freq_bin, 300).astype(np.int32)
    no_level = dataclasses.replace(P, level_bit=False)
    hashes, offsets = generate_hashes(freq, frame, no_level, 5)
    assert set(zip(hashes.tolist(), offsets.tolist())) == naive_pairs(freq, frame, 5)


def test_level_bit_marks_louder_targets_and_the_query_tries_both_when_close(rng):
    frame = np.sort(rng.integers(0, 400, 300)).astype(np.int32)
    freq = rng.integers(P.min_freq_bin, P.max_freq_bin, 300).astype(np.int32)
    levels = rng.uniform(-60, -10, 300)
    plain = set(zip(*(a.tolist() for a in generate_hashes(freq, frame, dataclasses.replace(P, level_bit=False), 5))))
    ref_h, ref_o = generate_hashes(freq, frame, P, 5, levels)
    top = 1 << (HASH_BITS - 1)
    assert {(h & ~top, o) for h, o in zip(ref_h.tolist(), ref_o.tolist())} == plain
    by_anchor = {(int(f), int(t)): lv for f, t, lv in zip(freq, frame, levels)}
    for h, o in zip(ref_h.tolist(), ref_o.tolist()):
        anchor, df, dt = (int(v[0]) for v in unpack_hashes(np.array([h & ~top], np.uint32)))
        louder = by_anchor.get((anchor + df, o + dt), None)
        if (
            louder is not None
            and (anchor, o) in by_anchor
            and sum(1 for f, t in by_anchor if (f, t) == (anchor + df, o + dt)) == 1
        ):
            assert bool(h & top) == (louder > by_anchor[(anchor, o)])
    assert set(zip(ref_h.tolist(), ref_o.tolist())) == naive_pairs(freq, frame, 5, levels)
    query_h, query_o = generate_hashes(freq, frame, P, 5, levels, level_margin_db=3.0)
    query = set(zip(query_h.tolist(), query_o.tolist()))
    assert set(zip(ref_h.tolist(), ref_o.tolist())) <= query
    assert query == naive_pairs(freq, frame, 5, levels, margin_db=3.0)  # only the close pairs get both values
    flipped = {(h ^ top, o) for h, o in zip(ref_h.tolist(), ref_o.tolist())}
    assert 0 < len(query & flipped) < len(flipped)  # and some are close, some are not


def test_query_hashes_contain_most_reference_hashes(rng):
    audio = music_like(rng, 20)
    ref = set(zip(*(a.tolist() for a in fingerprint_reference(audio, P))))
    query = set(zip(*(a.tolist() for a in fingerprint_query(audio, P))))
    assert len(ref) > 100
    assert len(ref & query) / len(ref) > 0.8


def test_a_clip_cut_at_frame_k_aligns_at_k(rng):
    audio = music_like(rng, 20)
    k = 200
    ref_h, ref_o = fingerprint_reference(audio, P)
    q_h, q_o = fingerprint_query(audio[k * P.hop_length : (k + 200) * P.hop_length], P)
    ref = {}
    for h, o in zip(ref_h.tolist(), ref_o.tolist()):
        ref.setdefault(h, []).append(o)
    deltas = [o - qo for h, qo in zip(q_h.tolist(), q_o.tolist()) for o in ref.get(h, [])]
    values, counts = np.unique(deltas, return_counts=True)
    assert values[counts.argmax()] == k


def _index_hashes_found(audio, start, frames, params):
    """Index hashes of audio's frames [start, start + frames) that a clip cut there finds at its offset."""
    ref_h, ref_o = fingerprint_reference(audio, params)
    window = (ref_o >= start) & (ref_o < start + frames - params.max_dt_frames)
    clip = audio[start * params.hop_length + params.hop_length // 2 :][: frames * params.hop_length]
    q_h, q_o = fingerprint_query(clip, params)
    query = set(zip(q_h.tolist(), q_o.tolist()))
    found = [any((h, o - start - d) in query for d in (-1, 0, 1)) for h, o in zip(ref_h[window], ref_o[window])]
    return np.mean(found)


def test_a_clip_between_the_index_frames_finds_more_of_them_at_two_phases(rng):
    audio = music_like(rng, 20)
    one = dataclasses.replace(P, query_shifts=1)
    two = dataclasses.replace(P, query_shifts=2, query_shifts_up_to=100.0)
    # A 9 s clip starting half a hop after frame 200: its frames sit between the index's, and it is
    # long enough to be sampled down to the hash budget, which leaves out the dt +-1 neighbours.
    at_one, at_two = _index_hashes_found(audio, 200, 400, one), _index_hashes_found(audio, 200, 400, two)
    assert at_two > 0.8 and at_two > at_one + 0.2


def test_a_clip_with_evidence_to_spare_is_analysed_at_one_phase(rng):
    audio = music_like(rng, 40)
    one = dataclasses.replace(P, query_shifts=1)
    long_clip, short_clip = audio[: 40 * 11025], audio[: 3 * 11025]
    assert _same_pairs(fingerprint_query(long_clip, P), fingerprint_query(long_clip, one))
    assert not _same_pairs(fingerprint_query(short_clip, P), fingerprint_query(short_clip, one))


def _same_pairs(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_pooling_phases_keeps_a_later_phase_pair_only_away_from_an_earlier_copy():
    first = (np.array([7, 7, 9], np.uint32), np.array([10, 30, 10], np.int32))
    later = (np.array([7, 7, 7, 9, 11], np.uint32), np.array([11, 29, 40, 12, 10], np.int32))
    h, o = pool_phases([first, later])
    # 7@11 and 7@29 sit within a frame of the first phase's 7s; 7@40, 9@12 and 11@10 are new.
    assert list(zip(h.tolist(), o.tolist())) == [(7, 10), (9, 10), (11, 10), (9, 12), (7, 30), (7, 40)]


def test_distinct_is_numpys_unique(rng):
    values = rng.integers(0, 1 << 40, 5000)
    np.testing.assert_array_equal(distinct(values), np.unique(values))
    assert distinct(np.zeros(0, np.int64)).size == 0


def test_jitter_adds_each_pairs_neighbours_and_keeps_the_originals():
    import dataclasses

    from dejavu import DEFAULT_PARAMS
    from dejavu.hashing import jitter_hashes, pack_hashes, unpack_hashes

    hashes = pack_hashes(np.array([50, 60]), np.array([3, -2]), np.array([1, 10]))
    offsets = np.array([7, 9], np.int32)
    params = dataclasses.replace(DEFAULT_PARAMS, query_dt_jitter=1, query_df_jitter=1)
    h, o = jitter_hashes(hashes, offsets, params)
    got = set(zip(*[a.tolist() for a in unpack_hashes(h)], o.tolist()))
    # dt 1 - 1 = 0 is not a pair; every other neighbour is there, at the anchor's offset.
    want = {(50, 3 + jf, 1 + jt, 7) for jt in (0, 1) for jf in (-1, 0, 1)} | {
        (60, -2 + jf, 10 + jt, 9) for jt in (-1, 0, 1) for jf in (-1, 0, 1)
    }
    assert got == want
    none = dataclasses.replace(DEFAULT_PARAMS, query_dt_jitter=0, query_df_jitter=0)
    assert jitter_hashes(hashes, offsets, none)[0] is hashes


def test_the_second_query_of_a_clip_over_its_budget_keeps_more_peaks_with_fewer_targets(rng):
    clip = music_like(rng, 10)
    budget = P.query_max_hashes

    def anchors(second):
        hashes, offsets = fingerprint_query(clip, P, second=second)
        assert 0 < hashes.size <= budget
        return len(set(zip(unpack_hashes(hashes)[0].tolist(), offsets.tolist())))

    assert anchors(second=True) > 1.2 * anchors(second=False)


def test_a_clips_queries_share_its_spectrograms_and_give_the_same_hashes(rng):
    clip = music_like(rng, 5)
    views = {}
    first = fingerprint_query(clip, P, views=views)
    assert set(views) == set(range(P.query_shifts))  # a 5 s clip is analysed at every phase
    kept = dict(views)
    second = fingerprint_query(clip, P, second=True, views=views)
    assert all(views[k] is kept[k] for k in kept)  # read again, not made again
    assert _same_pairs(first, fingerprint_query(clip, P))
    assert _same_pairs(second, fingerprint_query(clip, P, second=True))


def test_each_index_pair_carries_the_anchors_next_target_as_its_third_point(rng):
    frame = np.sort(rng.integers(0, 400, 300)).astype(np.int32)
    freq = rng.integers(P.min_freq_bin, P.max_freq_bin, 300).astype(np.int32)
    levels = rng.uniform(-60, -10, 300)
    hashes, offsets, thirds = generate_hashes(freq, frame, P, 3, levels, thirds=True)
    plain = generate_hashes(freq, frame, P, 3, levels)
    np.testing.assert_array_equal(hashes, plain[0])  # the same rows, in the same order
    np.testing.assert_array_equal(offsets, plain[1])
    # the oracle: each anchor's targets in order; a pair's third point is the next one, none for the last
    want = {}
    for i in range(len(freq)):
        targets = []
        for j in range(i + 1, len(freq)):
            dt, df = frame[j] - frame[i], freq[j] - freq[i]
            if dt > P.max_dt_frames or len(targets) == 3:
                break
            if dt >= 1 and P.min_df_bins <= abs(df) <= P.max_df_bins:
                targets.append(j)
        for r, j in enumerate(targets):
            h = int(pack_hashes(np.array([freq[i]]), np.array([freq[j] - freq[i]]), np.array([frame[j] - frame[i]]))[0])
            h |= (1 << (HASH_BITS - 1)) if levels[j] > levels[i] else 0
            third = 0
            if r + 1 < len(targets):
                k = targets[r + 1]
                third = int(
                    third_codes(np.array([freq[i]]), np.array([frame[i]]), np.array([freq[k]]), np.array([frame[k]]))[0]
                )
            want[(h, int(frame[i]))] = third
    assert dict(zip(zip(hashes.tolist(), offsets.tolist()), thirds.tolist())) == want
    assert (thirds > 0).any() and (thirds == 0).any()


def test_a_querys_triplet_keys_hold_the_index_triplets_of_the_same_peaks(rng):
    frame = np.sort(rng.integers(0, 400, 300)).astype(np.int32)
    freq = rng.integers(P.min_freq_bin, P.max_freq_bin, 300).astype(np.int32)
    levels = rng.uniform(-60, -10, 300)
    hashes, offsets, thirds = generate_hashes(freq, frame, P, 3, levels, thirds=True)
    index = {k for k in zip(hashes.tolist(), thirds.tolist(), offsets.tolist()) if k[1]}
    q_hashes, q_thirds, q_offsets = triplet_keys(freq, frame, levels, P, 6)
    keys = set(zip(q_hashes.tolist(), q_thirds.tolist(), q_offsets.tolist()))
    assert len(keys) == q_hashes.size  # distinct
    assert index <= keys
    assert len(keys) > len(index)  # two of six targets a key: more than the index's two of three


def test_a_clip_finds_its_songs_triplets(rng):
    song = music_like(rng, 20.0)
    hashes, offsets, thirds = fingerprint_reference(song, P, thirds=True)
    start = 200  # frames into the song
    q_hashes, q_thirds, q_offsets = fingerprint_triplets(song[start * P.hop_length :][: 10 * P.sample_rate_hz], P)
    sent = set(zip(q_hashes.tolist(), q_thirds.tolist(), (q_offsets + start).tolist()))
    held = [k for k in zip(hashes.tolist(), thirds.tolist(), offsets.tolist()) if k[1] and start <= k[2] < start + 380]
    assert len(held) > 50
    assert sum(k in sent for k in held) > 0.7 * len(held)
