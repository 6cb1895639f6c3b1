"""Recognition quality and speed on the real-music corpus: accuracy table, false positives, speed, size.

    python bench/quality.py --queries /tmp/q_dev [--out docs/bench] [--name quality] [--http URL]

Make the clips first with ../shared/corpus/make_queries.py (see docs/ALGORITHM.md for the exact command).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import csv
import dataclasses
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import dejavu
from tunescout.audio import decode_audio, decode_query
from tunescout.config import config_from_dict
from tunescout.engine import Engine, analyse
from tunescout.memory import keep_freed_memory

DEGRADATIONS = ["clean", "noise10", "noise5", "noise0", "mp3_64k", "phone", "speed+2", "speed-2"]
# make_queries.py --real: time_scale (clip seconds per song second), frequency_scale (clip Hz per song Hz)
REAL_SCALES = {
    "speed+5": (1 / 1.05, 1.05),
    "speed-5": (1 / 0.95, 0.95),
    "tempo+10": (1 / 1.10, 1.0),
    "tempo-10": (1 / 0.90, 1.0),
    "pitch+1": (1.0, 2 ** (1 / 12)),
    "pitch-1": (1.0, 2 ** (-1 / 12)),
}
DEGRADATIONS += [*REAL_SCALES, "reverb", "babble0", "pink0", "opus12k", "bar"]
OFFSET_TOLERANCE_S = 0.05
BAR_SHIFTS = [-4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8]


def ingest(engine: Engine, files: list[str], workers: int) -> dict:
    """Ingest end to end the way `tunescout ingest` does: decode + fingerprint in a pool of processes,
    store from this one."""
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=context, initializer=keep_freed_memory) as pool:
        list(pool.map(exec, ["import tunescout.engine"] * workers))  # start and warm the workers first
        start = time.perf_counter()
        n = len(files)
        limits = [engine.config.fingerprinting.max_duration] * n
        for song in pool.map(
            analyse, files, [Path(f).stem for f in files], [engine.params] * n, limits, [engine.robust] * n
        ):
            engine.store_song(song)
    wall = time.perf_counter() - start
    songs, _ = engine.store.get_songs(list(range(1, len(files) + 1)))
    durations = [s.duration_seconds for s in songs.values()]
    return {
        "songs": len(songs),
        "audio_seconds": sum(durations),
        "wall_seconds": wall,
        "ingest_x_realtime": sum(durations) / wall,
        "hashes": sum(s.total_hashes for s in songs.values()),
    }


def fingerprint_speed(files: list[str], params, robust=None) -> float:
    """x realtime of PCM -> hashes on one core (decoding excluded): the pair family, or both with robust."""

    def fingerprint(samples):
        if robust is None:
            return dejavu.fingerprint_reference(samples, params)
        return dejavu.robust.fingerprint_reference_families(samples, params, robust)

    audio, spent = 0.0, 0.0
    fingerprint(decode_audio(files[0], params.sample_rate_hz).samples)  # warm-up
    for path in files[:10]:
        samples = decode_audio(path, params.sample_rate_hz).samples
        t = time.process_time()
        fingerprint(samples)
        spent += time.process_time() - t
        audio += samples.size / params.sample_rate_hz
    return audio / spent


def run_queries(engine: Engine, queries: Path, http: str | None) -> list[dict]:
    """Each clip through ``Engine.match_samples`` (the answer, its path and the server-side time), and
    the pair path's best margin apart (untimed), for the accuracy curve over the pair bar."""
    rows = list(csv.DictReader((queries / "ground_truth.csv").open()))
    out = []
    for row in rows:
        data = (queries / row["query_file"]).read_bytes()
        t0 = time.perf_counter()
        decoded = decode_query(data, engine.params.sample_rate_hz, 0.0, engine.config.recognizing.max_duration)
        t1 = time.perf_counter()
        found = engine.match_samples(decoded)
        t2 = time.perf_counter()
        if http:
            import requests

            requests.post(f"{http}/api/recognize", files={"file": ("q.wav", data)}, timeout=30)
        laps, best = found.timings, found.results[0] if found.results else None
        margin, pair_top = pair_margin(engine, decoded)
        path = "none" if best is None else "verify" if "verify" in laps else "robust" if "robust" in laps else "pair"
        out.append(
            {
                **row,
                "top": best.song_name if best else None,
                "margin": margin,
                "pair_top": pair_top,
                "path": path,
                "offset_s": best.offset_seconds if best else None,
                "time_scale": best.time_scale if best else 1.0,
                "frequency_scale": best.frequency_scale if best else 1.0,
                "server_ms": (t2 - t1) * 1000,
                "robust_ms": laps.get("robust"),
                "tempo_ms": laps.get("tempo"),
                "decode_ms": (t1 - t0) * 1000,
            }
        )
    return out


def pair_margin(engine: Engine, decoded) -> tuple[float, str | None]:
    """The pair path's best song and its no-match margin (its second query's when it would ask one;
    -1e9 and None for no song)."""
    views: dict = {}
    hashes, offsets = dejavu.fingerprint_query(decoded.samples, engine.params, views=views)
    search = engine.searcher.search(hashes, offsets)
    scored = search.scored
    if (not scored or scored[0][0] < 0) and engine.searcher.worth_a_second_query(search):
        hashes, offsets = dejavu.fingerprint_query(decoded.samples, engine.params, second=True, views=views)
        scored = engine.searcher.search(hashes, offsets).scored
    if not scored:
        return -1e9, None
    margin, best = scored[0]
    return margin, engine.store.get_songs([best.song_id])[0][best.song_id].song_name


REPEAT_CORRELATION = 0.8  # the song's audio at both offsets is this alike: a repeat of the passage
REPEAT_LAG_STEP = 32  # samples (2.9 ms) between the lags the repeat test tries


def mark_repeats(results: list[dict], files: list[str], params) -> None:
    """For right-song answers off by more than 50 ms, say whether the song really repeats there.

    Compares the song's log spectrogram over the clip's length at the true and at the reported
    offset (Pearson correlation). A loop in game music correlates near 1; a wrong offset does not.
    The reported offset is a whole frame (23 ms) and a loop need not repeat a whole number of
    frames later, so the comparison takes the best lag within the same 50 ms that a right offset
    is allowed (``repeat_correlation``); ``repeat_correlation_at_offset`` is the correlation at
    the reported offset alone. Sets row["repeat"] True/False on those rows.
    """
    from dejavu.spectrogram import spectrogram

    by_name = {Path(f).stem: f for f in files}
    songs: dict[str, np.ndarray] = {}
    tolerance = int(OFFSET_TOLERANCE_S * params.sample_rate_hz)
    for row in results:
        if row["top"] != row["track_id"] or row["offset_s"] is None:
            continue
        true_s = float(row["true_offset_s"])
        if abs(_song_offset(row) - true_s) <= OFFSET_TOLERANCE_S:
            continue
        if row["track_id"] not in songs:
            songs[row["track_id"]] = decode_audio(by_name[row["track_id"]], params.sample_rate_hz).samples
        song, n = songs[row["track_id"]], int(float(row["length_s"]) * params.sample_rate_hz)
        a, b = int(true_s * params.sample_rate_hz), int(max(row["offset_s"], 0) * params.sample_rate_hz)
        m = min(song[a : a + n].size, song[b + tolerance : b + tolerance + n].size)
        if m < params.n_fft:
            row["repeat"] = False
            continue
        x = spectrogram(song[a : a + m], params).ravel()
        correlation = {
            lag: float(np.corrcoef(x, spectrogram(song[b + lag : b + lag + m], params).ravel())[0, 1])
            for lag in range(-(min(tolerance, b) // REPEAT_LAG_STEP) * REPEAT_LAG_STEP, tolerance + 1, REPEAT_LAG_STEP)
        }
        row["repeat_correlation_at_offset"] = correlation[0]
        row["repeat_correlation"] = max(correlation.values())
        row["repeat"] = row["repeat_correlation"] >= REPEAT_CORRELATION


def summarise(results: list[dict]) -> dict:
    positives = [r for r in results if r["is_negative"] != "1"]
    negatives = [r for r in results if r["is_negative"] == "1"]
    table = collections.defaultdict(dict)
    for deg in DEGRADATIONS:
        for length in sorted({r["length_s"] for r in positives}, key=float):
            cell = [r for r in positives if r["degradation"] == deg and r["length_s"] == length]
            if cell:
                table[deg][length] = np.mean([_correct(r, 0) for r in cell])
    fp = np.mean([_answered(r, 0) for r in negatives]) if negatives else float("nan")
    fp_by_condition = {
        deg: float(np.mean([_answered(r, 0) for r in cell]))
        for deg in DEGRADATIONS
        if (cell := [r for r in negatives if r["degradation"] == deg])
    }
    curve = [
        {
            "bar_shift": s,
            "accuracy": float(np.mean([_correct(r, s) for r in positives])),
            "false_positive_rate": float(np.mean([_answered(r, s) for r in negatives])),
        }
        for s in BAR_SHIFTS
    ]
    right = [r for r in positives if _correct(r, 0)]
    errors = np.array([abs(_song_offset(r) - float(r["true_offset_s"])) for r in right])
    server = np.array([r["server_ms"] for r in results])
    ten = np.array([r["server_ms"] for r in results if r["length_s"] == "10"] or [np.nan])
    robust_ms = np.array([r["robust_ms"] for r in results if r.get("robust_ms") is not None] or [np.nan])
    tempo_ms = np.array([r["tempo_ms"] for r in results if r.get("tempo_ms") is not None] or [np.nan])
    return {
        "accuracy": table,
        "false_positive_rate": float(fp),
        "false_positive_rate_by_condition": fp_by_condition,
        "scale_error": _scale_errors(right),
        "robust_path_ms": {
            "runs": int(np.isfinite(robust_ms).sum()),
            "p50": float(np.nanmedian(robust_ms)),
            "p95": float(np.nanpercentile(robust_ms, 95)),
        },
        "tempo_fit_ms": {  # every pair answer; the peaks are read and fitted only for those that drift
            "runs": int(np.isfinite(tempo_ms).sum()),
            "p50": float(np.nanmedian(tempo_ms)),
            "p95": float(np.nanpercentile(tempo_ms, 95)),
            "p99": float(np.nanpercentile(tempo_ms, 99)),
        },
        "threshold_curve": curve,
        "offset_within_50ms": float(np.mean(errors <= OFFSET_TOLERANCE_S)) if right else None,
        "offset_other_repeat": float(np.mean([r.get("repeat", False) for r in right])) if right else None,
        "offset_wrong": float(
            np.mean([(e > OFFSET_TOLERANCE_S) and not r.get("repeat", False) for e, r in zip(errors, right)])
        )
        if right
        else None,
        "offset_within_50ms_of_non_repeats": float(
            np.mean(errors[~np.array([r.get("repeat", False) for r in right])] <= OFFSET_TOLERANCE_S)
        )
        if right
        else None,
        "wrong_offset_correlations": sorted(
            round(r["repeat_correlation"], 2) for r in right if "repeat_correlation" in r and not r["repeat"]
        ),
        "offset_within_50ms_of_non_repeats_at_offset": _strict_offsets(right, errors),
        "latency_ms": {
            "p50": float(np.median(server)),
            "p95": float(np.percentile(server, 95)),
            "p50_10s": float(np.nanmedian(ten)),
            "p95_10s": float(np.nanpercentile(ten, 95)),
            "decode_p50": float(np.median([r["decode_ms"] for r in results])),
        },
        "queries": len(results),
        "negatives": len(negatives),
    }


def _strict_offsets(right: list[dict], errors: np.ndarray) -> float | None:
    """The offset figure with the repeat test at the reported offset only (no lag within 50 ms)."""
    if not right:
        return None
    repeat = np.array([r.get("repeat_correlation_at_offset", 0.0) >= REPEAT_CORRELATION for r in right])
    return float(np.mean(errors[~repeat] <= OFFSET_TOLERANCE_S))


def _scale_errors(right: list[dict]) -> dict:
    """Per scaled condition, the median and 90th percentile of |estimate / truth - 1| (%) of the time
    and frequency scales of right answers, and how many of them the robust path gave."""
    out = {}
    for deg, (ts, fs) in REAL_SCALES.items():
        cell = [r for r in right if r["degradation"] == deg]
        if not cell:
            continue
        err_t = np.array([abs(r["time_scale"] / ts - 1) * 100 for r in cell])
        err_f = np.array([abs(r["frequency_scale"] / fs - 1) * 100 for r in cell])
        out[deg] = {
            "answers": len(cell),
            "robust": sum(r["path"] == "robust" for r in cell),
            "tempo_fitted": sum(r["path"] == "pair" and r["time_scale"] != 1.0 for r in cell),
            "time_scale_error_pct_p50": float(np.median(err_t)),
            "time_scale_error_pct_p90": float(np.percentile(err_t, 90)),
            "frequency_scale_error_pct_p50": float(np.median(err_f)),
            "frequency_scale_error_pct_p90": float(np.percentile(err_f, 90)),
        }
    return out


def _speed(row) -> float:
    return float(row.get("speed") or 1.0) or 1.0


def _song_offset(row) -> float:
    """The answer's offset in the song's own time (an unscaled answer to a speed+-2 clip: scaled back)."""
    return row["offset_s"] if row["time_scale"] != 1.0 else row["offset_s"] / _speed(row)


def _answer(row, bar_shift) -> str | None:
    """The clip's answer with the pair path's bar moved by bar_shift: the pair path's best song when it
    clears that bar; below it, the later paths' answer, counted at the default bar and under."""
    if row["margin"] >= bar_shift:
        return row["pair_top"]
    return row["top"] if row["path"] in ("robust", "verify") and bar_shift <= 0 else None


def _answered(row, bar_shift) -> bool:
    return _answer(row, bar_shift) is not None


def _correct(row, bar_shift) -> bool:
    return _answer(row, bar_shift) == row["track_id"]


def chart(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for deg, cells in summary["accuracy"].items():
        lengths = sorted(cells, key=float)
        ax.plot([float(x) for x in lengths], [100 * cells[x] for x in lengths], marker="o", label=deg)
    ax.set_xlabel("clip length (s)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"TuneScout, false positives {100 * summary['false_positive_rate']:.1f} %")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def print_report(summary: dict, ingest_stats: dict, speed: float, kb_per_min: float) -> None:
    lengths = sorted({length for cells in summary["accuracy"].values() for length in cells}, key=float)
    print("top-1 accuracy (%)        " + "".join(f"{length + ' s':>8}" for length in lengths))
    for deg, cells in summary["accuracy"].items():
        row = (f"{100 * cells[length]:8.1f}" if length in cells else f"{'':8}" for length in lengths)
        print(f"{deg:26}" + "".join(row))
    print(
        f"false positives on songs not in the catalogue: {100 * summary['false_positive_rate']:.2f} %"
        f" of {summary['negatives']} clips; by condition: "
        + ", ".join(f"{d} {100 * v:.1f} %" for d, v in summary["false_positive_rate_by_condition"].items())
    )
    for deg, e in summary["scale_error"].items():
        print(
            f"{deg:10} scale error |estimate/truth - 1| p50/p90: time {e['time_scale_error_pct_p50']:.2f}/"
            f"{e['time_scale_error_pct_p90']:.2f} %, frequency {e['frequency_scale_error_pct_p50']:.2f}/"
            f"{e['frequency_scale_error_pct_p90']:.2f} % ({e['robust']} of {e['answers']} right answers robust,"
            f" {e['tempo_fitted']} pair answers with a fitted tempo)"
        )
    rob, tempo = summary["robust_path_ms"], summary["tempo_fit_ms"]
    print(
        f"robust path (clips the pair path left): {rob['runs']} runs, p50 {rob['p50']:.1f} ms, p95 {rob['p95']:.1f} ms"
    )
    print(f"tempo fit (pair answers): p50 {tempo['p50']:.2f} ms, p95 {tempo['p95']:.2f} ms, p99 {tempo['p99']:.2f} ms")
    print(
        "bar shift -> accuracy / false positives: "
        + ", ".join(
            f"{c['bar_shift']:+d}: {100 * c['accuracy']:.1f}/{100 * c['false_positive_rate']:.1f}"
            for c in summary["threshold_curve"]
        )
    )
    print(
        f"offset error <= 50 ms when correct: {100 * (summary['offset_within_50ms'] or 0):.1f} %;"
        f" another repeat of the passage (audio correlation >= {REPEAT_CORRELATION}):"
        f" {100 * (summary['offset_other_repeat'] or 0):.1f} %;"
        f" wrong offset: {100 * (summary['offset_wrong'] or 0):.1f} %"
        f" -> within 50 ms for {100 * (summary['offset_within_50ms_of_non_repeats'] or 0):.1f} % of answers"
        f" that are not another repeat"
        f" ({100 * (summary['offset_within_50ms_of_non_repeats_at_offset'] or 0):.1f} %"
        f" when the repeat test compares at the reported offset only)"
    )
    lat = summary["latency_ms"]
    print(
        f"server-side latency: p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms; 10 s clips p50 "
        f"{lat['p50_10s']:.1f} ms, p95 {lat['p95_10s']:.1f} ms; decode p50 {lat['decode_p50']:.1f} ms"
    )
    print(f"fingerprinting (PCM -> hashes, one core): {speed:.0f}x realtime")
    print(
        f"ingest end to end ({ingest_stats['songs']} songs, {ingest_stats['audio_seconds'] / 3600:.2f} h): "
        f"{ingest_stats['ingest_x_realtime']:.0f}x realtime"
    )
    print(
        f"index: {kb_per_min:.1f} kB per minute of audio (SQLite), "
        f"{ingest_stats['hashes'] / ingest_stats['audio_seconds']:.1f} hashes per second"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=Path, required=True, help="make_queries.py output folder")
    parser.add_argument("--out", type=Path, default=Path("docs/bench"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--name", default="quality", help="file name of the JSON and PNG written to --out")
    parser.add_argument("--http", help="also send every query to this running server")
    parser.add_argument(
        "--params",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="index another fingerprint design: FingerprintParams fields changed (e.g. peak_tilt_db_per_octave=2)",
    )
    parser.add_argument(
        "--match",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="search with other MatchParams, or RobustParams as robust.NAME (reject_z=1 robust.q_first_min_ratio=0)",
    )
    args = parser.parse_args()
    fields = {f.name: f.type for f in dataclasses.fields(dejavu.FingerprintParams)}
    changed = {
        name: float(value) if "float" in fields[name] else int(value)
        for name, value in (p.split("=") for p in args.params)
    }
    params = dataclasses.replace(dejavu.DEFAULT_PARAMS, **changed).validate()
    keep_freed_memory()  # as `tunescout serve` and `ingest` do
    files = [line for line in (args.queries / "ingest.txt").read_text().split() if line]
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine.from_config(config_from_dict({"data_dir": tmp}), params)
        searched = {name: float(value) for name, value in (m.split("=") for m in args.match)}
        robust = {k.removeprefix("robust."): v for k, v in searched.items() if k.startswith("robust.")}
        match = {k: v for k, v in searched.items() if not k.startswith("robust.")}
        engine.searcher.match = dataclasses.replace(engine.match, **match).validate()
        engine.searcher.robust = dataclasses.replace(engine.searcher.robust, **robust).validate()
        stats = ingest(engine, files, args.workers)
        speed = fingerprint_speed(files, engine.params)
        speed_both = fingerprint_speed(files, engine.params, engine.robust)
        results = run_queries(engine, args.queries, args.http)
        mark_repeats(results, files, engine.params)
        # As `tunescout compact` leaves it: SQLite checkpointed and vacuumed.
        kb_per_min = engine.compact().instances[0].index_bytes / 1000 / (stats["audio_seconds"] / 60)
        engine.close()
    summary = summarise(results)
    print_report(summary, stats, speed, kb_per_min)
    print(f"fingerprinting both families (PCM -> hashes, one core): {speed_both:.0f}x realtime")
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {
        **summary,
        "ingest": stats,
        "fingerprint_x_realtime": speed,
        "fingerprint_both_families_x_realtime": speed_both,
        "index_kb_per_min": kb_per_min,
        "params_digest": params.digest(),
        "params_changed": changed,
        "match_changed": searched,
        "robust_digest": dejavu.DEFAULT_ROBUST.digest(),
    }
    json_path, png_path = (
        args.out / f"{args.name}.json",
        args.out / ("accuracy.png" if args.name == "quality" else f"{args.name}.png"),
    )
    json_path.write_text(json.dumps(figures, indent=2, default=float))
    chart(summary, png_path)
    print(f"wrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
