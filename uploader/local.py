"""fingerprint_file(path) -> packed bytes: decode and fingerprint on this machine, as the server would."""

from __future__ import annotations

import numpy as np

import dejavu
from tunescout.audio import decode_audio  # the server's decoder: same audio, same PCM digest
from tunescout.errors import BadAudioError


class DecodeError(Exception):
    """The file could not be decoded."""


def decode(path: str, sample_rate_hz: int) -> tuple[np.ndarray, str]:
    """Mono samples at sample_rate_hz and the SHA-1 of their 16-bit PCM.

    The server's own decoder (tunescout.audio.decode_audio), so the same audio gets the same
    digest whichever side decodes it, and duplicates are still found.

    Raises:
        DecodeError: the file cannot be decoded, or is longer than the server's default
            fingerprinting.max_duration.
    """
    try:
        decoded = decode_audio(path, sample_rate_hz)
    except BadAudioError as exc:
        raise DecodeError(f"cannot decode it: {exc.message}") from exc
    if decoded.truncated:
        raise DecodeError("longer than the server's default fingerprinting.max_duration")
    return decoded.samples, decoded.pcm_sha1


def fingerprint_file(
    path: str,
    params: dejavu.FingerprintParams = dejavu.DEFAULT_PARAMS,
    robust: dejavu.RobustParams = dejavu.DEFAULT_ROBUST,
) -> bytes:
    """The file's reference fingerprint in the compact upload format (dejavu.pack_fingerprint), both
    hash families (a server whose index lacks the robust family stores the pair family only).

    Raises:
        DecodeError: the file cannot be decoded, or is too long.
    """
    samples, sha1 = decode(path, params.sample_rate_hz)
    families = dejavu.robust.fingerprint_reference_families(samples, params, robust)
    hashes, offsets = (np.concatenate(parts) for parts in zip(*families))
    duration = samples.size / params.sample_rate_hz
    return dejavu.pack_fingerprint(hashes, offsets, params.digest(), sha1, duration, robust.digest())
