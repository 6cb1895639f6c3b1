"""Plot latency against catalogue size from bench/shards.py's JSON files: p50 and p95 of both kinds of clip.

    python bench/scaleplot.py docs/bench/shards_clickhouse_2inst_1000_10000_memory.json \
        docs/bench/shards_clickhouse_2inst_50000_memory.json --variants default,memory --out docs/scale.png

Each variant is a line per kind of clip (catalogue songs, songs not in the catalogue), solid for p50
and dashed for p95, on log-log axes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def points(files: list[Path], variants: list[str]) -> dict:
    """{(variant, kind, percentile): [(songs, ms), ...]} from the files' sizes, by catalogue size."""
    series: dict = {}
    for path in files:
        for size in json.loads(path.read_text())["sizes"]:
            for variant in variants:
                figures = size["variants"].get(variant)
                if figures is None:
                    continue
                for kind, values in figures["latency_ms"].items():
                    for q in ("p50", "p95"):
                        if q in values:
                            series.setdefault((variant, kind, q), []).append((size["songs"], values[q]))
    return {key: sorted(values) for key, values in series.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="bench/shards.py JSON files")
    parser.add_argument("--variants", default="default", help="variants to draw (comma-separated)")
    parser.add_argument("--out", type=Path, default=Path("docs/scale.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = args.variants.split(",")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"catalogue": ["tab:blue", "tab:cyan"], "not_in_catalogue": ["tab:red", "tab:orange"]}
    for (variant, kind, q), values in points(args.files, variants).items():
        songs, ms = zip(*values)
        ax.plot(
            songs,
            ms,
            marker="o",
            linestyle="-" if q == "p50" else "--",
            color=colours[kind][variants.index(variant) % 2],
            label=f"{variant}, {'catalogue songs' if kind == 'catalogue' else 'unknown audio'}, {q}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("songs in the catalogue")
    ax.set_ylabel("10 s clip, server side (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
