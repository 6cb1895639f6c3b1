"""Top-1 against speed and pitch: 10 s clips played 0.80-1.20x and shifted -3..+3 semitones.

    python bench/scales.py --config CONFIG --tracks /tmp/q_real/ingest.txt [--clips 30] [--out docs/bench]

CONFIG names an index that holds the tracks listed in --tracks (e.g. `tunescout ingest` of them).
From --clips of those tracks (seeded), a 10 s segment at a seeded offset is cut and played at each
speed (resampled: time and pitch move together, as a record played fast) and shifted by each number
of semitones (resampled, then stretched back to its length with ffmpeg's atempo). Each clip goes
through Engine.match_samples, as /api/recognize runs it. Prints and writes the table (top-1 and the
median error of the reported time and frequency scales per factor) to scales.json and a plot to
scales.png under --out. Needs the ffmpeg command.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tunescout.audio import decode_audio, decode_query  # noqa: E402
from tunescout.config import load_config  # noqa: E402
from tunescout.engine import Engine  # noqa: E402

SPEEDS = [0.80, 0.85, 0.90, 0.93, 0.95, 0.97, 0.98, 0.99, 1.0, 1.01, 1.02, 1.03, 1.05, 1.07, 1.10, 1.15, 1.20]
SEMITONES = [-3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3]
RATE = 44100
LENGTH_S = 10.0


def transformed(segment: np.ndarray, speed: float = 1.0, semitones: float = 0.0) -> bytes:
    """The segment (mono float at RATE) played at speed, or shifted by semitones with its length kept,
    as a WAV file's bytes (ffmpeg)."""
    if semitones:
        factor = 2 ** (semitones / 12)
        chain = f"asetrate={RATE * factor:.3f},aresample={RATE},atempo={1 / factor:.6f}"
    else:
        chain = f"asetrate={RATE * speed:.3f},aresample={RATE}"
    pcm = (np.clip(segment, -1, 1) * 32767).astype("<i2").tobytes()
    command = ["ffmpeg", "-v", "error", "-f", "s16le", "-ar", str(RATE), "-ac", "1", "-i", "-"]
    command += ["-af", chain, "-f", "wav", "-"]
    return subprocess.run(command, input=pcm, capture_output=True, check=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--tracks", type=Path, required=True, help="file listing the indexed tracks' paths")
    parser.add_argument("--clips", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    args = parser.parse_args()
    engine = Engine.from_config(load_config(args.config))
    rng = np.random.default_rng(args.seed)
    paths = sorted(line for line in args.tracks.read_text().split() if line)
    chosen = rng.choice(len(paths), min(args.clips, len(paths)), replace=False)
    cases = [("speed", s) for s in SPEEDS] + [("pitch", p) for p in SEMITONES]
    hits = {case: [] for case in cases}
    for k, index in enumerate(chosen):
        path = paths[index]
        song = decode_audio(path, RATE).samples
        start = int(rng.integers(5 * RATE, max(song.size - int((LENGTH_S * 1.3 + 5) * RATE), 5 * RATE + 1)))
        segment = song[start : start + int(LENGTH_S * 1.25 * RATE)]  # a slow clip still lasts 10 s
        for kind, factor in cases:
            speed = factor if kind == "speed" else 1.0
            semitones = factor if kind == "pitch" else 0.0
            clip = transformed(segment, speed, semitones)
            decoded = decode_query(clip, engine.params.sample_rate_hz, 0.0, LENGTH_S)
            found = engine.match_samples(decoded)
            top = found.results[0] if found.results else None
            right = top is not None and top.song_name == Path(path).stem
            true_time, true_freq = (1 / speed, speed) if kind == "speed" else (1.0, 2 ** (semitones / 12))
            hits[kind, factor].append(
                {
                    "right": right,
                    "time_error": abs(top.time_scale / true_time - 1) if right else None,
                    "freq_error": abs(top.frequency_scale / true_freq - 1) if right else None,
                }
            )
        print(f"\r  {k + 1}/{len(chosen)} tracks", end="", flush=True)
    print()
    table = []
    for (kind, factor), results in hits.items():
        right = [r for r in results if r["right"]]
        table.append(
            {
                "kind": kind,
                "factor": factor,
                "top1": float(np.mean([r["right"] for r in results])),
                "time_scale_error_p50": float(np.median([r["time_error"] for r in right])) if right else None,
                "frequency_scale_error_p50": float(np.median([r["freq_error"] for r in right])) if right else None,
                "clips": len(results),
            }
        )
        t, f = table[-1]["time_scale_error_p50"], table[-1]["frequency_scale_error_p50"]
        print(
            f"{kind:<6} {factor:>6} top-1 {100 * table[-1]['top1']:5.1f} % | scale error p50: "
            f"time {'-' if t is None else f'{100 * t:.2f} %'}, frequency {'-' if f is None else f'{100 * f:.2f} %'}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scales.json").write_text(json.dumps({"clips_per_factor": len(chosen), "table": table}, indent=2))
    plot(table, args.out / "scales.png")
    print(f"wrote {args.out / 'scales.json'} and {args.out / 'scales.png'}")


def plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, kind, label in ((axes[0], "speed", "speed (x, resampled)"), (axes[1], "pitch", "pitch (semitones)")):
        rows = [r for r in table if r["kind"] == kind]
        ax.plot([r["factor"] for r in rows], [100 * r["top1"] for r in rows], "o-")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 (%), 10 s clips")
    axes[0].set_ylim(0, 102)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
