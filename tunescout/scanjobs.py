"""ScanJobs: the scans POST /api/scan starts, run by a bounded pool, their state in the result store.

A job is a recording saved under ``<data_dir>/scans`` (or a stream URL the operator allows) and a
``<token>.job`` file naming it, written last. Its states are rows of the token's result shard, each
with a higher number than the one before: ``queued`` when it is accepted, ``running`` with the
progress and the segments found so far (at most every ``PROGRESS_S``), then ``done``, ``failed``
or ``cancelled``. Any process of the service can answer for a token.

Every process of the host runs a dispatcher that takes the oldest ``.job`` file no one holds. A job
is held by an exclusive lock on its ``.lock`` file while it runs, and a run needs one of
``scanning.workers`` slot locks: the host runs that many scans at once, whatever its number of
processes. A lock dies with its process, so a job whose process was stopped or crashed is taken up
again by the next dispatcher and scanned from its start (``resumed`` counts how often); its files
are removed only once its last state is stored. Cancelling writes a ``cancelled`` state numbered
above any a run writes; the run sees it at its next progress write and stops.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import BinaryIO

from .audio import probe_recording, read_ahead, stream_windows
from .config import ScanningConfig
from .errors import NotFoundError, QueueFullError, StorageError, TuneScoutError
from .scan import Scanner, ScanParams

log = logging.getLogger(__name__)

PROGRESS_S = 2.0  # a running job's state is written (and a cancel looked for) at most this often
POLL_S = 0.5  # how often an idle dispatcher looks for queued jobs
PURGE_EVERY_S = 3600.0  # how often a dispatcher forgets jobs older than scanning.keep_days
RETRY_AFTER_S = 30  # what a client whose scan found the queue full is told to wait
RERUN_AFTER_S = 30  # a job whose run failed (its state could not be stored) is not taken again before
CANCEL_SEQ = 1 << 60  # cancelled states are numbered from here: above any state a run writes
TERMINAL = ("done", "failed", "cancelled")


@dataclasses.dataclass
class _Claim:
    """A job this process runs: its token, what to scan, and the locks it holds."""

    token: str
    job_file: Path
    source: str  # a path under the scans folder, or a stream URL
    name: str
    total_seconds: float | None
    locks: list[int]


class ScanJobs:
    """Accept, run, report and cancel scans of recordings for the API."""

    def __init__(self, engine, config: ScanningConfig, data_dir: str, params: ScanParams | None = None):
        self.engine, self.config, self.params = engine, config, params or ScanParams()
        self.results = engine.results
        self.folder = Path(data_dir) / "scans"
        self._stop = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._running: set[threading.Thread] = set()
        self._retry_at: dict[str, float] = {}  # a job whose run failed is not taken again before this
        self._purged = 0.0

    # -- the API's side

    def submit(self, upload: BinaryIO, name: str) -> dict:
        """Queue a scan of an uploaded recording; its first state.

        Raises:
            QueueFullError: scanning.workers + scanning.queue jobs are queued or running here.
            BadAudioError: the recording's first second does not decode.
            StorageError: the token's result shard does not take the job.
        """
        self._check_room()
        self.start()
        token = self.results.job_token()
        audio = self.folder / f"{token}.audio"
        try:
            with audio.open("wb") as out:
                while chunk := upload.read(1 << 20):
                    out.write(chunk)
            total = probe_recording(audio, self.engine.params.sample_rate_hz)
            return self._queue(token, str(audio), name, total)
        except BaseException:
            audio.unlink(missing_ok=True)
            raise

    def submit_url(self, url: str, name: str) -> dict:
        """Queue a scan of a stream whose URL starts with one of scanning.allowed_urls; its first state.

        Raises:
            ForbiddenError: (raised by the caller) the URL is not allowed.
            QueueFullError, StorageError: as :meth:`submit`.
        """
        self._check_room()
        self.start()
        return self._queue(self.results.job_token(), url, name or url, None)

    def url_allowed(self, url: str) -> bool:
        return any(url.startswith(prefix) for prefix in self.config.allowed_urls)

    def status(self, token: str) -> dict:
        """The job's latest state.

        Raises:
            NotFoundError: malformed or unknown token.
        """
        return json.loads(self.results.get_job(token)[1])

    def cancel(self, token: str) -> dict:
        """Cancel a queued or running job (its segments so far are kept); a finished one is left as it is.

        Raises:
            NotFoundError: malformed or unknown token.
        """
        body = self.status(token)
        if body["state"] in TERMINAL:
            return body
        body = {**body, "state": "cancelled"}
        self.results.put_job(token, CANCEL_SEQ + time.time_ns() // 1000, json.dumps(body))
        return body

    def _check_room(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if len(list(self.folder.glob("*.job"))) >= self.config.workers + self.config.queue:
            raise QueueFullError(retry_after_s=RETRY_AFTER_S)

    def _queue(self, token: str, source: str, name: str, total: float | None) -> dict:
        body = _body(token, name, "queued", total)
        self.results.put_job(token, 0, json.dumps(body))
        job = {"source": source, "name": name, "total_seconds": total}
        partial = self.folder / f"{token}.job.part"
        try:
            partial.write_text(json.dumps(job))
            partial.rename(self.folder / f"{token}.job")  # the dispatchers see it only now, whole
        except OSError as exc:
            partial.unlink(missing_ok=True)
            log.error("scan %s not queued: %s", token, exc)
            self.results.put_job(token, 1, json.dumps({**body, "state": "failed", "message": "Not queued"}))
            raise StorageError("The scan could not be queued") from exc
        return body

    # -- the dispatcher

    def pending(self) -> bool:
        """Whether jobs wait on this host (queued, or left by a process that stopped)."""
        return any(self.folder.glob("*.job"))

    def start(self) -> None:
        """Start this process's dispatcher (once): it runs queued jobs, and those a stopped process left."""
        if self._dispatcher is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._dispatcher = threading.Thread(target=self._dispatch, name="tunescout-scans", daemon=True)
            self._dispatcher.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop taking jobs; running ones stop at their next window and stay queued for the next start."""
        self._stop.set()
        for thread in [self._dispatcher, *self._running]:
            if thread is not None:
                thread.join(timeout_s)

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            try:
                self._purge()
                claim = self._claim()
            except Exception:  # a full disk, say: log it, try again later
                log.exception("scan dispatcher")
                claim = None
            if claim is None:
                self._stop.wait(POLL_S)
                continue
            thread = threading.Thread(
                target=self._run, args=(claim,), name=f"tunescout-scan-{claim.token[:8]}", daemon=True
            )
            self._running.add(thread)
            thread.start()

    def _purge(self) -> None:
        now = time.time()
        if now - self._purged >= PURGE_EVERY_S:
            self._purged = now
            self.results.purge_jobs(now - self.config.keep_days * 86400)

    def _claim(self) -> _Claim | None:
        """The oldest job no process holds, with a free slot, or None."""
        slots = (_try_lock(self.folder / f"slot-{i}.lock") for i in range(self.config.workers))
        slot = next((fd for fd in slots if fd is not None), None)
        if slot is None:
            return None
        now = time.monotonic()
        for job_file in sorted(self.folder.glob("*.job"), key=_age):
            if self._retry_at.get(job_file.stem, 0.0) > now:
                continue
            held = _try_lock(job_file.with_suffix(".lock"))
            if held is None:
                continue
            try:
                job = json.loads(job_file.read_text())
            except (OSError, ValueError):  # finished (and removed) meanwhile
                job_file.with_suffix(".lock").unlink(missing_ok=True)
                os.close(held)
                continue
            return _Claim(job_file.stem, job_file, job["source"], job["name"], job["total_seconds"], [held, slot])
        os.close(slot)
        return None

    def _run(self, claim: _Claim) -> None:
        try:
            self._scan(claim)
        except StorageError as exc:  # its state cannot be stored: tried again later, from the start
            log.warning("scan %s: %s; tried again in %d s", claim.token, exc.message, RERUN_AFTER_S)
            self._retry_at[claim.token] = time.monotonic() + RERUN_AFTER_S
        except Exception:
            log.exception("scan %s", claim.token)
            self._retry_at[claim.token] = time.monotonic() + RERUN_AFTER_S
        finally:
            for fd in claim.locks:
                os.close(fd)
            self._running.discard(threading.current_thread())

    def _scan(self, claim: _Claim) -> None:
        try:
            seq, stored = self.results.get_job(claim.token)
            last = json.loads(stored)
        except NotFoundError:  # its first state was never stored: the service stopped in between
            seq, last = 0, _body(claim.token, claim.name, "queued", claim.total_seconds)
        if last["state"] in TERMINAL:
            self._remove(claim)
            return
        resumed = last.get("resumed", 0) + (last["state"] == "running")
        body = {**_body(claim.token, claim.name, "running", claim.total_seconds), "resumed": resumed}
        writes = _Writes(self.results, claim.token, seq)
        try:
            writes.put(body)
            scanner = Scanner(self.engine, self.params)
            windows = stream_windows(
                claim.source, self.engine.params.sample_rate_hz, self.params.window_seconds, self.params.hop_seconds
            )
            for window in read_ahead(windows):  # (closed when the job returns: its decoding stops)
                if self._stop.is_set():
                    return  # left queued: the next start scans it again
                body["segments"] += [s.body() for s in scanner.feed(window)]
                body["duration_seconds"] = round(scanner.analysed_seconds, 3)
                body["progress"] = _progress(scanner.analysed_seconds, claim.total_seconds)
                if writes.due() and writes.cancelled():
                    self._remove(claim)
                    return
                writes.put(body, when_due=True)
            body["segments"] += [s.body() for s in scanner.finish()]
            body.update(state="done", progress=1.0, summary=scanner.summary().body())
        except StorageError:
            raise
        except TuneScoutError as exc:  # not decodable past its start, a stream that failed
            body.update(state="failed", message=exc.message)
        if writes.cancelled():
            self._remove(claim)
            return
        writes.put(body)  # a StorageError here keeps the files: the job is run again later
        self._remove(claim)

    def _remove(self, claim: _Claim) -> None:
        """The job's files; its lock file last (it is still held)."""
        claim.job_file.unlink(missing_ok=True)
        if not claim.source.startswith(("http://", "https://")):
            Path(claim.source).unlink(missing_ok=True)
        claim.job_file.with_suffix(".lock").unlink(missing_ok=True)


class _Writes:
    """A run's states of one job, numbered on from the last stored."""

    def __init__(self, results, token: str, seq: int):
        self.results, self.token, self.seq = results, token, seq
        self.written = -float("inf")

    def due(self) -> bool:
        return time.monotonic() - self.written >= PROGRESS_S

    def put(self, body: dict, when_due: bool = False) -> None:
        if when_due and not self.due():
            return
        self.seq += 1
        try:
            self.results.put_job(self.token, self.seq, json.dumps(body))
        except StorageError:
            if body["state"] != "running":
                raise
            log.warning("scan %s: progress not stored", self.token)  # the next write may be
        self.written = time.monotonic()

    def cancelled(self) -> bool:
        try:
            return self.results.get_job(self.token)[0] >= CANCEL_SEQ
        except (NotFoundError, StorageError):
            return False


def _body(token: str, name: str, state: str, total: float | None) -> dict:
    return {
        "token": token,
        "name": name,
        "state": state,
        "progress": 0.0 if total else None,
        "duration_seconds": 0.0,
        "total_seconds": round(total, 3) if total else None,
        "segments": [],
    }


def _progress(analysed: float, total: float | None) -> float | None:
    return round(min(analysed / total, 0.999), 3) if total else None


def _age(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive lock on path, or None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
