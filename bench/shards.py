"""Sharded scale: latency, index size and accuracy as distractor songs grow the catalogue.

    python bench/shards.py --queries /tmp/q_dev --backend clickhouse --sizes 1000,10000,100000
    python bench/shards.py --queries /tmp/q_dev --backend mysql --sizes 1000,10000
    python bench/shards.py --queries /tmp/q_dev --backend postgres --sizes 1000
    python bench/shards.py --queries /tmp/q_dev --backend sqlite --instances 1 --sizes 1000

Fills --instances databases of the backend (on the servers `make servers` starts) with the real
tracks of the query set's ingest.txt, then with synthetic distractor songs: durations drawn from
the real tracks, hashes drawn from the real catalogue's hash distribution, offsets uniform. At
each size it runs every 10 s clip (and the negatives) through the engine and prints server-side
latency p50/p95, index bytes per minute of audio and top-1 accuracy. Writes
docs/bench/shards_<backend>_<instances>inst_<sizes>.json. The databases are dropped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dejavu  # noqa: E402
from dejavu import robust as triplets  # noqa: E402
from tests import servers  # noqa: E402  (creates the MySQL user over the socket, like the tests)
from tunescout.audio import decode_query  # noqa: E402
from tunescout.config import config_from_dict  # noqa: E402
from tunescout.engine import Engine, analyse  # noqa: E402
from tunescout.memory import keep_freed_memory  # noqa: E402
from tunescout.storage.base import NewSong  # noqa: E402
from tunescout.storage.stack import layers  # noqa: E402

BATCH = 200  # distractor songs per bulk insert
SPAN_FRAMES = (6, 48)  # spans of distractor triplet rows, in the range of real triplets
POSITION_SHIFT = triplets.FRAME_BITS + triplets.SPAN_FRAME_BITS  # a triplet row's band position in its offset


def engine_config(backend: str, instances: int, names: list[str], data_dir: str, redis: dict | None = None) -> dict:
    """The config (as config.json holds it) of an engine on the bench's databases of the backend
    (sqlite: files in data_dir), optionally cached."""
    make = {
        "mysql": servers.mysql_database,
        "clickhouse": servers.clickhouse_database,
        "postgres": servers.postgres_database,
        "sqlite": lambda name: {"database": f"{name}.sqlite"},
    }[backend]
    raw = {
        "data_dir": data_dir,
        "recognizing": {"instance_timeout_s": 30.0},
        "instances": [
            {"database_type": backend, "database": make(name), "redis_db_index": i}
            for i, name in enumerate(names[:instances])
        ],
    }
    if redis:
        raw["redis"] = redis
    return raw


def open_engine(backend: str, instances: int, names: list[str], data_dir: str, redis: dict | None = None) -> Engine:
    """An engine on fresh databases of the backend (sqlite: files in data_dir), optionally cached."""
    return Engine.from_config(config_from_dict(engine_config(backend, instances, names, data_dir, redis)))


def load_real(
    engine: Engine, files: list[str], workers: int, store: bool = True
) -> tuple[np.ndarray, np.ndarray, list[float], dict]:
    """Decode and fingerprint the real tracks, store them (unless not store); return all hashes and
    their third points (0 for none), durations, names."""

    robust = engine.robust if all(engine.searcher.robust_instances()) else None

    def one(path):  # as ingest does: both families where the index holds them
        return analyse(path, Path(path).stem, engine.params, engine.config.fingerprinting.max_duration, robust)

    with cf.ThreadPoolExecutor(workers) as pool:
        songs = list(pool.map(one, files))
    names = {}
    for song in songs if store else []:
        names[engine.store.add_song(song)] = song.song_name
    thirds = np.concatenate([np.zeros(s.hashes.size, np.uint16) if s.thirds is None else s.thirds for s in songs])
    return np.concatenate([s.hashes for s in songs]), thirds, [s.duration_seconds for s in songs], names


def real_song_names(engine: Engine) -> tuple[dict, list[float]]:
    """song_id -> name of the real (not distractor) songs of a kept index, and their durations."""
    names, durations, after = {}, [], 0
    while True:
        page, _ = engine.store.list_songs(after, 1000)
        if not page:
            return names, durations
        real = [s for s in page if not s.song_name.startswith("distractor ")]
        names.update({s.song_id: s.song_name for s in real})
        durations += [s.duration_seconds for s in real]
        after = page[-1].song_id


def distractor_offsets(hashes: np.ndarray, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Offsets of distractor rows: the frame, and for triplet rows a packed span and band position
    drawn like real ones (dejavu.robust.pack_offsets)."""
    offsets = frames.astype(np.int64)
    tri = triplets.is_triplet_hash(hashes)
    spans = rng.integers(SPAN_FRAMES[0], SPAN_FRAMES[1] + 1, int(tri.sum()))
    offsets[tri] = triplets.pack_offsets(frames[tri], spans, rng.integers(0, 256, int(tri.sum())))
    return offsets.astype(np.int32)


def add_distractors(
    engine: Engine,
    count: int,
    first: int,
    real_hashes: np.ndarray,
    rate: float,
    durations: list[float],
    rng: np.random.Generator,
) -> float:
    """Store `count` synthetic songs round-robin on the instances, their rows drawn from the real
    catalogue's (so common values stay common); return their audio seconds."""
    frame_s = engine.params.frame_seconds
    seconds = 0.0
    stores = [layers(store)[-1] for store in engine.store.stores]  # the backends' bulk insert
    for start in range(0, count, BATCH):
        batch = []
        for k in range(start, min(start + BATCH, count)):
            duration = float(rng.choice(durations))
            n = int(duration * rate)
            hashes = real_hashes[rng.integers(0, real_hashes.size, n)].astype(np.uint32)
            offsets = distractor_offsets(hashes, rng.integers(0, int(duration / frame_s), n), rng)
            batch.append(NewSong(f"distractor {first + k}", rng.bytes(20).hex(), duration, hashes, offsets))
            seconds += duration
        stores[(start // BATCH) % len(stores)].add_songs(batch)
        print(f"\r  distractors {min(start + BATCH, count)}/{count}", end="", flush=True)
    print()
    return seconds


def add_distractors_in_clickhouse(
    engine: Engine,
    names: list[str],
    count: int,
    first: int,
    real_hashes: np.ndarray,
    real_thirds: np.ndarray,
    rate: float,
    durations: list[float],
    rng: np.random.Generator,
) -> float:
    """The same distractors, generated by ClickHouse itself (Python cannot feed 400 M rows fast).

    Rows are drawn from a 2 M sample of the real catalogue's rows, hash and third point together (so
    they follow its distribution), offsets uniformly over the song; every distractor has the median
    duration. A triplet key is then as common among distractors as among the real songs: for a clip
    of unknown audio the expected count of each key, for a clip of a catalogue song more (its own
    keys are copied too). Writes the tables directly: a benchmark shortcut, not a way to ingest.
    """
    from clickhouse_driver import Client

    duration = float(np.median(durations))
    per_song = int(duration * rate)
    frames = int(duration / engine.params.frame_seconds)
    drawn = rng.integers(0, real_hashes.size, 2_000_000)
    sample = list(zip(real_hashes[drawn].astype(np.uint32).tolist(), real_thirds[drawn].astype(np.uint16).tolist()))
    span_choices = SPAN_FRAMES[1] - SPAN_FRAMES[0] + 1
    n = len(names)
    per_instance = [count // n + (1 if i < count % n else 0) for i in range(n)]

    def fill(i: int, name: str) -> None:
        client = Client(
            "127.0.0.1",
            port=servers.CLICKHOUSE_PORT,
            database=name,
            send_receive_timeout=3600,
            settings={"max_execution_time": 3600},
        )
        last = client.execute("SELECT max(song_id) FROM songs")[0][0]
        third = client.execute(
            "SELECT count() FROM system.columns WHERE database = %(db)s AND table = 'fingerprints' AND name = 'third'",
            {"db": name},
        )[0][0]
        start = last + n if last else i + 1
        k = per_instance[i]
        for chunk in range(0, k, 5000):
            songs = min(5000, k - chunk)
            base = start + chunk * n
            client.execute(
                f"INSERT INTO fingerprints (hash, song_hi, song_lo, offset_hi, offset_lo{', third' if third else ''}) "
                f"SELECT h, intDiv(song_id, 65536), song_id % 65536, intDiv(off, 65536), off % 65536"
                f"{', t' if third else ''} FROM ("
                f"WITH (SELECT groupArray(hash) FROM s) AS sample, (SELECT groupArray(third) FROM s) AS thirds "
                f"SELECT cityHash64(number, 1) % {len(sample)} + 1 AS i, "
                f"arrayElement(sample, i) AS h, arrayElement(thirds, i) AS t, "
                f"{base} + {n} * intDiv(number, {per_song}) AS song_id, cityHash64(number, 2) % {frames} AS frame, "
                # a triplet row's offset packs its span and band position too (dejavu.robust.pack_offsets);
                # toUInt64: a remainder by a small constant is a small type, which the shift would overflow
                f"if(bitAnd(h, {triplets.TAG}) = 0, frame, frame "
                f"+ bitShiftLeft(toUInt64({SPAN_FRAMES[0]} + cityHash64(number, 3) % {span_choices}), "
                f"{triplets.FRAME_BITS}) "
                f"+ bitShiftLeft(toUInt64(cityHash64(number, 4) % 256), {POSITION_SHIFT})) AS off "
                f"FROM numbers({songs * per_song}))",
                external_tables=[
                    {
                        "name": "s",
                        "structure": [("hash", "UInt32"), ("third", "UInt16")],
                        "data": [{"hash": h, "third": t} for h, t in sample],
                    }
                ],
            )
            client.execute(
                f"INSERT INTO songs (song_id, song_name, blob_sha1, total_hashes, duration_seconds) "
                f"SELECT {base} + {n} * number, concat('distractor ', toString({base} + {n} * number)), "
                f"hex(cityHash64(number, {base})), {per_song}, {duration} FROM numbers({songs})"
            )
            print(f"\r  distractors on {name}: {chunk + songs}/{k}", end="", flush=True)
        # A change, as the stores' own writes record it (caches and count copies key on it).
        client.execute(
            "INSERT INTO meta (name, value) SELECT 'generation', toString(max(toUInt64OrZero(value)) + 1)"
            " FROM meta WHERE name = 'generation'"
        )
        print()
        client.disconnect()

    with cf.ThreadPoolExecutor(n) as pool:  # one insert stream per instance at once
        list(pool.map(fill, range(n), names))
    return count * duration


def spread(rows: list[dict], max_queries: int) -> list[dict]:
    """At most max_queries rows, an even spread over the degradations and negatives."""
    return rows[:: int(np.ceil(len(rows) / max_queries))] if len(rows) > max_queries else rows


def decode_clip(engine: Engine, queries: Path, row: dict):
    return decode_query(
        (queries / row["query_file"]).read_bytes(),
        engine.params.sample_rate_hz,
        0.0,
        engine.config.recognizing.max_duration,
    )


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    return {f"p{q}": round(float(np.percentile(values, q)), 2) for q in (50, 95, 99)}


# Search policies to compare side by side (MatchParams overrides): each clip runs under each in turn.
VARIANTS = {
    "default": {},
    "two-steps": {"row_growth": 1e12, "reject_z": 1e12},  # the rarest 8,000 rows, then every hash
    "one-lookup": {"row_budget": 0},  # every hash at once
    # the robust path reading 4 or 16 times the rows (RobustParams overrides)
    "robust-80k": {"robust": {"q_row_budget": 80_000}},
    "robust-320k": {"robust": {"q_row_budget": 320_000}},
    "robust-one-step": {"robust": {"q_first_share": 1.0}},  # every robust row in one read
    # fewer query hashes (FingerprintParams query-side overrides: no re-index)
    "query-dt-jitter-0": {"fingerprint": {"query_dt_jitter": 0}},
    "query-fanout-8": {"fingerprint": {"query_fanout": 8}},
    "query-fanout-12": {"fingerprint": {"query_fanout": 12}},
    "query-fanout-6": {"fingerprint": {"query_fanout": 6}},
    # the second, richer query of a clip the first leaves unanswered but within reach (MatchParams.second_query)
    "one-query": {"second_query": False},
    "second-near-bar-10": {"second_query_margin": -10.0},  # every clip not out of reach
    "second-near-bar-3": {"second_query_margin": -3.0},
    "second-min-fanout-12": {"fingerprint": {"query_min_fanout": 12}},
    "second-min-fanout-6": {"fingerprint": {"query_min_fanout": 6}},
    "second-one-phase": {"fingerprint": {"query_shifts_up_to": 0.9}},  # 5 s clips keep two, 10 s one
    "query-budget-6000": {"fingerprint": {"query_max_hashes": 6000}},
    "query-budget-2000": {"fingerprint": {"query_max_hashes": 2000}},
    "bar-plus-1": {"min_aligned": 5.0},  # the no-match bar one aligned hash higher
    "no-triplets": {"triplets": False},  # the pair lookup only, where the index keeps third points
    # leaner triplet queries (FingerprintParams query-side: peaks a block, targets, phases)
    "triplets-20-6-2": {
        "fingerprint": {"query_triplet_peaks_per_block": 20, "query_triplet_targets": 6, "query_triplet_phases": 2}
    },
    "triplets-12-4-1": {"fingerprint": {"query_triplet_peaks_per_block": 12, "query_triplet_targets": 4}},
    # no answer, without the pairs or the robust path, for a clip whose triplets leave it this far below their bar
    "triplet-reject": {"triplet_reject": True},  # recognizing.reject_on_triplets
    "triplet-reject-1": {"triplet_reject": True, "triplet_reject_margin": -1.0},
    "triplet-reject-4": {"triplet_reject": True, "triplet_reject_margin": -4.0},
    # lookups answered from each instance's rows held in memory (recognizing.memory_index)
    "memory": {"memory_index": True},
    "memory-triplets": {"memory_index": True, "triplets": True},  # the triplet keys first all the same
    "memory-triplet-reject": {"memory_index": True, "triplets": True, "triplet_reject": True},
    # levers on a clip of unknown audio, from memory (docs/SCALE.md, "Clips of unknown audio"): the rules
    # before them (the robust path's first rows judged on a least score only); big clips judged against
    # chance (recognizing.reject_at_chance); of those, z = 0 alone; no second query; the robust path
    # reading 2 % of its rows; both
    "memory-previous": {"memory_index": True, "robust": {"q_first_min_ratio": 0.0}},
    "memory-chance": {"memory_index": True, "chance_test": True},
    "memory-z0": {"memory_index": True, "chance_test": True, "chance_share": 1.0},
    "memory-chance-one-query": {"memory_index": True, "chance_test": True, "second_query": False},
    "memory-one-query": {"memory_index": True, "second_query": False},
    "memory-robust-2pc": {"memory_index": True, "robust": {"q_row_share": 0.02}},
    "memory-lean": {"memory_index": True, "second_query": False, "robust": {"q_row_share": 0.02}},
}


def memory_engine(engine: Engine) -> tuple[Engine, dict]:
    """An engine on the same instances with recognizing.memory_index, its copies loaded; and what
    loading them took (seconds, rows, bytes)."""
    recognizing = dataclasses.replace(engine.config.recognizing, memory_index=True)
    memory = Engine.from_config(dataclasses.replace(engine.config, recognizing=recognizing))
    return memory, load_memory(memory)


def load_memory(engine: Engine) -> dict:
    """Bring the engine's memory copies up to date; what it took."""
    t = time.perf_counter()
    for store in engine.store.stores:
        store.refresh()
    helds = [store.held for store in engine.store.stores]
    return {
        "load_s": round(time.perf_counter() - t, 1),
        "rows": sum(h.rows for h in helds),
        "bytes": sum(h.nbytes for h in helds),
    }


def run_queries(
    engine: Engine,
    rows: list[dict],
    queries: Path,
    names: dict,
    max_queries: int,
    variants: list[str],
    in_memory: Engine | None = None,
) -> dict:
    """Every clip under each variant in turn (the same machine state for all): latency of catalogue
    clips and of unknown ones apart, accuracy, false positives and lookup steps, per variant. The
    variants with ``memory_index`` run on ``in_memory`` (:func:`memory_engine`)."""
    default_engine = engine
    engines = [e for e in (engine, in_memory) if e is not None]
    defaults = {id(e): (e.searcher.match, e.searcher.robust, e.params) for e in engines}  # (each engine's own)
    figures = {
        v: {
            "latency": [],
            "kinds": {"catalogue": [], "not_in_catalogue": []},
            "correct": [],
            "fp": [],
            "by_degradation": {},
            "robust_ms": [],
            "steps_ms": {},  # each step of Engine.match_samples that ran (its timings) -> ms
            "unknown_steps_ms": {},  # the same, of the clips of songs not in the catalogue
            "by_triplets": [],
        }
        for v in variants
    }
    try:
        for row in spread(rows, max_queries):
            decoded = decode_clip(engine, queries, row)
            for variant in variants:
                overrides = dict(VARIANTS[variant])
                engine = in_memory if overrides.pop("memory_index", False) else default_engine
                default, default_robust, default_params = defaults[id(engine)]
                engine.searcher.robust = dataclasses.replace(default_robust, **overrides.pop("robust", {}))
                fingerprint = dataclasses.replace(default_params, **overrides.pop("fingerprint", {}))
                engine.params = engine.searcher.params = fingerprint
                engine.searcher.match = dataclasses.replace(default, **overrides)
                f = figures[variant]
                t0 = time.perf_counter()
                found = engine.match_samples(decoded)  # fingerprint, search, rank; the robust path if no song
                f["latency"].append((time.perf_counter() - t0) * 1000)
                kind = "not_in_catalogue" if row["is_negative"] == "1" else "catalogue"
                f["kinds"][kind].append(f["latency"][-1])
                if "robust" in found.timings:
                    f["robust_ms"].append(found.timings["robust"])
                for step, ms in found.timings.items():
                    f["steps_ms"].setdefault(step, []).append(ms)
                    if kind == "not_in_catalogue":
                        f["unknown_steps_ms"].setdefault(step, []).append(ms)
                f["by_triplets"].append("triplets" in found.timings and "query" not in found.timings)
                match = found.results[0].song_name if found.results else None
                if row["is_negative"] == "1":
                    f["fp"].append(match is not None)
                else:
                    f["correct"].append(match == row["track_id"])
                    f["by_degradation"].setdefault(row["degradation"], []).append(match == row["track_id"])
    finally:
        for engine in engines:
            engine.searcher.match, engine.searcher.robust, engine.params = defaults[id(engine)]
            engine.searcher.params = engine.params
    return {
        variant: {
            "latency_p50_ms": float(np.median(f["latency"])),
            "latency_p95_ms": float(np.percentile(f["latency"], 95)),
            "latency_ms": {kind: percentiles(values) for kind, values in f["kinds"].items()},
            "accuracy": float(np.mean(f["correct"])),
            "false_positive_rate": float(np.mean(f["fp"] or [0])),
            "accuracy_by_degradation": {k: float(np.mean(v)) for k, v in f["by_degradation"].items()},
            "queries": len(f["latency"]),
            "robust_path_ms": percentiles(f["robust_ms"]),
            "robust_path_share": len(f["robust_ms"]) / max(len(f["latency"]), 1),
            "triplet_settled_share": float(np.mean(f["by_triplets"] or [0])),  # answered or rejected
            # every step (pair lookup "query", "second", "robust", "verify", "tempo", ...): its ms where
            # it ran, and on what share of the clips
            "steps_ms": {
                step: {**percentiles(ms), "share": round(len(ms) / max(len(f["latency"]), 1), 3)}
                for step, ms in f["steps_ms"].items()
            },
            "unknown_steps_ms": {
                step: {**percentiles(ms), "share": round(len(ms) / max(len(f["kinds"]["not_in_catalogue"]), 1), 3)}
                for step, ms in f["unknown_steps_ms"].items()
            },
        }
        for variant, f in figures.items()
    }


LADDER = (1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000)


def trace_queries(engine: Engine, rows: list[dict], queries: Path, names: dict, max_queries: int, out) -> None:
    """For each clip, look up the rarest hashes within each row budget of LADDER, then every hash,
    and write what each step found and cost: one JSON line per clip, for studying stopping rules."""
    searcher, top_k = engine.searcher, engine.match.candidates
    for row in spread(rows, max_queries):
        decoded = decode_clip(engine, queries, row)
        hashes, offsets = dejavu.fingerprint_query(decoded.samples, engine.params)
        values = dejavu.distinct(hashes)
        counts = engine.store.hash_counts(values)
        held = np.isin(hashes, values[counts > 0])
        steps, last = [], -1
        for budget in (*LADDER, None):
            chosen = values[counts > 0] if budget is None else dejavu.rarest_hashes(values, counts, budget)
            if chosen.size == last:
                continue
            last = chosen.size
            first = np.isin(hashes, chosen)
            t0 = time.perf_counter()
            lookup = engine.store.lookup(hashes[first], offsets[first], top_k)
            ms = (time.perf_counter() - t0) * 1000
            scored = searcher.score(lookup.histograms, int(hashes.size))
            top = [
                {
                    "song": names.get(a.song_id, "distractor"),
                    "margin": round(m, 2),
                    "aligned": a.aligned,
                    "matched": a.matched,
                }
                for m, a in scored[:3]
            ]
            steps.append(
                {
                    "budget": budget,
                    "values": int(chosen.size),
                    "pairs": int(first.sum()),
                    "rows": int(counts[np.isin(values, chosen)].sum()),
                    "ms": round(ms, 2),
                    "top": top,
                }
            )
        record = {
            "songs": engine.store.count_songs(),
            "clip": row["query_file"],
            "truth": row["track_id"],
            "degradation": row["degradation"],
            "query_hashes": int(hashes.size),
            "held": int(held.sum()),
            "rows": int(counts.sum()),
            "steps": steps,
        }
        out.write(json.dumps(record) + "\n")
        out.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=Path, required=True, help="make_queries.py output folder")
    parser.add_argument("--backend", choices=["clickhouse", "mysql", "postgres", "sqlite"], default="clickhouse")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--sizes", default="1000,10000,100000", help="catalogue sizes (songs)")
    parser.add_argument("--length", default="10", help="clip length (s) of the queries to run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--data-dir", type=Path, help="SQLite: keep the files here (default: a temporary folder)")
    parser.add_argument("--max-queries", type=int, default=100_000, help="run at most this many clips per size")
    parser.add_argument(
        "--row-budget",
        type=int,
        default=None,
        help="override MatchParams.row_budget (0: every hash in one lookup, as before)",
    )
    parser.add_argument(
        "--compact",
        action="store_true",
        help="run `tunescout compact` (Engine.compact) after loading each size, as the README advises",
    )
    parser.add_argument(
        "--variants",
        default="default",
        help=f"search policies to run each clip under, side by side (of {', '.join(VARIANTS)}); the first is reported",
    )
    parser.add_argument("--conditions", help="only the clips of these degradations (comma-separated)")
    parser.add_argument("--trace", type=Path, help="also write each clip's stepwise lookups (JSON lines) here")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="start from the databases a --keep run left (grow them to --sizes); implies --keep",
    )
    parser.add_argument(
        "--python-distractors",
        action="store_true",
        help="ClickHouse: insert distractors through the store (slow past 10k songs)",
    )
    args = parser.parse_args()
    keep_freed_memory()  # as `tunescout serve` does

    if args.backend == "mysql" and not servers.mysql_ready():
        sys.exit("MariaDB does not answer on its socket: run `make servers`")
    names = [f"{servers.PREFIX}bench_{args.backend}_{i}" for i in range(args.instances)]
    if args.backend == "postgres" and not servers.postgres_ready():
        sys.exit("PostgreSQL does not answer on 127.0.0.1:5432: run `make servers`")
    drop = {"mysql": servers.drop_mysql, "clickhouse": servers.drop_clickhouse, "postgres": servers.drop_postgres}.get(
        args.backend, lambda name: None
    )
    args.keep = args.keep or args.reuse
    for name in names if not args.reuse else []:
        drop(name)
    rows = [r for r in csv.DictReader((args.queries / "ground_truth.csv").open()) if r["length_s"] == args.length]
    if args.conditions:
        rows = [r for r in rows if r["degradation"] in args.conditions.split(",")]
    files = [line for line in (args.queries / "ingest.txt").read_text().split() if line]
    rng = np.random.default_rng(2026)
    report = {"backend": args.backend, "instances": args.instances, "compact": args.compact, "sizes": []}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        for name in names if not args.reuse else []:  # a fresh index, like the servers' databases above
            (data_dir / f"{name}.sqlite").unlink(missing_ok=True)
        engine = open_engine(args.backend, args.instances, names, str(data_dir))
        if args.row_budget is not None:
            engine.searcher.match = dataclasses.replace(engine.match, row_budget=args.row_budget)
        t = time.perf_counter()
        held = engine.store.count_songs()
        if held and max(int(s) for s in args.sizes.split(",")) <= held:  # a kept index, measured as it is
            song_names, durations = real_song_names(engine)
            real_hashes = real_thirds = rate = None
        else:
            real_hashes, real_thirds, durations, song_names = load_real(engine, files, args.workers, store=not held)
            print(f"real tracks: {len(files)} ({sum(durations) / 3600:.2f} h) in {time.perf_counter() - t:.0f} s")
            rate = real_hashes.size / sum(durations)
        songs, seconds = len(files), sum(durations)
        if held:  # a kept index: the real tracks are its first songs, then distractors of median length
            song_names = real_song_names(engine)[0]
            seconds += (held - songs) * float(np.median(durations))
            songs = held
        in_memory = None  # the engine of the memory_index variants, once one runs
        for size in sorted(int(s) for s in args.sizes.split(",")):
            if size > songs:
                t = time.perf_counter()
                if args.backend == "clickhouse" and not args.python_distractors:
                    seconds += add_distractors_in_clickhouse(
                        engine, names, size - songs, songs, real_hashes, real_thirds, rate, durations, rng
                    )
                else:
                    seconds += add_distractors(engine, size - songs, songs, real_hashes, rate, durations, rng)
                load_s = time.perf_counter() - t
                songs = size
            else:
                load_s = 0.0
            compact_s = None
            if args.compact:
                t = time.perf_counter()
                engine.compact()
                compact_s = time.perf_counter() - t
            for store in engine.store.stores:  # what a server does within counts_refresh_s of a change
                if hasattr(store, "refresh"):
                    store.refresh()
            stats = [s.stats() for s in engine.store.stores]
            index_bytes = sum(s["index_bytes"] for s in stats)
            hashes = sum(s["hashes"] for s in stats)
            memory = None
            if any(VARIANTS[v].get("memory_index") for v in args.variants.split(",")):
                if in_memory is None:
                    in_memory, memory = memory_engine(engine)
                else:
                    memory = load_memory(in_memory)
                print(f"memory index: {memory}")
            variants = run_queries(
                engine, rows, args.queries, song_names, args.max_queries, args.variants.split(","), in_memory
            )
            figures = variants[args.variants.split(",")[0]]
            if args.trace:
                with args.trace.open("a") as out:
                    # from memory when a memory variant ran (the databases' full lookups take seconds)
                    trace_queries(in_memory or engine, rows, args.queries, song_names, args.max_queries, out)
            entry = {
                "songs": songs,
                "hours": seconds / 3600,
                "hashes": hashes,
                "index_bytes": index_bytes,
                "index_kb_per_min": index_bytes / 1000 / (seconds / 60),
                "memory_index": memory,  # the memory variants' copies: load seconds, rows, bytes
                "load_seconds": load_s,
                "load_rows_per_s": hashes / load_s if load_s else None,
                "compact_seconds": compact_s,
                **figures,
                "variants": variants,
            }
            report["sizes"].append(entry)
            print(
                f"{songs:>7} songs {seconds / 3600:8.1f} h {hashes / 1e6:8.1f} M hashes "
                f"{entry['index_kb_per_min']:5.1f} kB/min, {args.length} s clips:",
                flush=True,
            )
            for name, f in variants.items():
                cat = f["latency_ms"]["catalogue"]
                unknown = f["latency_ms"].get("not_in_catalogue") or {"p50": 0, "p95": 0, "p99": 0}
                print(
                    f"  {name:<11} catalogue p50/p95/p99 {cat['p50']:7.1f} {cat['p95']:7.1f} {cat['p99']:7.1f} ms | "
                    f"unknown {unknown['p50']:7.1f} {unknown['p95']:7.1f} {unknown['p99']:7.1f} ms | "
                    f"top-1 {100 * f['accuracy']:5.1f} % FP {100 * f['false_positive_rate']:.1f} % | "
                    f"settled by triplets {100 * f['triplet_settled_share']:.0f} %, "
                    f"robust path on {100 * f['robust_path_share']:.0f} % of clips, "
                    f"{f['robust_path_ms'].get('p50', 0):.1f} ms p50",
                    flush=True,
                )
                for label, key in (
                    ("steps (ms p50/p95 where run, share of clips)", "steps_ms"),
                    ("of unknown clips", "unknown_steps_ms"),
                ):
                    steps = (
                        f"{step} {t['p50']:.1f}/{t['p95']:.1f} ({100 * t['share']:.0f} %)" for step, t in f[key].items()
                    )
                    print(f"    {label}: " + ", ".join(steps), flush=True)
        engine.close()
        if in_memory is not None:
            in_memory.close()
    if not args.keep:
        for name in names:
            drop(name)
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = "_".join(str(size) for size in sorted(int(s) for s in args.sizes.split(",")))
    out = args.out / f"shards_{args.backend}_{args.instances}inst_{sizes}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
