"""Malformed requests from a seeded generator, sent raw to a live server, and the rules every answer keeps.

Shared by tests/tunescout/test_fuzz.py (a few thousand requests, in CI) and bench/fuzz.py (as many as
asked). Each request is made by one generator class from its own seed, ``(seed, kind, index)``, so any
one of them can be made again alone (``python bench/fuzz.py --show kind:index``). Requests go out as
raw bytes on a fresh connection (malformed HTTP included). One whose body is shorter than it declares
is followed by a half-close, so that the server sees the end of it at once rather than a client that
stalls (slow clients are not this test's subject).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import http.client
import io
import json
import os
import random
import resource
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np

from tests import servers

FUZZ_TOKEN = "fuzz-write-token"
MAX_UPLOAD_MB = 2  # recognizing.max_file_size_mb of the fuzzed server: oversized bodies stay cheap
SLOW_S = 5.0  # no answer may take longer (a query decodes at most max_duration = 10 s of audio)
MAX_WORKER_RSS_MB = 300  # peak resident memory of a worker (65 MB at start, 150 MB after 3,000 requests)
ADDRESS_SPACE_BYTES = 4 << 30  # kernel limit per server process: a runaway allocation fails there
CONCURRENCY = 4


@dataclasses.dataclass(frozen=True)
class FuzzRequest:
    kind: str  # the generator class that made it
    index: int
    note: str  # what is hostile about it, for the failure report
    raw: bytes  # the request exactly as sent
    method: str  # how to read the answer (a HEAD answer has no body)
    half_close: bool = False  # end the sending side once sent: the body is shorter than it says
    pipelined: bool = False  # raw ends with a second request, PIPELINED_CHECK: read two answers


@dataclasses.dataclass
class Outcome:
    request: FuzzRequest
    status: int | None  # None: no answer
    content_type: str = ""
    body: bytes = b""
    elapsed_s: float = 0.0
    error: str = ""
    second: str = ""  # what is wrong with the answer to a pipelined second request, if anything


# -- building requests ------------------------------------------------------------------------------


def http_request(method: str, target: str, headers=(), body: bytes = b"", *, length: bool = True) -> bytes:
    """A request on the wire: Host, the given headers, Content-Length unless length is False, body."""
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    for name, value in headers:
        lines.append(_b(name) + b": " + _b(value))
    if length and (body or method in ("POST", "PUT", "PATCH")):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _b(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


def multipart(parts, boundary: bytes = b"fuzzb0undary") -> tuple[bytes, bytes]:
    """(body, Content-Type) of a multipart/form-data body; parts are (name, filename or None, data)."""
    out = b""
    for name, filename, data in parts:
        disposition = b'form-data; name="' + _b(name) + b'"'
        if filename is not None:
            disposition += b'; filename="' + _b(filename) + b'"'
        out += b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n"
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + _b(data) + b"\r\n"
    return out + b"--" + boundary + b"--\r\n", b"multipart/form-data; boundary=" + boundary


def upload(path: str, data: bytes, fields=(), filename="clip.wav", token: str | None = None, headers=()) -> bytes:
    """POST a file (and form fields) as multipart, as a browser would."""
    body, ctype = multipart([("file", filename, data), *((k, None, v) for k, v in fields)])
    auth = [("Authorization", f"Bearer {token}")] if token else []
    return http_request("POST", path, [("Content-Type", ctype), *auth, *headers], body)


# -- media: real encodings to truncate and corrupt, bombs ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class Media:
    clips: dict  # format -> bytes of a 2 s clip
    bombs: dict  # name -> bytes of a small file that decodes to an hour


# format -> (codec, container, sample rate): what the clips are made as (with the FFmpeg libraries of
# PyAV, the service's own decoder, so that no ffmpeg program is needed)
ENCODINGS = {
    "wav": ("pcm_s16le", "wav", 11025),
    "wav_u8": ("pcm_u8", "wav", 22050),
    "wav_float": ("pcm_f32le", "wav", 22050),
    "flac": ("flac", "flac", 22050),
    "ogg_flac": ("flac", "ogg", 22050),
    "opus": ("libopus", "ogg", 48000),
    "mp3": ("libmp3lame", "mp3", 22050),
}
# Silence compresses to almost nothing: 270 kB of FLAC at 1 kHz is an hour (40 M samples at 11,025 Hz).
BOMBS = {"flac_1h": ("flac", "flac", 1000), "ogg_flac_1h": ("flac", "ogg", 1000)}
BOMB_SECONDS = 3600


def make_media() -> Media:
    """Encode the 2 s clips (a gliding tone with some noise) and the bombs (an hour of silence)."""
    clips = {}
    for fmt, (codec, container, rate) in ENCODINGS.items():
        t = np.arange(2 * rate) / rate
        tone = 0.3 * np.sin(2 * np.pi * 440 * t * (1 + t / 4)) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
        clips[fmt] = encode_audio((np.clip(tone, -1, 1) * 32767).astype(np.int16), rate, codec, container)
    bombs = {
        name: encode_audio(np.zeros(BOMB_SECONDS * rate, np.int16), rate, codec, container)
        for name, (codec, container, rate) in BOMBS.items()
    }
    return Media(clips, bombs)


def encode_audio(pcm: np.ndarray, rate_hz: int, codec: str, container: str) -> bytes:
    """The bytes of mono 16-bit samples encoded with codec in container."""
    import av

    out = io.BytesIO()
    with av.open(out, "w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=rate_hz, layout="mono")
        for begin in range(0, pcm.size, 1 << 16):
            frame = av.AudioFrame.from_ndarray(pcm[None, begin : begin + (1 << 16)], format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate_hz, begin
            muxer.mux(stream.encode(frame))
        muxer.mux(stream.encode(None))
    return out.getvalue()


def wav_file(
    rate: int = 11025,
    channels: int = 1,
    bits: int = 16,
    fmt_code: int = 1,
    pcm: bytes = b"",
    data_size: int | None = None,
    fmt_size: int = 16,
    riff_size: int | None = None,
    block_align: int | None = None,
    byte_rate: int | None = None,
) -> bytes:
    """A RIFF/WAVE file with every header field settable, lies included."""
    block_align = (channels * bits // 8) & 0xFFFF if block_align is None else block_align
    byte_rate = (rate * block_align) & 0xFFFFFFFF if byte_rate is None else byte_rate
    fmt = struct.pack("<HHIIHH", fmt_code, channels, rate & 0xFFFFFFFF, byte_rate, block_align, bits)
    fmt = fmt.ljust(fmt_size, b"\0")[: max(fmt_size, 0)]
    data_size = len(pcm) if data_size is None else data_size
    chunks = b"fmt " + struct.pack("<I", fmt_size & 0xFFFFFFFF) + fmt + b"data" + struct.pack("<I", data_size) + pcm
    riff_size = 4 + len(chunks) if riff_size is None else riff_size
    return b"RIFF" + struct.pack("<I", riff_size & 0xFFFFFFFF) + b"WAVE" + chunks


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


def ogg_pages(data: bytes) -> list[bytearray]:
    """The pages of an Ogg stream, each a mutable copy (with its header)."""
    pages, pos = [], 0
    while data[pos : pos + 4] == b"OggS" and pos + 27 <= len(data):
        n_segments = data[pos + 26]
        size = 27 + n_segments + sum(data[pos + 27 : pos + 27 + n_segments])
        pages.append(bytearray(data[pos : pos + size]))
        pos += size
    return pages


def ogg_join(pages: list[bytearray], changed: Iterable[int]) -> bytes:
    """The pages again, the changed ones with their CRC made right (a decoder reads what was changed)."""
    for i in set(changed):
        pages[i][22:26] = b"\0\0\0\0"
        pages[i][22:26] = struct.pack("<I", _ogg_crc(bytes(pages[i])))
    return b"".join(pages)


# -- the generator classes ----------------------------------------------------------------------------

HOSTILE_NUMBERS = [
    "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e308", "-1e308", "1e309", "1e-9", "1e-300", "5e-324",
    "0", "-0", "-1", "-1e-9", "0x10", "1_0", "\u0663", " 7 ", "+5", "5.", ".5", "1e", "e5", "--1", "\x00",
    "None", "true", "[1]", "1" * 5000, "9" * 400, "0." + "0" * 4000 + "1", "2.5\n", "1,5", "\u221e",
]  # fmt: skip
HOSTILE_INTS = ["-1", "0", "101", "1000000", str(2**31), str(2**63), str(2**64), "1" * 5000, "1.5", "0x10", "-0"]
HOSTILE_NAMES = [
    "../../../etc/passwd", "..", ".", "", "a" * 5000, "con", "x\x00.wav", "line\r\nX-Injected: 1", 'q"uote.wav',
    "\u202egnp.wav", "\ud800.wav", b"\xff\xfe\xfa.wav", b"caf\xe9.wav", "\U0001f3b5.mp3", "/abs/path.wav",
    "C:\\win\\path.wav", "%2e%2e%2f.wav", "name;filename=other.wav", "*", "\t", "..\\..\\x.wav",
]  # fmt: skip


def gen_truncated_media(rng: random.Random, media: Media) -> tuple[str, bytes]:
    """A real clip of any format, cut anywhere (the header included)."""
    fmt = rng.choice(sorted(media.clips))
    data = media.clips[fmt]
    cut = rng.choice([0, 1, 4, 12, 44, 45, 100, rng.randrange(len(data)), len(data) - 1])
    return f"{fmt} cut at {cut} of {len(data)} bytes", upload("/api/recognize", data[:cut])


def gen_random_media(rng: random.Random, media: Media) -> tuple[str, bytes]:
    """Random bytes behind a format's magic, or a real clip with some bytes changed."""
    prefix = rng.choice(
        [b"", b"RIFF", b"RIFF\xff\xff\xff\xffWAVE", b"fLaC", b"OggS\x00\x02", b"ID3\x04\x00", b"\xff\xfb"]
    )
    size = rng.choice([0, 1, 16, 1000, 50_000, rng.randrange(200_000)])
    data = prefix + rng.randbytes(size)
    flips = 0
    if rng.random() < 0.5:  # a real file with some bytes changed
        fmt = rng.choice(sorted(media.clips))
        data = bytearray(media.clips[fmt])
        flips = rng.choice([1, 4, 32, 256])
        for _ in range(flips):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data, prefix = bytes(data), fmt.encode()
    return f"{prefix!r} + {size} random bytes, {flips} flipped", upload("/api/recognize", data)


WAV_RATES = [0, 1, 7, 8000, 44100, 48000, 96000, 192000, 9_999_991, 2**31 - 1, 2**32 - 1]


def gen_hostile_wav(rng: random.Random, media: Media) -> tuple[str, bytes]:
    """A WAV header whose rate, channels, sample size, format code or chunk sizes lie."""
    fields = {}
    for name, values in {
        "rate": WAV_RATES,
        "channels": [0, 1, 2, 3, 255, 65535],
        "bits": [0, 1, 7, 8, 12, 16, 24, 32, 64, 65535],
        "fmt_code": [1, 1, 3, 2, 0x55, 0xFFFE, 0],
        "data_size": [None, None, 0, 1, 2**31 - 1, 2**32 - 1],
        "fmt_size": [16, 16, 14, 18, 40, 0, 1000],
        "riff_size": [None, None, 0, 4, 2**32 - 1],
        "block_align": [None, None, 0, 1, 3, 65535],
    }.items():
        if rng.random() < 0.35:
            fields[name] = rng.choice(values)
    pcm = rng.randbytes(rng.choice([0, 1, 3, 4096, 40_000]))
    return f"WAV {fields} with {len(pcm)} bytes of samples", upload("/api/recognize", wav_file(pcm=pcm, **fields))


def _set_bits(buf: bytearray, bit_offset: int, width: int, value: int) -> None:
    for i in range(width):
        byte, bit = divmod(bit_offset + i, 8)
        mask = 0x80 >> bit
        buf[byte] = buf[byte] | mask if (value >> (width - 1 - i)) & 1 else buf[byte] & ~mask


STREAMINFO_FIELDS = {  # name: (bit offset in STREAMINFO, width, hostile values)
    "min_block": (0, 16, [0, 1, 16, 65535]),
    "max_block": (16, 16, [0, 1, 65535]),
    "max_frame": (64, 24, [0, 2**24 - 1]),
    "sample_rate": (80, 20, [0, 1, 7, 655350, 2**20 - 1]),
    "channels_minus_1": (100, 3, [1, 7]),
    "bits_minus_1": (103, 5, [0, 2, 31]),
    "total_samples": (108, 36, [0, 1, 2**36 - 1]),
}


def gen_hostile_flac(rng: random.Random, media: Media) -> tuple[str, bytes]:
    """A FLAC clip whose STREAMINFO lies, with a metadata block past the end, or cut."""
    data = bytearray(media.clips["flac"])
    changed = {}
    for name, (offset, width, values) in STREAMINFO_FIELDS.items():
        if rng.random() < 0.4:
            changed[name] = rng.choice(values)
            _set_bits(data, 8 * 8 + offset, width, changed[name])  # STREAMINFO starts at byte 8
    if rng.random() < 0.3:  # a metadata block that claims more than the file holds
        changed["block"] = block = bytes([rng.choice([1, 4, 6, 127])]) + rng.randbytes(3)
        data[8 + 34 : 8 + 34] = block + rng.randbytes(rng.choice([0, 10, 100]))
        data[4] &= 0x7F  # STREAMINFO is no longer the last block
    if rng.random() < 0.3:
        changed["cut"] = cut = rng.randrange(42, len(data))
        data = data[:cut]
    return f"FLAC {changed}", upload("/api/recognize", bytes(data), filename="clip.flac")


OPUS_HEAD = {  # field: (offset in the OpusHead packet, struct code, hostile values)
    "channels": (9, "B", [0, 2, 8, 255]),
    "pre_skip": (10, "<H", [0, 65535]),
    "rate": (12, "<I", [0, 1, 2**32 - 1]),
    "mapping": (18, "B", [1, 2, 255]),
}
OGG_FLAC_STREAMINFO = 17  # bytes into the first packet: 0x7F "FLAC" version, header count, "fLaC", block header


def gen_hostile_ogg(rng: random.Random, media: Media) -> tuple[str, bytes]:
    """An Ogg Opus or Ogg FLAC clip whose identification header or last granule position lies."""
    fmt = rng.choice(["ogg_flac", "opus"])
    pages = ogg_pages(media.clips[fmt])
    first = pages[0]
    packet = 27 + first[26]  # the identification packet follows the segment table
    changed = {}
    if fmt == "opus":
        for name, (offset, code, values) in OPUS_HEAD.items():
            if rng.random() < 0.5:
                changed[name] = value = rng.choice(values)
                struct.pack_into(code, first, packet + offset, value)
    else:
        for name, (offset, width, values) in STREAMINFO_FIELDS.items():
            if rng.random() < 0.4:
                changed[name] = rng.choice(values)
                _set_bits(first, 8 * (packet + OGG_FLAC_STREAMINFO) + offset, width, changed[name])
    if rng.random() < 0.4:  # the last page claims a position far past the end
        changed["granule"] = granule = rng.choice([2**63 - 1, 2**64 - 1, 2**40])
        struct.pack_into("<Q", pages[-1], 6, granule)
    data = ogg_join(pages, (0, len(pages) - 1))
    if rng.random() < 0.2:
        changed["bad_crc"] = True
        data = data[:22] + b"\0\0\0\0" + data[26:]
    return f"Ogg {fmt} {changed}", upload("/api/recognize", data, filename=f"clip.{fmt}")


def gen_bomb(rng: random.Random, media: Media) -> tuple[str, bytes]:
    """An hour of silence in a few hundred kB, with hostile durations, or to fingerprint with the token."""
    name = rng.choice(sorted(media.bombs))
    fields = rng.choice(
        [[], [("duration", "1e-9")], [("duration", "0.0001")], [("duration", "5")], [("start", "3000")]]
    )
    if rng.random() < 0.25:
        return f"{name} to /api/fingerprint", upload("/api/fingerprint", media.bombs[name], token=FUZZ_TOKEN)
    return f"{name} {fields}", upload("/api/recognize", media.bombs[name], fields)


def gen_hostile_numbers(rng: random.Random, media: Media) -> tuple[str, bytes]:
    """NaN, inf, huge, tiny and negative start, duration, limit, cursor and song ids."""
    which = rng.choice(["start", "duration", "both", "limit", "cursor", "song_id"])
    if which in ("start", "duration", "both"):
        fields = [(k, rng.choice(HOSTILE_NUMBERS)) for k in (("start", "duration") if which == "both" else (which,))]
        if rng.random() < 0.2:  # the same field twice
            fields.append((fields[0][0], rng.choice(HOSTILE_NUMBERS)))
        return f"recognize {fields}", upload("/api/recognize", media.clips["wav"], fields)
    if which == "song_id":
        value = rng.choice([*HOSTILE_INTS, "1e3", "%2e", "0001"])
        method = rng.choice(["GET", "DELETE"])
        token = [("Authorization", f"Bearer {FUZZ_TOKEN}")] if method == "DELETE" else []
        return f"{method} /api/songs/{value}", http_request(method, f"/api/songs/{value}", token)
    value = rng.choice(
        HOSTILE_INTS if which == "limit" else ["", "x", "-1", "0", "1" * 300, "AAAA", "=" * 40, "%00", "..%2f"]
    )
    value = value if rng.random() < 0.7 else rng.choice(HOSTILE_NUMBERS)
    return f"songs {which}={value!r}", http_request("GET", f"/api/songs?{which}={quote(value, safe='%')}")


def gen_hostile_filename(rng: random.Random, media: Media) -> tuple[str, bytes]:
    """File names with path parts, control characters, bad UTF-8 or 5,000 characters."""
    name = rng.choice(HOSTILE_NAMES)
    if rng.random() < 0.4:
        data = wav_file(pcm=rng.randbytes(22050))  # new audio each time: it is stored, not a duplicate
        fields = [("name", rng.choice(HOSTILE_NAMES))] if rng.random() < 0.5 else []
        return f"fingerprint file {name!r} {fields}", upload(
            "/api/fingerprint", data, fields, filename=name, token=FUZZ_TOKEN
        )
    return f"recognize file {name!r}", upload("/api/recognize", media.clips["wav"], filename=name)


LONG_HEADER = b"X-Long: " + b"a" * 100_000 + b"\r\n"


def gen_malformed_multipart(rng: random.Random, media: Media) -> tuple[str, bytes]:
    """Multipart bodies with a wrong, missing or long boundary, cut, nested or 2,000 parts."""
    data = media.clips[rng.choice(["wav", "mp3"])]
    body, ctype = multipart([("file", "clip.wav", data)])
    variants = {
        "no boundary parameter": lambda: (body, b"multipart/form-data"),
        "other boundary": lambda: (body, b"multipart/form-data; boundary=nothere"),
        "boundary of 300 chars": lambda: multipart([("file", "c.wav", data)], b"b" * 300),
        "empty boundary": lambda: (body.replace(b"fuzzb0undary", b""), b"multipart/form-data; boundary="),
        "no closing boundary": lambda: (body[: body.rindex(b"--fuzzb0undary--")], ctype),
        "cut in the part headers": lambda: (body[:40], ctype),
        "no Content-Disposition": lambda: (body.replace(b"Content-Disposition", b"X-Disposition"), ctype),
        "LF only": lambda: (body.replace(b"\r\n", b"\n"), ctype),
        "2000 parts": lambda: multipart([(f"f{i}", None, "x") for i in range(2000)] + [("file", "c.wav", data)]),
        "file twice": lambda: multipart([("file", "a.wav", data), ("file", "b.wav", b"junk")]),
        "file as a field": lambda: multipart([("file", None, data)]),
        "nested multipart": lambda: multipart([("file", "c.wav", body)]),
        "form-urlencoded": lambda: (b"file=" + data[:500], b"application/x-www-form-urlencoded"),
        "json body": lambda: (json.dumps({"file": "x"}).encode(), b"application/json"),
        "no Content-Type": lambda: (body, None),
        "random body": lambda: (rng.randbytes(rng.randrange(1, 20_000)), ctype),
        "part header of 100 kB": lambda: (body.replace(b"Content-Type:", LONG_HEADER + b"Content-Type:"), ctype),
        "charset junk": lambda: (body, ctype + b"; charset=\xff\xfe-junk"),
    }  # fmt: skip
    note = rng.choice(sorted(variants))
    body, ctype = variants[note]()  # made on demand: some are large
    path = rng.choice(["/api/recognize", "/api/recognize", "/api/fingerprint"])
    headers = [("Authorization", f"Bearer {FUZZ_TOKEN}")] if path == "/api/fingerprint" else []
    if ctype is not None:
        headers.append(("Content-Type", ctype))
    return f"{path} {note}", http_request("POST", path, headers, body)


def chunked(body: bytes, rng: random.Random) -> bytes:
    out, pos = b"", 0
    while pos < len(body):
        size = rng.choice([1, 7, 100, 4096, 65536])
        out += f"{len(body[pos : pos + size]):x}\r\n".encode() + body[pos : pos + size] + b"\r\n"
        pos += size
    return out + b"0\r\n\r\n"


def gen_malformed_chunked(rng: random.Random, media: Media) -> tuple[str, bytes, bool]:
    """Chunked bodies with bad chunk sizes, cut short, with extensions, or with Content-Length."""
    body, ctype = multipart([("file", "clip.wav", media.clips["wav"])])
    good = chunked(body, rng)
    variants = {
        "chunk size zz": b"zz\r\n" + body + b"\r\n0\r\n\r\n",
        "negative chunk size": b"-1\r\n" + body + b"\r\n0\r\n\r\n",
        "chunk size of 20 hex digits": b"f" * 20 + b"\r\n" + body + b"\r\n0\r\n\r\n",
        "chunk size larger than the data": b"ffffff\r\n" + body + b"\r\n0\r\n\r\n",
        "no last chunk": good[: -len(b"0\r\n\r\n")],
        "cut in a chunk": good[: rng.randrange(1, len(good))],
        "chunk extension": good.replace(b"\r\n", b";name=value\r\n", 1),
        "trailer": good[:-2] + b"X-Trailer: 1\r\n\r\n",
        "no CRLF after data": good.replace(b"\r\n", b"", 2),
        "space in size": b" " + good,
        "valid": good,
    }
    note = rng.choice(sorted(variants))
    encoding = rng.choice(["chunked", "chunked", "gzip, chunked", "chunked, gzip", "identity", "Chunked", "chunked "])
    headers = [("Content-Type", ctype), ("Transfer-Encoding", encoding)]
    if rng.random() < 0.15:
        headers.append(("Content-Length", str(len(body))))
    raw = http_request("POST", "/api/recognize", headers, variants[note], length=False)
    short = note not in ("valid", "chunk extension", "trailer")  # the server may wait for more of it
    return f"Transfer-Encoding {encoding!r}{' and Content-Length' * (len(headers) > 2)}: {note}", raw, short


BEARERS = ["Bearer", "Bearer  ", "Basic eA==", "Bearer " + "x" * 9000, b"Bearer \xff", "bearer " + FUZZ_TOKEN]


def gen_hostile_headers(rng: random.Random, media: Media) -> tuple[str, bytes, bool]:
    """Lying or duplicated Content-Length, long URLs and headers, and header syntax errors."""
    body, ctype = multipart([("file", "clip.wav", media.clips["wav"])])
    n = str(len(body))
    lengths = {
        "negative Content-Length": ["-1"],
        "non-numeric Content-Length": ["abc"],
        "Content-Length +n": ["+" + n],
        "Content-Length 0x": ["0x10"],
        "duplicate Content-Length, different": [n, "5"],
        "duplicate Content-Length, same": [n, n],
        "Content-Length of 10^20": ["1" + "0" * 20],
        "Content-Length larger than the body": [str(len(body) + 1000)],
        "Content-Length smaller than the body": ["10"],
    }
    other = {
        "URL of 20 kB": ("GET", "/api/songs?x=" + "a" * 20_000, []),
        "header of 20 kB": ("GET", "/api/health", [("X-Big", "b" * 20_000)]),
        "200 headers": ("GET", "/api/health", [(f"X-H{i}", "v") for i in range(200)]),
        "NUL in a header": ("GET", "/api/health", [("X-Nul", b"a\x00b")]),
        "bare CR in a header": ("GET", "/api/health", [("X-Cr", b"a\rb")]),
        "folded header": ("GET", "/api/health", [("X-Fold", b"a\r\n continued")]),
        "bad header name": ("GET", "/api/health", [(b"Bad Name", "v")]),
        "colon-less header": ("GET", "/api/health", [(b"NoColonHere", b"")]),
        "non-UTF-8 header": ("GET", "/api/health", [("X-Bytes", b"\xff\xfe\xfd")]),
        "hostile bearer": ("DELETE", "/api/songs/1", [("Authorization", rng.choice(BEARERS))]),
        "X-Forwarded-For junk": ("GET", "/api/health", [("X-Forwarded-For", "junk, ::ffff:999.1.1.1, " + "1," * 500)]),
        "Expect 100-continue": ("GET", "/api/health", [("Expect", "100-continue")]),
        "Expect junk": ("GET", "/api/health", [("Expect", "junk")]),
        "Range header": ("GET", "/api/openapi.json", [("Range", "bytes=999999999-")]),
        "Accept-Encoding junk": ("GET", "/api/health", [("Accept-Encoding", "gzip;q=nan, *;q=-1")]),
        "Origin junk": ("OPTIONS", "/api/recognize", [("Origin", "null"), ("Access-Control-Request-Method", "POST")]),
    }  # fmt: skip
    note = rng.choice(sorted(lengths) + sorted(other))
    if note in lengths:
        headers = [("Content-Type", ctype)] + [("Content-Length", v) for v in lengths[note]]
        return note, http_request("POST", "/api/recognize", headers, body, length=False), "larger" in note
    method, target, headers = other[note]
    return note, http_request(method, target, headers), False


def gen_hostile_request_line(rng: random.Random, media: Media) -> tuple[str, bytes]:
    """Unknown methods and versions, odd paths, and no Host."""
    method = rng.choice(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FOO", "get", "G\x00T"])
    path = rng.choice(
        [
            "/api/health", "/api/songs", "/api/songs/1", "/api/stats", "/api/fetch/" + "0" * 34, "/api/fetch/../../x",
            "/api/fetch/%2e%2e%2f%2e%2e", "/api/fetch/" + "a" * 5000, "/api/%zz", "//api//health", "/api/songs/-1",
            "/api/recognize?start=nan", "*", "http://evil.example/api/health", "/api/health#frag", "/\u00e9",
            "/api/songs?limit=1&limit=2", "/api/songs?" + "&".join(f"p{i}=1" for i in range(2000)), "/", "",
        ]
    )  # fmt: skip
    version = rng.choice(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "HTTP/1.1 extra", "", "http/1.1"])
    line = f"{method} {path} {version}".strip().encode()
    host = b"" if rng.random() < 0.2 else b"Host: 127.0.0.1\r\n"
    return f"{line[:80]!r}{'' if host else ' without Host'}", line + b"\r\n" + host + b"Connection: close\r\n\r\n"


def gen_packed_fingerprint(rng: random.Random, media: Media) -> tuple[str, bytes]:
    """Client-made fingerprints (POST /api/fingerprint with the token), cut or lying."""
    import dejavu

    n = rng.choice([0, 1, 100, 5000])
    hashes = np.array([rng.randrange(2**32) for _ in range(n)], np.uint32)
    offsets = np.sort(np.array([rng.randrange(2**20) for _ in range(n)], np.int64))
    digest = dejavu.DEFAULT_PARAMS.digest() if rng.random() < 0.8 else "0" * 16
    sha1 = rng.randbytes(20).hex()
    duration = rng.choice([0.0, 1.0, 240.0, 1e6])
    data = bytearray(dejavu.pack_fingerprint(hashes, offsets, digest, sha1, duration))
    change = rng.choice(["none", "cut", "n", "duration", "stream size", "zlib junk", "flip"])
    if change == "cut":
        data = data[: rng.randrange(len(data))]
    elif change == "n":
        struct.pack_into("<I", data, 49, rng.choice([n + 1, 2**32 - 1, 50_000_000]))
    elif change == "duration":
        struct.pack_into("<d", data, 41, rng.choice([float("nan"), float("inf"), -1.0, 1e300]))
    elif change == "stream size":
        struct.pack_into("<I", data, 53, rng.choice([0, 2**32 - 1]))
    elif change == "zlib junk":
        data[57:] = rng.randbytes(len(data) - 57)
    elif change == "flip" and data:
        data[rng.randrange(len(data))] ^= 0xFF
    body, ctype = multipart([("fingerprint", "song.tsfp", bytes(data)), ("name", None, f"packed {rng.random()}")])
    headers = [("Content-Type", ctype), ("Authorization", f"Bearer {FUZZ_TOKEN}")]
    return f"packed fingerprint n={n} change={change}", http_request("POST", "/api/fingerprint", headers, body)


def gen_oversized(rng: random.Random, media: Media) -> tuple[str, bytes]:
    """Bodies over the upload limit, declared or chunked, and without a token."""
    size = MAX_UPLOAD_MB * 2**20 + rng.choice([1, 100_000])
    body, ctype = multipart([("file", "big.wav", b"\0" * size)])
    which = rng.choice(["declared", "chunked", "no token"])
    if which == "declared":
        return f"{len(body)} bytes declared", http_request("POST", "/api/recognize", [("Content-Type", ctype)], body)
    if which == "chunked":
        headers = [("Content-Type", ctype), ("Transfer-Encoding", "chunked")]
        return f"{len(body)} bytes chunked", http_request(
            "POST", "/api/recognize", headers, chunked(body, rng), length=False
        )
    return f"{len(body)} bytes without a token", http_request(
        "POST", "/api/fingerprint", [("Content-Type", ctype)], body
    )


PIPELINED_CHECK = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
# Requests whose framing (Content-Length, chunks) is right or that a server must refuse as a whole;
# a Content-Length that does not match what follows is not here: the client says where the next starts.
PIPELINE_FIRST = [
    "hostile_numbers",
    "malformed_multipart",
    "malformed_chunked",
    "hostile_headers",
    "hostile_request_line",
]


def gen_pipelined(rng: random.Random, media: Media) -> tuple[str, bytes]:
    """Another class's request on a kept-alive connection, and a health check right behind it in the
    same packet: its answer must be the health check's (no desync, no smuggled request)."""
    while True:
        kind = rng.choice(PIPELINE_FIRST)
        note, raw, *short = KINDS[kind][0](random.Random(rng.random()), media)
        if not (short and short[0]) and "smaller than the body" not in note:
            break
    raw = raw.replace(b"Connection: close\r\n", b"Connection: keep-alive\r\n", 1)
    return f"{kind} [{note}], then a health check", raw + PIPELINED_CHECK


def gen_half_closed(rng: random.Random, media: Media) -> tuple[str, bytes, bool]:
    """Complete requests, then the client's end of the connection closed (answers must still come)."""
    requests = {
        "health": lambda: http_request("GET", "/api/health"),
        "songs": lambda: http_request("GET", "/api/songs?limit=5"),
        "recognize": lambda: upload("/api/recognize", media.clips[rng.choice(["wav", "mp3", "flac"])]),
        "unknown path": lambda: http_request("GET", "/api/nothing"),
        "no file": lambda: http_request("POST", "/api/recognize", [("Content-Type", "text/plain")], b"x"),
    }
    note = rng.choice(sorted(requests))
    return f"{note}, then half-closed", requests[note](), True


# kind -> (generator, share of the requests): decoding costs more than refusing a header
# A generator returns (note, raw request) or (note, raw request, whether its body is short).
KINDS: dict[str, tuple[Callable[[random.Random, Media], tuple], int]] = {
    "truncated_media": (gen_truncated_media, 3),
    "random_media": (gen_random_media, 3),
    "hostile_wav": (gen_hostile_wav, 3),
    "hostile_flac": (gen_hostile_flac, 2),
    "hostile_ogg": (gen_hostile_ogg, 2),
    "bomb": (gen_bomb, 1),
    "hostile_numbers": (gen_hostile_numbers, 4),
    "hostile_filename": (gen_hostile_filename, 2),
    "malformed_multipart": (gen_malformed_multipart, 3),
    "malformed_chunked": (gen_malformed_chunked, 3),
    "hostile_headers": (gen_hostile_headers, 4),
    "hostile_request_line": (gen_hostile_request_line, 4),
    "packed_fingerprint": (gen_packed_fingerprint, 2),
    "oversized": (gen_oversized, 1),
    "half_closed": (gen_half_closed, 1),
    "pipelined": (gen_pipelined, 2),
}


def make_request(kind: str, seed: int, index: int, media: Media) -> FuzzRequest:
    """Request number index of a generator class: the same for the same (seed, kind, index)."""
    generate, _ = KINDS[kind]
    rng = random.Random(f"{seed}/{kind}/{index}")
    note, raw, *short = generate(rng, media)
    method = "HEAD" if raw.startswith(b"HEAD ") else "GET"
    pipelined = raw.endswith(PIPELINED_CHECK) and kind == "pipelined"
    return FuzzRequest(kind, index, note, raw, method, half_close=bool(short and short[0]), pipelined=pipelined)


def requests_of(kind: str, seed: int, count: int, media: Media) -> Iterator[FuzzRequest]:
    """Requests 0 to count - 1 of a generator class, made as they are sent."""
    return (make_request(kind, seed, i, media) for i in range(count))


def share_of(kind: str, total: int, kinds: Iterable[str] = KINDS) -> int:
    """How many of total requests a class gets, by its share among kinds."""
    return max(1, round(total * KINDS[kind][1] / sum(KINDS[k][1] for k in kinds)))


# -- sending and judging ------------------------------------------------------------------------------


def send(port: int, request: FuzzRequest, timeout_s: float = 60.0) -> Outcome:
    """Send the raw request on a fresh connection (half-closed after a short body), read the whole answer."""
    started = time.monotonic()
    outcome = Outcome(request, None)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            with contextlib.suppress(OSError):  # the server may answer and close before all is sent
                sock.sendall(request.raw)
                if request.half_close:
                    sock.shutdown(socket.SHUT_WR)
            answers = _SharedReader(sock.makefile("rb"))
            response = http.client.HTTPResponse(answers, method=request.method)
            response.begin()
            outcome.status = response.status
            outcome.content_type = response.getheader("Content-Type", "")
            outcome.body = response.read()
            if request.pipelined and not response.will_close:
                outcome.second = _second_answer(answers)
    except (OSError, http.client.HTTPException) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    outcome.elapsed_s = time.monotonic() - started
    return outcome


class _SharedReader:
    """One buffered reader of a connection for several answers (http.client closes its file after one)."""

    def __init__(self, fp):
        self.fp = fp

    def makefile(self, mode: str):
        return self

    def readline(self, *args):
        return self.fp.readline(*args)

    def read(self, *args):
        return self.fp.read(*args)

    def readinto(self, buffer):
        return self.fp.readinto(buffer)

    def close(self):
        pass


def _second_answer(answers: _SharedReader) -> str:
    """What is wrong with the answer to PIPELINED_CHECK (the server kept the connection open for it)."""
    try:
        response = http.client.HTTPResponse(answers, method="GET")
        response.begin()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return f"kept alive, then no answer to the next request ({type(exc).__name__}: {exc})"
    try:
        ok = response.status == 200 and json.loads(body).get("status") == "ok"
    except (ValueError, AttributeError):
        ok = False
    return "" if ok else f"desync: the next request was answered {response.status} {body[:80]!r}"


def problems(outcome: Outcome, slow_s: float = SLOW_S) -> list[str]:
    """What is wrong with an answer: none, a 5xx, not the one JSON error shape, too slow, no answer."""
    found = []
    if outcome.status is None:
        found.append(f"no answer ({outcome.error})")
    elif outcome.status >= 500:
        found.append(f"{outcome.status}")
    if outcome.elapsed_s > slow_s:
        found.append(f"slow: {outcome.elapsed_s:.1f} s")
    if outcome.second:
        found.append(outcome.second)
    if outcome.status is None or outcome.request.method == "HEAD" or not (outcome.body or outcome.status >= 400):
        return found
    if 300 <= outcome.status < 400:  # a redirect (werkzeug's merge_slashes) says where in its Location
        return found
    try:
        body = json.loads(outcome.body)
    except ValueError:
        return [*found, f"{outcome.status} not JSON ({outcome.content_type}): {outcome.body[:80]!r}"]
    if not outcome.content_type.startswith("application/json"):
        found.append(f"{outcome.status} JSON sent as {outcome.content_type!r}")
    if outcome.status >= 400 and not (
        isinstance(body, dict) and body.get("status") == "error" and isinstance(body.get("message"), str)
    ):
        found.append(f"{outcome.status} not the error shape: {outcome.body[:80]!r}")
    return found


def run(port: int, requests: Iterable[FuzzRequest], concurrency: int = CONCURRENCY) -> Iterator[Outcome]:
    """Send the requests from `concurrency` clients at once; outcomes in the order they finish."""
    with cf.ThreadPoolExecutor(concurrency) as pool:
        pending = set()
        for request in requests:
            pending.add(pool.submit(send, port, request))
            if len(pending) >= 2 * concurrency:
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                yield from (f.result() for f in done)
        for future in cf.as_completed(pending):
            yield future.result()


def reproduction(outcome: Outcome, limit: int = 300) -> str:
    """One failure in a line: class, index, what was hostile, what came back, and the request's start."""
    raw = outcome.request.raw
    head = raw[:limit] + (b"..." if len(raw) > limit else b"")
    return (
        f"{outcome.request.kind}:{outcome.request.index} [{outcome.request.note[:160]}] -> "
        f"{'; '.join(problems(outcome))} | {len(raw)} bytes: {head!r}"
    )


# -- the server under test ----------------------------------------------------------------------------


def fuzz_config() -> dict:
    """The fuzzed server's config: SQLite, no rate limit (every request reaches the parsers), small uploads,
    and songs of at most a minute (a bomb sent with the token costs what a minute of audio costs)."""
    return {
        "fingerprinting": {"token": FUZZ_TOKEN, "max_duration": 60},
        "recognizing": {"max_file_size_mb": MAX_UPLOAD_MB},
        "rate_limit": {"enabled": False},
        "logging": {"level": "WARNING"},
    }


def start_server(folder: Path, workers: int = 2, threads: int = 4) -> servers.LiveServer:
    """`tunescout serve` with its TMPDIR in folder / "tmp" (as an operator would start it: its metrics
    folder is its own choice), memory capped by the kernel."""
    saved = {k: os.environ.get(k) for k in ("TMPDIR", "PROMETHEUS_MULTIPROC_DIR")}
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(folder / "tmp")
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    try:
        live = servers.LiveServer(folder / "server", fuzz_config(), workers=workers, threads=threads)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    deadline = time.monotonic() + 30
    while len(worker_pids(live.proc.pid)) < workers:  # the first answered; the others may still boot
        if time.monotonic() > deadline:
            live.stop()
            raise RuntimeError(f"{workers} workers did not start")
        time.sleep(0.1)
    limit = (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES)
    for pid in [live.proc.pid, *worker_pids(live.proc.pid)]:  # later workers inherit it from the master
        resource.prlimit(pid, resource.RLIMIT_AS, limit)
    return live


def worker_pids(master_pid: int) -> list[int]:
    """The gunicorn master's worker processes."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master_pid)], capture_output=True, text=True)
    return sorted(int(p) for p in out.stdout.split())


def memory_mb(pid: int) -> dict:
    """{"rss": current, "peak": highest since start or the last reset_peak} resident memory, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {"rss": int(fields["VmRSS"].split()[0]) / 1024, "peak": int(fields["VmHWM"].split()[0]) / 1024}


def reset_peak(pid: int) -> None:
    """Start a process's peak resident memory (VmHWM) again from its current size."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def stray_files(folder: Path, besides: Iterable[str] = ()) -> list[str]:
    """Everything under folder (the server's TMPDIR, which it should leave empty), but the named entries
    of its top level and what they hold."""
    besides = set(besides)
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.relative_to(folder).parts[0] not in besides
    )


def temp_folder() -> Path:
    """A fresh folder for a server and its TMPDIR (bench/fuzz.py removes it at the end)."""
    return Path(tempfile.mkdtemp(prefix="tunescout-fuzz-"))
