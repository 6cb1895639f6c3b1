"""`tunescout serve --workers 2` for real: gunicorn workers sharing rate-limit counters in Redis,
graceful shutdown on SIGTERM."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
import redis
import requests

from tests import servers
from tests.conftest import need

LIMIT_DB = 14


@pytest.fixture
def server(tmp_path):
    need(servers.redis_ready(), "Redis on 127.0.0.1:6379 (scripts/start_servers.sh)")
    limits = redis.Redis(port=servers.REDIS_PORT, db=LIMIT_DB)
    limits.flushdb()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "data_dir": str(tmp_path / "data"),
        "redis": {"host": "127.0.0.1", "port": servers.REDIS_PORT, "prefix": "tstest"},
        "rate_limit": {"redis_db_index": LIMIT_DB, "fetching_results": "6 per minute"}}))
    port = servers.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tunescout", "serve", "--config", str(config),
                             "--port", str(port), "--workers", "2", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "/api/health", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)
    yield url, proc, limits
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    limits.flushdb()


def worker_pids(proc) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def test_two_workers_share_the_rate_limit_counters(server):
    url, proc, limits = server
    assert len(worker_pids(proc)) == 2
    statuses = []
    for _ in range(12):   # a new connection each time: the workers take turns accepting
        with requests.Session() as s:
            statuses.append(s.get(url + "/api/fetch/" + "0" * 34, timeout=5).status_code)
    assert statuses == [404] * 6 + [429] * 6
    assert limits.keys("*tstest:limits*")
    # Whichever worker answers the scrape, it counts the requests of both.
    for _ in range(3):
        with requests.Session() as s:
            text = s.get(url + "/metrics", timeout=5).text
        assert 'tunescout_http_requests_total{endpoint="/api/fetch/<token>",method="GET",status="404"} 6.0' in text
        assert 'tunescout_http_requests_total{endpoint="/api/fetch/<token>",method="GET",status="429"} 6.0' in text
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    served_by = re.findall(r"worker=<(\d+)> \"GET /api/fetch", proc.stdout.read())
    assert len(served_by) == 12 and len(set(served_by)) == 2, served_by   # both workers counted


def test_sigterm_stops_gracefully(server):
    url, proc, _ = server
    assert requests.get(url + "/api/health", timeout=5).json()["status"] == "ok"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    output = proc.stdout.read()
    assert "Shutting down: Master" in output and "Traceback" not in output
