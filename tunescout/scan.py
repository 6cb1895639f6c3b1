"""scan(engine, source) -> the timeline of catalogued songs in a long recording, segment by segment."""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import time
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
from scipy import signal

import dejavu
from dejavu import verify as verification
from dejavu.fingerprint import query_peaks
from dejavu.hashing import ragged_arange

from .audio import Decoded, Window, read_ahead, stream_windows
from .records import Match


@dataclasses.dataclass(frozen=True)
class ScanParams:
    """How a recording is cut and how window matches become segments."""

    window_seconds: float = 10.0  # each window is recognised as one clip
    hop_seconds: float = 5.0  # a window starts every hop
    # A song's segment ends after this many windows in a row without it (one noisy window does not
    # cut a play in two); it is emitted then, (gap_windows + 1) hops after its last window.
    gap_windows: int = 1
    # Two windows' matches are one play when they put the song's start (its second 0) at the same
    # recording time, within this.
    same_play_seconds: float = 0.5
    # ... plus this share of the time since the play's first window: a play 2-3 % fast or slow, whose
    # time scale the hashes report as 1.0, puts the song's start a little later or earlier each window
    drift: float = 0.03
    # A song found again while its play is open, at another offset, is the same play (a passage that
    # repeats, answered at another repeat; a looping track; a play a little fast, answered now by the
    # hashes at 1.0, now by the robust path at its own scale): its segment is not cut in pieces
    one_play_per_song: bool = True
    shortest_window_seconds: float = 1.0  # a shorter tail of the recording is not recognised
    # Following: a window whose new audio an open play should fill is first checked against that
    # song's peaks where the play puts it (dejavu.verify); this many deviations over the song's
    # chance there confirm the play, and the window is not searched
    follow: bool = True
    follow_z: float = 8.0
    # Boundary refinement: the song's hashes at the play's offset, in the windows around its edges
    refine: bool = True
    refine_chunk_seconds: float = 5.0  # the edge audio is fingerprinted in chunks of this (query density)
    edge_hashes: int = 3  # an edge is where this many aligned hashes fall within edge_span_seconds
    edge_span_seconds: float = 2.0
    tolerance_frames: int = 2  # an aligned hash's song frame is within this of where the play puts it
    # ... or, for a play whose time scale was fitted, of where most of its hashes there put it, up to
    # this many frames off (a scale a little off drifts along a long play)
    scale_drift_frames: int = 43
    end_lag_seconds: float = 0.3  # audio of a pair after its anchor: the last anchor is this before the end


@dataclasses.dataclass(frozen=True)
class Segment:
    """One play of a catalogued song in the recording."""

    song_id: int
    song_name: str
    start_seconds: float  # in the recording
    end_seconds: float
    song_start_seconds: float  # in the song's own time
    song_end_seconds: float
    confidence: float  # the best of its windows' recognitions, in [0, 1]
    time_scale: float = 1.0  # recording seconds per song second (> 1: played slower)
    windows: int = 1  # windows that recognised it

    def body(self, kind: str = "segment") -> dict:
        """As printed and served: ``kind`` "segment" for a play that has ended, "playing" for a
        report on one still going on (its end is where the recording has got to)."""
        return {"type": kind, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class ScanSummary:
    """What a scan covered and what it took."""

    duration_seconds: float  # of the recording analysed
    windows: int
    segments: int
    elapsed_seconds: float
    interrupted: bool = False  # stopped before the recording's end (what was known is reported)
    windows_degraded: int = 0  # windows for which an instance did not answer
    windows_followed: int = 0  # windows an open play's peaks confirmed, so not searched (ScanParams.follow)

    @property
    def realtime_factor(self) -> float:
        return self.duration_seconds / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def body(self) -> dict:
        return {"type": "summary", **dataclasses.asdict(self), "realtime_factor": round(self.realtime_factor, 1)}


@dataclasses.dataclass
class _Play:
    """A play being followed: the song, where its second 0 falls in the recording, its windows."""

    match: Match
    zero_seconds: float  # recording time of the song's start
    song_seconds: float  # the song's duration
    first_index: int
    last_index: int
    start_seconds: float  # refined when it opened
    confidence: float
    windows: int = 1
    reported_seconds: float = -math.inf  # recording time of its last report while playing
    # where the song's start falls by the latest window that found or confirmed it (a play that
    # drifts, a passage answered at another repeat); the end is measured there
    last_zero: float = math.nan
    peaks: tuple[np.ndarray, np.ndarray] | None = None  # the song's, once read for following

    @property
    def time_scale(self) -> float:
        return self.match.time_scale

    @property
    def latest_zero(self) -> float:
        return self.zero_seconds if math.isnan(self.last_zero) else self.last_zero

    def at_song(self, recording_seconds: float, zero: float | None = None) -> float:
        return (recording_seconds - (self.zero_seconds if zero is None else zero)) / self.time_scale


class Scanner:
    """Turns a recording's windows, fed in order, into segments: each as soon as it has ended."""

    def __init__(self, engine, params: ScanParams = ScanParams()):
        self.engine, self.params = engine, params
        self.plays: list[_Play] = []
        # the last windows, for the audio around a play's edges; enough for the end, found
        # gap_windows + 1 windows after the play's last one
        self.history: collections.deque[Window] = collections.deque(maxlen=params.gap_windows + 3)
        self.recent: collections.deque[Segment] = collections.deque(maxlen=8)  # emitted, for repeats
        self.index = -1
        self.analysed_seconds = 0.0
        self.degraded = 0
        self.followed = 0
        self.emitted = 0
        self.began = time.perf_counter()

    def feed(self, window: Window) -> list[Segment]:
        """Recognise one window (the next in the recording); the segments that ended before it."""
        self.index += 1
        self.history.append(window)
        self.analysed_seconds = max(self.analysed_seconds, window.end_seconds)
        if window.end_seconds - window.start_seconds >= self.params.shortest_window_seconds and not self._followed(
            window
        ):
            found = self.engine.match_samples(Decoded(window.samples, window.sample_rate_hz, ""))
            self.degraded += bool(found.unanswered)
            for match in found.results:
                self._follow(match, window)
        ended = [p for p in self.plays if self.index - p.last_index > self.params.gap_windows]
        return self._close(ended)

    def playing(self, every_seconds: float) -> list[Segment]:
        """Reports on the plays still going on, each at most once every ``every_seconds`` of the
        recording: what is known so far, the end where the last window recognising it ends (not
        refined; the segment emitted when the play ends is)."""
        out = []
        for play in sorted(self.plays, key=lambda p: p.start_seconds):
            if self.analysed_seconds - play.reported_seconds < every_seconds:
                continue
            play.reported_seconds = self.analysed_seconds
            out.append(self._segment(play, refine_end=False))
        return out

    def finish(self) -> list[Segment]:
        """The segments of the plays still open at the end of the recording (or when stopped)."""
        return self._close(list(self.plays))

    def summary(self, interrupted: bool = False) -> ScanSummary:
        return ScanSummary(
            round(self.analysed_seconds, 3),
            self.index + 1,
            self.emitted,
            round(time.perf_counter() - self.began, 3),
            interrupted,
            self.degraded,
            self.followed,
        )

    def _follow(self, match: Match, window: Window) -> None:
        """Extend the play the match belongs to, or open a new one."""
        zero = window.start_seconds - match.offset_seconds * match.time_scale
        for play in self.plays:
            if play.match.song_id != match.song_id:
                continue
            allowed = self.params.same_play_seconds + self.params.drift * max(
                window.start_seconds - play.start_seconds, 0.0
            )
            if self.params.one_play_per_song or abs(play.zero_seconds - zero) <= allowed:
                if play.last_index != self.index:
                    play.last_index, play.windows = self.index, play.windows + 1
                    play.confidence = max(play.confidence, match.confidence)
                if play.time_scale == match.time_scale == 1.0:  # (a scaled answer's offset is rougher)
                    play.last_zero = zero
                return
        songs, _ = self.engine.store.get_songs([match.song_id])
        length = songs[match.song_id].duration_seconds if match.song_id in songs else float("inf")
        play = _Play(match, zero, length, self.index, self.index, window.start_seconds, match.confidence)
        play.start_seconds = self._edge(play, window.start_seconds - self.params.hop_seconds, window.end_seconds, True)
        self.plays.append(play)

    def _followed(self, window: Window) -> bool:
        """Whether an open play goes on through the window's new audio (what the last window did not
        hold), by its song's peaks there; if so it is extended and the window need not be searched.
        Plays whose time or frequency scale the search fitted are not followed: the peaks would need
        rescaling."""
        if not self.params.follow:
            return False
        frame_s = self.engine.params.frame_seconds
        begin = max(window.start_seconds, window.end_seconds - self.params.hop_seconds)
        clip = None  # the new audio's peaks, once a play needs them
        for play in self.plays:
            if abs(play.time_scale - 1.0) > 1e-3 or abs(play.match.frequency_scale - 1.0) > 1e-3:
                continue
            zero = play.latest_zero
            if begin - zero < 0 or window.end_seconds - zero > play.song_seconds:
                continue  # the song does not fill the new audio
            if play.peaks is None:
                packed, _ = self.engine.store.song_peaks([play.match.song_id])
                data = packed.get(play.match.song_id)
                no_peaks = (np.zeros(0, np.int32), np.zeros(0, np.int32))  # stored without (an earlier release)
                play.peaks = no_peaks if data is None else verification.unpack_peaks(data)
            if not play.peaks[0].size:
                continue
            if clip is None:
                first = round((begin - window.start_seconds) * window.sample_rate_hz)
                clip = query_peaks(window.samples[first:], self.engine.params)
            expected = round((begin - zero) / frame_s)
            verified = verification.verify(
                clip, [(play.match.song_id, expected, play.peaks)], self.engine.searcher.verify
            )
            if verified and verified[0].z >= self.params.follow_z:
                play.last_index, play.windows = self.index, play.windows + 1
                play.last_zero = begin - verified[0].offset_frames * frame_s
                self.followed += 1
                return True
        return False

    def _close(self, ended: list[_Play]) -> list[Segment]:
        """Segments of the ended plays, by start; a one-window play inside another play of the same
        song is left out (a passage that repeats, answered at its other repeat)."""
        out = []
        for play in sorted(ended, key=lambda p: p.start_seconds):
            self.plays.remove(play)
            segment = self._segment(play)
            if play.windows == 1 and self._inside_another(segment):
                continue
            self.recent.append(segment)
            out.append(segment)
        self.emitted += len(out)
        return out

    def _inside_another(self, segment: Segment) -> bool:
        others = [(s.song_id, s.start_seconds, s.end_seconds) for s in self.recent]
        others += [(p.match.song_id, p.start_seconds, self._window_end(p.last_index)) for p in self.plays]
        return any(
            song == segment.song_id and start < segment.end_seconds and segment.start_seconds < end
            for song, start, end in others
        )

    def _window_start(self, index: int) -> float:
        return index * self.params.hop_seconds

    def _window_end(self, index: int) -> float:
        return min(self._window_start(index) + self.params.window_seconds, self.analysed_seconds)

    def _segment(self, play: _Play, refine_end: bool = True) -> Segment:
        last_start = self._window_start(play.last_index)
        if refine_end:
            end = self._edge(play, last_start, last_start + self.params.window_seconds + self.params.hop_seconds, False)
        else:
            end = self._window_end(play.last_index)
        start = max(play.start_seconds, play.zero_seconds)
        end = min(end, play.latest_zero + play.song_seconds * play.time_scale, self.analysed_seconds)
        end = max(end, start)
        return Segment(
            play.match.song_id,
            play.match.song_name,
            round(float(start), 2),
            round(float(end), 2),
            round(float(max(play.at_song(start), 0.0)), 2),
            round(float(play.at_song(end, play.latest_zero)), 2),
            play.confidence,
            play.time_scale,
            play.windows,
        )

    def _edge(self, play: _Play, begin: float, end: float, is_start: bool) -> float:
        """Where the play starts (or ends) between begin and end of the recording: the first (last)
        place where the song's hashes align at the play's offset densely; without that evidence
        (a play whose tempo or pitch alone was changed), the first (last) window's edge."""
        fallback = self._window_start(play.first_index) if is_start else self._window_end(play.last_index)
        if not self.params.refine or abs(play.time_scale * play.match.frequency_scale - 1.0) > 0.01:
            return fallback  # tempo or pitch changed alone: no resampling brings the pair hashes back
        times = self._aligned_times(play, max(begin, 0.0), end, play.zero_seconds if is_start else play.latest_zero)
        p = self.params
        if is_start:
            dense = [t for i, t in enumerate(times) if np.sum(times[i:] <= t + p.edge_span_seconds) >= p.edge_hashes]
            return dense[0] if dense else fallback
        dense = [t for i, t in enumerate(times) if np.sum(times[: i + 1] >= t - p.edge_span_seconds) >= p.edge_hashes]
        return dense[-1] + p.end_lag_seconds if dense else fallback

    def _aligned_times(self, play: _Play, begin: float, end: float, zero: float) -> np.ndarray:
        """Recording times (sorted) of the anchors of the song's hashes that align where the song's
        start falls at ``zero`` (recording seconds)."""
        samples, begin = self._audio(begin, end)
        params, scale = self.engine.params, play.time_scale
        if abs(scale - 1.0) > 1e-3 and samples.size:
            # played faster or slower (both tempo and pitch, as radio does): resampled back to the
            # song's own speed, its pair hashes align again
            samples = signal.resample(samples, round(samples.size / scale)).astype(np.float32)
        frame_s = params.frame_seconds * scale  # recording seconds per frame of the audio analysed
        chunk = round(self.params.refine_chunk_seconds * params.sample_rate_hz)
        hashes, frames = [], []
        for at in range(0, samples.shape[0], chunk):
            h, f = dejavu.fingerprint_query(samples[at : at + chunk], params)
            hashes.append(h)
            frames.append(f + at // params.hop_length)
        if not hashes:
            return np.zeros(0)
        hashes, frames = np.concatenate(hashes).astype(np.int64), np.concatenate(frames)
        rows = self.engine.store.rows(dejavu.distinct(hashes), play.match.song_id)
        keys = np.sort((rows.hashes.astype(np.int64) << 32) | rows.offsets)
        expected = np.round((begin + frames * frame_s - zero) / frame_s).astype(np.int64)
        if abs(scale - 1.0) > 1e-3:
            expected += self._drift_frames(keys, hashes, expected)
        low = (hashes << 32) | np.maximum(expected - self.params.tolerance_frames, 0)
        high = (hashes << 32) | np.maximum(expected + self.params.tolerance_frames, 0)
        hit = np.searchsorted(keys, high, "right") > np.searchsorted(keys, low, "left")
        return np.unique(begin + frames[hit & (expected >= -self.params.tolerance_frames)] * frame_s)

    def _drift_frames(self, keys: np.ndarray, hashes: np.ndarray, expected: np.ndarray) -> int:
        """How many frames the song's hashes here sit from where a fitted time scale puts them: a
        scale 0.05 % off is 4 frames off after two minutes. The most common difference within
        ``scale_drift_frames``, counted within ``tolerance_frames``; 0 unless ``edge_hashes`` agree."""
        reach, tolerance = self.params.scale_drift_frames, self.params.tolerance_frames
        lo = np.searchsorted(keys, (hashes << 32) | np.maximum(expected - reach, 0), "left")
        hi = np.searchsorted(keys, (hashes << 32) | np.maximum(expected + reach, 0), "right")
        n = hi - lo
        if not n.sum():
            return 0
        at = np.repeat(lo, n) + ragged_arange(n)
        deltas = (keys[at] & 0xFFFFFFFF) - np.repeat(expected, n)
        counts = np.bincount(deltas + reach, minlength=2 * reach + 1)
        near = np.convolve(counts, np.ones(2 * tolerance + 1, np.int64), "same")
        best = int(np.argmax(near))
        return best - reach if near[best] >= self.params.edge_hashes else 0

    def _audio(self, begin: float, end: float) -> tuple[np.ndarray, float]:
        """The recording's samples from begin to end, as far as the windows held still cover them,
        and where they start."""
        parts, covered, first = [], None, None
        for w in self.history:
            lo = max(begin, w.start_seconds if covered is None else covered)
            hi = min(end, w.end_seconds)
            if hi <= lo:
                continue
            a, b = (round((x - w.start_seconds) * w.sample_rate_hz) for x in (lo, hi))
            parts.append(w.samples[a:b])
            first = lo if first is None else first
            covered = hi
        return (np.concatenate(parts), first) if parts else (np.zeros(0, np.float32), begin)


def scan(
    engine, source: str | os.PathLike | BinaryIO, params: ScanParams = ScanParams()
) -> Iterator[Segment | ScanSummary]:
    """Scan a recording of any length: each segment as soon as it has ended, then the rest, then the
    summary (a ScanSummary, last).

    Raises:
        BadAudioError: not decodable (raised when the first window is read).
    """
    scanner = Scanner(engine, params)
    windows = stream_windows(source, engine.params.sample_rate_hz, params.window_seconds, params.hop_seconds)
    for window in read_ahead(windows):
        yield from scanner.feed(window)
    yield from scanner.finish()
    yield scanner.summary()
