"""decode_audio(file) -> Decoded mono samples at the fingerprint rate; the only audio I/O."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import subprocess
import tempfile
import wave
from typing import BinaryIO

import numpy as np
from pydub import AudioSegment
from scipy.signal import resample_poly

from .errors import BadAudioError


@dataclasses.dataclass(frozen=True)
class Decoded:
    samples: np.ndarray  # float32 mono, full scale +-1.0
    sample_rate_hz: int
    pcm_sha1: str  # SHA-1 of the 16-bit PCM: same recording, same digest

    @property
    def duration_seconds(self) -> float:
        return self.samples.shape[0] / self.sample_rate_hz


def decode_audio(
    source: str | os.PathLike | BinaryIO,
    sample_rate_hz: int,
    start_seconds: float = 0.0,
    duration_seconds: float | None = None,
) -> Decoded:
    """Decode any ffmpeg-readable audio or video to mono 16-bit PCM at sample_rate_hz.

    ffmpeg (found the way pydub finds it) resamples and downmixes in one process
    and writes raw PCM to a pipe: pydub's own from_file drops output options and
    runs ffprobe first, which doubles the cost of every file.

    Raises:
        BadAudioError: ffmpeg cannot decode it, or it holds no audio.
    """
    if isinstance(source, (str, os.PathLike)):
        return _run_ffmpeg(str(source), sample_rate_hz, start_seconds, duration_seconds)
    with tempfile.NamedTemporaryFile(prefix="tunescout-", suffix=".upload") as tmp:
        shutil.copyfileobj(source, tmp, 1 << 20)
        tmp.flush()
        return _run_ffmpeg(tmp.name, sample_rate_hz, start_seconds, duration_seconds)


def _run_ffmpeg(path: str, sample_rate_hz: int, start_seconds: float, duration_seconds: float | None) -> Decoded:
    command = [AudioSegment.converter, "-nostdin", "-v", "error"]
    if start_seconds:
        command += ["-ss", f"{start_seconds:.3f}"]
    if duration_seconds:
        command += ["-t", f"{duration_seconds:.3f}"]
    command += [
        "-i",
        path,
        "-vn",
        "-sn",
        "-ac",
        "1",
        "-ar",
        str(sample_rate_hz),
        "-f",
        "s16le",
        "-acodec",
        "pcm_s16le",
        "-",
    ]
    try:
        done = subprocess.run(command, capture_output=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BadAudioError() from exc
    raw = done.stdout[: len(done.stdout) // 2 * 2]
    if done.returncode != 0 or not raw:
        raise BadAudioError()
    pcm = np.frombuffer(raw, "<i2")
    return Decoded(pcm.astype(np.float32) / 32768.0, sample_rate_hz, hashlib.sha1(raw).hexdigest())


def decode_query(data: bytes, sample_rate_hz: int, start_seconds: float, duration_seconds: float) -> Decoded:
    """Decode a query clip; plain PCM WAV skips the ffmpeg process (the common fast path).

    Raises:
        BadAudioError: the input cannot be decoded or holds no audio.
    """
    fast = _read_pcm_wav(data)
    if fast is None:
        return decode_audio(io.BytesIO(data), sample_rate_hz, start_seconds, duration_seconds)
    samples, rate = fast
    begin = int(start_seconds * rate)
    samples = samples[begin : begin + int(duration_seconds * rate)]
    if rate != sample_rate_hz:
        g = np.gcd(rate, sample_rate_hz)
        samples = resample_poly(samples, sample_rate_hz // g, rate // g).astype(np.float32)
    if samples.size == 0:
        raise BadAudioError()
    return Decoded(samples, sample_rate_hz, "")


def _read_pcm_wav(data: bytes) -> tuple[np.ndarray, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    try:
        with wave.open(io.BytesIO(data)) as w:
            if w.getsampwidth() != 2 or w.getcomptype() != "NONE":
                return None
            pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
            pcm = pcm.reshape(-1, w.getnchannels()).mean(axis=1, dtype=np.float32)
            return pcm / 32768.0, w.getframerate()
    except (wave.Error, EOFError, ValueError):
        return None
