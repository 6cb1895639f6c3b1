"""Peak verification: the best candidates of a search re-scored by the clip's single peaks.

A pair hash needs both of its peaks to survive. A room, a crowd or a phone in a bar leaves a clip
20-40 % of its song's peaks, and so only 1-9 % of its pairs: the true song aligns too few pairs to
clear the bar, though it is often among the best candidates. Its peaks then tell. Laid over the
song's own peaks (every peak of its pair rows, kept per song) at the candidate's offset, many of the
clip's peaks fall within a bin and a few frames of one (a room delays them); at any other offset of
the same song, a steady share falls there by chance. How far the best offset near the candidate's
stands above that chance, in standard deviations of the song's own other offsets (``z``), is the
verdict: the best candidate passes when its ``z`` clears ``min_z`` and the runner-up's by ``lead``
(docs/ALGORITHM.md, "Peak verification").

The same peaks give the time (and frequency) scale of a clip that the pair hashes found in spite of
a tempo or speed change (:func:`fit_scales`): the line through the song's peaks that meets the most
of the clip's.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

from .errors import ParameterError
from .hashing import ragged_arange, unpack_hashes
from .params import HASH_BITS

_HEAD = struct.Struct("<BI")  # format version, number of peaks
_VERSION = 1
_REFITS = 3  # least-squares fits of a time scale, each through the peaks near the last line
_BIN_SPAN = 1024  # a peak's key in pair_peaks: frame * _BIN_SPAN + bin (bins are under 2**FREQ_BITS + 128)


@dataclasses.dataclass(frozen=True)
class VerifyParams:
    """How candidates are re-scored by their peaks, and the bar they must clear (query side only:
    changing any of them needs no re-index)."""

    candidates: int = 10  # best songs of the pair search re-scored (<= the songs each search returns)
    offset_radius: int = 4  # frames tried either side of each candidate's offset
    bin_tolerance: int = 1  # a clip peak hits a song peak within this many bins ...
    early_frames: int = 1  # ... and from this many frames before it ...
    late_frames: int = 3  # ... to this many after (a room delays peaks)
    chance_offsets: int = 200  # offsets of the song at which its chance hits are counted, ...
    chance_span: int = 3000  # ... within this many frames of the best one (70 s) ...
    chance_gap: int = 40  # ... and none within this many
    min_chance_offsets: int = 20  # a song too short for this many is not verified ...
    min_clip_frames: int = 129  # ... nor a clip under 3 s: too few peaks (1-2 s clips of unknown songs reached z 9.1)
    min_z: float = 8.0  # the bar: deviations over chance at the best offset ...
    lead: float = 0.0  # ... and over the runner-up's
    # The time scale of a pair-path answer (a tempo change the pair hashes survive): fitted over
    # this range either side of 1 in these steps, ...
    scale_range: float = 0.12
    scale_step: float = 0.005
    scale_gain: float = 0.3  # ... and reported when its hits beat those at 1.0 by this share ...
    scale_min_hits: int = 10  # ... and this many; fitted only for answers whose matching hashes spread
    scale_spread: float = 1.5  # within scale_range of the clip's length to this many times the aligned ones
    frequency_range: float = 0.03  # the frequency scale of a fitted line, within this of 1

    def validate(self) -> VerifyParams:
        """Check ranges; return self.

        Raises
        ------
        ParameterError
        """
        if self.candidates < 1 or self.offset_radius < 0 or self.bin_tolerance < 0 or self.min_clip_frames < 1:
            raise ParameterError("candidates >= 1, offset_radius >= 0, bin_tolerance >= 0, min_clip_frames >= 1")
        if self.early_frames < 0 or self.late_frames < 0 or self.chance_gap < 0:
            raise ParameterError("early_frames, late_frames and chance_gap must be >= 0")
        if not 1 <= self.min_chance_offsets <= self.chance_offsets or self.lead < 0:
            raise ParameterError("1 <= min_chance_offsets <= chance_offsets, lead >= 0")
        if self.chance_span <= self.chance_gap:
            raise ParameterError("chance_span must exceed chance_gap")
        if not (0 <= self.scale_range < 0.5 and 0 < self.scale_step and self.scale_gain >= 0):
            raise ParameterError("0 <= scale_range < 0.5, scale_step > 0, scale_gain >= 0")
        if self.scale_min_hits < 0 or self.scale_spread < 1:
            raise ParameterError("scale_min_hits >= 0, scale_spread >= 1")
        return self


DEFAULT_VERIFY = VerifyParams().validate()


@dataclasses.dataclass(frozen=True)
class Verified:
    """One candidate re-scored: its best offset near the pair search's and how far above chance."""

    song_id: int
    offset_frames: int  # song frame at which the clip starts
    hits: int  # clip peaks on the song's peaks there
    song_peaks: int  # the song's peaks over the clip's span there
    chance: float  # mean hits at the song's other offsets
    z: float  # (hits - chance) / their standard deviation (at least 1)


def pair_peaks(hashes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct peaks of a song's pair rows, anchors and targets: ``(bins, frames)`` sorted by
    frame, then bin (int32). Rows of other families (hashes from ``2**HASH_BITS``) are left out."""
    pairs = np.asarray(hashes) < (1 << HASH_BITS)
    anchor, df, dt = unpack_hashes(np.asarray(hashes)[pairs])
    frames = np.asarray(offsets)[pairs].astype(np.int64)
    bins = np.concatenate([anchor, anchor + df]).astype(np.int64)
    frames = np.concatenate([frames, frames + dt])
    keys = np.unique((frames * _BIN_SPAN + bins)[(bins >= 0) & (bins < _BIN_SPAN)])  # (none outside, but from a client)
    return (keys % _BIN_SPAN).astype(np.int32), (keys // _BIN_SPAN).astype(np.int32)


def pack_peaks(bins: np.ndarray, frames: np.ndarray) -> bytes:
    """A song's peaks as stored: a version byte and the count (uint32), then zlib of the bins (uint16)
    and of each frame as the step from the previous one (uint32), sorted by frame, then bin."""
    order = np.lexsort((bins, frames))
    bins, frames = np.asarray(bins, np.int64)[order], np.asarray(frames, np.int64)[order]
    steps = np.diff(frames, prepend=0)
    body = bins.astype("<u2").tobytes() + steps.astype("<u4").tobytes()
    return _HEAD.pack(_VERSION, bins.size) + zlib.compress(body, 6)


def unpack_peaks(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_peaks`: ``(bins, frames)``, int32.

    Raises
    ------
    ParameterError
        Not peaks of this format.
    """
    try:
        version, n = _HEAD.unpack_from(data)
        body = zlib.decompress(data[_HEAD.size :])
    except (struct.error, zlib.error) as exc:
        raise ParameterError("Not packed peaks") from exc
    if version != _VERSION or len(body) != 6 * n:
        raise ParameterError("Not packed peaks of this version")
    bins = np.frombuffer(body, "<u2", n).astype(np.int32)
    frames = np.cumsum(np.frombuffer(body, "<u4", n, offset=2 * n).astype(np.int64)).astype(np.int32)
    return bins, frames


def verify(
    clip: tuple[np.ndarray, np.ndarray],
    candidates: list[tuple[int, int, tuple[np.ndarray, np.ndarray]]],
    params: VerifyParams = DEFAULT_VERIFY,
) -> list[Verified]:
    """Each candidate ``(song_id, offset_frames, song peaks)`` re-scored by the clip's peaks
    ``(bins, frames)``, best ``z`` first; a song too short to measure its chance is left out, and
    every candidate of a clip shorter than ``min_clip_frames``."""
    bins, frames = (np.asarray(a, np.int64) for a in clip)
    clip_frames = int(frames.max(initial=-1)) + 1
    if clip_frames < params.min_clip_frames:
        return []
    # the cells the clip can meet at the offsets tried: the song's peaks around the offset, widened
    reach = params.offset_radius + params.chance_span + params.late_frames
    verified = []
    for song_id, offset, (song_bins, song_frames) in candidates:
        song_bins, song_frames = np.asarray(song_bins, np.int64), np.asarray(song_frames, np.int64)
        first = offset - reach
        grid = _hit_grid(song_bins, song_frames, first, 2 * reach + clip_frames + 1, params)
        near = np.arange(offset - params.offset_radius, offset + params.offset_radius + 1)
        hits = _hits(grid, first, bins, frames, near)
        start = int(near[np.argmax(hits)])
        others = _chance_offsets(start, clip_frames, int(song_frames.max(initial=0)) + 1, params)
        if others.size < params.min_chance_offsets:
            continue
        chance = _hits(grid, first, bins, frames, others)
        z = (hits.max() - chance.mean()) / max(float(chance.std()), 1.0)
        inside = int(np.count_nonzero((song_frames >= start) & (song_frames < start + clip_frames)))
        verified.append(Verified(song_id, start, int(hits.max()), inside, float(chance.mean()), float(z)))
    return sorted(verified, key=lambda v: -v.z)


def verdict(verified: list[Verified], params: VerifyParams = DEFAULT_VERIFY) -> Verified | None:
    """The best candidate if it clears the bar (``min_z``, and the runner-up's ``z`` by ``lead``)."""
    if not verified:
        return None
    best, runner_up = verified[0], verified[1].z if len(verified) > 1 else -np.inf
    return best if best.z >= params.min_z and best.z - runner_up >= params.lead else None


@dataclasses.dataclass(frozen=True)
class ScaleFit:
    """The line ``song frame = offset_frames + clip frame / time_scale`` that the most clip peaks meet."""

    time_scale: float  # clip seconds per song second (1.0: no tempo change found)
    offset_frames: int  # song frame at which the clip starts
    hits: int  # clip peaks on the song's peaks along that line
    hits_unscaled: int  # the most at time scale 1.0
    frequency_scale: float = 1.0  # clip Hz per song Hz along that line (a speed change moves both)


def fit_scales(
    clip: tuple[np.ndarray, np.ndarray],
    song: tuple[np.ndarray, np.ndarray],
    offset: int,
    params: VerifyParams = DEFAULT_VERIFY,
) -> ScaleFit:
    """The time scale of a clip found at song frame ``offset`` by hashes that a tempo change leaves
    (short frame distances): every scale within ``scale_range`` of 1, each with its best offset, the
    clip's peaks ``(bins, frames)`` laid over the song's as :func:`verify` does. A scale other than
    1.0 is kept only when it meets ``scale_gain`` more of them and at least ``scale_min_hits``; then
    the frequency scale along it too (a clip played fast is higher)."""
    bins, frames = (np.asarray(a, np.int64) for a in clip)
    song_bins, song_frames = (np.asarray(a, np.int64) for a in song)
    if bins.size == 0:
        return ScaleFit(1.0, offset, 0, 0)
    span = int(frames.max()) + 1
    # A clip found at `offset` by aligned hashes may start up to scale_range of its length either side.
    reach = int(np.ceil(span * params.scale_range)) + params.offset_radius + params.late_frames
    near = (song_frames >= offset - reach) & (song_frames < offset + span * (1 + params.scale_range) + reach)
    song_bins, song_frames = song_bins[near], song_frames[near]
    order = np.argsort(song_bins, kind="stable")
    song_bins, song_frames = song_bins[order], song_frames[order]
    # every (clip peak, song peak) within bin_tolerance bins, widened by frequency_range: a clip played
    # fast is higher too (its frequency scale is fitted along the line found); the song peaks of clip
    # peak i are song_bins[lo[i]:hi[i]], laid end to end
    reach_bins = params.bin_tolerance + np.ceil(bins * params.frequency_range).astype(np.int64)
    lo = np.searchsorted(song_bins, bins - reach_bins)
    hi = np.searchsorted(song_bins, bins + reach_bins, side="right")
    each = hi - lo
    clip_at = np.repeat(frames, each)
    song_at = song_frames[np.repeat(lo, each) + ragged_arange(each)]
    steps = int(round(params.scale_range / params.scale_step))
    scales = 1.0 + params.scale_step * np.arange(-steps, steps + 1)
    # where each pair puts the clip's start at each scale; a clip peak from early_frames before to
    # late_frames after its song peak hits, so offset o counts the pairs at o - early .. o + late
    starts = np.rint(song_at[None, :] - clip_at[None, :] / scales[:, None]).astype(np.int64)
    first = offset - reach - params.early_frames
    width = 2 * reach + params.early_frames + params.late_frames + 1
    starts -= first
    wide = width + params.early_frames + params.late_frames
    cells = (starts + wide * np.arange(scales.size)[:, None])[(starts >= 0) & (starts < width)]
    counts = np.bincount(cells, minlength=scales.size * wide).reshape(scales.size, wide)
    hits = sum(counts[:, k : k + width] for k in range(params.early_frames + params.late_frames + 1))
    best = np.unravel_index(np.argmax(hits), hits.shape)
    unscaled = hits[steps]
    at_one = int(np.argmax(unscaled))
    top, one = int(hits[best]), int(unscaled[at_one])
    to_offset = first + params.late_frames  # hits[:, k]: the clip starting at song frame k + to_offset
    if top < max(one * (1 + params.scale_gain), one + params.scale_min_hits) or best[0] == steps:
        return ScaleFit(1.0, at_one + to_offset, one, one)
    # Least squares through the pairs on the line (song frame = offset + clip frame / scale), the
    # pairs taken again around each fit: the grid's line is a step off, and takes pairs to its tilt.
    slope, start = 1 / scales[best[0]], float(int(best[1]) + to_offset)
    for _ in range(_REFITS):
        late = start + clip_at * slope - song_at  # a clip peak's lateness, in song frames
        on = (late >= -params.early_frames) & (late <= params.late_frames)
        if np.unique(clip_at[on]).size < 2:
            break
        slope, start = np.polyfit(clip_at[on], song_at[on], 1)
    if not abs(1 / max(slope, 1e-9) - scales[best[0]]) <= 4 * params.scale_step:  # degenerate: the grid's
        slope, start = 1 / scales[best[0]], int(best[1]) + to_offset
    frequency = _frequency_scale((bins, frames), (song_bins, song_frames), slope, start, params)
    return ScaleFit(float(1 / slope), int(round(start)), top, one, frequency)


def _frequency_scale(
    clip: tuple[np.ndarray, np.ndarray],
    song: tuple[np.ndarray, np.ndarray],
    slope: float,
    start: float,
    params: VerifyParams,
) -> float:
    """The frequency scale along a fitted line: a clip played fast (resampled) is higher too, by as
    much as the pair hashes let through (``frequency_range``). Each scale of the grid maps the clip's
    bins back to the song's and counts the clip peaks that then meet a song peak on the line; one
    other than 1.0 must beat 1.0's count as a time scale must (``scale_gain``, ``scale_min_hits``)."""
    bins, frames = clip
    at = np.rint(start + frames * slope).astype(np.int64)  # the song frame each clip peak lies on
    first = int(at.min(initial=0)) - params.late_frames
    grid = _hit_grid(song[0], song[1], first, int(at.max(initial=0)) - first + params.early_frames + 1, params)
    steps = int(round(params.frequency_range / params.scale_step))
    scales = 1.0 + params.scale_step * np.arange(-steps, steps + 1)
    song_bins = np.rint(bins[None, :] / scales[:, None]).astype(np.int64)  # each clip peak's bin at each scale
    inside = song_bins < grid.shape[0]
    hits = (grid[np.where(inside, song_bins, 0), at[None, :] - first] & inside).sum(axis=1)
    best, one = int(np.argmax(hits)), int(hits[steps])
    return float(scales[best]) if hits[best] >= max(one * (1 + params.scale_gain), one + params.scale_min_hits) else 1.0


def _hit_grid(bins: np.ndarray, frames: np.ndarray, first: int, width: int, params: VerifyParams) -> np.ndarray:
    """grid[bin, frame - first]: whether a clip peak there hits one of the song's peaks (within
    ``bin_tolerance`` bins, ``early_frames`` before to ``late_frames`` after), over ``width`` frames."""
    grid = np.zeros((int(bins.max(initial=0)) + params.bin_tolerance + 1, width), bool)
    inside = (frames >= first - params.late_frames) & (frames < first + width + params.early_frames)
    bins, frames = bins[inside], frames[inside] - first
    for df in range(-params.bin_tolerance, params.bin_tolerance + 1):
        for dt in range(-params.early_frames, params.late_frames + 1):
            at = frames + dt
            ok = (at >= 0) & (at < width) & (bins + df >= 0)
            grid[bins[ok] + df, at[ok]] = True
    return grid


def _hits(grid: np.ndarray, first: int, bins: np.ndarray, frames: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """How many clip peaks hit the song's at each offset (the song frame of the clip's start)."""
    at = frames[:, None] + offsets[None, :] - first
    inside = (at >= 0) & (at < grid.shape[1]) & (bins[:, None] < grid.shape[0])
    return (grid[np.minimum(bins, grid.shape[0] - 1)[:, None], np.clip(at, 0, grid.shape[1] - 1)] & inside).sum(axis=0)


def _chance_offsets(best: int, clip_frames: int, song_frames: int, params: VerifyParams) -> np.ndarray:
    """Up to ``chance_offsets`` offsets within ``chance_span`` of the best one but not within
    ``chance_gap``, where the clip overlaps the song at least half."""
    first = max(-clip_frames // 2, best - params.chance_span)
    last = min(song_frames - clip_frames // 2, best + params.chance_span)
    if last <= first:
        return np.zeros(0, np.int64)
    offsets = np.unique(np.linspace(first, last, params.chance_offsets).round().astype(np.int64))
    return offsets[np.abs(offsets - best) > params.chance_gap]
