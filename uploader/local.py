"""fingerprint_file(path) -> packed bytes: decode with ffmpeg and fingerprint on this machine (dejavu only)."""
from __future__ import annotations

import hashlib
import shutil
import subprocess

import numpy as np

import dejavu


class DecodeError(Exception):
    """ffmpeg could not decode the file."""


def decode(path: str, sample_rate_hz: int) -> tuple[np.ndarray, str]:
    """Mono 16-bit PCM at sample_rate_hz and its SHA-1.

    The same ffmpeg command the server runs (tunescout/audio.py), so the same audio gets the same
    digest whichever side decodes it, and duplicates are still found.
    """
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise DecodeError("ffmpeg is not installed")
    command = [ffmpeg, "-nostdin", "-v", "error", "-i", path, "-vn", "-sn", "-ac", "1",
               "-ar", str(sample_rate_hz), "-f", "s16le", "-acodec", "pcm_s16le", "-"]
    done = subprocess.run(command, capture_output=True, timeout=600, check=False)
    raw = done.stdout[: len(done.stdout) // 2 * 2]
    if done.returncode != 0 or not raw:
        raise DecodeError("ffmpeg cannot decode it")
    return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0, hashlib.sha1(raw).hexdigest()


def fingerprint_file(path: str, params: dejavu.FingerprintParams = dejavu.DEFAULT_PARAMS) -> bytes:
    """The file's reference fingerprint in the compact upload format (dejavu.pack_fingerprint)."""
    samples, sha1 = decode(path, params.sample_rate_hz)
    hashes, offsets = dejavu.fingerprint_reference(samples, params)
    return dejavu.pack_fingerprint(hashes, offsets, params.digest(), sha1, samples.size / params.sample_rate_hz)
