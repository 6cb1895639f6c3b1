"""`tunescout serve --workers 2` for real: gunicorn workers sharing rate-limit counters in Redis,
graceful shutdown on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
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
    live = servers.LiveServer(
        tmp_path,
        {
            "redis": {"host": "127.0.0.1", "port": servers.REDIS_PORT, "prefix": "tstest"},
            "rate_limit": {"redis_db_index": LIMIT_DB, "fetching_results": "6 per minute"},
        },
        threads=1,
    )
    yield live
    live.stop()
    limits.flushdb()


def worker_pids(proc, expected: int = 2, wait_s: float = 15.0) -> set[int]:
    """The master's worker processes (waiting a little: workers boot one after the other)."""
    deadline = time.monotonic() + wait_s
    while True:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True)
        pids = {int(p) for p in out.stdout.split()}
        if len(pids) >= expected or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


def test_rate_limit_counters_are_shared_between_processes(tmp_path, server):
    """Two servers (separate processes, like gunicorn workers or app hosts) share the counters:
    requests alternate between them and the limit holds for their sum."""
    url, proc, limits = server.url, server.proc, redis.Redis(port=servers.REDIS_PORT, db=LIMIT_DB)
    assert len(worker_pids(proc)) == 2
    other = servers.LiveServer(
        tmp_path / "other",
        {
            "redis": {"host": "127.0.0.1", "port": servers.REDIS_PORT, "prefix": "tstest"},
            "rate_limit": {"redis_db_index": LIMIT_DB, "fetching_results": "6 per minute"},
        },
        workers=1,
    )
    try:
        statuses = [
            requests.get((url, other.url)[i % 2] + "/api/fetch/" + "0" * 34, timeout=5).status_code for i in range(12)
        ]
    finally:
        other.stop()
    assert statuses == [404] * 6 + [429] * 6
    assert limits.keys("*tstest:limits*")


def test_metrics_add_up_every_worker(server):
    url = server.url
    for _ in range(8):
        with requests.Session() as s:
            s.get(url + "/api/fetch/" + "0" * 34, timeout=5)
    for _ in range(3):  # whichever worker answers the scrape, it reports the sum of both
        with requests.Session() as s:
            text = s.get(url + "/metrics", timeout=5).text
        assert 'tunescout_http_requests_total{endpoint="/api/fetch/<token>",method="GET",status="404"} 6.0' in text
        assert 'tunescout_http_requests_total{endpoint="/api/fetch/<token>",method="GET",status="429"} 2.0' in text


def test_sigterm_stops_gracefully(server):
    assert requests.get(server.url + "/api/health", timeout=5).json()["status"] == "ok"
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    output = server.stop()
    assert "Shutting down: Master" in output and "Traceback" not in output


def test_gunicorn_logs_follow_the_configured_format(capsys):
    import json
    import logging

    from gunicorn.config import Config as GunicornConfig

    from tunescout.config import LoggingConfig
    from tunescout.serving import _logger_class

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    cfg = GunicornConfig()
    cfg.set("accesslog", "-")
    try:
        logger = _logger_class(LoggingConfig(level="INFO", format="json"))(cfg)
        logger.error_log.info("Booting worker with pid: %s", 7)
        logging.getLogger("tunescout.test").info("from the app")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name in ("gunicorn.error", "gunicorn.access"):
            logging.getLogger(name).handlers.clear()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["logger"], r["message"]) for r in lines] == [
        ("gunicorn.error", "Booting worker with pid: 7"),
        ("tunescout.test", "from the app"),
    ]


def test_serve_removes_the_metrics_folder_it_made_when_it_stops(tmp_path, monkeypatch):
    """Without PROMETHEUS_MULTIPROC_DIR, serve makes its metrics folder under TMPDIR; a graceful
    stop removes it (a worker exiting does not: the exit hook checks it runs in the master)."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    live = servers.LiveServer(tmp_path / "srv", {}, workers=2, threads=2)
    try:
        made = [p.name for p in tmpdir.iterdir()]
        assert len(made) == 1 and made[0].startswith("tunescout-metrics-")
        assert requests.get(live.url + "/metrics", timeout=5).status_code == 200
    finally:
        live.stop()
    assert list(tmpdir.iterdir()) == []
