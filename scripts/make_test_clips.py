#!/usr/bin/env python3
"""Cut seeded query clips, with their ground truth, from a corpus made by fetch_test_music.py.

    python scripts/make_test_clips.py CORPUS OUTDIR [--seed 7] [--lengths 1,5]
        [--degradations clean,noise0] [--queried-tracks 16] [--negatives 6] [--jobs 2]

--negatives tracks are held out of the catalogue: their clips must match nothing. Of the others,
--queried-tracks give one segment per length, at a seeded offset at least --margin seconds from
either end (near-silent segments are drawn again), written once per degradation:

  clean     the segment as decoded (mono, --sample-rate Hz)
  noiseN    plus white Gaussian noise N dB below the segment's power (noise0: as loud as the music)

OUTDIR gets:
  queries/q_<12 hex>.wav  16-bit mono WAV; the name says nothing about the answer
  ground_truth.csv        query_file,track_id,true_offset_s,length_s,degradation,is_negative,
                          source_track_id,snr_db,sample_rate,duration_s (track_id is empty for
                          held-out tracks; true_offset_s is where the segment starts in the track)
  ingest.txt              the catalogue: every track that is not held out, one path a line
  not_ingested.txt        the held-out tracks

Every choice derives from --seed and the track ids, so the same corpus and arguments give the same
bytes whatever --jobs is. Needs numpy and ffmpeg.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import subprocess
import sys
import wave
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SILENT_RMS = 10 ** (-50 / 20)  # a segment quieter than -50 dBFS tells nothing: draw another
DRAWS = 20
COLUMNS = [
    "query_file",
    "track_id",
    "true_offset_s",
    "length_s",
    "degradation",
    "is_negative",
    "source_track_id",
    "snr_db",
    "sample_rate",
    "duration_s",
]


def main() -> int:
    args = parse_args()
    tracks = read_tracks(args.corpus)
    negatives = seeded_order(tracks, args.seed, "held-out")[: args.negatives]
    catalogue = sorted(t for t in tracks if t not in negatives)
    queried = sorted(seeded_order(catalogue, args.seed, "queried")[: args.queried_tracks])
    (args.outdir / "queries").mkdir(parents=True, exist_ok=True)
    for stale in (args.outdir / "queries").glob("q_*.wav"):
        stale.unlink()
    write_lines(args.outdir / "ingest.txt", [str(tracks[t]) for t in catalogue])
    write_lines(args.outdir / "not_ingested.txt", [str(tracks[t]) for t in sorted(negatives)])
    jobs = [(t, tracks[t], t in negatives, args) for t in queried + sorted(negatives)]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = [row for track_rows in pool.map(clips_of_track, jobs) for row in track_rows]
    write_ground_truth(args.outdir / "ground_truth.csv", rows)
    print(f"{len(rows)} clips of {len(queried)} catalogue tracks and {len(negatives)} held-out tracks in {args.outdir}")
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path, help="folder with tracks.csv and tracks/")
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lengths", default="1,5", help="clip lengths in seconds, comma-separated")
    parser.add_argument("--degradations", default="clean,noise0", help="clean and/or noise<SNR dB>")
    parser.add_argument("--queried-tracks", type=int, default=16, help="catalogue tracks that get clips")
    parser.add_argument("--negatives", type=int, default=6, help="tracks held out of the catalogue")
    parser.add_argument("--margin", type=float, default=5.0, help="seconds kept clear at each end")
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    args.corpus, args.outdir = args.corpus.resolve(), args.outdir.resolve()
    args.lengths = [int(v) if v.isdigit() else float(v) for v in args.lengths.split(",")]
    args.degradations = args.degradations.split(",")
    for name in args.degradations:
        if name != "clean" and not (name.startswith("noise") and name[5:].lstrip("-").isdigit()):
            parser.error(f"unknown degradation {name!r}: use clean or noise<SNR dB>")
    return args


def read_tracks(corpus: Path) -> dict[str, Path]:
    """Return track_id -> audio path for every row of corpus/tracks.csv."""
    with (corpus / "tracks.csv").open(newline="") as f:
        return {row["track_id"]: corpus / "tracks" / row["filename"] for row in csv.DictReader(f)}


def seeded_key(seed: int, *parts: object) -> int:
    """Return a 64-bit number fixed by the seed and the parts (stable across runs and machines)."""
    text = "|".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def seeded_order(track_ids, seed: int, purpose: str) -> list[str]:
    """Shuffle track ids by seed; a track's rank does not depend on which other tracks exist."""
    return sorted(track_ids, key=lambda t: seeded_key(seed, purpose, t))


def clips_of_track(job) -> list[dict]:
    """Write every clip of one track; return their ground-truth rows."""
    track_id, path, negative, args = job
    samples = decode(path, args.sample_rate)
    rows = []
    for length_s in args.lengths:
        start = pick_start(samples, args.sample_rate, length_s, args.margin, seeded_key(args.seed, track_id, length_s))
        segment = samples[start : start + round(length_s * args.sample_rate)]
        for degradation in args.degradations:
            key = seeded_key(args.seed, track_id, length_s, degradation)
            clip, snr_db = degrade(segment, degradation, key)
            name = f"q_{key:016x}"[:14] + ".wav"
            write_wav(args.outdir / "queries" / name, clip, args.sample_rate)
            rows.append(
                {
                    "query_file": f"queries/{name}",
                    "track_id": "" if negative else track_id,
                    "true_offset_s": f"{start / args.sample_rate:.6f}",
                    "length_s": length_s,
                    "degradation": degradation,
                    "is_negative": int(negative),
                    "source_track_id": track_id,
                    "snr_db": snr_db,
                    "sample_rate": args.sample_rate,
                    "duration_s": f"{clip.size / args.sample_rate:.4f}",
                }
            )
    return rows


def decode(path: Path, sample_rate: int) -> np.ndarray:
    """Decode an audio file to mono float32 samples with ffmpeg."""
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-"],
        capture_output=True,
        check=True,
    )
    return np.frombuffer(proc.stdout, dtype="<f4")


def pick_start(samples: np.ndarray, sample_rate: int, length_s: float, margin_s: float, key: int) -> int:
    """Draw where a segment starts (in samples), margin_s clear of both ends and not near-silent.

    Raises:
        SystemExit: when the track is too short for the margins and the length.
    """
    rng = np.random.default_rng(key)
    n = round(length_s * sample_rate)
    low, high = round(margin_s * sample_rate), samples.size - round(margin_s * sample_rate) - n
    if high <= low:
        sys.exit(f"a track of {samples.size / sample_rate:.1f} s is too short for {length_s} s clips")
    for _ in range(DRAWS):
        start = int(rng.integers(low, high))
        if np.sqrt(np.mean(np.square(samples[start : start + n], dtype=np.float64))) >= SILENT_RMS:
            break
    return start


def degrade(segment: np.ndarray, degradation: str, key: int) -> tuple[np.ndarray, str]:
    """Return the clip and its signal-to-noise ratio in dB ("" for a clean clip)."""
    if degradation == "clean":
        return segment, ""
    snr_db = float(degradation[len("noise") :])
    power = np.mean(np.square(segment, dtype=np.float64))
    noise = np.random.default_rng(key).standard_normal(segment.size)
    return (segment + noise * np.sqrt(power / 10 ** (snr_db / 10))).astype(np.float32), f"{snr_db:g}"


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit mono PCM; a clip louder than full scale is scaled down, not clipped."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak > 1.0:
        samples = samples / peak
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def write_ground_truth(path: Path, rows: list[dict]) -> None:
    """Write ground_truth.csv, sorted, replacing the old file in one step."""
    rows.sort(key=lambda r: (r["is_negative"], r["source_track_id"], float(r["length_s"]), r["degradation"]))
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
