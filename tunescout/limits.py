"""Per-endpoint rate limits (flask-limiter, counters in Redis) and CORS (flask-cors)."""

from __future__ import annotations

from urllib.parse import quote

from flask import Flask
from flask_cors import CORS
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import Config

# endpoint -> the rate_limit key that limits it
LIMITED_ENDPOINTS = {
    "api.recognize": "recognizing",
    "api.fetch": "fetching_results",
    "api.fingerprint": "fingerprinting",
}


def storage_uri(config: Config) -> str:
    """Redis database rate_limit.redis_db_index of the configured Redis, or memory without Redis."""
    redis = config.redis
    if not redis.host:
        return "memory://"
    auth = quote(redis.user, safe="")
    if redis.password:
        auth += ":" + quote(redis.password, safe="")
    auth = f"{auth}@" if auth else ""
    return f"redis://{auth}{redis.host}:{redis.port}/{config.rate_limit.redis_db_index}"


def init_limits(app: Flask, config: Config) -> Limiter | None:
    """Limit each API endpoint per client address; None when rate_limit.enabled is false.

    Counters live in Redis, shared by every worker; when Redis does not answer, each worker falls
    back to counting in memory and the service keeps answering. Over the limit: 429 with
    Retry-After (the JSON body comes from errors.register).
    """
    if config.rate_limit.trust_proxy:
        # Behind one reverse proxy: the client is the last address it appended to X-Forwarded-For.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)
    if not config.rate_limit.enabled:
        return None
    timeout = config.redis.timeout_s
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=storage_uri(config),
        storage_options={"socket_timeout": timeout, "socket_connect_timeout": timeout} if config.redis.host else {},
        strategy="fixed-window",
        headers_enabled=True,
        in_memory_fallback_enabled=True,
        swallow_errors=True,
        key_prefix=f"{config.redis.prefix}:limits",
    )
    for endpoint, key in LIMITED_ENDPOINTS.items():
        view = app.view_functions[endpoint]
        app.view_functions[endpoint] = limiter.limit(getattr(config.rate_limit, key))(view)
    return limiter


def init_cors(app: Flask, config: Config) -> None:
    """CORS headers for the allowed_origin list ("*" allows any); none when the list is empty."""
    if not config.allowed_origin:
        return
    origins = "*" if "*" in config.allowed_origin else list(config.allowed_origin)
    CORS(
        app,
        resources={r"/api/*": {"origins": origins}},
        allow_headers=["Authorization", "Content-Type"],
        methods=["GET", "POST", "DELETE", "OPTIONS"],
        expose_headers=["Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"],
        max_age=600,
        send_wildcard=origins == "*",
    )
