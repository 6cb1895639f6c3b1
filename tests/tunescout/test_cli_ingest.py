"""`tunescout ingest` as a real process: its pool of workers does not outlive it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.conftest import ROOT, music_like, wav_bytes


def children(pid: int) -> dict[int, str]:
    """The live (not zombie) processes whose parent is pid, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (alive := process_state(int(entry.name))) and alive[0] == pid:
            found[int(entry.name)] = alive[1]
    return found


def process_state(pid: int) -> tuple[int, str] | None:
    """(parent pid, command line) of a running process; None once it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return None if state in ("Z", "X") else (int(ppid), cmdline)


def test_kill_9_of_ingest_takes_its_workers_with_it(tmp_path):
    """SIGKILL the ingest process while its two workers decode: no worker (nor the pool's
    resource tracker) is left running."""
    rng = np.random.default_rng(11)
    music = tmp_path / "music"
    music.mkdir()
    for i in range(12):  # seconds of work for two workers: the kill lands while they decode
        (music / f"long{i}.wav").write_bytes(wav_bytes(music_like(rng, 180)))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"data_dir": str(tmp_path / "data")}))
    ingest = subprocess.Popen(
        [sys.executable, "-m", "tunescout", "ingest", str(music), "--workers", "2", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pool: set[int] = set()
    try:
        deadline = time.monotonic() + 30
        while len(workers := {p for p, cmd in children(ingest.pid).items() if "spawn_main" in cmd}) < 2:
            assert ingest.poll() is None and time.monotonic() < deadline, "the pool never started"
            time.sleep(0.05)
        pool = set(children(ingest.pid))
        assert workers <= pool
        ingest.send_signal(signal.SIGKILL)
        ingest.wait()
        deadline = time.monotonic() + 10
        while survivors := {p for p in pool if process_state(p)}:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        ingest.kill()
        ingest.wait()
        for pid in filter(process_state, pool):  # only when the test fails: leave no stray process
            os.kill(pid, signal.SIGKILL)
    assert not survivors, f"still running after the ingest process was killed: {survivors}"
