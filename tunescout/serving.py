"""Production serving: gunicorn workers, each with its own engine and connections, made after fork."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from functools import partial

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from .config import Config, LoggingConfig
from .logs import configure_logging, make_formatter

log = logging.getLogger(__name__)
MB = 1024 * 1024


class GunicornServer(BaseApplication):
    """`tunescout serve --workers N`: the config is validated once, in the master; every worker
    builds its app (engine, database connections, Redis pools) after the fork, so nothing
    that holds a socket is shared between processes. SIGTERM stops gracefully: workers finish
    the requests in flight (up to ``graceful_timeout``), then close their connections.

    Each worker reads requests in an event loop and runs the app on ``threads`` threads once a
    request has arrived whole (tunescout.front): slow clients hold connections, not threads."""

    def __init__(self, config: Config, host: str, port: int, workers: int, threads: int = 4, timeout_s: int = 120):
        self.tunescout_config = config
        serving = config.serving
        self.options = {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "tunescout.front.FrontWorker",
            "asgi_lifespan": "off",
            "keepalive": serving.keepalive_s,
            "max_requests": serving.max_requests,
            "max_requests_jitter": serving.max_requests_jitter,
            # gunicorn's default control socket is one path per user ($HOME/.gunicorn): two servers
            # of one user would take it from each other. Nothing here uses it.
            "control_socket_disable": True,
            "timeout": timeout_s,
            "graceful_timeout": 30,
            "preload_app": False,
            "accesslog": "-",
            "worker_exit": _close_engine,
            "child_exit": _metrics_dead,
            "access_log_format": '%(h)s worker=%(p)s "%(r)s" %(s)s %(b)s %(M)sms',
            "forwarded_allow_ips": "127.0.0.1",
            "loglevel": config.logging.level.lower(),
            "logger_class": _logger_class(config.logging),
        }
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from .app import create_app
        from .front import BufferedWSGI

        config = self.tunescout_config
        return BufferedWSGI(
            create_app(config),
            threads=self.cfg.threads,
            max_body_bytes=partial(max_body_bytes, config),
            body_timeout_s=config.serving.body_timeout_s,
            body_min_rate_bytes_s=config.serving.body_min_rate_bytes_s,
            header_timeout_s=config.serving.header_timeout_s,
        )


def max_body_bytes(config: Config, path: str) -> int:
    """The largest request body a path takes: the upload limit of its endpoint (the largest for any other)."""
    if path.rstrip("/") == "/api/recognize":
        return int(config.recognizing.max_file_size_mb * MB)
    if path.rstrip("/") == "/api/scan":
        return int(config.scanning.max_file_size_mb * MB)
    return int(max(config.fingerprinting.max_file_size_mb, config.recognizing.max_file_size_mb) * MB)


def _logger_class(config: LoggingConfig) -> type[Logger]:
    """gunicorn's logger, with its error and access logs in the configured format."""

    class TuneScoutLogger(Logger):
        def setup(self, cfg):
            super().setup(cfg)
            configure_logging(config.level, config.format)
            if config.format != "plain":  # plain keeps gunicorn's own lines
                for handler in self.error_log.handlers + self.access_log.handlers:
                    handler.setFormatter(make_formatter(config.format))

    return TuneScoutLogger


def _close_engine(server, worker) -> None:
    front = getattr(worker, "asgi", None)
    if front is None:
        return
    front.close()
    scans = front.wsgi_app.extensions.get("tunescout_scans")
    if scans is not None:  # before the engine they use; a running scan is taken up again by the next start
        scans.close()
    engine = front.wsgi_app.extensions.get("tunescout")
    if engine is not None:
        engine.close()


def _remove_in(pid: int, folder: str) -> None:
    """Remove folder if this is process pid (not a worker forked from it)."""
    if os.getpid() == pid:
        shutil.rmtree(folder, ignore_errors=True)


def _metrics_dead(server, worker) -> None:
    """A finished worker's live gauges leave the sum (its counters stay counted)."""
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)


def prepare_metrics_dir() -> None:
    """Give the workers one folder for their metric files, empty, before any of them starts
    (PROMETHEUS_MULTIPROC_DIR if set, else a fresh temporary folder, removed when this process,
    the master, exits; the workers it forks inherit the exit hook, so it checks the pid)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        folder = tempfile.mkdtemp(prefix="tunescout-metrics-")
        atexit.register(_remove_in, os.getpid(), folder)
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.remove(os.path.join(folder, name))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
