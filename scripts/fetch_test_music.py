#!/usr/bin/env python3
"""Fetch freely licensed music from Debian packages into a test corpus folder.

    python3 scripts/fetch_test_music.py OUTDIR [--package drascula-music ...]

For each package: `apt-get download` the candidate version of Debian's apt lists (running
`apt-get update` first when apt does not know the package), check the .deb against the SHA256
those lists give, unpack it, and copy its Ogg tracks of at least --min-seconds, byte for byte,
to OUTDIR/tracks/<track_id>.ogg. The package's copyright file goes to
OUTDIR/licenses/<package>.copyright, and OUTDIR/tracks.csv lists every track with its source
and checksum. A second run finds everything in place and downloads nothing.

Needs Debian with `main` in the apt sources, dpkg-deb, and ffprobe (Debian's ffmpeg). Uses the
standard library only, so it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Tracks left out on purpose, per package, with the reason.
SKIP = {
    "drascula-music": {
        # A second mix of track1: clips of either match the other, so neither answer is wrong.
        "track30": "another version of track1",
    },
}
COLUMNS = [
    "track_id",
    "filename",
    "duration_s",
    "sha256",
    "source_package",
    "source_version",
    "source_path",
    "license_file",
]


def main() -> int:
    args = parse_args()
    out = args.outdir.resolve()
    (out / "tracks").mkdir(parents=True, exist_ok=True)
    (out / "licenses").mkdir(exist_ok=True)
    previous = read_rows(out / "tracks.csv")
    rows = []
    for package in args.package:
        rows += fetch_package(package, out, previous, args.min_seconds)
    write_rows(out / "tracks.csv", rows)
    total_s = sum(float(r["duration_s"]) for r in rows)
    print(f"{len(rows)} tracks, {total_s / 60:.1f} min of music in {out / 'tracks'}")
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outdir", type=Path, help="corpus folder (tracks/, licenses/, tracks.csv)")
    parser.add_argument("--package", action="append", help="Debian package (repeatable; default drascula-music)")
    parser.add_argument(
        "--min-seconds", type=float, default=60.0, help="leave out shorter tracks: jingles and loops (default 60)"
    )
    args = parser.parse_args()
    args.package = args.package or ["drascula-music"]
    return args


def fetch_package(package: str, out: Path, previous: list[dict], min_seconds: float) -> list[dict]:
    """Return the package's rows of tracks.csv, downloading it only when its tracks are not in place."""
    version, sha256 = apt_candidate(package)
    license_file = out / "licenses" / f"{package}.copyright"
    kept = [r for r in previous if r["source_package"] == package and r["source_version"] == version]
    if kept and license_file.exists() and all(file_sha256(out / "tracks" / r["filename"]) == r["sha256"] for r in kept):
        print(f"{package} {version}: {len(kept)} tracks already in place")
        return kept
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=out) as tmp:
        deb = download(package, version, sha256, Path(tmp))
        root = Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        shutil.copyfile(root / "usr/share/doc" / package / "copyright", license_file)
        return copy_tracks(package, version, root, out, min_seconds)


def apt_candidate(package: str) -> tuple[str, str]:
    """Return (version, SHA256 of the .deb) of apt's candidate, updating the lists once if needed.

    Raises:
        SystemExit: when apt does not know the package even after an update.
    """
    found = apt_show(package)
    if found is None:
        print(f"apt does not know {package}: apt-get update")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
        found = apt_show(package)
    if found is None:
        sys.exit(f"{package} is not in the apt lists (needs Debian bookworm `main` in the sources)")
    return found


def apt_show(package: str) -> tuple[str, str] | None:
    """Return (Version, SHA256) of the candidate's record in the apt lists, or None."""
    proc = subprocess.run(["apt-cache", "show", "--no-all-versions", package], capture_output=True, text=True)
    fields = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line and line[0] != " ")
    if proc.returncode != 0 or "Version" not in fields or "SHA256" not in fields:
        return None
    return fields["Version"], fields["SHA256"]


def download(package: str, version: str, sha256: str, folder: Path) -> Path:
    """Download the .deb into folder and check it against the apt lists.

    Raises:
        SystemExit: when the download has another checksum.
    """
    # As root, apt downloads as its own user, who cannot write to a folder of ours: say to stay root.
    sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
    print(f"{package} {version}: apt-get download")
    subprocess.run(["apt-get", *sandbox, "download", "-qq", f"{package}={version}"], cwd=folder, check=True)
    (deb,) = folder.glob(f"{package}_*.deb")
    if file_sha256(deb) != sha256:
        sys.exit(f"{deb.name}: SHA256 differs from the apt lists ({sha256}); not using it")
    return deb


def copy_tracks(package: str, version: str, root: Path, out: Path, min_seconds: float) -> list[dict]:
    """Copy the package's Ogg files of at least min_seconds to out/tracks; return their rows."""
    prefix = package.removesuffix("-music")
    skip = SKIP.get(package, {})
    rows = []
    for path in sorted(root.rglob("*.ogg")):
        if path.is_symlink() or not path.is_file() or path.stem in skip:
            continue
        duration_s = probe_duration_s(path)
        if duration_s < min_seconds:
            continue
        track_id = f"{prefix}-{re.sub(r'[^a-z0-9]+', '_', path.stem.lower()).strip('_')}"
        dest = out / "tracks" / f"{track_id}.ogg"
        shutil.copyfile(path, dest)
        rows.append(
            {
                "track_id": track_id,
                "filename": dest.name,
                "duration_s": f"{duration_s:.3f}",
                "sha256": file_sha256(dest),
                "source_package": package,
                "source_version": version,
                "source_path": "/" + str(path.relative_to(root)),
                "license_file": f"licenses/{package}.copyright",
            }
        )
    print(f"{package} {version}: {len(rows)} tracks copied")
    return rows


def probe_duration_s(path: Path) -> float:
    """Return the duration of an audio file in seconds, as ffprobe reads it."""
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(proc.stdout.strip())


def file_sha256(path: Path) -> str:
    """Return the hex SHA256 of a file, or "" when it does not exist."""
    if not path.exists():
        return ""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_rows(path: Path) -> list[dict]:
    """Return the rows of an existing tracks.csv, or [] when there is none or it is from another layout."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader) if reader.fieldnames == COLUMNS else []


def write_rows(path: Path, rows: list[dict]) -> None:
    """Write tracks.csv sorted by track id, replacing the old file in one step."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["track_id"]))
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
