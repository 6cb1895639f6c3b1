"""create_app(config=None) -> the Flask WSGI app."""

from __future__ import annotations

from flask import Flask

from . import api, errors, metrics
from .auth import resolve_write_token
from .config import Config, load_config
from .engine import Engine
from .limits import init_cors, init_limits
from .memory import keep_freed_memory
from .scanjobs import ScanJobs


def create_app(config: Config | None = None) -> Flask:
    """Build the WSGI app; tests pass a Config, `tunescout serve` loads one."""
    config = config or load_config()
    keep_freed_memory()
    app = Flask(__name__)
    app.config["WRITE_TOKEN"] = resolve_write_token(config)
    app.json.sort_keys = False
    engine = app.extensions["tunescout"] = Engine.from_config(config)
    scans = app.extensions["tunescout_scans"] = ScanJobs(engine, config.scanning, config.data_dir)
    if scans.pending():  # left by a process that stopped: taken up now (else at the first scan)
        scans.start()
    app.register_blueprint(api.bp)
    errors.register(app)
    metrics.init_metrics(app)
    app.extensions["tunescout_limiter"] = init_limits(app, config)
    init_cors(app, config)
    return app
