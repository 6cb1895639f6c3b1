"""The ClickHouse writer lock serialises every process of the host, whatever its environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tunescout.config import DatabaseConfig
from tunescout.storage.clickhouse import ClickHouseStore

# Holds the writer lock of one instance (no server needed: the lock is taken before any statement),
# printing when it got it and when it lets go.
HOLD = """
import sys, time
from tunescout.config import DatabaseConfig
from tunescout.storage.clickhouse import ClickHouseStore

store = ClickHouseStore(DatabaseConfig(port=9000, database=sys.argv[1]))
with store._writer():
    print("in", time.time(), flush=True)
    time.sleep(float(sys.argv[2]))
    print("out", time.time(), flush=True)
"""


@pytest.fixture
def databases():
    """Two database names of this test run; their lock files are removed afterwards."""
    names = [f"tstest_lock_{os.getpid()}_{i}" for i in range(2)]
    yield names
    for name in names:
        ClickHouseStore(DatabaseConfig(database=name, port=9000))._lock_path.unlink(missing_ok=True)


def hold_lock(database: str, hold_s: float, tmpdir) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, database, str(hold_s)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )


def test_writers_with_different_tmpdirs_are_serialised(tmp_path, databases):
    """A second writer with another TMPDIR waits until the first lets go of the lock."""
    database = databases[0]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = hold_lock(database, 1.5, tmp_path / "a")
    try:
        assert first.stdout.readline().split()[0] == "in"
        started = time.time()
        second = hold_lock(database, 0.0, tmp_path / "b")
        second_in = float(second.stdout.readline().split()[1])
        first_out = float(first.stdout.readline().split()[1])
        assert second.wait(10) == 0 and first.wait(10) == 0
    finally:
        first.kill()
    assert second_in >= first_out > started
    assert not list((tmp_path / "a").iterdir()) and not list((tmp_path / "b").iterdir())


def test_writers_of_other_instances_do_not_wait(tmp_path, databases):
    """The lock is per instance: a writer of another database goes ahead."""
    first = hold_lock(databases[0], 30.0, tmp_path)
    try:
        assert first.stdout.readline().split()[0] == "in"
        second = hold_lock(databases[1], 0.0, tmp_path)
        assert second.stdout.readline().split()[0] == "in"
        assert second.wait(10) == 0 and first.poll() is None
    finally:
        first.kill()
        first.wait()
