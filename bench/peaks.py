"""What a degraded clip keeps of its song's index: the ceiling of what any query rule can find.

    python bench/peaks.py --queries /tmp/q_real --tracks /tmp/corpus_dev/tracks [--length 10] [--clips 20]

For the first --clips clips of catalogue songs of each unscaled condition (make_queries.py output; the
speed, tempo and pitch conditions move the peaks and are left out), compares the song's index peaks
and pairs inside the clip's span with the clip's own, without any database:

* peaks: the share of the index's peaks (``ref_peaks_per_block`` a block, the song's spectrogram) that
  are among the clip's ``query_peaks_per_block`` peaks at the same bin within +-1 frame, and within
  -1..+3 frames (a room delays peaks);
* pairs: the share of the index's pairs that the clip's query hashes (:func:`dejavu.fingerprint_query`,
  as sent to the lookup) hold at the true offset, +-1 frame;
* low: the share of the index's peaks below 200 Hz (a phone or the bar's high-pass removes them).

Prints the table and writes peaks.json under --out.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dejavu  # noqa: E402
from dejavu.peaks import find_peaks  # noqa: E402
from dejavu.spectrogram import spectrogram  # noqa: E402
from tunescout.audio import decode_audio  # noqa: E402

SCALED = ("speed", "tempo", "pitch")
LOW_HZ = 200.0
P = dejavu.DEFAULT_PARAMS


def kept_share(ref: tuple[np.ndarray, np.ndarray], clip: tuple[np.ndarray, np.ndarray], early: int, late: int) -> float:
    """Share of the ref (bins, frames) that clip holds at the same bin, ``-early..+late`` frames off."""
    frames_at = collections.defaultdict(list)
    for f, t in zip(*(a.tolist() for a in clip)):
        frames_at[f].append(t)
    kept = sum(any(-early <= u - t <= late for u in frames_at[f]) for f, t in zip(*(a.tolist() for a in ref)))
    return kept / max(1, ref[0].size)


def pairs_share(ref: tuple[np.ndarray, np.ndarray], query: tuple[np.ndarray, np.ndarray], start: int) -> float:
    """Share of the ref (hashes, frames) that the query holds at ``start`` frames into the song, +-1."""
    sent = set(zip(*(a.tolist() for a in query)))
    found = sum(any((h, t - start + d) in sent for d in (-1, 0, 1)) for h, t in zip(*(a.tolist() for a in ref)))
    return found / max(1, ref[0].size)


def measure(row: dict, queries: Path, song: np.ndarray) -> dict:
    """The three shares for one clip of a catalogue song (its samples at the index's rate)."""
    start = int(round(float(row["true_offset_s"]) / P.frame_seconds))
    frames = int(float(row["length_s"]) / P.frame_seconds)
    spec = spectrogram(song, P)
    bins, at = find_peaks(spec, P, P.ref_peaks_per_block)
    inside = (at >= start + 2) & (at < start + frames - 2)
    ref_peaks = (bins[inside], at[inside] - start)
    hashes, offsets = dejavu.fingerprint_reference(song, P)
    inside = (offsets >= start) & (offsets < start + frames - P.max_dt_frames)
    clip = decode_audio(queries / row["query_file"], P.sample_rate_hz).samples
    clip_peaks = find_peaks(spectrogram(clip, P), P, P.query_peaks_per_block)
    low_bin = LOW_HZ * P.n_fft / P.sample_rate_hz
    return {
        "peaks": kept_share(ref_peaks, clip_peaks, 1, 1),
        "peaks_late": kept_share(ref_peaks, clip_peaks, 1, 3),
        "pairs": pairs_share((hashes[inside], offsets[inside]), dejavu.fingerprint_query(clip, P), start),
        "low": float(np.mean(ref_peaks[0] < low_bin)) if ref_peaks[0].size else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=Path, required=True, help="make_queries.py output folder")
    parser.add_argument("--tracks", type=Path, required=True, help="the folder of the catalogue's tracks")
    parser.add_argument("--length", default="10", help="clip length (s)")
    parser.add_argument("--clips", type=int, default=20, help="clips per condition")
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    args = parser.parse_args()
    with open(args.queries / "ground_truth.csv", newline="") as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if r["is_negative"] == "0" and r["length_s"] == args.length and not r["degradation"].startswith(SCALED)
        ]
    songs: dict[str, np.ndarray] = {}
    table: dict[str, dict] = {}
    for condition in dict.fromkeys(r["degradation"] for r in rows):
        shares = collections.defaultdict(list)
        for row in [r for r in rows if r["degradation"] == condition][: args.clips]:
            if row["track_id"] not in songs:
                path = next(args.tracks.glob(row["track_id"] + ".*"))
                songs[row["track_id"]] = decode_audio(path, P.sample_rate_hz).samples
            for key, value in measure(row, args.queries, songs[row["track_id"]]).items():
                shares[key].append(value)
        table[condition] = {key: float(np.mean(values)) for key, values in shares.items()} | {
            "clips": len(shares["peaks"])
        }
        t = {key: 100 * value for key, value in table[condition].items() if key != "clips"}
        print(
            f"{condition:10s} index peaks kept {t['peaks']:5.1f} % (+3 frames late {t['peaks_late']:5.1f} %)"
            f"  index pairs found {t['pairs']:5.1f} %  peaks below {LOW_HZ:.0f} Hz {t['low']:4.1f} %",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peaks.json").write_text(json.dumps({"length_s": float(args.length), "conditions": table}, indent=1))
    print(f"wrote {args.out / 'peaks.json'}")


if __name__ == "__main__":
    main()
