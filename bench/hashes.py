"""Evidence per chance row: how much of a clip's true match each hash design finds for the index rows it reads.

    python bench/hashes.py --queries /tmp/q_dev [--length 10] [--workers 2]
    python bench/hashes.py --queries /tmp/q_real --length 10

A lookup costs the index rows of the values a clip sends (nearly all of them chance rows: other
songs' rows with the same value), and finds the clip's true rows among them. At a catalogue N times
larger a value holds about N times the rows, while a clip's true rows stay the same, so a design's
true rows per 1,000 rows read says how far it scales. Without any database, on the clip set's
catalogue (its ingest.txt), it compares:

* ``pairs``: the index's pair hashes (:func:`dejavu.fingerprint_reference`) and the clip's first query
  as the search sends it (:func:`dejavu.fingerprint_query`);
* ``triplets``: an anchor and two of its first ``ref_fanout`` targets (every two: as many rows as the
  pairs), keyed by the anchor's bin and both targets' bin and frame distances; the clip's keys pair
  two of each anchor's first ``--query-targets`` targets among ``--query-peaks`` peaks a block, at
  both phases of the hop.

A key is a true row when the clip's song holds it at the clip's offset (the offset most of the song's
matching keys agree on), +-1 frame. Per condition: keys sent, true rows found (mean and p10 of the
clips), index rows read, and true rows per 1,000 rows read. Writes hashes.json under --out.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dejavu  # noqa: E402
from dejavu.fingerprint import phase_view  # noqa: E402
from dejavu.hashing import _target_table, ragged_arange  # noqa: E402
from dejavu.peaks import ration_peaks  # noqa: E402
from tunescout.audio import decode_audio  # noqa: E402

P = dejavu.DEFAULT_PARAMS
DESIGNS = ("pairs", "triplets")


def triplet_keys(samples: np.ndarray, peaks_per_block: int, targets: int, phases: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (key, anchor frame) of every anchor with two of its first ``targets`` targets (int64 keys)."""
    keys, frames = [], []
    for phase in range(phases):
        _, candidates = phase_view(samples, P, phase)
        freq, frame = ration_peaks(candidates, P, peaks_per_block)
        table = _target_table(frame, freq, P, targets)
        for i in range(targets):
            for j in range(i + 1, targets):
                a = np.flatnonzero((table[:, i] >= 0) & (table[:, j] >= 0))
                b, c = table[a, i], table[a, j]
                f = freq.astype(np.int64)
                t = frame.astype(np.int64)
                keys.append(
                    f[a] << 40
                    | (f[b] - f[a] + 128) << 32
                    | (f[c] - f[a] + 128) << 24
                    | (t[b] - t[a]) << 12
                    | (t[c] - t[a])
                )
                frames.append(t[a])
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    both = np.unique(np.stack([np.concatenate(keys), np.concatenate(frames)], 1), axis=0)
    return both[:, 0], both[:, 1]


def reference(path: str) -> tuple[str, dict]:
    """A catalogue song's rows in each design: (keys, frames), sorted by key."""
    samples = decode_audio(path, P.sample_rate_hz, max_seconds=3600).samples
    hashes, offsets = dejavu.fingerprint_reference(samples, P)
    rows = {
        "pairs": (hashes.astype(np.int64), offsets.astype(np.int64)),
        "triplets": triplet_keys(samples, P.ref_peaks_per_block, P.ref_fanout, 1),
    }
    for design, (keys, frames) in rows.items():
        order = np.argsort(keys, kind="stable")
        rows[design] = (keys[order], frames[order])
    return Path(path).stem, rows


def true_rows(keys: np.ndarray, frames: np.ndarray, song: tuple[np.ndarray, np.ndarray]) -> int:
    """How many of the clip's (key, frame) the song holds at the clip's offset (the most common one), +-1."""
    song_keys, song_frames = song
    lo, hi = np.searchsorted(song_keys, keys, "left"), np.searchsorted(song_keys, keys, "right")
    n = hi - lo
    if not n.sum():
        return 0
    clip_row = np.repeat(np.arange(keys.size), n)
    song_row = np.repeat(lo, n) + ragged_arange(n)
    delta = song_frames[song_row] - frames[clip_row]
    values, counts = np.unique(delta, return_counts=True)
    best = values[np.argmax(counts)]
    return int(np.unique(clip_row[np.abs(delta - best) <= 1]).size)


def measure(row: dict, queries: Path, songs: dict, rows_of, args) -> dict:
    """Keys sent, true rows and index rows read of one clip, per design."""
    samples = decode_audio(queries / row["query_file"], P.sample_rate_hz, max_seconds=120).samples
    sent = {
        "pairs": tuple(a.astype(np.int64) for a in dejavu.fingerprint_query(samples, P)),
        "triplets": triplet_keys(samples, args.query_peaks, args.query_targets, P.query_shifts),
    }
    out = {}
    for design, (keys, frames) in sent.items():
        found = true_rows(keys, frames, songs[row["track_id"]][design]) if row["track_id"] else 0
        out[design] = (int(keys.size), found, int(rows_of(design, keys).sum()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=Path, required=True, help="make_queries.py output folder")
    parser.add_argument("--length", default="10", help="clip length (s)")
    parser.add_argument("--query-peaks", type=int, default=20, help="triplets: query peaks a block")
    parser.add_argument("--query-targets", type=int, default=6, help="triplets: query targets an anchor")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    args = parser.parse_args()

    files = [line for line in (args.queries / "ingest.txt").read_text().split() if line]
    with cf.ProcessPoolExecutor(args.workers) as pool:
        songs = dict(pool.map(reference, files, chunksize=4))
    index = {d: np.sort(np.concatenate([s[d][0] for s in songs.values()])) for d in DESIGNS}

    def rows_of(design: str, keys: np.ndarray) -> np.ndarray:
        return np.searchsorted(index[design], keys, "right") - np.searchsorted(index[design], keys, "left")

    clips = [r for r in csv.DictReader((args.queries / "ground_truth.csv").open()) if r["length_s"] == args.length]
    with cf.ThreadPoolExecutor(args.workers) as pool:
        measured = list(pool.map(lambda r: measure(r, args.queries, songs, rows_of, args), clips))

    report = {
        "songs": len(files),
        "length_s": float(args.length),
        "index_rows": {d: int(index[d].size) for d in DESIGNS},
        "triplet_query": {"peaks_per_block": args.query_peaks, "targets": args.query_targets},
        "conditions": {},
    }
    groups: dict[str, list[dict]] = {}
    for row, m in zip(clips, measured):
        groups.setdefault("not in catalogue" if row["is_negative"] == "1" else row["degradation"], []).append(m)
    print(
        f"{len(files)} songs, {args.length} s clips; per clip: keys sent, true rows (mean, p10), rows read,"
        " true per 1,000 rows"
    )
    for condition, ms in sorted(groups.items()):
        report["conditions"][condition] = entry = {"clips": len(ms)}
        line = f"  {condition:18s}"
        for design in DESIGNS:
            sent, found, read = (np.array([m[design][k] for m in ms], float) for k in range(3))
            entry[design] = {
                "keys": round(float(sent.mean()), 1),
                "true_rows": round(float(found.mean()), 1),
                "true_rows_p10": round(float(np.percentile(found, 10)), 1),
                "rows_read": round(float(read.mean()), 1),
                "true_per_1000_rows": round(1000 * float(found.sum()) / max(float(read.sum()), 1.0), 2),
            }
            e = entry[design]
            line += f" | {design} {e['keys']:6.0f} {e['true_rows']:6.1f} {e['true_rows_p10']:5.0f}"
            line += f" {e['rows_read']:7.0f} {e['true_per_1000_rows']:7.2f}"
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"hashes_{args.queries.name.removeprefix('q_')}_{args.length}s.json"
    (args.out / name).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
