"""Stopping rules of the stepwise search, replayed on traces: accuracy, false positives and cost.

    python bench/shards.py --queries /tmp/q_dev --backend clickhouse --sizes 10000 --trace /tmp/trace.jsonl
    python bench/stopping.py /tmp/trace.jsonl

A trace (bench/shards.py --trace) holds, for every clip, what a lookup of its rarest hashes found
within each row budget of a ladder, and what a lookup of every hash found, with each lookup's time.
This replays a search policy on it without a database: the steps the policy would take, where it
stops (a song that clears the bar by the accept margin, or a best song too far below the bar to
ever reach it), the answer and the lookup time spent. Rules are compared on the same lookups.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
from pathlib import Path

import numpy as np


def bar_of(step: dict) -> float:
    """The no-match bar the best song of a step was measured against (aligned - margin)."""
    top = step["top"][0]
    return top["aligned"] - top["margin"]


def replay(
    clip: dict, first: int, growth: float, accept: float, reject_z: float | None, cap: int | None, lead: float = 1.0
) -> dict:
    """Where the policy stops on this clip: its answer, the steps taken and their lookup time.

    first, growth: the row budget of the first lookup and the factor between budgets;
    accept: the margin over the bar that ends the search with an answer;
    reject_z: a best song whose aligned count, plus reject_z standard deviations, projected to every
        hash the clip holds, stays below the bar ends the search with no answer (None: never);
    cap: never look up more than this many rows (None: every hash at the end).
    """
    steps = clip["steps"]
    if cap is not None:  # the capped final lookup: the largest step within the cap
        steps = [st for st in steps if st["rows"] <= cap] or steps[:1]
    budget, spent, taken = first, 0.0, 0
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        if not last and step["budget"] is not None and step["budget"] < budget:
            continue
        spent += step["ms"]
        taken += 1
        top = step["top"][0] if step["top"] else None
        if top and (top["margin"] >= accept or (last and top["margin"] >= 0)):
            return {"answer": top["song"], "ms": spent, "steps": taken, "why": "accept"}
        if last:
            break
        if reject_z is not None:
            share = min(lead * step["rows"] / max(clip["rows"], 1), 1.0)
            aligned = top["aligned"] if top else 0
            bar = bar_of(step) if top else 5.0 + 3.0 * math.log(max(clip["query_hashes"], 1) / 1000)
            if (aligned + reject_z * math.sqrt(aligned + 1)) / share < bar:
                return {"answer": None, "ms": spent, "steps": taken, "why": "reject"}
        budget = max(budget, step["rows"]) * growth
    return {"answer": None, "ms": spent, "steps": taken, "why": "end"}


def evaluate(clips: list[dict], **policy) -> dict:
    ms = {"catalogue": [], "not_in_catalogue": []}
    right, wrong, fp, steps = [], 0, [], []
    lost = collections.Counter()
    for clip in clips:
        out = replay(clip, **policy)
        positive = bool(clip["truth"])
        ms["catalogue" if positive else "not_in_catalogue"].append(out["ms"])
        steps.append(out["steps"])
        if positive:
            right.append(out["answer"] == clip["truth"])
            wrong += out["answer"] not in (None, clip["truth"])
            if out["answer"] != clip["truth"]:
                lost[clip["degradation"]] += 1
        else:
            fp.append(out["answer"] is not None)
    return {
        "top1": float(np.mean(right)) if right else float("nan"),
        "wrong": wrong,
        "fp": float(np.mean(fp)) if fp else 0.0,
        "lookup_ms": {k: {q: float(np.percentile(v, q)) for q in (50, 95, 99)} for k, v in ms.items() if v},
        "mean_steps": float(np.mean(steps)),
        "missed_by_degradation": dict(lost),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", type=Path, nargs="+")
    args = parser.parse_args()
    clips = [json.loads(line) for path in args.traces for line in path.read_text().splitlines() if line]
    by_size = collections.defaultdict(list)
    for clip in clips:
        by_size[clip["songs"]].append(clip)
    policies = {
        "every hash at once": dict(first=10**12, growth=4.0, accept=3.0, reject_z=None, cap=None),
        "two steps (8k rows, then all)": dict(first=8000, growth=10**9, accept=3.0, reject_z=None, cap=None),
    }
    for first in (2000, 8000):
        for growth in (2.0, 4.0):
            for z, lead in ((None, 1.0), (1.0, 1.0), (1.0, 1.6), (1.0, 2.0), (0.0, 2.0)):
                name = f"first {first} x{growth:g} reject z={z} lead={lead}"
                policies[name] = dict(first=first, growth=growth, accept=3.0, reject_z=z, cap=None, lead=lead)
    for size, group in sorted(by_size.items()):
        print(f"\n{size} songs, {len(group)} clips")
        for name, policy in policies.items():
            r = evaluate(group, **policy)
            lat = r["lookup_ms"]
            cat, neg = lat.get("catalogue", {}), lat.get("not_in_catalogue", {})
            print(
                f"  {name:<42} top1 {100 * r['top1']:5.1f} % wrong {r['wrong']} fp {100 * r['fp']:4.1f} % | "
                f"catalogue p50/p95/p99 {cat.get(50, 0):6.1f} {cat.get(95, 0):7.1f} {cat.get(99, 0):7.1f} | "
                f"unknown {neg.get(50, 0):6.1f} {neg.get(95, 0):7.1f} {neg.get(99, 0):7.1f} ms | "
                f"steps {r['mean_steps']:.1f} missed {r['missed_by_degradation']}"
            )


if __name__ == "__main__":
    main()
