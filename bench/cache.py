"""Redis lookup cache: the same 10 s clips recognised twice, cold then warm.

    python bench/cache.py --queries /tmp/q_dev --backend clickhouse [--redis-port 6379]

Ingests the real tracks of the query set into one fresh instance of the backend with the cache on
(Redis databases 0.. of the given server are FLUSHED first: use a Redis of your own), runs every
10 s clip once (cold: every lookup goes to the database) and again (warm), and prints server-side
latency (fingerprint + lookup + alignment) p50/p95 for both, the ratio, and Redis memory per entry.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dejavu  # noqa: E402
from bench.shards import load_real, open_engine  # noqa: E402
from tests import servers  # noqa: E402
from tunescout.audio import decode_query  # noqa: E402
from tunescout.memory import keep_freed_memory  # noqa: E402
from tunescout.storage.cache import CachedStore  # noqa: E402
from tunescout.storage.stack import layers  # noqa: E402


def timed_pass(engine, clips) -> list[float]:
    out = []
    for samples in clips:
        t = time.perf_counter()
        hashes, offsets = dejavu.fingerprint_query(samples, engine.params)
        engine.searcher.search(hashes, offsets)
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--backend", choices=["sqlite", "clickhouse", "mysql"], default="sqlite")
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--length", default="10", help="clip length (s) of the queries to run")
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    args = parser.parse_args()
    keep_freed_memory()  # as `tunescout serve` does
    if args.backend == "mysql":
        servers.mysql_ready()
    client = redis.Redis(port=args.redis_port, db=0)
    client.flushdb()
    rows = [r for r in csv.DictReader((args.queries / "ground_truth.csv").open()) if r["length_s"] == args.length]
    files = [line for line in (args.queries / "ingest.txt").read_text().split() if line]
    name = f"{servers.PREFIX}bench_cache"
    drop = {"mysql": servers.drop_mysql, "clickhouse": servers.drop_clickhouse}.get(args.backend)
    with tempfile.TemporaryDirectory() as tmp:
        if drop:
            drop(name)
        engine = open_engine(
            args.backend, 1, [name], tmp, {"host": "127.0.0.1", "port": args.redis_port, "prefix": "bench"}
        )
        load_real(engine, files, 2)
        clips = [
            decode_query(
                (args.queries / r["query_file"]).read_bytes(), engine.params.sample_rate_hz, 0.0, float(args.length)
            ).samples
            for r in rows
        ]
        cold = timed_pass(engine, clips)
        warm = timed_pass(engine, clips)
        cache = next(layer for layer in layers(engine.store.stores[0]) if isinstance(layer, CachedStore))
        used = client.info("memory")["used_memory"]
        entries = client.dbsize()
        engine.close()
        if drop:
            drop(name)
    figures = {
        "backend": args.backend,
        "clips": len(clips),
        "songs": len(files),
        "cold_p50_ms": float(np.median(cold)),
        "cold_p95_ms": float(np.percentile(cold, 95)),
        "warm_p50_ms": float(np.median(warm)),
        "warm_p95_ms": float(np.percentile(warm, 95)),
        "hits": cache.hits,
        "misses": cache.misses,
        "entries": entries,
        "redis_used_memory_bytes": used,
    }
    figures["speedup_p50"] = figures["cold_p50_ms"] / figures["warm_p50_ms"]
    print(
        f"{args.backend}, {len(files)} songs, {len(clips)} clips of {args.length} s: "
        f"cold p50 {figures['cold_p50_ms']:.1f} ms "
        f"p95 {figures['cold_p95_ms']:.1f} ms | warm p50 {figures['warm_p50_ms']:.1f} ms "
        f"p95 {figures['warm_p95_ms']:.1f} ms | {figures['speedup_p50']:.1f}x | hits {cache.hits} "
        f"misses {cache.misses} | Redis {used / 1e6:.1f} MB for {entries} entries"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"cache_{args.backend}.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
