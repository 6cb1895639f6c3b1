"""Sharded scale: latency, index size and accuracy as distractor songs grow the catalogue.

    python bench/shards.py --queries /tmp/q_dev --backend clickhouse --sizes 1000,10000,100000
    python bench/shards.py --queries /tmp/q_dev --backend mysql --sizes 1000,10000

Fills --instances databases of the backend (on the servers `make servers` starts) with the real
tracks of the query set's ingest.txt, then with synthetic distractor songs: durations drawn from
the real tracks, hashes drawn from the real catalogue's hash distribution, offsets uniform. At
each size it runs every 10 s clip (and the negatives) through the engine and prints server-side
latency p50/p95, index bytes per minute of audio and top-1 accuracy. Writes
docs/bench/shards_<backend>.json. The databases are dropped at the end unless --keep.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dejavu  # noqa: E402
from tests import servers  # noqa: E402  (creates the MySQL user over the socket, like the tests)
from tunescout.audio import decode_audio, decode_query  # noqa: E402
from tunescout.config import config_from_dict  # noqa: E402
from tunescout.engine import Engine  # noqa: E402
from tunescout.storage.base import NewSong  # noqa: E402

BATCH = 200   # distractor songs per bulk insert


def open_engine(backend: str, instances: int, names: list[str], data_dir: str, redis: dict | None = None) -> Engine:
    """An engine on fresh databases of the backend (sqlite: files in data_dir), optionally cached."""
    make = {"mysql": servers.mysql_database, "clickhouse": servers.clickhouse_database,
            "sqlite": lambda name: {"database": f"{name}.sqlite"}}[backend]
    raw = {"data_dir": data_dir, "recognizing": {"instance_timeout_s": 30.0},
           "instances": [{"database_type": backend, "database": make(name), "redis_db_index": i}
                         for i, name in enumerate(names[:instances])]}
    if redis:
        raw["redis"] = redis
    return Engine.from_config(config_from_dict(raw))


def load_real(engine: Engine, files: list[str], workers: int) -> tuple[np.ndarray, list[float], dict]:
    """Decode and fingerprint the real tracks, store them; return all hashes, durations, names."""
    def one(path):
        decoded = decode_audio(path, engine.params.sample_rate_hz)
        hashes, offsets = dejavu.fingerprint_reference(decoded.samples, engine.params)
        return NewSong(Path(path).stem, decoded.pcm_sha1, decoded.duration_seconds, hashes, offsets)

    with cf.ThreadPoolExecutor(workers) as pool:
        songs = list(pool.map(one, files))
    names = {}
    for song in songs:
        names[engine.store.add_song(song)] = song.song_name
    return np.concatenate([s.hashes for s in songs]), [s.duration_seconds for s in songs], names


def add_distractors(engine: Engine, count: int, first: int, hash_cdf: np.ndarray, rate: float,
                    durations: list[float], rng: np.random.Generator) -> float:
    """Store `count` synthetic songs round-robin on the instances; return their audio seconds."""
    frame_s = engine.params.frame_seconds
    seconds = 0.0
    stores = engine.store.stores
    for start in range(0, count, BATCH):
        batch = []
        for k in range(start, min(start + BATCH, count)):
            duration = float(rng.choice(durations))
            n = int(duration * rate)
            hashes = np.searchsorted(hash_cdf, rng.random(n)).astype(np.uint32)
            offsets = np.sort(rng.integers(0, int(duration / frame_s), n)).astype(np.int32)
            batch.append(NewSong(f"distractor {first + k}", rng.bytes(20).hex(), duration, hashes, offsets))
            seconds += duration
        stores[(start // BATCH) % len(stores)].add_songs(batch)
        print(f"\r  distractors {min(start + BATCH, count)}/{count}", end="", flush=True)
    print()
    return seconds


def run_queries(engine: Engine, rows: list[dict], queries: Path, names: dict) -> dict:
    latencies, correct, false_pos, by_degradation = [], [], [], {}
    for row in rows:
        decoded = decode_query((queries / row["query_file"]).read_bytes(), engine.params.sample_rate_hz,
                               0.0, engine.config.recognizing.max_duration)
        t0 = time.perf_counter()
        hashes, offsets = dejavu.fingerprint_query(decoded.samples, engine.params)
        lookup = engine.store.lookup(hashes, offsets, engine.match.candidates)
        scored = engine.score_candidates(lookup.histograms)
        latencies.append((time.perf_counter() - t0) * 1000)
        match = names.get(scored[0][1].song_id) if scored and scored[0][0] >= 0 else None
        if row["is_negative"] == "1":
            false_pos.append(scored[0][0] >= 0 if scored else False)
        else:
            ok = match == row["track_id"]
            correct.append(ok)
            by_degradation.setdefault(row["degradation"], []).append(ok)
    return {"latency_p50_ms": float(np.median(latencies)), "latency_p95_ms": float(np.percentile(latencies, 95)),
            "accuracy": float(np.mean(correct)), "false_positive_rate": float(np.mean(false_pos or [0])),
            "accuracy_by_degradation": {k: float(np.mean(v)) for k, v in by_degradation.items()},
            "queries": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=Path, required=True, help="make_queries.py output folder")
    parser.add_argument("--backend", choices=["clickhouse", "mysql"], default="clickhouse")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--sizes", default="1000,10000,100000", help="catalogue sizes (songs)")
    parser.add_argument("--length", default="10", help="clip length (s) of the queries to run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    args = parser.parse_args()

    if args.backend == "mysql" and not servers.mysql_ready():
        sys.exit("MariaDB does not answer on its socket: run `make servers`")
    names = [f"{servers.PREFIX}bench_{args.backend}_{i}" for i in range(args.instances)]
    drop = servers.drop_mysql if args.backend == "mysql" else servers.drop_clickhouse
    for name in names:
        drop(name)
    rows = [r for r in csv.DictReader((args.queries / "ground_truth.csv").open()) if r["length_s"] == args.length]
    files = [line for line in (args.queries / "ingest.txt").read_text().split() if line]
    rng = np.random.default_rng(2026)
    report = {"backend": args.backend, "instances": args.instances, "sizes": []}
    with tempfile.TemporaryDirectory() as tmp:
        engine = open_engine(args.backend, args.instances, names, tmp)
        t = time.perf_counter()
        real_hashes, durations, song_names = load_real(engine, files, args.workers)
        print(f"real tracks: {len(files)} ({sum(durations) / 3600:.2f} h) in {time.perf_counter() - t:.0f} s")
        counts = np.bincount(real_hashes).astype(np.float64)
        hash_cdf = np.cumsum(counts) / counts.sum()
        rate = real_hashes.size / sum(durations)
        songs, seconds = len(files), sum(durations)
        for size in sorted(int(s) for s in args.sizes.split(",")):
            if size > songs:
                t = time.perf_counter()
                seconds += add_distractors(engine, size - songs, songs, hash_cdf, rate, durations, rng)
                load_s = time.perf_counter() - t
                songs = size
            else:
                load_s = 0.0
            stats = [s.stats() for s in engine.store.stores]
            index_bytes = sum(s["index_bytes"] for s in stats)
            hashes = sum(s["hashes"] for s in stats)
            figures = run_queries(engine, rows, args.queries, song_names)
            entry = {"songs": songs, "hours": seconds / 3600, "hashes": hashes,
                     "index_bytes": index_bytes, "index_kb_per_min": index_bytes / 1000 / (seconds / 60),
                     "load_seconds": load_s, "load_rows_per_s": hashes / load_s if load_s else None, **figures}
            report["sizes"].append(entry)
            print(f"{songs:>7} songs {seconds / 3600:8.1f} h {hashes / 1e6:8.1f} M hashes | "
                  f"{args.length} s clips p50 {figures['latency_p50_ms']:6.1f} ms p95 {figures['latency_p95_ms']:6.1f} ms | "
                  f"{entry['index_kb_per_min']:5.1f} kB/min | accuracy {100 * figures['accuracy']:5.1f} % "
                  f"FP {100 * figures['false_positive_rate']:.1f} %", flush=True)
        engine.close()
    if not args.keep:
        for name in names:
            drop(name)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"shards_{args.backend}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
