"""Scan benchmark: a seeded synthetic broadcast of the developer corpus, scanned from a catalogue grown
with distractors; event recall, segment precision, boundary errors, speed and memory against its true
timeline.

    .venv/bin/python bench/scan.py --minutes 60 --seed 1 --songs 1000 --backend sqlite --instances 1
    .venv/bin/python bench/scan.py --minutes 60 --seed 1 --songs 1000 --backend clickhouse --instances 2

The broadcast: catalogued plays of 20-180 s from anywhere in the song, songs not in the catalogue,
espeak-ng speech or noise between, crossfades of 0-5 s, one play in ten 2 % fast; then white noise
over the whole hour (--snr-db) and an Opus round trip (--opus-kbps: the file scanned is the Opus one).
The catalogue: the real tracks of ingest.txt, then synthetic distractors up to --songs (as
bench/shards.py makes them). Memory (--memory-minutes): `tunescout scan` run on the first minutes of
the broadcast and on the broadcast looped, its peak RSS for each. --plot draws the true and the found
timeline of the first hour. --hops 5,10 scans the same broadcast with each window step in turn, and
--variants default,follow=false with each set of scan rules (ScanParams fields) at every hop, and
memory_index (alone or joined with +) with the lookups answered from memory; the first is the one
reported at the top. --keep DIR keeps the catalogue and the broadcast in DIR and reuses them
on the next run with the same options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.shards import (  # noqa: E402
    add_distractors,
    add_distractors_in_clickhouse,
    engine_config,
    load_real,
    memory_engine,
)
from tests import servers  # noqa: E402
from tests.conftest import wav_bytes  # noqa: E402
from tunescout.audio import decode_audio  # noqa: E402
from tunescout.config import config_from_dict  # noqa: E402
from tunescout.engine import Engine  # noqa: E402
from tunescout.memory import keep_freed_memory  # noqa: E402
from tunescout.scan import ScanParams, Segment, scan  # noqa: E402

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
    segment precision (segments overlapping a play of their song) and boundary errors (a boundary
    anywhere within a crossfade is right: the distance to the fade)."""

    def overlap(s, p):
        return max(0.0, min(s.end_seconds, p["end"]) - max(s.start_seconds, p["start"]))

    def off(t, lo, hi):
        return max(lo - t, t - hi, 0.0)

    long_plays = [p for p in plays if p["end"] - p["start"] >= 20]
    found, starts, ends = 0, [], []
    for p in long_plays:
        best = max((s for s in segments if s.song_name == p["song"]), key=lambda s: overlap(s, p), default=None)
        if best is not None and overlap(best, p) >= 0.5 * (p["end"] - p["start"]):
            found += 1
            fade_out = next((q["fade_in"] for q in plays if abs(q["start"] + q["fade_in"] - p["end"]) < 0.01), 0.0)
            starts.append(off(best.start_seconds, p["start"], p["start"] + p["fade_in"]))
            ends.append(off(best.end_seconds, p["end"] - fade_out, p["end"]))
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


def degrade(samples: np.ndarray, snr_db: float | None, opus_kbps: int, rng, tmp: Path) -> Path:
    """The broadcast with noise over it at snr_db (of its mean power), as an Opus file at opus_kbps (a WAV
    file if 0)."""
    if snr_db is not None:
        noise = rng.standard_normal(samples.size).astype(np.float32)
        scale = np.sqrt(np.mean(samples**2) / 10 ** (snr_db / 10))
        samples = np.clip(samples + scale * noise, -1, 1).astype(np.float32)
    wav = tmp / "broadcast.wav"
    wav.write_bytes(wav_bytes(samples))
    if not opus_kbps:
        return wav
    opus = tmp / "broadcast.opus"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-i",
            str(wav),
            "-c:a",
            "libopus",
            "-b:a",
            f"{opus_kbps}k",
            str(opus),
        ],
        check=True,
    )
    wav.unlink()
    return opus


def peak_rss_mb(config: dict, recording: Path, minutes: float, tmp: Path) -> float:
    """Peak RSS of `tunescout scan` on the recording's first minutes (looped if it is shorter)."""
    cut = tmp / f"scan_{minutes:g}min.opus"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(recording), "-t", str(minutes * 60)]
        + ["-c:a", "libopus", "-b:a", "32k", str(cut)],
        check=True,
    )
    path = tmp / "scan_config.json"
    path.write_text(json.dumps(config))
    timed = subprocess.run(
        ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "tunescout", "scan", "--config", str(path), str(cut)],
        capture_output=True,
        text=True,
        check=True,
    )
    cut.unlink()
    return int(timed.stderr.strip().splitlines()[-1]) / 1024


def plot(segments: list[Segment], plays: list[dict], minutes: float, path: Path) -> None:
    """The true timeline over the found one, one bar per play or segment, coloured by song."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    songs = sorted({p["song"] for p in plays} | {s.song_name for s in segments})
    colours = {song: plt.cm.tab20(i % 20) for i, song in enumerate(songs)}
    fig, ax = plt.subplots(figsize=(14, 2.6))
    for row, spans in (
        (1, [(p["start"], p["end"], p["song"]) for p in plays]),
        (0, [(s.start_seconds, s.end_seconds, s.song_name) for s in segments]),
    ):
        for start, end, song in spans:
            ax.broken_barh(
                [(start / 60, (end - start) / 60)], (row - 0.35, 0.7), color=colours[song], edgecolor="k", lw=0.3
            )
    ax.set_yticks([0, 1], ["found", "true"])
    ax.set_xlim(0, minutes)
    ax.set_xlabel("minutes into the broadcast (a colour per song; gaps: talk, noise, songs not in the catalogue)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


MEMORY = "memory_index"  # a --variants item: the scan's lookups from memory (recognizing.memory_index)


def _scan_params(variant: str, hop: float) -> ScanParams:
    """ScanParams of a --variants entry at this hop."""
    fields = {f.name: f.type for f in dataclasses.fields(ScanParams)}
    changes = {}
    for item in variant.split("+") if variant != "default" else []:
        if item == MEMORY:
            continue
        name, value = item.split("=")
        kind = {"bool": lambda v: v.lower() in ("1", "true", "yes"), "int": int, "float": float}[fields[name]]
        changes[name] = kind(value)
    return ScanParams(**{"hop_seconds": hop, **changes})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ingest", type=Path, default=Path("/tmp/q_dev/ingest.txt"))
    parser.add_argument("--not-ingested", type=Path, default=Path("/tmp/q_dev/not_ingested.txt"))
    parser.add_argument("--songs", type=int, default=1000, help="catalogue size: the real tracks, then distractors")
    parser.add_argument("--backend", choices=["sqlite", "clickhouse", "mysql", "postgres"], default="sqlite")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument(
        "--snr-db", type=float, default=20.0, help="noise over the whole broadcast (none: --snr-db nan)"
    )
    parser.add_argument("--opus-kbps", type=int, default=32, help="Opus round trip of the broadcast (0: none)")
    parser.add_argument("--memory-minutes", default="10,180", help="peak RSS of `tunescout scan` on this many minutes")
    parser.add_argument("--plot", type=Path, help="write the true and found timelines here (PNG)")
    parser.add_argument(
        "--hops",
        default=str(ScanParams().hop_seconds),
        help="window steps (s) to scan with, each in turn; the first is reported",
    )
    parser.add_argument(
        "--variants",
        default="default",
        help="scan rules to compare, each in turn at every hop: default, or NAME=VALUE[+NAME=VALUE] of ScanParams",
    )
    parser.add_argument(
        "--keep", type=Path, help="keep the catalogue and the broadcast here, and reuse them when there (same options)"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    args = parser.parse_args()
    keep_freed_memory()
    ingested = [Path(p) for p in args.ingest.read_text().split()]
    others = [Path(p) for p in args.not_ingested.read_text().split()]
    names = [f"{servers.PREFIX}bench_scan_{args.backend}_{i}" for i in range(args.instances)]
    drop = {"mysql": servers.drop_mysql, "clickhouse": servers.drop_clickhouse, "postgres": servers.drop_postgres}
    rng = np.random.default_rng(args.seed)
    snr = None if np.isnan(args.snr_db) else args.snr_db
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        kept = tmp / "broadcast.json"
        config = engine_config(args.backend, args.instances, names, str(tmp / "data"))
        if kept.exists():
            plays, ingest_s = json.loads(kept.read_text()), None
            recording = tmp / ("broadcast.opus" if args.opus_kbps else "broadcast.wav")
            engine = Engine.from_config(config_from_dict(config))
        else:
            for name in names if args.backend in drop else []:
                drop[args.backend](name)
            engine = Engine.from_config(config_from_dict(config))
            began = time.perf_counter()
            real_hashes, real_thirds, durations, _ = load_real(engine, [str(p) for p in ingested], 2)
            ingest_s = round(time.perf_counter() - began, 1)
            rate = real_hashes.size / sum(durations)
            extra = args.songs - len(ingested)
            if extra > 0 and args.backend == "clickhouse":
                add_distractors_in_clickhouse(
                    engine, names, extra, len(ingested), real_hashes, real_thirds, rate, durations, rng
                )
            elif extra > 0:
                add_distractors(engine, extra, len(ingested), real_hashes, rate, durations, rng)
            samples, plays = build(ingested, others, args.minutes, args.seed, tmp)
            recording = degrade(samples, snr, args.opus_kbps, rng, tmp)
            del samples
            if args.keep:
                kept.write_text(json.dumps(plays))
        runs, in_memory = {}, None
        for variant in args.variants.split(","):
            if MEMORY in variant.split("+") and in_memory is None:
                in_memory, loaded = memory_engine(engine)
                print(f"memory copies loaded: {loaded}", flush=True)
            for hop in (float(h) for h in args.hops.split(",")):
                params = _scan_params(variant, hop)
                chosen = in_memory if MEMORY in variant.split("+") else engine
                *found, summary = scan(chosen, recording, params)
                runs[variant, hop] = (found, summary)
                print(
                    f"{variant}, hop {hop:g} s: {summary.realtime_factor:.1f}x realtime, {evaluate(found, plays)}",
                    flush=True,
                )
        segments, summary = next(iter(runs.values()))
        engine.close()
        if in_memory is not None:
            in_memory.close()
        memory = {
            f"{m}_min": round(peak_rss_mb(config, recording, float(m), tmp), 1)
            for m in args.memory_minutes.split(",")
            if m
        }
        for name in names if args.backend in drop and not args.keep else []:
            drop[args.backend](name)
    report = {
        "minutes": args.minutes,
        "seed": args.seed,
        "songs": max(args.songs, len(ingested)),
        "backend": args.backend,
        "instances": args.instances,
        "snr_db": snr,
        "opus_kbps": args.opus_kbps,
        **evaluate(segments, plays),
        "realtime_factor": round(summary.realtime_factor, 1),
        "scan_seconds": summary.elapsed_seconds,
        "ingest_seconds": ingest_s,
        "peak_rss_mb": memory,
        "runs": [
            {"variant": variant, "hop": hop, **evaluate(found, plays), "realtime_factor": round(s.realtime_factor, 1)}
            for (variant, hop), (found, s) in runs.items()
        ],
        "truth": plays,
        "found": [s.body() for s in segments],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"scan_{args.backend}_{args.instances}inst_{report['songs']}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        plot(segments, plays, args.minutes, args.plot)
    print(json.dumps({k: v for k, v in report.items() if k not in ("truth", "found")}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
