"""Manifest: what this machine already uploaded to a server, so a re-run skips it (JSON lines, append-only)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

DEFAULT_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tunescout"


def default_path(url: str) -> Path:
    """One manifest per server URL."""
    return DEFAULT_DIR / f"uploads-{hashlib.sha1(url.rstrip('/').encode()).hexdigest()[:12]}.jsonl"


def file_key(path: Path) -> str:
    """The file as it is now: path, size and modification time (a changed file is uploaded again)."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


class Manifest:
    """Keys of files the server has (stored now or already there). Each entry is flushed and
    fsynced as it is written, so a killed run loses at most the upload in flight."""

    def __init__(self, path: Path):
        self.path = path
        self.done: dict[str, dict] = {}
        self._lock = threading.Lock()
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.done[entry["key"]] = entry
                except (ValueError, KeyError):
                    continue  # a line cut by a crash

    def __contains__(self, key: str) -> bool:
        return key in self.done

    def record(self, key: str, outcome: str, song_id: int | None) -> None:
        entry = {"key": key, "outcome": outcome, "song_id": song_id}
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.done[key] = entry
