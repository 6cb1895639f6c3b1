"""Duplicates benchmark: a catalogue of the developer corpus with planted copies; recall and precision
of the pairs `tunescout duplicates` reports, their spans, and the time per 1,000 songs.

    .venv/bin/python bench/duplicates.py --queries /tmp/q_dev --plants 10 --seed 1 --out docs/bench

Every track of the query set's ingest.txt is stored (SQLite, one instance), then ``--plants`` of each
kind, made from tracks chosen at random: an MP3 re-encode at 64 kbit/s of a whole track, an edit (two
cuts of 20-40 s of a track, joined), and a compilation (two tracks end to end). The true pairs are
each plant with its sources (and a re-encode with the edits of the same track, which share audio too).
Pairs between tracks of the corpus itself are counted apart: a game's soundtrack reuses its themes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import wav_bytes  # noqa: E402
from tunescout.audio import decode_audio  # noqa: E402
from tunescout.config import config_from_dict  # noqa: E402
from tunescout.duplicates import DuplicateRun, check_catalogue  # noqa: E402
from tunescout.engine import Engine  # noqa: E402

SR = 11025


def plant(tracks: list[Path], n: int, rng, tmp: Path) -> list[tuple[str, Path, list[str]]]:
    """(name, file, the tracks it copies) of n re-encodes, n edits and n compilations."""
    out = []
    for i, track in enumerate(rng.choice(tracks, n, replace=False)):
        path = tmp / f"reencode{i}.mp3"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(track), "-b:a", "64k", str(path)], check=True)
        out.append((path.stem, path, [track.stem]))
    for i, track in enumerate(rng.choice(tracks, n, replace=False)):
        samples = decode_audio(track, SR).samples
        cuts = []
        for _ in range(2):
            length = rng.uniform(20, 40) * SR
            start = rng.uniform(0, max(samples.size - length, 1))
            cuts.append(samples[int(start) : int(start + length)])
        path = tmp / f"edit{i}.wav"
        path.write_bytes(wav_bytes(np.concatenate(cuts)))
        out.append((path.stem, path, [track.stem]))
    for i in range(n):
        pair = rng.choice(tracks, 2, replace=False)
        path = tmp / f"compilation{i}.wav"
        path.write_bytes(wav_bytes(np.concatenate([decode_audio(t, SR).samples for t in pair])))
        out.append((path.stem, path, [t.stem for t in pair]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=Path, required=True, help="make_queries.py output folder (its ingest.txt)")
    parser.add_argument("--plants", type=int, default=10, help="planted copies of each kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    args = parser.parse_args()
    tracks = [Path(line) for line in (args.queries / "ingest.txt").read_text().split() if line]
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        planted = plant(tracks, args.plants, rng, tmp)
        engine = Engine.from_config(config_from_dict({"data_dir": str(tmp / "data")}))
        names = {}
        for path in tracks + [p for _, p, _ in planted]:
            names[engine.fingerprint(str(path), path.stem).song_id] = path.stem
        truth = {frozenset((name, source)) for name, _, sources in planted for source in sources}
        by_source = {}
        for name, _, sources in planted:
            for source in sources:
                by_source.setdefault(source, []).append(name)
        truth |= {frozenset((a, b)) for names_ in by_source.values() for a in names_ for b in names_ if a != b}
        began = time.perf_counter()
        found = list(check_catalogue(engine, DuplicateRun()))
        elapsed = time.perf_counter() - began
        engine.close()
    pairs = {frozenset((names[d.song_id], names[d.other_id])): d for d in found}
    planted_names = {name for name, _, _ in planted}
    involving = {p for p in pairs if p & planted_names}
    corpus_pairs = sorted(sorted(p) for p in pairs if not p & planted_names)
    hit = truth & involving
    report = {
        "songs": len(names),
        "planted": {"reencode": args.plants, "edit": args.plants, "compilation": args.plants},
        "true_pairs": len(truth),
        "found_pairs_with_a_plant": len(involving),
        "recall": len(hit) / len(truth),
        "precision": len(hit) / max(len(involving), 1),
        "missed": sorted(sorted(p) for p in truth - involving),
        "false": sorted(sorted(p) for p in involving - truth),
        "pairs_within_the_corpus": corpus_pairs,
        "seconds": round(elapsed, 2),
        "seconds_per_1000_songs": round(elapsed / len(names) * 1000, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"duplicates_{len(names)}songs.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "pairs_within_the_corpus"}, indent=2))
    print(f"pairs within the corpus itself: {len(corpus_pairs)}; wrote {out}")


if __name__ == "__main__":
    main()
