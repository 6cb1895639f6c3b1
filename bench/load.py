"""Load on POST /api/recognize: a seeded mix of short MP3/Ogg/WAV clips from N keep-alive clients.

    python bench/load.py --url http://127.0.0.1:5000 --tracks .cache/corpus_small/tracks --concurrency 1,4,16

Prints, for each concurrency, recognitions per second, p50/p99 latency, errors, how many answers named
the clip's own track (the tracks must be in the catalogue under their file stems, as `tunescout ingest`
names them) and the server's own p50 decode time (its ``timings.decode``). Several servers (--url
twice) are measured in turns, one level at a time, so that what else runs on the machine weighs on
each alike. Clips are cut with the ffmpeg command.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import requests

FORMATS = {  # container: ffmpeg output options
    "mp3": ["-f", "mp3", "-b:a", "128k"],
    "ogg": ["-f", "ogg", "-c:a", "libvorbis", "-q:a", "4"],
    "wav": ["-f", "wav", "-c:a", "pcm_s16le"],
}


def make_clips(tracks: list[Path], count: int, seconds: float, seed: int) -> list[tuple[str, str, bytes]]:
    """(track stem, file name, bytes) of count clips cut at seeded places, formats in turn."""
    rng = random.Random(seed)
    clips = []
    for i in range(count):
        track = rng.choice(tracks)
        fmt = list(FORMATS)[i % len(FORMATS)]
        start = rng.uniform(0, 40)
        command = ["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{start:.2f}", "-t", str(seconds), "-i", str(track)]
        data = subprocess.run([*command, *FORMATS[fmt], "-"], capture_output=True, check=True).stdout
        clips.append((track.stem, f"clip{i}.{fmt}", data))
    return clips


def run_client(url: str, clips, order: list[int], deadline: float, out: list) -> None:
    """Send clips in the given order on one keep-alive connection until the deadline."""
    session = requests.Session()
    for i in order:
        if time.perf_counter() >= deadline:
            break
        stem, name, data = clips[i]
        began = time.perf_counter()
        try:
            resp = session.post(f"{url}/api/recognize", files={"file": (name, data)}, timeout=30)
            ok = resp.status_code == 200
            body = resp.json() if ok else {}
            results, decode_ms = body.get("results", []), body.get("timings", {}).get("decode", float("nan"))
            right = bool(results) and results[0].get("song_name") == stem
        except (requests.RequestException, ValueError):
            ok, right, decode_ms = False, False, float("nan")
        out.append((time.perf_counter() - began, ok, right, decode_ms))
    session.close()


def measure(url: str, clips, concurrency: int, seconds: float, seed: int) -> dict:
    """Recognitions per second, latency percentiles and errors of concurrency clients for seconds."""
    rng = random.Random(seed * 1000 + concurrency)
    outs = [[] for _ in range(concurrency)]
    deadline = time.perf_counter() + seconds
    threads = [
        threading.Thread(
            target=run_client, args=(url, clips, [rng.randrange(len(clips)) for _ in range(100_000)], deadline, out)
        )
        for out in outs
    ]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    done = [r for out in outs for r in out]
    latency_ms = np.array([r[0] for r in done]) * 1000
    return {
        "requests": len(done),
        "per_s": len(done) / elapsed,
        "p50_ms": float(np.percentile(latency_ms, 50)) if done else float("nan"),
        "p99_ms": float(np.percentile(latency_ms, 99)) if done else float("nan"),
        "errors": sum(not r[1] for r in done),
        "right": sum(r[2] for r in done),
        "decode_p50_ms": float(np.nanmedian([r[3] for r in done])) if any(r[1] for r in done) else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", action="append", required=True, help="Server base URL; repeat to compare servers.")
    parser.add_argument("--tracks", type=Path, default=Path(".cache/corpus_small/tracks"))
    parser.add_argument("--concurrency", default="1,4,16", help="Comma-separated client counts.")
    parser.add_argument("--seconds", type=float, default=20.0, help="Length of each measurement.")
    parser.add_argument("--rounds", type=int, default=1, help="Measure every server at every level this often.")
    parser.add_argument("--clips", type=int, default=60, help="Distinct clips (formats in turn).")
    parser.add_argument("--clip-seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    tracks = sorted(p for p in args.tracks.iterdir() if p.suffix.lower() in {".ogg", ".mp3", ".flac", ".wav"})
    clips = make_clips(tracks, args.clips, args.clip_seconds, args.seed)
    for url in args.url:  # warm-up: the first requests of a worker open its databases
        measure(url, clips, 2, 2.0, args.seed)
    columns = ("c", "round", "req", "rec/s", "p50 ms", "p99 ms", "errors", "right", "decode")
    print(f"{'server':32}", *(f"{c:>7}" for c in columns))
    for round_no in range(args.rounds):
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            for url in args.url:
                r = measure(url, clips, concurrency, args.seconds, args.seed + round_no)
                print(
                    f"{url:32} {concurrency:7d} {round_no + 1:7d} {r['requests']:7d} {r['per_s']:7.1f}",
                    f"{r['p50_ms']:7.1f} {r['p99_ms']:7.1f} {r['errors']:7d} {r['right']:7d} {r['decode_p50_ms']:7.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
