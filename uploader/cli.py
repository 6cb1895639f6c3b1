"""The tunescout_uploader command: walk folders, upload in parallel, show progress, sum up."""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import sys
from pathlib import Path

import click
from tqdm import tqdm

from tunescout.contract import AUDIO_EXTENSIONS  # standard-library constants shared with the service

from .client import Outcome, UploadClient
from .manifest import Manifest, default_path, file_key

DEFAULT_EXTENSIONS = ",".join(AUDIO_EXTENSIONS)


def find_files(paths, extensions: set[str]) -> list[Path]:
    """Files under the given paths (recursively) with one of the extensions, sorted."""
    found = set()
    for path in map(Path, paths):
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in extensions)
        elif path.is_file():
            found.add(path)
    return sorted(found)


def read_token(token_file: str | None) -> str:
    """The write token from --token-file, else $TUNESCOUT_TOKEN (never from the command line,
    where the process list would show it)."""
    if token_file:
        token = Path(token_file).read_text().strip()
    else:
        token = os.environ.get("TUNESCOUT_TOKEN", "").strip()
    if not token:
        raise click.UsageError("no token: pass --token-file FILE or set TUNESCOUT_TOKEN")
    return token


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--url", envvar="TUNESCOUT_URL", required=True, help="Server, e.g. http://127.0.0.1:5000 ($TUNESCOUT_URL)."
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False),
    help="File holding the write token (default: $TUNESCOUT_TOKEN).",
)
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="Parallel uploads.")
@click.option("--ext", default=DEFAULT_EXTENSIONS, show_default=True, help="File extensions to upload.")
@click.option("--dry-run", is_flag=True, help="List what would be uploaded, upload nothing.")
@click.option("--fingerprint-locally", is_flag=True, help="Decode and fingerprint here; send only the hashes.")
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(dir_okay=False),
    help="Record of what the server has (default: one per URL under ~/.cache/tunescout).",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=6,
    show_default=True,
    help="Retries of 429, 5xx and connection errors.",
)
def main(paths, url, token_file, workers, ext, dry_run, fingerprint_locally, manifest_path, retries):
    """Upload every audio/video file under PATHS to a TuneScout server's /api/fingerprint.

    Files the server already has (recorded in the manifest, or answered 409) are not sent again,
    so an interrupted run is resumed by running it again. Exit code 0 only if nothing failed.
    """
    extensions = {e.strip().lower().lstrip(".") for e in ext.split(",") if e.strip()}
    manifest = Manifest(Path(manifest_path) if manifest_path else default_path(url))
    files = find_files(paths, extensions)
    todo = [(f, file_key(f)) for f in files]
    todo = [(f, key) for f, key in todo if key not in manifest]
    skipped = len(files) - len(todo)
    total_bytes = sum(f.stat().st_size for f, _ in todo)
    if dry_run:
        for f, _ in todo:
            click.echo(f)
        click.echo(f"{len(todo)} files to upload ({total_bytes / 1e6:.1f} MB), {skipped} already on the server")
        return
    client = UploadClient(url, read_token(token_file), retries=retries)
    if fingerprint_locally:
        _check_digest(client)
    counts, failures = collections.Counter(skipped=skipped), []
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="uploading", disable=None)
    pool = cf.ThreadPoolExecutor(workers)
    try:
        futures = {pool.submit(_upload_one, client, f, fingerprint_locally): (f, key) for f, key in todo}
        for future in cf.as_completed(futures):
            path, key = futures[future]
            outcome = future.result()
            counts[outcome.status] += 1
            if outcome.status == "failed":
                failures.append((path, outcome.reason))
            else:
                manifest.record(key, outcome.status, outcome.song_id)
            bar.update(path.stat().st_size)
            bar.set_postfix_str(f"{sum(counts.values()) - skipped}/{len(todo)} files")
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        _summary(counts, failures, interrupted=True)
        sys.exit(130)
    pool.shutdown()
    bar.close()
    _summary(counts, failures)
    sys.exit(1 if failures else 0)


def _upload_one(client: UploadClient, path: Path, locally: bool) -> Outcome:
    name = path.stem
    if not locally:
        return client.upload_file(path, name)
    from .local import DecodeError, fingerprint_file

    try:
        packed = fingerprint_file(str(path))
    except (DecodeError, OSError) as exc:
        return Outcome("failed", reason=f"cannot fingerprint locally: {exc}")
    return client.upload_fingerprint(packed, name)


def _check_digest(client: UploadClient) -> None:
    import dejavu

    try:
        served = client.server_digest()
    except Exception as exc:  # the server cannot be asked: let the uploads report it
        click.echo(f"warning: cannot ask the server for its parameters ({type(exc).__name__})", err=True)
        return
    if served and served != dejavu.DEFAULT_PARAMS.digest():
        raise click.ClickException(
            f"the server uses fingerprint parameters {served}, this uploader "
            f"{dejavu.DEFAULT_PARAMS.digest()}: upgrade one of them or drop "
            f"--fingerprint-locally"
        )


def _summary(counts, failures, interrupted: bool = False) -> None:
    head = "interrupted: " if interrupted else ""
    click.echo(
        f"{head}stored {counts['stored']}, already there {counts['exists'] + counts['skipped']}"
        f" ({counts['skipped']} known from the manifest), failed {len(failures)}"
    )
    for path, reason in failures:
        click.echo(f"  FAILED {path}: {reason}", err=True)


if __name__ == "__main__":
    main()
