"""generate_hashes(peaks, params, fanout) -> integer pair hashes and anchor frames (and third points);
triplet_keys(peaks, params, targets) -> a query's (pair hash, third point) keys."""

from __future__ import annotations

import numpy as np

from .params import DF_BITS, DT_BITS, FREQ_BITS, HASH_BITS, LEVEL_BITS, FingerprintParams

_DF_BIAS = 1 << (DF_BITS - 1)
_DT_MASK = (1 << DT_BITS) - 1
_DF_MASK = (1 << DF_BITS) - 1
_FREQ_MASK = (1 << FREQ_BITS) - 1
_LEVEL_SHIFT = FREQ_BITS + DF_BITS + DT_BITS
_LEVEL_MASK = ((1 << LEVEL_BITS) - 1) << _LEVEL_SHIFT
_HASH_MASK = (1 << HASH_BITS) - 1


def pack_hashes(anchor_bins: np.ndarray, df_bins: np.ndarray, dt_frames: np.ndarray) -> np.ndarray:
    """Pack pair landmarks into ``FREQ_BITS + DF_BITS + DT_BITS``-bit integers.

    Parameters
    ----------
    anchor_bins : np.ndarray [shape=(n,)], int, FFT bins in ``[0, 2**FREQ_BITS)``
    df_bins : np.ndarray [shape=(n,)], int, target bin minus anchor bin, ``|df| < 2**(DF_BITS-1)``
    dt_frames : np.ndarray [shape=(n,)], int, target frame minus anchor frame, ``[1, 2**DT_BITS)``

    Returns
    -------
    hashes : np.ndarray [shape=(n,)], uint32
    """
    anchor = anchor_bins.astype(np.uint32)
    df = (df_bins.astype(np.int64) + _DF_BIAS).astype(np.uint32)
    dt = dt_frames.astype(np.uint32)
    return (anchor << (DF_BITS + DT_BITS)) | (df << DT_BITS) | dt


def unpack_hashes(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_hashes`: ``(anchor_bins, df_bins, dt_frames)``, int32 each."""
    hashes = hashes.astype(np.int64)
    dt = hashes & _DT_MASK
    df = ((hashes >> DT_BITS) & _DF_MASK) - _DF_BIAS
    anchor = (hashes >> (DF_BITS + DT_BITS)) & _FREQ_MASK
    return anchor.astype(np.int32), df.astype(np.int32), dt.astype(np.int32)


def third_codes(anchor_bins: np.ndarray, anchor_frames: np.ndarray, bins: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """A third peak's place relative to an anchor, ``(df + 2**(DF_BITS-1)) << DT_BITS | dt``: never 0
    (``dt >= 1``), so 0 can mean "no third point".

    Returns
    -------
    np.ndarray, uint16, ``DF_BITS + DT_BITS`` bits
    """
    df = bins.astype(np.int64) - anchor_bins + _DF_BIAS
    return ((df << DT_BITS) | (frames.astype(np.int64) - anchor_frames)).astype(np.uint16)


def generate_hashes(
    freq_bins: np.ndarray,
    frame_indices: np.ndarray,
    params: FingerprintParams,
    fanout: int,
    levels: np.ndarray | None = None,
    level_margin_db: float = 0.0,
    thirds: bool = False,
) -> tuple[np.ndarray, ...]:
    """Pair every peak with the next ``fanout`` peaks of its target zone.

    The target zone of an anchor is ``1 <= dt <= max_dt_frames`` frames later and
    ``min_df_bins <= |df| <= max_df_bins`` bins away; the nearest targets in time are taken first.
    With ``params.level_bit`` the hash's top bit says whether the target is louder than the anchor.

    Parameters
    ----------
    freq_bins, frame_indices : np.ndarray [shape=(n_peaks,)], int
        Peaks sorted by frame, as returned by :func:`dejavu.peaks.find_peaks`.
    params : FingerprintParams
    fanout : int
        Targets per anchor (``ref_fanout`` or ``query_fanout``).
    levels : np.ndarray [shape=(n_peaks,)], float, dB; needed when ``params.level_bit``
    level_margin_db : float
        Pairs whose levels differ by less also get the hash with the other level bit (query side:
        noise or a codec can swap two nearly equal peaks).
    thirds : bool
        Also return each pair's third point (index side, ``level_margin_db`` 0): the anchor's next
        target after the pair's (:func:`third_codes`), 0 for its last target. A pair and its third
        point make a triplet key, some 14 bits more specific than the pair (docs/SCALE.md).

    Returns
    -------
    hashes : np.ndarray [shape=(n_hashes,)], uint32
    offsets : np.ndarray [shape=(n_hashes,)], int32, anchor frame of each hash
        Unique ``(hash, offset)`` pairs, sorted by offset then hash.
    thirds : np.ndarray [shape=(n_hashes,)], uint16, only with ``thirds``
    """
    n = freq_bins.shape[0]
    if n < 2:
        empty = np.zeros(0, np.uint32), np.zeros(0, np.int32)
        return (*empty, np.zeros(0, np.uint16)) if thirds else empty
    table = _target_table(frame_indices, freq_bins, params, fanout)
    anchors, rank = np.nonzero(table >= 0)
    targets = table[anchors, rank]
    hashes = pack_hashes(
        freq_bins[anchors], freq_bins[targets] - freq_bins[anchors], frame_indices[targets] - frame_indices[anchors]
    )
    offsets = frame_indices[anchors]
    if params.level_bit:
        step = levels[targets] - levels[anchors]
        hashes = hashes | np.where(step > 0, _LEVEL_MASK, 0).astype(np.uint32)
        close = np.abs(step) < level_margin_db
        hashes = np.concatenate([hashes, hashes[close] ^ np.uint32(_LEVEL_MASK)])
        offsets = np.concatenate([offsets, offsets[close]])
    if not thirds:
        return _unique_pairs(hashes, offsets)
    if level_margin_db > 0:
        raise ValueError("third points are the index's: no level alternates")
    later = np.c_[table, np.full(n, -1)][anchors, rank + 1]  # the anchor's next target, or -1
    codes = third_codes(freq_bins[anchors], offsets, freq_bins[later], frame_indices[later])
    codes[later < 0] = 0
    order = np.lexsort((hashes, offsets))  # (anchor, target) pairs are distinct: nothing to merge
    return hashes[order], offsets[order].astype(np.int32), codes[order]


def triplet_keys(
    freq_bins: np.ndarray, frame_indices: np.ndarray, levels: np.ndarray, params: FingerprintParams, targets: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A query's triplet keys: each anchor's pair with its ``i``-th target and, as third point, a
    later one of its first ``targets`` (the index stores each pair with the anchor's next target
    among its sparser peaks, which may be any later one of the clip's denser peaks). Both level
    bits where the pair's peaks are within ``query_level_margin_db``.

    Returns
    -------
    hashes : np.ndarray, uint32, pair hashes
    thirds : np.ndarray, uint16, :func:`third_codes`
    offsets : np.ndarray, int32, anchor frames
        Unique keys, sorted by offset, hash, third.
    """
    if freq_bins.shape[0] < 3:
        return np.zeros(0, np.uint32), np.zeros(0, np.uint16), np.zeros(0, np.int32)
    table = _target_table(frame_indices, freq_bins, params, targets)
    first, later = np.triu_indices(targets, 1)
    anchors, k = np.nonzero((table[:, first] >= 0) & (table[:, later] >= 0))
    pair_t, third_t = table[anchors, first[k]], table[anchors, later[k]]
    hashes = pack_hashes(
        freq_bins[anchors], freq_bins[pair_t] - freq_bins[anchors], frame_indices[pair_t] - frame_indices[anchors]
    )
    offsets = frame_indices[anchors].astype(np.int64)
    codes = third_codes(freq_bins[anchors], offsets, freq_bins[third_t], frame_indices[third_t])
    if params.level_bit:
        step = levels[pair_t] - levels[anchors]
        hashes = hashes | np.where(step > 0, _LEVEL_MASK, 0).astype(np.uint32)
        close = np.abs(step) < params.query_level_margin_db
        hashes = np.concatenate([hashes, hashes[close] ^ np.uint32(_LEVEL_MASK)])
        offsets, codes = np.concatenate([offsets, offsets[close]]), np.concatenate([codes, codes[close]])
    return unpack_triplet_keys(distinct(pack_triplet_keys(hashes, codes, offsets)))


def pack_triplet_keys(hashes: np.ndarray, thirds: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(pair hash, third point, anchor frame) as one int64, ordered by frame, hash, third point."""
    return (offsets.astype(np.int64) << 40) | (hashes.astype(np.int64) << 16) | thirds.astype(np.int64)


def unpack_triplet_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_triplet_keys`: hashes (uint32), thirds (uint16), offsets (int32)."""
    return (
        ((keys >> 16) & _HASH_MASK).astype(np.uint32),
        (keys & 0xFFFF).astype(np.uint16),
        (keys >> 40).astype(np.int32),
    )


def _target_table(
    frame_indices: np.ndarray, freq_bins: np.ndarray, params: FingerprintParams, fanout: int
) -> np.ndarray:
    """``table[i, r]`` is the index of anchor ``i``'s ``r``-th target, or -1.

    The targets of anchor ``i`` are the first ``fanout`` peaks after it (in the peaks' order: by
    frame, then bin) that lie in its zone; all anchors at once, over the widest zone's peaks.
    """
    n = freq_bins.shape[0]
    ends = np.searchsorted(frame_indices, frame_indices + params.max_dt_frames, side="right")
    table = np.full((n, fanout), -1, dtype=np.int64)
    width = int((ends - np.arange(n)).max()) - 1
    if width < 1:
        return table
    anchors = np.arange(n)[:, None]
    later = anchors + np.arange(1, width + 1)[None, :]  # [n, width]: the peaks after each anchor
    inside = later < ends[:, None]
    later = np.minimum(later, n - 1)
    dt = frame_indices[later] - frame_indices[anchors]
    df = np.abs(freq_bins[later] - freq_bins[anchors])
    ok = inside & (dt >= 1) & (df <= params.max_df_bins) & (df >= params.min_df_bins)
    rank = np.cumsum(ok, axis=1) - 1
    keep = ok & (rank < fanout)
    rows, cols = np.nonzero(keep)
    table[rows, rank[rows, cols]] = later[rows, cols]
    return table


def _unique_pairs(hashes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    key = distinct(_keys(hashes, offsets))
    return (key & 0xFFFFFFFF).astype(np.uint32), (key >> 32).astype(np.int32)


def ragged_arange(lengths: np.ndarray) -> np.ndarray:
    """``0..lengths[0]-1, 0..lengths[1]-1, ...`` as one int64 array (each row's place in its run)."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an integer array: ``np.unique(values)``, but by sorting.

    numpy 2.4's ``np.unique`` takes a hash-table path for integers that measured 15x slower
    than a sort on the query's ~12,000 hash keys (1.0 ms against 0.07 ms).
    """
    values = np.sort(np.asarray(values).ravel())
    return values[np.r_[True, values[1:] != values[:-1]]] if values.size else values


def pool_phases(views: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Pool the query pairs found at several phases of the hop, the first phase's pairs first.

    A pair found at a later phase is left out when an earlier one holds the same hash within one
    frame of it: both would match the same index row at neighbouring offsets, which the
    alignment's +-1 frame window then counts twice, for chance alignments as much as for the
    right one. Keeping the earlier phase's copy keeps offsets on the first phase's frame grid.

    Parameters
    ----------
    views : list of (hashes, offsets), one per phase, offsets in that phase's frames

    Returns
    -------
    hashes, offsets : unique pairs, sorted by offset then hash
    """
    kept_h, kept_o = views[0]
    for hashes, offsets in views[1:]:
        kept = np.r_[np.sort(_keys(kept_h, kept_o)), np.iinfo(np.int64).max]  # never-found sentinel
        near = np.zeros(hashes.size, bool)
        for step in (-1, 0, 1):
            wanted = _keys(hashes, offsets + step)
            near |= kept[np.searchsorted(kept, wanted)] == wanted
        kept_h = np.concatenate([kept_h, hashes[~near]])
        kept_o = np.concatenate([kept_o, offsets[~near]])
    return _unique_pairs(kept_h, kept_o)


def _keys(hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return (offsets.astype(np.int64) << 32) | hashes.astype(np.int64)


def jitter_hashes(hashes: np.ndarray, offsets: np.ndarray, params: FingerprintParams) -> tuple[np.ndarray, np.ndarray]:
    """Add the neighbours of each hash: dt +- ``query_dt_jitter``, df +- ``query_df_jitter``.

    A clip rarely starts on the index's frame grid; at another phase a peak can land one
    frame (or bin) away, and a pair's dt (or df) changes by one while its meaning does not.
    Looking up the neighbours on the query side finds those pairs again at no index cost.

    Parameters
    ----------
    hashes : np.ndarray [shape=(n,)], uint32
    offsets : np.ndarray [shape=(n,)], int32, frames
    params : FingerprintParams

    Returns
    -------
    hashes, offsets : unique pairs, sorted by offset then hash (the originals included)
    """
    if hashes.size == 0 or (params.query_dt_jitter == 0 and params.query_df_jitter == 0):
        return hashes, offsets
    anchor, df, dt = unpack_hashes(hashes)
    level = hashes & np.uint32(_LEVEL_MASK)
    out_h, out_o = [hashes], [offsets]
    for jt in range(-params.query_dt_jitter, params.query_dt_jitter + 1):
        for jf in range(-params.query_df_jitter, params.query_df_jitter + 1):
            if jt == 0 and jf == 0:
                continue
            ok = (dt + jt >= 1) & (dt + jt <= _DT_MASK) & (np.abs(df + jf) < _DF_BIAS)
            out_h.append(pack_hashes(anchor[ok], df[ok] + jf, dt[ok] + jt) | level[ok])
            out_o.append(offsets[ok])
    return _unique_pairs(np.concatenate(out_h), np.concatenate(out_o))
