"""tunescout.audio: in-process decoding, the same PCM as the ffmpeg command, bounded by what it is asked."""

from __future__ import annotations

import hashlib
import io
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CORPUS, SR, music_like, need, wav_bytes
from tests.fuzz_requests import ogg_join, ogg_pages
from tunescout.audio import decode_audio, decode_query, stream_windows
from tunescout.errors import BadAudioError, BadRequestError


def ffmpeg(*args: str) -> bytes:
    need(shutil.which("ffmpeg") is not None, "the ffmpeg command (to make test files and compare with)")
    return subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *args], capture_output=True, check=True).stdout


def pcm_of_the_ffmpeg_command(path: Path) -> bytes:
    """What the decoder ran before: the ffmpeg command, 16-bit mono at 11,025 Hz."""
    return ffmpeg("-i", str(path), "-vn", "-sn", "-ac", "1", "-ar", str(SR), "-f", "s16le", "-acodec", "pcm_s16le", "-")


def wav_header(rate_hz: int, channels: int = 1, data: bytes = b"\0" * 4000) -> bytes:
    """A PCM WAV whose header claims whatever rate and channel count it is given."""
    fmt = struct.pack(
        "<HHIIHH", 1, channels, rate_hz, (rate_hz * channels * 2) & 0xFFFFFFFF, (channels * 2) & 0xFFFF, 16
    )
    chunks = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(chunks)) + chunks


@pytest.fixture(scope="module")
def stereo_wav(tmp_path_factory) -> Path:
    """Ten seconds of two different melodies, left and right, at 44.1 kHz."""
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("audio") / "stereo.wav"
    left, right = music_like(rng, 10.0, 44100), music_like(rng, 10.0, 44100)
    pcm = (np.stack([left, right], axis=1) * 32767).astype("<i2")
    path.write_bytes(wav_header(44100, 2, pcm.tobytes()))
    return path


@pytest.mark.parametrize(
    "args", [[], ["-c:a", "flac"], ["-c:a", "libmp3lame", "-b:a", "128k"], ["-ar", "8000", "-c:a", "pcm_u8"]]
)
def test_same_pcm_as_the_ffmpeg_command(stereo_wav, tmp_path, args):
    # blob_sha1 is the SHA-1 of this PCM: the songs stored before must stay duplicates of the same files.
    suffix = ".mp3" if "libmp3lame" in args else ".flac" if "flac" in args else ".wav"
    path = tmp_path / f"made{suffix}"
    ffmpeg("-i", str(stereo_wav), *args, "-y", str(path))
    expected = pcm_of_the_ffmpeg_command(path)
    decoded = decode_audio(path, SR)
    assert decoded.pcm_sha1 == hashlib.sha1(expected).hexdigest()
    assert decoded.samples.size == len(expected) // 2


@pytest.mark.corpus
def test_real_music_decodes_as_the_ffmpeg_command_did(corpus):
    # Vorbis is a float decoder whose transform changed after FFmpeg 5.1: a few samples in 10,000 may
    # differ by one (and so the digest), never more, and never the length.
    track = sorted((CORPUS / "tracks").glob("*.ogg"))[0]
    expected = np.frombuffer(pcm_of_the_ffmpeg_command(track), "<i2").astype(np.int32)
    got = np.round(decode_audio(track, SR).samples * 32768).astype(np.int32)
    assert got.size == expected.size
    assert np.abs(got - expected).max() <= 1
    assert np.count_nonzero(got - expected) < got.size / 1000


@pytest.mark.parametrize("rate_hz", [0, 2**31 - 1, 9_999_991, 4_000_000_000])
def test_a_header_claiming_an_absurd_rate_is_refused_at_once(rate_hz):
    start = time.perf_counter()
    with pytest.raises(BadAudioError):
        decode_query(wav_header(rate_hz), SR, 0.0, 10.0)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("format_code", [0, 0xFFFE, 0x1234])
def test_a_wav_of_a_format_without_decoder_is_bad_audio(format_code):
    data = bytearray(wav_header(44100))
    data[20:22] = struct.pack("<H", format_code)
    with pytest.raises(BadAudioError, match="No decoder"):
        decode_query(bytes(data), SR, 0.0, 10.0)


@pytest.mark.parametrize("channels", [0, 33, 65535])
def test_a_header_claiming_an_absurd_channel_count_is_refused(channels):
    with pytest.raises(BadAudioError):
        decode_query(wav_header(44100, channels), SR, 0.0, 10.0)


def test_hostile_headers_cost_bounded_memory():
    # In a fresh process, so that its peak resident memory is theirs (the ffmpeg command took 5 GB).
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child forked from a large test
    # process would report the parent's size.
    code = (
        "import sys\n"
        "from tests.tunescout.test_audio import wav_header\n"
        "from tunescout.audio import decode_query\n"
        "for rate in (0, 2**31 - 1, 9_999_991):\n"
        "    try: decode_query(wav_header(rate, data=b'\\1' * 100_000), 11025, 0.0, 10.0)\n"
        "    except Exception as e: assert type(e).__name__ == 'BadAudioError', e\n"
        "status = open('/proc/self/status').read()\n"
        "print(int(status.split('VmHWM:')[1].split()[0]) // 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(done.stdout) < 250  # MB


@pytest.fixture(scope="module")
def ten_hours_of_silence(tmp_path_factory) -> bytes:
    """A small FLAC (a few MB) that decodes to ten hours: a decompression bomb."""
    path = tmp_path_factory.mktemp("bomb") / "silence.flac"
    ffmpeg("-f", "lavfi", "-i", f"anullsrc=r={SR}:cl=mono", "-t", "36000", "-c:a", "flac", str(path))
    return path.read_bytes()


@pytest.mark.parametrize("start, duration", [(0.0, 1e-9), (0.0, 10.0), (20_000.0, 10.0)])
def test_a_bomb_costs_no_more_than_the_window(ten_hours_of_silence, start, duration):
    began = time.perf_counter()
    decoded = decode_query(ten_hours_of_silence, SR, start, duration)
    assert time.perf_counter() - began < 1.0
    assert 1 <= decoded.samples.size <= max(1, int(np.ceil(duration * SR)))
    assert decoded.truncated


def test_a_bomb_is_cut_at_max_seconds(ten_hours_of_silence):
    decoded = decode_audio(ten_hours_of_silence, SR, max_seconds=60.0)
    assert decoded.samples.size == 60 * SR and decoded.truncated


def test_the_window_is_the_same_samples_as_cutting_the_whole(stereo_wav):
    whole = decode_audio(stereo_wav, SR).samples
    window = decode_audio(stereo_wav, SR, start_seconds=3.0, duration_seconds=2.0)
    assert window.samples.size == 2 * SR
    # Past the resampler's first few samples (its filter starts afresh at the window), the same.
    assert np.abs(window.samples[64:] - whole[3 * SR + 64 : 5 * SR]).max() < 1e-4


def test_window_arguments_are_checked():
    for start, duration in [(1e308, 1.0), (-1.0, 1.0), (float("nan"), 1.0), (0.0, -1.0), (0.0, float("inf"))]:
        with pytest.raises(BadRequestError):
            decode_audio(wav_bytes(np.zeros(SR, np.float32)), SR, start, duration, 10.0)


@pytest.mark.parametrize("data", [b"", b"RIFF", b"\0" * 1000, wav_header(44100)[:30], b"fLaC" + b"\xff" * 100])
def test_garbage_and_truncated_input_is_bad_audio(data):
    with pytest.raises(BadAudioError):
        decode_query(data, SR, 0.0, 10.0)


def test_decoding_writes_no_file(monkeypatch, tmp_path, stereo_wav):
    # Uploads used to be copied to $TMPDIR/tunescout-*.upload, which a killed worker left behind. With
    # the temporary folder missing, any file written there would fail.
    missing = tmp_path / "missing"
    monkeypatch.setenv("TMPDIR", str(missing))
    monkeypatch.setattr(tempfile, "tempdir", str(missing))
    with open(stereo_wav, "rb") as f:
        assert decode_audio(f, SR).samples.size == 10 * SR
    assert decode_query(stereo_wav.read_bytes(), SR, 0.0, 5.0).samples.size == 5 * SR
    assert not missing.exists()


def test_a_file_of_one_sample_frames_is_refused_quickly(tmp_path):
    # Each packet costs tens of microseconds in Python whatever it holds: all 240,000 took 5.6 s.
    path = tmp_path / "tiny.mkv"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono:nb_samples=1", "-t", "30", "-c:a", "pcm_s16le", str(path))
    began = time.perf_counter()
    with pytest.raises(BadAudioError, match="too many frames"):
        decode_query(path.read_bytes(), SR, 0.0, 10.0)
    assert time.perf_counter() - began < 5.0  # 11,000 packets at most


def test_damaged_packets_are_skipped_not_fatal(stereo_wav, tmp_path):
    # As the ffmpeg command does: a clip with a few damaged frames is still recognisable.
    path = tmp_path / "a.mp3"
    ffmpeg("-i", str(stereo_wav), "-c:a", "libmp3lame", str(path))
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(3)
    for at in rng.integers(2000, len(data), 200):
        data[at] = rng.integers(0, 256)
    assert decode_audio(bytes(data), SR).samples.size > 8 * SR


def test_an_ogg_stream_ending_in_an_empty_packet_decodes(stereo_wav, tmp_path):
    # Some encoders end an Ogg Vorbis stream with a page holding one empty packet, which the decoder
    # refuses with EINVAL after the last audio; the ffmpeg command decodes such a file in full.
    path = tmp_path / "a.ogg"
    ffmpeg("-i", str(stereo_wav), "-c:a", "libvorbis", "-q:a", "3", str(path))
    pages = ogg_pages(path.read_bytes())
    last = pages[-1]
    last[5] &= ~4  # no longer the last page
    granule, serial, sequence = struct.unpack("<qII", last[6:22])
    ending = bytearray(b"OggS" + struct.pack("<BBqIIIB", 0, 4, granule, serial, sequence + 1, 0, 1) + b"\0")
    decoded = decode_audio(ogg_join([*pages, ending], [len(pages) - 1, len(pages)]), SR)
    assert abs(decoded.duration_seconds - 10.0) < 0.1


@pytest.mark.parametrize("args", [[], ["-c:a", "libmp3lame", "-b:a", "128k"]])
def test_streamed_windows_are_the_decoded_pcm_cut_with_overlap(stereo_wav, tmp_path, args):
    path = tmp_path / ("made.mp3" if args else "made.wav")
    ffmpeg("-i", str(stereo_wav), *args, "-y", str(path))
    whole = decode_audio(path, SR).samples
    windows = list(stream_windows(path, SR, window_seconds=3.0, hop_seconds=2.0))
    assert [w.start_seconds for w in windows] == [0.0, 2.0, 4.0, 6.0, 8.0]
    for w in windows:
        begin = round(w.start_seconds * SR)
        assert np.array_equal(w.samples, whole[begin : begin + w.samples.size])
    assert windows[-1].end_seconds == pytest.approx(whole.size / SR)


def test_streaming_refuses_what_decoding_refuses(tmp_path):
    with pytest.raises(BadAudioError):
        list(stream_windows(tmp_path / "missing.wav", SR))
    (tmp_path / "bad.wav").write_bytes(wav_header(2**31 - 1))
    with pytest.raises(BadAudioError):
        list(stream_windows(tmp_path / "bad.wav", SR))
    path = tmp_path / "tiny.mkv"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono:nb_samples=1", "-t", "30", "-c:a", "pcm_s16le", str(path))
    with pytest.raises(BadAudioError, match="too many frames"):
        list(stream_windows(path, SR))
    with pytest.raises(BadRequestError):
        list(stream_windows(path, SR, window_seconds=5.0, hop_seconds=6.0))


def test_streaming_holds_one_window_whatever_the_length(ten_hours_of_silence):
    """Ten hours of audio pass through a few windows' worth of memory (sampled, not all decoded)."""
    import tracemalloc

    tracemalloc.start()
    windows = stream_windows(io.BytesIO(ten_hours_of_silence), SR)
    for _, w in zip(range(200), windows):  # 1,000 s
        assert w.samples.size == 10 * SR
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    windows.close()
    assert peak < 8 * 10 * SR * 4


def test_read_ahead_hands_on_windows_and_errors_and_lets_the_caller_stop_while_the_source_blocks():
    import threading

    from tunescout.audio import read_ahead

    def failing():
        yield 1
        yield 2
        raise BadAudioError("Broken stream")

    got = []
    with pytest.raises(BadAudioError, match="Broken stream"):
        for item in read_ahead(failing()):
            got.append(item)
    assert got == [1, 2]

    never = threading.Event()

    def stuck():  # a live stream whose read never returns
        yield "first"
        never.wait()

    windows = read_ahead(stuck())
    assert next(windows) == "first"  # and the caller may now stop: nothing waits for the source
    windows.close()


def test_a_caller_that_stops_stops_the_decoding_thread_at_its_next_window():
    import threading
    import time

    from tunescout.audio import read_ahead

    pulled, closed = [], threading.Event()

    def endless():
        try:
            while True:
                pulled.append(len(pulled))
                yield pulled[-1]
        finally:
            closed.set()  # the decoder (FFmpeg's) is closed with it

    before = set(threading.enumerate())
    windows = read_ahead(endless(), depth=2)
    assert [next(windows), next(windows)] == [0, 1]
    windows.close()
    assert closed.wait(5.0)
    held = len(pulled)
    time.sleep(0.3)
    assert len(pulled) == held <= 2 + 2 + 1  # what was handed, the queue, the one in hand
    assert not [t for t in threading.enumerate() if t not in before and t.is_alive()]
