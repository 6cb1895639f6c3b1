"""decode_audio(file) -> Decoded mono samples at the fingerprint rate; the only audio I/O."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

import av
import numpy as np

from .errors import BadAudioError, BadRequestError

log = logging.getLogger(__name__)

# What a container or a frame may claim before anything is allocated for it: a WAV header's rate is
# any 32-bit number, and a resampler built for 2**31-1 Hz asks for hundreds of GB.
MIN_SAMPLE_RATE_HZ = 1000
MAX_SAMPLE_RATE_HZ = 768_000
MAX_CHANNELS = 32
MAX_START_SECONDS = 86_400.0
# How much audio before a window's start is decoded at most after seeking to it (a seek lands on the
# packet at or before the start); a file whose timestamps never reach the start costs no more.
SEEK_SLACK_SECONDS = 30.0
# Codecs make at most a few hundred frames per second of audio (Opus 400, Vorbis about 350).
MAX_FRAMES_PER_SECOND = 1000
# What the demuxer reads to learn the streams' parameters (not to recognise the format, which has its
# own limit). FFmpeg's 5 MB made opening a 5 s WAV cost 25-35 ms, more than decoding it.
_OPEN_OPTIONS = {"probesize": "65536"}
# A live source the operator names (`tunescout scan URL`; a client's upload never opens one): FFmpeg's
# network protocols only, giving up after 20 s without data. A file served whole is read on where a
# broken connection left off; a stream without a length is not reconnected (FFmpeg would start it over
# at its end, forever, when the source is finite).
STREAM_SCHEMES = ("http://", "https://")
_STREAM_OPTIONS = {
    **_OPEN_OPTIONS,
    "protocol_whitelist": "http,https,tcp,tls,crypto,hls",
    "reconnect": "1",
    "reconnect_delay_max": "10",
    "rw_timeout": "20000000",
}


@dataclasses.dataclass(frozen=True)
class Decoded:
    samples: np.ndarray  # float32 mono, full scale +-1.0
    sample_rate_hz: int
    pcm_sha1: str  # SHA-1 of the 16-bit PCM: same recording, same digest
    truncated: bool = False  # the input holds more audio than was asked for (max_seconds)

    @property
    def duration_seconds(self) -> float:
        return self.samples.shape[0] / self.sample_rate_hz


def decode_audio(
    source: str | os.PathLike | BinaryIO | bytes,
    sample_rate_hz: int,
    start_seconds: float = 0.0,
    duration_seconds: float | None = None,
    max_seconds: float = 1800.0,
) -> Decoded:
    """Decode the first audio stream of any FFmpeg-readable file to mono 16-bit PCM at sample_rate_hz.

    In this process, with the FFmpeg libraries (PyAV): no program is started and no file is written.
    Only the window from start_seconds is decoded, and at most min(duration_seconds, max_seconds) of
    it; ``truncated`` says that there was more. The PCM is what ``ffmpeg -ac 1 -ar RATE -f s16le``
    gives (one resampling, 16-bit arithmetic for 8/16-bit input, as the command's does): byte for byte
    for PCM, FLAC and MP3; Vorbis, Opus and AAC decoders of newer FFmpeg round a few samples in
    10,000 one step apart.

    Raises:
        BadRequestError: start or duration out of range.
        BadAudioError: not decodable, no audio stream, no audio in the window, or a sample rate or
            channel count out of range.
    """
    if not (math.isfinite(start_seconds) and 0 <= start_seconds <= MAX_START_SECONDS):
        raise BadRequestError(f"start must be between 0 and {MAX_START_SECONDS:g} seconds")
    if duration_seconds is not None and not (math.isfinite(duration_seconds) and duration_seconds > 0):
        raise BadRequestError("duration must be a positive number of seconds")
    want = min(duration_seconds or max_seconds, max_seconds)
    limit = max(1, math.ceil(want * sample_rate_hz))
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    try:
        with av.open(_path_or_file(source), "r", options=_OPEN_OPTIONS) as container:
            raw, truncated = _read_window(container, sample_rate_hz, start_seconds, limit)
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise BadAudioError() from exc
    if not raw:
        raise BadAudioError("No audio in the file (or in the requested window)")
    pcm = np.frombuffer(raw, "<i2")
    return Decoded(pcm.astype(np.float32) / 32768.0, sample_rate_hz, hashlib.sha1(raw).hexdigest(), truncated)


def probe_recording(path: str | os.PathLike, sample_rate_hz: int) -> float | None:
    """Check that a recording's first second decodes; the duration its container claims, in seconds
    (None where it claims none: a stream, a raw format).

    Raises:
        BadAudioError: as :func:`decode_audio`.
    """
    decode_audio(path, sample_rate_hz, 0.0, 1.0)
    try:
        with av.open(os.fspath(path), "r", options=_OPEN_OPTIONS) as container:
            claimed = container.duration
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise BadAudioError() from exc
    return claimed / av.time_base if claimed and claimed > 0 else None


def _path_or_file(source):
    return os.fspath(source) if isinstance(source, os.PathLike) else source


def decode_query(data: bytes, sample_rate_hz: int, start_seconds: float, duration_seconds: float) -> Decoded:
    """Decode the window of a query clip (the engine's recognise path).

    Raises:
        BadAudioError: the input cannot be decoded or holds no audio in the window.
    """
    return decode_audio(data, sample_rate_hz, start_seconds, duration_seconds, duration_seconds)


def _audio_stream(container) -> av.AudioStream:
    """The first audio stream, its claimed rate and channels checked.

    Raises:
        BadAudioError: there is none, or it claims a rate or channel count out of range.
    """
    if not container.streams.audio:
        raise BadAudioError("No audio stream in the file")
    stream = container.streams.audio[0]
    if stream.codec_context is None:  # a codec FFmpeg has no decoder for (a WAV's format code 0, say)
        raise BadAudioError("No decoder for the file's audio format")
    _check_claims(stream.codec_context.sample_rate or 0, stream.codec_context.channels or 0, allow_unknown=True)
    stream.codec_context.thread_count = 1  # one request, one core: the server runs requests side by side
    return stream


def _check_claims(rate_hz: int, channels: int, allow_unknown: bool = False) -> None:
    if allow_unknown and not rate_hz and not channels:
        return  # some demuxers learn them from the first frame, which is checked in turn
    if not MIN_SAMPLE_RATE_HZ <= rate_hz <= MAX_SAMPLE_RATE_HZ:
        raise BadAudioError(
            f"Unsupported sample rate {rate_hz} Hz (supported: {MIN_SAMPLE_RATE_HZ}-{MAX_SAMPLE_RATE_HZ} Hz)"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise BadAudioError(f"Unsupported channel count {channels} (supported: 1-{MAX_CHANNELS})")


def _read_window(container, sample_rate_hz: int, start_seconds: float, limit: int) -> tuple[bytes, bool]:
    """At most limit samples of 16-bit mono PCM from start_seconds on, and whether more were there.

    Raises:
        BadAudioError: a rate or channel count out of range, or far more frames than codecs make.
    """
    stream = _audio_stream(container)
    if start_seconds > 0:
        try:
            container.seek(int(start_seconds * av.time_base), backward=True, any_frame=False)
        except av.FFmpegError:
            pass  # not seekable: decoded from the start, within the budget below
    out = _PcmWriter(sample_rate_hz, limit)
    # Decoded input is counted, so that timestamps that never reach the start cannot keep us busy, and
    # so are frames: each costs tens of microseconds, and a file of one-sample frames would be a bomb.
    budget_seconds = limit / sample_rate_hz + (SEEK_SLACK_SECONDS if start_seconds > 0 else 0.0) + 1.0
    decoded_seconds = 0.0
    for frame in _frames(container, stream, int(MAX_FRAMES_PER_SECOND * budget_seconds)):
        _check_claims(frame.sample_rate, frame.layout.nb_channels)
        decoded_seconds += frame.samples / frame.sample_rate
        if start_seconds > 0 and out.skip is None:
            begin = frame.time if frame.time is not None else start_seconds
            if begin + frame.samples / frame.sample_rate <= start_seconds and decoded_seconds <= budget_seconds:
                continue  # wholly before the window
            out.skip = max(0, round((start_seconds - begin) * sample_rate_hz))
        if out.add(frame) or decoded_seconds > budget_seconds:
            break
    else:
        out.flush()
    return out.pcm(), out.full


def _frames(container, stream, max_packets: int):
    """The stream's decoded frames; a packet the decoder refuses is skipped, as the ffmpeg command does
    (the decoder says so with EINVAL, for example, for an empty packet after the last one, which some
    encoders write as an Ogg stream's final page).

    Raises:
        BadAudioError: more than max_packets packets.
    """
    for count, packet in enumerate(container.demux(stream)):
        if count > max_packets:
            raise BadAudioError(f"The audio is cut into too many frames (over {MAX_FRAMES_PER_SECOND} per second)")
        yield from _decoded(packet)


class _PcmWriter:
    """Resample frames to 16-bit mono PCM until limit samples (and one more, to know there is more)."""

    def __init__(self, sample_rate_hz: int, limit: int):
        self.rate, self.limit = sample_rate_hz, limit
        self.chunks: list[bytes] = []
        self.count = 0
        self.skip: int | None = None  # output samples before the window's start, dropped
        self.full = False
        self.resampler = None
        self.source = None

    def add(self, frame) -> bool:
        """Resample one frame; True once more than limit samples are in."""
        source = (frame.format.name, frame.layout.name, frame.sample_rate)
        if source != self.source:  # a stream may change its rate or layout midway: start afresh
            self.flush()
            self.resampler = _resampler_for(frame, self.rate)
            self.source = source
        return self._take(self.resampler.resample(frame))

    def flush(self) -> None:
        if self.resampler is not None and not self.full:
            self._take(self.resampler.resample(None))

    def _take(self, frames) -> bool:
        for resampled in frames:
            data = resampled.to_ndarray().tobytes()
            if self.skip:  # None or 0: nothing to drop
                dropped = min(self.skip, len(data) // 2)
                data, self.skip = data[dropped * 2 :], self.skip - dropped
            self.chunks.append(data)
            self.count += len(data) // 2
            if self.count > self.limit:
                self.full = True
                return True
        return False

    def pcm(self) -> bytes:
        return b"".join(self.chunks)[: self.limit * 2]


@dataclasses.dataclass(frozen=True)
class Window:
    """One window of a recording being scanned (:func:`stream_windows`)."""

    start_seconds: float  # where it starts in the recording
    samples: np.ndarray  # float32 mono, full scale +-1.0
    sample_rate_hz: int

    @property
    def end_seconds(self) -> float:
        return self.start_seconds + self.samples.shape[0] / self.sample_rate_hz


def is_stream_url(source) -> bool:
    """Whether source names a live stream (an http or https URL: Icecast, Shoutcast, HLS)."""
    return isinstance(source, str) and source.lower().startswith(STREAM_SCHEMES)


def stream_windows(
    source: str | os.PathLike | BinaryIO,
    sample_rate_hz: int,
    window_seconds: float = 10.0,
    hop_seconds: float = 5.0,
    reconnect_s: float = 0.0,
) -> Iterator[Window]:
    """Decode a recording of any length as consecutive windows of mono PCM at sample_rate_hz.

    A window of window_seconds starts every hop_seconds; the last one ends with the audio (shorter,
    unless the recording is). Only one window and one decoded frame are held at a time, so memory
    stays flat whatever the length. The PCM is decode_audio's, with the same checks of what the
    container and each frame claim; a stream that is not seekable (a pipe, a live source) works.
    An http or https URL (:func:`is_stream_url`) is opened as a live stream: it ends with the
    stream, or after 20 s without data; with ``reconnect_s``, a stream that ends or breaks is opened
    again (after 1, 2, 4 ... 30 s) until it answers or reconnect_s have passed since it stopped, and
    the time it was off counts as silence, so that recording times stay those of the clock.

    Raises:
        BadRequestError: window or hop out of range.
        BadAudioError: not decodable, no audio stream, no audio at all, a rate or channel count out of
            range, or far more frames than codecs make.
    """
    if not (0 < hop_seconds <= window_seconds <= MAX_START_SECONDS):
        raise BadRequestError("hop must be positive and at most the window, the window at most a day")
    size, hop = round(window_seconds * sample_rate_hz), max(1, round(hop_seconds * sample_rate_hz))
    held, chunks, count = np.zeros(0, np.float32), [], 0  # held: the window's overlap with the next
    start = 0  # sample index of held[0] in the recording
    pcm = _stream_pcm(source, sample_rate_hz)
    if reconnect_s > 0 and is_stream_url(source):
        pcm = _reconnected(source, sample_rate_hz, reconnect_s)
    for chunk in pcm:
        chunks.append(chunk)
        count += chunk.shape[0]
        if held.shape[0] + count < size:
            continue  # joined once a window is full: a copy per frame would cost more than the decoding
        buffer = np.concatenate([held, *(c.astype(np.float32) / 32768.0 for c in chunks)])
        chunks, count = [], 0
        while buffer.shape[0] >= size:
            yield Window(start / sample_rate_hz, buffer[:size], sample_rate_hz)
            buffer, start = buffer[hop:], start + hop
        held = buffer.copy()  # not a view: the window that was cut from it can go
    tail = np.concatenate([held, *(c.astype(np.float32) / 32768.0 for c in chunks)])
    if start == 0 and not tail.shape[0]:
        raise BadAudioError("No audio in the file")
    if tail.shape[0] > (size - hop if start else 0):  # samples no window has held yet
        yield Window(start / sample_rate_hz, tail, sample_rate_hz)


_POLL_SECONDS = 0.2  # read_ahead's longest wait without running Python code (and so without seeing Ctrl-C)


def read_ahead(windows: Iterator[Window], depth: int = 2) -> Iterator[Window]:
    """The windows, decoded on a thread of their own at most ``depth`` ahead of the caller: decoding
    runs on the other core while the caller recognises (an hour of Opus takes about 10 s to decode).

    The caller can stop at any time, Ctrl-C included: FFmpeg's read of a live stream may block in C
    for as long as the stream trickles, and the signal may be taken by any thread, while Python
    raises KeyboardInterrupt only in the main thread, once it runs Python code again. So the caller
    waits in short steps; when it stops (or this generator is closed), the decoding thread stops at
    its next window, or is left behind while FFmpeg blocks (a daemon, holding at most ``depth``
    windows). An error that thread meets is raised to the caller."""
    handed: queue.Queue = queue.Queue(maxsize=depth)
    stopped = threading.Event()
    end = object()

    def hand(item) -> bool:
        while not stopped.is_set():
            try:
                handed.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def decode() -> None:
        try:
            for window in windows:
                if not hand(window):
                    return
        except BaseException as exc:  # raised in the caller's thread instead
            hand(exc)
        else:
            hand(end)
        finally:
            if stopped.is_set() and hasattr(windows, "close"):
                windows.close()

    threading.Thread(target=decode, name="decode", daemon=True).start()
    try:
        while True:
            try:
                item = handed.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue  # back in Python now and then: a Ctrl-C that another thread took is raised here
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopped.set()


def _reconnected(url: str, sample_rate_hz: int, patience_s: float, clock=time.monotonic) -> Iterator[np.ndarray]:
    """A live stream's PCM, opened again each time it ends or breaks, with silence for the time it was
    off; over when it has not answered for patience_s. The first opening's errors are raised."""
    yield from _stream_pcm(url, sample_rate_hz)
    stopped, delay = clock(), 1.0
    while clock() - stopped < patience_s:
        time.sleep(min(delay, max(patience_s - (clock() - stopped), 0.0)))
        delay = min(2 * delay, 30.0)
        pcm = _stream_pcm(url, sample_rate_hz)
        try:
            first = next(pcm)
        except (BadAudioError, StopIteration):
            continue
        log.info("stream %s answers again after %.1f s", url, clock() - stopped)
        off = round((clock() - stopped) * sample_rate_hz)
        for at in range(0, off, sample_rate_hz):  # a second at a time: an outage of hours is not held at once
            yield np.zeros(min(sample_rate_hz, off - at), np.int16)
        yield first
        try:
            yield from pcm
        except BadAudioError:
            pass
        stopped, delay = clock(), 1.0


def _stream_pcm(source, sample_rate_hz: int) -> Iterator[np.ndarray]:
    """The recording's 16-bit mono PCM at sample_rate_hz, a resampled frame at a time.

    Raises:
        BadAudioError: as :func:`stream_windows`.
    """
    live = is_stream_url(source)
    try:
        with av.open(_path_or_file(source), "r", options=_STREAM_OPTIONS if live else _OPEN_OPTIONS) as container:
            stream = _audio_stream(container)
            resampler, layout, decoded_seconds = None, None, 0.0
            for count, packet in enumerate(_demuxed(container, stream, live)):
                # as _frames: packets are counted against the audio they carry, so that a file of
                # one-sample frames cannot keep a scan busy for hours
                if count > MAX_FRAMES_PER_SECOND * (decoded_seconds + 1.0):
                    raise BadAudioError(
                        f"The audio is cut into too many frames (over {MAX_FRAMES_PER_SECOND} per second)"
                    )
                for frame in _decoded(packet):
                    _check_claims(frame.sample_rate, frame.layout.nb_channels)
                    decoded_seconds += frame.samples / frame.sample_rate
                    if (frame.format.name, frame.layout.name, frame.sample_rate) != layout:
                        yield from _resampled(resampler, None)  # a change of rate or layout midway
                        resampler = _resampler_for(frame, sample_rate_hz)
                        layout = (frame.format.name, frame.layout.name, frame.sample_rate)
                    yield from _resampled(resampler, frame)
            yield from _resampled(resampler, None)
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise BadAudioError() from exc


def _demuxed(container, stream, live: bool) -> Iterator:
    """The stream's packets. A live stream that breaks off after its first packet has ended: one
    without a length cannot tell its end from a drop (FFmpeg reports both as an I/O error)."""
    packets, started = container.demux(stream), False
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except OSError:
            if live and started:
                return
            raise
        started = True
        yield packet


def _decoded(packet):
    """A packet's frames; none if the decoder refuses it (see :func:`_frames`)."""
    try:
        return packet.decode()
    except (av.InvalidDataError, av.ArgumentError):
        return []


def _resampler_for(frame, sample_rate_hz: int):
    """A resampler of the frame's audio to 16-bit mono at sample_rate_hz.

    The ffmpeg command resamples 8/16-bit input in 16-bit arithmetic; newer FFmpeg libraries would use
    float when channels are mixed, and a few samples would differ by one.
    """
    options = {"internal_sample_fmt": "s16p"} if frame.format.bytes <= 2 else None
    return av.AudioResampler(format="s16", layout="mono", rate=sample_rate_hz, options=options)


def _resampled(resampler, frame) -> Iterator[np.ndarray]:
    """What the resampler gives for a frame (None: what it still holds); nothing without a resampler."""
    for out in resampler.resample(frame) if resampler is not None else ():
        yield out.to_ndarray().reshape(-1)
