"""pack_fingerprint / unpack_fingerprint: a song's hashes in the compact upload format (bytes in, bytes out).

Layout (little-endian), documented for other clients in docs/FORMAT.md:

    b"TSFP" | version u8 = 1 or 2 | params digest, 16 ASCII hex | PCM SHA-1, 20 bytes |
    duration_seconds f64 | n u32 | [version 2: robust params digest, 16 ASCII hex] |
    zlib( offsets as u32 deltas from the previous, sorted ascending ) | zlib( hashes u32, in the same order )

Version 2 carries both hash families (dejavu.robust's triplet hashes have bit 30 set) and the
RobustParams digest that made the triplets; version 1, the pair family only.

Each zlib stream is preceded by its length (u32). A 4-minute song packs to about 25 kB.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

from .errors import DejavuError

MAGIC, VERSION = b"TSFP", 2
_HEAD = struct.Struct("<4sB16s20sdI")
_ROBUST = struct.Struct("<16s")  # version 2: the robust params digest
MAX_HASHES = 50_000_000  # about 600 hours of audio: anything larger is not a song


class FormatError(DejavuError):
    """The bytes are not a packed fingerprint of this version."""


@dataclasses.dataclass(frozen=True)
class PackedFingerprint:
    params_digest: str
    pcm_sha1: str
    duration_seconds: float
    hashes: np.ndarray  # uint32 [n]
    offsets: np.ndarray  # int32 [n], frames, ascending
    robust_digest: str = ""  # RobustParams.digest() of the triplet hashes among them; "" in version 1


def pack_fingerprint(
    hashes: np.ndarray,
    offsets: np.ndarray,
    params_digest: str,
    pcm_sha1: str,
    duration_seconds: float,
    robust_digest: str = "",
) -> bytes:
    """Pack a reference fingerprint for upload (version 2 with a robust digest, else version 1).

    Parameters
    ----------
    hashes : np.ndarray [shape=(n,)], uint32
    offsets : np.ndarray [shape=(n,)], int, frames (>= 0)
    params_digest : str, FingerprintParams.digest() of the parameters that made the hashes
    pcm_sha1 : str, 40 hex digits: SHA-1 of the decoded 16-bit PCM (duplicate detection)
    duration_seconds : float
    robust_digest : str, RobustParams.digest() when ``hashes`` include triplet hashes (16 hex), else ""
    """
    order = np.argsort(offsets, kind="stable")
    offs = np.asarray(offsets, np.int64)[order]
    deltas = np.diff(offs, prepend=0).astype("<u4")
    streams = [zlib.compress(deltas.tobytes(), 6), zlib.compress(np.asarray(hashes, "<u4")[order].tobytes(), 6)]
    version = VERSION if robust_digest else 1
    head = _HEAD.pack(
        MAGIC, version, params_digest.encode("ascii"), bytes.fromhex(pcm_sha1), float(duration_seconds), int(offs.size)
    )
    if robust_digest:
        head += _ROBUST.pack(robust_digest.encode("ascii"))
    return head + b"".join(struct.pack("<I", len(s)) + s for s in streams)


def unpack_fingerprint(data: bytes) -> PackedFingerprint:
    """Read a packed fingerprint.

    Raises:
        FormatError: wrong magic or version, truncated, or inconsistent lengths.
    """
    try:
        magic, version, digest, sha1, duration, n = _HEAD.unpack_from(data, 0)
        if magic != MAGIC or version not in (1, VERSION):
            raise FormatError("not a TuneScout fingerprint (format version 1 or 2)")
        if n > MAX_HASHES or not 0 <= duration < 1e7:
            raise FormatError("implausible fingerprint header")
        pos, arrays, robust = _HEAD.size, [], b""
        if version == 2:
            (robust,) = _ROBUST.unpack_from(data, pos)
            pos += _ROBUST.size
        for _ in range(2):
            (size,) = struct.unpack_from("<I", data, pos)
            raw = zlib.decompressobj().decompress(data[pos + 4 : pos + 4 + size], 4 * n + 1)
            if len(raw) != 4 * n:
                raise FormatError("fingerprint arrays do not match their declared length")
            arrays.append(np.frombuffer(raw, "<u4"))
            pos += 4 + size
        offsets = np.cumsum(arrays[0], dtype=np.int64)
        if n and offsets[-1] > np.iinfo(np.int32).max:
            raise FormatError("offsets out of range")
        return PackedFingerprint(
            digest.decode("ascii"),
            sha1.hex(),
            duration,
            arrays[1].astype(np.uint32),
            offsets.astype(np.int32),
            robust.decode("ascii"),
        )
    except (struct.error, zlib.error, UnicodeDecodeError) as exc:
        raise FormatError("truncated or corrupt fingerprint") from exc
