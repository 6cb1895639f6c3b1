"""A few thousand malformed requests from a seeded generator against a real `tunescout serve` (gunicorn).

Every answer keeps the rules of tests/fuzz_requests.py: no 5xx, every error in the one JSON shape, none
slower than SLOW_S; no worker grows past MAX_WORKER_RSS_MB, and nothing is left in the server's TMPDIR
(but for what it made there at start, while it runs; nothing at all once it stops).
Each generator class is a test of its own, so that a failure names the kind of request. The longer run
is `python bench/fuzz.py --requests 100000`.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import time

import pytest

from tests import fuzz_requests as fuzz

SEED = 1
TOTAL_REQUESTS = 3000
MAX_FAILURES = 10  # a class stops at this many failing requests (their reproductions are reported)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    media = fuzz.make_media()
    live = fuzz.start_server(folder)
    made_at_start = [p.name for p in (folder / "tmp").iterdir()]
    yield live, media, folder / "tmp", made_at_start
    live.stop()


# Classes that still break a rule, with the defect that breaks them. Strict: the fix turns them red,
# and its author removes them from here.
KNOWN_FAILURES: dict[str, str] = {}


def with_known_failures(kinds):
    for kind in kinds:
        reason = KNOWN_FAILURES.get(kind)
        yield pytest.param(kind, marks=pytest.mark.xfail(strict=True, reason=reason) if reason else ())


@pytest.mark.parametrize("kind", list(with_known_failures(fuzz.KINDS)))
def test_malformed_requests_are_refused_cleanly(kind, fuzzed):
    live, media, tmpdir, at_start = fuzzed
    workers = fuzz.worker_pids(live.proc.pid)
    for pid in workers:
        fuzz.reset_peak(pid)
    statuses, failures, slowest = collections.Counter(), [], 0.0
    for outcome in fuzz.run(live.port, fuzz.requests_of(kind, SEED, fuzz.share_of(kind, TOTAL_REQUESTS), media)):
        statuses[outcome.status] += 1
        slowest = max(slowest, outcome.elapsed_s)
        if fuzz.problems(outcome):
            failures.append(fuzz.reproduction(outcome))
            if len(failures) >= MAX_FAILURES:
                break
    assert fuzz.worker_pids(live.proc.pid) == workers, "a worker died"
    peak = {pid: fuzz.memory_mb(pid)["peak"] for pid in workers}
    print(f"{kind}: {sum(statuses.values())} requests, statuses {dict(statuses)}, slowest {slowest:.2f} s,", end=" ")
    print(f"worker peak RSS {max(peak.values()):.0f} MB")
    assert not failures, "\n".join(failures)
    assert max(peak.values()) <= fuzz.MAX_WORKER_RSS_MB, f"worker peak RSS (MB): {peak}"
    deadline = time.monotonic() + 2
    while (strays := fuzz.stray_files(tmpdir, besides=at_start)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not strays, f"left in TMPDIR: {strays}"


STOP_S = 10.0  # SIGTERM to exit, with no request in flight


def test_the_server_stops_promptly_after_the_fuzz(fuzzed):
    """Run after the fuzz: no connection it left keeps a worker from stopping."""
    live = fuzzed[0]
    workers = fuzz.worker_pids(live.proc.pid)
    live.proc.terminate()
    try:
        live.proc.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve still running {STOP_S:.0f} s after SIGTERM")
    finally:
        for pid in [live.proc.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        live.proc.wait()


def test_nothing_is_left_in_tmpdir_once_the_server_stops(fuzzed):
    """Run last: what the server made in its TMPDIR when it started is gone when it stops."""
    live, _, tmpdir, _ = fuzzed
    live.stop()
    assert not fuzz.stray_files(tmpdir)
