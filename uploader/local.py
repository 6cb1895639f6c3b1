"""fingerprint_file(path) -> packed bytes: decode and fingerprint on this machine, as the server would."""

from __future__ import annotations

import numpy as np

import dejavu
from tunescout.audio import decode_audio  # the server's decoder: same audio, same PCM digest
from tunescout.errors import BadAudioError


class DecodeError(Exception):
    """ffmpeg could not decode the file."""


def decode(path: str, sample_rate_hz: int) -> tuple[np.ndarray, str]:
    """Mono samples at sample_rate_hz and the SHA-1 of their 16-bit PCM.

    The server's own decoder (tunescout.audio.decode_audio), so the same audio gets the same
    digest whichever side decodes it, and duplicates are still found.

    Raises:
        DecodeError: ffmpeg is missing, or cannot decode the file.
    """
    try:
        decoded = decode_audio(path, sample_rate_hz)
    except BadAudioError as exc:
        missing = isinstance(exc.__cause__, FileNotFoundError)
        raise DecodeError("ffmpeg is not installed" if missing else "ffmpeg cannot decode it") from exc
    return decoded.samples, decoded.pcm_sha1


def fingerprint_file(path: str, params: dejavu.FingerprintParams = dejavu.DEFAULT_PARAMS) -> bytes:
    """The file's reference fingerprint in the compact upload format (dejavu.pack_fingerprint).

    Raises:
        DecodeError: ffmpeg is missing, or cannot decode the file.
    """
    samples, sha1 = decode(path, params.sample_rate_hz)
    hashes, offsets = dejavu.fingerprint_reference(samples, params)
    return dejavu.pack_fingerprint(hashes, offsets, params.digest(), sha1, samples.size / params.sample_rate_hz)
