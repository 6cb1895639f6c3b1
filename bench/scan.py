"""Scan benchmark: a seeded synthetic broadcast of the developer corpus, scanned on SQLite;
event recall, segment precision, boundary errors and speed against its true timeline.

    .venv/bin/python bench/scan.py --minutes 60 --seed 1 --out /tmp/bench_scan

A first version: catalogued plays of 20-180 s from anywhere in the song, songs not in the catalogue,
espeak-ng speech or noise between, crossfades of 0-5 s, some plays 2 % fast. Not yet: the Opus round
trip over the whole recording, distractors up to 1,000 songs, ClickHouse, the memory figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import wav_bytes  # noqa: E402
from tunescout.audio import decode_audio  # noqa: E402
from tunescout.config import config_from_dict  # noqa: E402
from tunescout.engine import Engine  # noqa: E402
from tunescout.scan import Segment, scan  # noqa: E402

SR = 11025
SENTENCES = ["That was a fine record.", "Now the weather: sun later today.", "You are listening to the scan test."]


def build(ingested: list[Path], others: list[Path], minutes: float, seed: int, tmp: Path):
    """The broadcast's samples and its true plays (song, start, end, song_start, fade_in, speed)."""
    rng = np.random.default_rng(seed)
    parts, plays, now, after_song = [], [], 0.0, False
    while now < minutes * 60:
        known = rng.random() < 0.8
        path = ingested[rng.integers(len(ingested))] if known else others[rng.integers(len(others))]
        song = decode_audio(str(path), SR).samples
        seconds = min(rng.uniform(20, 180), song.size / SR)
        begin = rng.uniform(0, song.size / SR - seconds)
        speed = 1.02 if known and rng.random() < 0.1 else 1.0
        part = song[round(begin * SR) : round((begin + seconds * speed) * SR)]
        if speed != 1.0:
            part = signal.resample(part, round(part.size / speed)).astype(np.float32)
        fade = min(rng.uniform(0, 5), seconds / 4, parts[-1].size / SR / 4) if after_song else 0.0
        start = now - fade
        if fade:
            n = round(fade * SR)
            ramp = np.linspace(0, 1, n, dtype=np.float32)
            parts[-1][-n:] = parts[-1][-n:] * (1 - ramp) + part[:n] * ramp
            part = part[n:]
        parts.append(part.copy())
        now = start + fade + part.size / SR
        if known:
            plays.append(dict(song=path.stem, start=start, end=now, fade_in=fade, speed=speed))
        after_song = rng.random() < 0.3  # the next song crossfades with this one
        if not after_song:  # talk or noise between
            gap = rng.random() < 0.5
            noise = (0.02 * rng.standard_normal(round(rng.uniform(1, 4) * SR))).astype(np.float32)
            parts.append(_speech(SENTENCES[rng.integers(len(SENTENCES))], tmp) if gap else noise)
            now += parts[-1].size / SR
    return np.concatenate(parts), plays


def _speech(text: str, tmp: Path) -> np.ndarray:
    path = tmp / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return decode_audio(str(path), SR).samples


def evaluate(segments: list[Segment], plays: list[dict]) -> dict:
    """Event recall (plays of 20 s or more found by a segment of the song overlapping half of them),
    segment precision (segments overlapping a play of their song) and boundary errors."""

    def overlap(s, p):
        return max(0.0, min(s.end_seconds, p["end"]) - max(s.start_seconds, p["start"]))

    long_plays = [p for p in plays if p["end"] - p["start"] >= 20]
    found, starts, ends = 0, [], []
    for p in long_plays:
        best = max((s for s in segments if s.song_name == p["song"]), key=lambda s: overlap(s, p), default=None)
        if best is not None and overlap(best, p) >= 0.5 * (p["end"] - p["start"]):
            found += 1
            if not p["fade_in"]:
                starts.append(abs(best.start_seconds - p["start"]))
            ends.append(abs(best.end_seconds - p["end"]))
    right = sum(any(s.song_name == p["song"] and overlap(s, p) > 0 for p in plays) for s in segments)

    def pct(v, q):
        return round(float(np.percentile(v, q)), 2) if v else None

    return {
        "plays": len(plays),
        "event_recall": round(found / max(len(long_plays), 1), 4),
        "segments": len(segments),
        "segment_precision": round(right / max(len(segments), 1), 4),
        "start_error_p50_p95_s": [pct(starts, 50), pct(starts, 95)],
        "end_error_p50_p95_s": [pct(ends, 50), pct(ends, 95)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ingest", type=Path, default=Path("/tmp/q_dev/ingest.txt"))
    parser.add_argument("--not-ingested", type=Path, default=Path("/tmp/q_dev/not_ingested.txt"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_scan"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ingested = [Path(p) for p in args.ingest.read_text().split()]
    others = [Path(p) for p in args.not_ingested.read_text().split()]
    with tempfile.TemporaryDirectory() as tmp:
        samples, plays = build(ingested, others, args.minutes, args.seed, Path(tmp))
        recording = Path(tmp) / "broadcast.wav"
        recording.write_bytes(wav_bytes(samples))
        engine = Engine.from_config(config_from_dict({"data_dir": str(Path(tmp) / "data")}))
        began = time.perf_counter()
        for path in ingested:
            engine.fingerprint(str(path), path.stem)
        ingest_s = time.perf_counter() - began
        *segments, summary = scan(engine, recording)
        engine.close()
    report = {
        "minutes": args.minutes,
        "seed": args.seed,
        "songs": len(ingested),
        **evaluate(segments, plays),
        "realtime_factor": round(summary.realtime_factor, 1),
        "scan_seconds": summary.elapsed_seconds,
        "ingest_seconds": round(ingest_s, 1),
        "truth": plays,
        "found": [s.body() for s in segments],
    }
    (args.out / "scan.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k not in ("truth", "found")}, indent=1))


if __name__ == "__main__":
    main()
