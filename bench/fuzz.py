"""Fuzz a real `tunescout serve` with malformed requests: statuses, 5xx, slowest answer, worker memory.

    python bench/fuzz.py --requests 100000              # a fresh server (gunicorn, SQLite) of its own
    python bench/fuzz.py --kinds bomb,hostile_wav --requests 2000
    python bench/fuzz.py --show hostile_wav:37          # one request, exactly as sent
    python bench/fuzz.py --port 5000 --requests 5000    # a running server (no memory or TMPDIR figures)

The requests come from the seeded generator classes of tests/fuzz_requests.py (the CI test,
tests/tunescout/test_fuzz.py, sends a few thousand of them), mixed in a seeded order. Prints the
requests sent, their statuses, the 5xx count, the slowest answer, each worker's resident memory before
and after (and its peak), files left in the server's TMPDIR, and up to --examples failing requests of
each class; the exit code is 1 if any request broke a rule.
"""

from __future__ import annotations

import argparse
import collections
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import fuzz_requests as fuzz  # noqa: E402


def mixed_order(kinds: list[str], total: int, seed: int) -> list[tuple[str, int]]:
    """(kind, index) of every request, each class by its share, in a seeded random order."""
    order = [(kind, i) for kind in kinds for i in range(fuzz.share_of(kind, total, kinds))]
    random.Random(seed).shuffle(order)
    return order


def peak_rss_mb(pid: int) -> float:
    """A worker's peak resident memory; 0 if it has just exited."""
    try:
        return fuzz.memory_mb(pid)["peak"]
    except FileNotFoundError:
        return 0.0


def memory(pids: list[int]) -> str:
    figures = {pid: fuzz.memory_mb(pid) for pid in pids}
    return ", ".join(f"{pid}: {m['rss']:.0f} MB (peak {m['peak']:.0f})" for pid, m in figures.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", default=",".join(fuzz.KINDS), help="generator classes, comma-separated")
    parser.add_argument("--concurrency", type=int, default=fuzz.CONCURRENCY)
    parser.add_argument("--port", type=int, help="fuzz the server on this port instead of starting one")
    parser.add_argument("--examples", type=int, default=3, help="failing requests printed per class")
    parser.add_argument("--show", metavar="KIND:INDEX", help="print one request and exit")
    args = parser.parse_args()
    folder = fuzz.temp_folder()
    try:
        media = fuzz.make_media()
        if args.show:
            kind, index = args.show.rsplit(":", 1)
            request = fuzz.make_request(kind, args.seed, int(index), media)
            print(request.note, file=sys.stderr)
            sys.stdout.buffer.write(request.raw)
            return 0
        kinds = args.kinds.split(",")
        live = None if args.port else fuzz.start_server(folder)
        try:
            return fuzz_server(args, kinds, media, live, folder / "tmp")
        finally:
            if live:
                live.stop()
                print("left in TMPDIR once the server stopped:", fuzz.stray_files(folder / "tmp") or "nothing")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fuzz_server(args, kinds: list[str], media, live, tmpdir: Path) -> int:
    """Send the requests, print the figures; 1 if any request broke a rule."""
    port = args.port or live.port
    workers = fuzz.worker_pids(live.proc.pid) if live else []
    made_at_start = [p.name for p in tmpdir.iterdir()] if live else []
    if workers:
        print("worker RSS before:", memory(workers))
        for pid in workers:
            fuzz.reset_peak(pid)
    order = mixed_order(kinds, args.requests, args.seed)
    requests = (fuzz.make_request(kind, args.seed, i, media) for kind, i in order)
    statuses, failures, slowest, highest = collections.Counter(), collections.defaultdict(list), None, 0.0
    started = time.monotonic()
    for n, outcome in enumerate(fuzz.run(port, requests, args.concurrency), 1):
        statuses[outcome.status] += 1
        if slowest is None or outcome.elapsed_s > slowest.elapsed_s:
            slowest = outcome
        if fuzz.problems(outcome):
            failures[outcome.request.kind].append(outcome)
        if live and n % 1000 == 0:  # workers are replaced every serving.max_requests: sample them as they go
            highest = max([highest, *(peak_rss_mb(pid) for pid in fuzz.worker_pids(live.proc.pid))])
        if n % 5000 == 0:
            print(f"{n} requests, {sum(map(len, failures.values()))} failing", file=sys.stderr)
    elapsed = time.monotonic() - started
    if live:
        highest = max([highest, *(peak_rss_mb(pid) for pid in fuzz.worker_pids(live.proc.pid))])
    print(f"requests: {sum(statuses.values())} in {elapsed:.0f} s (concurrency {args.concurrency}, seed {args.seed})")
    print("statuses:", ", ".join(f"{s}: {c}" for s, c in sorted(statuses.items(), key=lambda i: i[0] or 0)))
    print("5xx:", sum(c for s, c in statuses.items() if s and s >= 500), "| no answer:", statuses[None])
    if slowest:
        print(f"slowest: {slowest.elapsed_s:.2f} s ({slowest.request.kind}:{slowest.request.index}, {slowest.status})")
    if workers:
        now = fuzz.worker_pids(live.proc.pid)
        print("worker RSS after:", memory(now), "" if now == workers else f"(workers were {workers})")
        print(f"highest worker peak RSS seen (sampled every 1,000 requests and at the end): {highest:.0f} MB")
        print("left in TMPDIR:", fuzz.stray_files(tmpdir, besides=made_at_start) or "nothing", end=" ")
        print(f"(besides what the server made at start: {made_at_start})")
    for kind, outcomes in sorted(failures.items()):
        print(f"\n{kind}: {len(outcomes)} failing")
        for outcome in outcomes[: args.examples]:
            print("  " + fuzz.reproduction(outcome, 160))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
