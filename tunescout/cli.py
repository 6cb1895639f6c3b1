"""The tunescout command: serve, ingest, recognize, scan, duplicates, songs, stats, compact, check-config."""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import ctypes.util
import dataclasses
import datetime
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

import click
from tqdm import tqdm

from . import __version__
from .config import ConfigError, load_config, masked
from .contract import AUDIO_EXTENSIONS, MAX_PAGE_SIZE
from .errors import DuplicateSongError, TuneScoutError
from .logs import configure_logging
from .memory import keep_freed_memory

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="config.json to use (default: $TUNESCOUT_CONFIG or ./config.json).",
)


def _config(config_path):
    """The validated config of a command, with logging set up as it says."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    configure_logging(config.logging.level, config.logging.format)
    return config


def _engine(config_path):
    """An engine for one command. It asks the instances for hash counts and lookups: keeping a copy
    in memory (recognizing.counts_refresh_s, recognizing.memory_index) pays off over many clips, not one."""
    from .engine import Engine

    config = _config(config_path)
    config = dataclasses.replace(
        config, recognizing=dataclasses.replace(config.recognizing, counts_refresh_s=0, memory_index=False)
    )
    try:
        return Engine.from_config(config)
    except TuneScoutError as exc:
        raise click.ClickException(exc.message) from exc


@click.group()
@click.version_option(__version__, prog_name="tunescout")
def main():
    """TuneScout: recognise songs from short clips."""
    if click.get_current_context().invoked_subcommand != "scan":
        # (a scan of hours meets ever larger lookups: with the allocator's defaults more of what
        # they took goes back to the system; docs/SCALE.md, "Scanning long recordings")
        keep_freed_memory()


@main.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    type=int,
    default=lambda: int(os.environ.get("TUNESCOUT_PORT", 5000)),
    help="Port (default: $TUNESCOUT_PORT or 5000).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="gunicorn worker processes (each with its own engine and connections).",
)
@click.option("--threads", type=click.IntRange(1, 64), default=4, show_default=True, help="Threads per worker.")
@click.option("--dev", is_flag=True, help="Flask's development server instead of gunicorn.")
def serve(config_path, host, port, workers, threads, dev):
    """Serve the HTTP API with gunicorn (the config is validated once, here)."""
    config = _config(config_path)
    if not dev:
        from .serving import prepare_metrics_dir

        prepare_metrics_dir()  # before prometheus_client is imported anywhere in this process
    if dev:
        from .app import create_app

        try:
            app = create_app(config)
        except TuneScoutError as exc:
            raise click.ClickException(exc.message) from exc
        app.run(host=host, port=port, threaded=True)
        return
    try:  # fail here, with a clear message, rather than in every worker
        from .auth import resolve_write_token
        from .engine import Engine

        resolve_write_token(config)  # generated once, before the workers read it
        Engine.from_config(config).close()
    except TuneScoutError as exc:
        raise click.ClickException(exc.message) from exc
    from .serving import GunicornServer

    GunicornServer(config, host, port, workers, threads).run()


def find_audio(paths) -> list[Path]:
    """Audio files under the given files and folders, recursively, sorted."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += [p for p in path.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS]
        else:
            found.append(path)
    return sorted(set(found))


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _init_worker(parent_pid: int) -> None:
    """Set up an ingest worker: it exits when the ingest process dies, however it dies.

    A ``kill -9`` of the ingest process runs none of its cleanup, and a worker waiting for its next
    file, or busy with one, would otherwise outlive it for good. Linux signals the worker when its
    parent dies (PR_SET_PDEATHSIG); elsewhere a thread watches the parent.
    """
    keep_freed_memory()
    if not _kill_on_parent_death():
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # it died before the signal was asked for
        os._exit(1)


def _kill_on_parent_death() -> bool:
    """Ask Linux for a SIGKILL when the parent process dies; False where prctl is missing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """Exit this process once its parent is gone (it is re-parented, so getppid changes)."""
    while os.getppid() == parent_pid:
        time.sleep(interval_s)
    os._exit(1)


@main.command()
@config_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Processes decoding and fingerprinting in parallel.",
)
def ingest(config_path, paths, workers):
    """Fingerprint audio files and folders into the catalogue (already stored audio is skipped)."""
    from .engine import analyse

    engine = _engine(config_path)
    files = find_audio(paths)
    outcome = {"stored": 0, "already there": 0, "failed": 0}
    failures = []
    # Decoding and fingerprinting are CPU-bound: a pool of processes does them (a fresh interpreter
    # each, nothing of this process's connections is inherited); this process stores the results.
    context = multiprocessing.get_context("spawn")
    with (
        cf.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),)) as pool,
        tqdm(total=len(files), unit="file") as bar,
    ):
        limit = engine.config.fingerprinting.max_duration
        futures = [(p, pool.submit(analyse, str(p), p.stem, engine.params, limit, engine.robust)) for p in files]
        for path, future in futures:
            try:
                engine.store_song(future.result())
                outcome["stored"] += 1
            except DuplicateSongError:
                outcome["already there"] += 1
            except TuneScoutError as exc:
                outcome["failed"] += 1
                failures.append(f"{path}: {exc.message}")
            bar.update(1)
    engine.close()
    for line in failures:
        click.echo(f"failed: {line}", err=True)
    click.echo(", ".join(f"{v} {k}" for k, v in outcome.items()))
    if outcome["failed"]:
        raise SystemExit(1)


@main.command()
@config_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def recognize(config_path, file):
    """Recognise an audio file and print the JSON result."""
    engine = _engine(config_path)
    try:
        body = engine.recognize(Path(file).read_bytes()).body()
    except TuneScoutError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        engine.close()
    click.echo(json.dumps(body, indent=2))


@main.command("check-config")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
def check_config(path):
    """Validate a config file and print it with secrets masked."""
    click.echo(json.dumps(masked(_config(path)), indent=2))


def _call(config_path, method: str, *args):
    """engine.<method>(*args)'s record as JSON on stdout; a TuneScoutError becomes a clear message, exit 1."""
    engine = _engine(config_path)
    try:
        body = getattr(engine, method)(*args).body()
    except TuneScoutError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        engine.close()
    click.echo(json.dumps(body, indent=2))
    return body


@main.group()
def songs():
    """The catalogue: list, show or delete songs."""


@songs.command("list")
@config_option
@click.option("--limit", type=click.IntRange(1, MAX_PAGE_SIZE), default=100, show_default=True)
@click.option("--cursor", help="next_cursor of the previous page.")
def songs_list(config_path, limit, cursor):
    """One page of songs, by song id."""
    _call(config_path, "list_songs", limit, cursor)


@songs.command("show")
@config_option
@click.argument("song_id", type=int)
def songs_show(config_path, song_id):
    """One song."""
    _call(config_path, "get_song", song_id)


@songs.command("delete")
@config_option
@click.argument("song_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def songs_delete(config_path, song_id, yes):
    """Remove a song and all its hashes (its clips stop matching)."""
    if not yes:
        click.confirm(f"Delete song {song_id} and all its hashes?", abort=True)
    _call(config_path, "delete_song", song_id)


@main.command()
@config_option
def compact(config_path):
    """Rewrite each instance's index compactly (after a bulk ingest or many deletes).

    ClickHouse merges its parts (each part costs every lookup time), SQLite and MariaDB give back
    the space of deleted songs. Recognition keeps working meanwhile; run it while no ingest runs
    (writes wait for it, and an SQLite write gives up after 30 s).
    """
    body = _call(config_path, "compact")
    if body["status"] != "success":
        raise click.ClickException("some instances did not answer (see above)")


@main.command()
@config_option
def upgrade(config_path):
    """Bring an index made by an earlier release up to this one, without audio.

    Songs stored without peaks get them from their stored rows, so that peak verification and the
    tempo fit reach them (`GET /api/health` says `peak_verification`). Recognition and ingest go on
    meanwhile; stopped, it goes on where it stopped when run again.
    """
    with tqdm(unit="song", desc="songs given peaks", disable=None) as bar:
        body = _call(config_path, "upgrade", bar.update)
    if body["status"] != "success":
        raise click.ClickException("some instances did not answer (see above)")


@main.command()
@config_option
def stats(config_path):
    """Songs, hashes and index bytes per instance; results stored."""
    _call(config_path, "stats")


@main.command()
@config_option
@click.argument("source")
@click.option("--format", "output", type=click.Choice(["json", "table"]), default="json", show_default=True)
@click.option("--window", type=click.FloatRange(2.0, 60.0), default=10.0, show_default=True, help="Window, seconds.")
@click.option("--hop", type=click.FloatRange(1.0, 60.0), default=5.0, show_default=True, help="Window step, seconds.")
@click.option(
    "--follow",
    type=click.FloatRange(1.0, 3600.0),
    help="Also report each song while it plays, every this many seconds of the recording (type playing).",
)
@click.option(
    "--reconnect",
    type=click.FloatRange(0.0),
    default=0.0,
    show_default=True,
    help="A live stream that ends or breaks is opened again until it answers or this many seconds have "
    "passed; the time it was off counts as silence (0: the scan ends with the stream).",
)
def scan(config_path, source, output, window, hop, follow, reconnect):
    """Scan SOURCE for catalogued songs: each segment as soon as it has ended, then a summary (json:
    one JSON line each). SOURCE is a file of any length or a live stream's http(s) URL (Icecast,
    Shoutcast, HLS .m3u8), followed until it ends. Ctrl-C stops with what is known."""
    from .audio import is_stream_url, read_ahead, stream_windows
    from .scan import Scanner, ScanParams

    if hop > window:
        raise click.BadParameter("must not exceed --window", param_hint="--hop")
    if not is_stream_url(source) and not Path(source).is_file():
        raise click.BadParameter(f"no such file: {source}", param_hint="SOURCE")
    engine = _engine(config_path)
    scanner = Scanner(engine, ScanParams(window_seconds=window, hop_seconds=hop))
    show = _show_json if output == "json" else _show_row
    interrupted = False
    # Ctrl-C ends the scan with what is known, also when a shell started it in the background with
    # SIGINT ignored (a shell without job control does that to `&` jobs); decoding runs on a thread
    # of its own (read_ahead), so the signal is seen even while FFmpeg waits on a stream.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for piece in read_ahead(stream_windows(source, engine.params.sample_rate_hz, window, hop, reconnect)):
            for segment in scanner.feed(piece):
                show(segment.body())
            for report in scanner.playing(follow) if follow else []:
                show(report.body("playing"))
    except KeyboardInterrupt:
        interrupted = True
    except TuneScoutError as exc:
        engine.close()
        raise click.ClickException(exc.message) from exc
    for segment in scanner.finish():
        show(segment.body())
    engine.close()
    show(scanner.summary(interrupted).body())


@main.command()
@config_option
@click.option(
    "--since",
    help="Check only the songs created on or after this UTC date or time (2026-12-01, ISO 8601), against all.",
)
@click.option("--song", "song_id", type=int, help="Check this one song only.")
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Keep the run's progress in this file: run again with it to go on where it stopped.",
)
@click.option("--format", "output", type=click.Choice(["json", "table"]), default="json", show_default=True)
def duplicates(config_path, since, song_id, state, output):
    """Songs that share audio (a re-encode, an edit of a longer version, a song inside a compilation):
    each pair once, with the spans they share, from the index alone (no audio). One JSON line per pair
    (json), then a summary."""
    from .duplicates import DuplicateRun, check_catalogue, duplicates_of

    if since:
        try:
            datetime.datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(f"not a date: {since}", param_hint="--since") from None
    engine = _engine(config_path)
    show = _show_json if output == "json" else _show_pair
    began, run = time.perf_counter(), DuplicateRun.load(state, since)
    try:
        if song_id is not None:
            found = duplicates_of(engine, song_id)
            run.checked = 1
        else:
            with tqdm(
                total=engine.store.count_songs(), initial=run.checked, unit="song", desc="songs checked", disable=None
            ) as bar:

                def checked(run):
                    bar.update(1)
                    if run.checked % 100 == 0:
                        run.save(state)

                found = []
                for pair in check_catalogue(engine, run, checked=checked):
                    bar.clear()
                    show({"type": "duplicate", **pair.body()})
                    found.append(pair)
                run.save(state)
    except TuneScoutError as exc:
        run.save(state)
        raise click.ClickException(exc.message) from exc
    finally:
        engine.close()
    if song_id is not None:
        for pair in found:
            show({"type": "duplicate", **pair.body()})
    elapsed = round(time.perf_counter() - began, 3)
    show({"type": "summary", "checked": run.checked, "pairs": len(run.reported), "elapsed_seconds": elapsed})


def _show_pair(body: dict) -> None:
    """A pair of songs sharing audio, or the summary, for people."""
    if body["type"] == "summary":
        pairs, checked, seconds = body["pairs"], body["checked"], body["elapsed_seconds"]
        click.echo(f"{pairs} pairs sharing audio, {checked} songs checked in {seconds} s")
        return
    click.echo(f"{body['song_name']} [{body['song_id']}] and {body['other_name']} [{body['other_id']}]:")
    for span in body["spans"]:
        click.echo(
            f"  {_clock(span['start_seconds'])} - {_clock(span['end_seconds'])} = "
            f"{_clock(span['other_start_seconds'])} - {_clock(span['other_end_seconds'])}  ({span['aligned']} hashes)"
        )


def _show_json(body: dict) -> None:
    click.echo(json.dumps(body))


def _show_row(body: dict) -> None:
    """One line of the table for people: times as h:mm:ss.s."""
    if body["type"] == "summary":
        stopped = " (stopped)" if body["interrupted"] else ""
        click.echo(
            f"{body['segments']} segments in {_clock(body['duration_seconds'])}{stopped}, "
            f"{body['elapsed_seconds']:.1f} s ({body['realtime_factor']:g}x realtime)"
        )
        return
    scale = f"  x{1 / body['time_scale']:.3f}" if body["time_scale"] != 1.0 else ""
    playing = "  (playing)" if body["type"] == "playing" else ""
    click.echo(
        f"{_clock(body['start_seconds'])} - {_clock(body['end_seconds'])}{playing}  {body['song_name']} "
        f"[{body['song_id']}] from {_clock(body['song_start_seconds'])} to {_clock(body['song_end_seconds'])}"
        f"  confidence {body['confidence']:.2f}{scale}"
    )


def _clock(seconds: float) -> str:
    hours, rest = divmod(max(seconds, 0.0), 3600)
    return f"{int(hours)}:{int(rest // 60):02d}:{rest % 60:04.1f}"
