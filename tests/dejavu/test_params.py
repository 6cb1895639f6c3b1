import dataclasses

import pytest

from dejavu import DEFAULT_PARAMS, FingerprintParams, ParameterError


def test_digest_is_stable_and_changes_with_any_knob():
    assert FingerprintParams().digest() == DEFAULT_PARAMS.digest()
    assert dataclasses.replace(DEFAULT_PARAMS, ref_fanout=4).digest() != DEFAULT_PARAMS.digest()


@pytest.mark.parametrize(
    "change",
    [
        {"hop_length": 0},
        {"max_freq_bin": 600},
        {"max_dt_frames": 64},
        {"max_df_bins": 128},
        {"ref_fanout": 0},
        {"query_shifts": 0},
        {"query_shifts": 257},
        {"query_shifts_up_to": 0},
    ],
)
def test_out_of_range_values_are_refused(change):
    with pytest.raises(ParameterError):
        dataclasses.replace(DEFAULT_PARAMS, **change).validate()


def test_query_side_knobs_do_not_change_the_index_digest():
    for change in ({"query_fanout": 20}, {"query_peaks_per_block": 40}, {"query_dt_jitter": 0}, {"query_shifts": 1}):
        assert dataclasses.replace(DEFAULT_PARAMS, **change).digest() == DEFAULT_PARAMS.digest()
