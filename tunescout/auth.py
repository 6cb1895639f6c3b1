"""The write token: where it comes from, and a constant-time check of a request's bearer."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from .config import Config

TOKEN_FILE = "write_token"
log = logging.getLogger(__name__)


def resolve_write_token(config: Config) -> str:
    """The configured token (TUNESCOUT_TOKEN already folded in), else the generated one.

    The first start without a token writes a new one to ``<data_dir>/write_token``
    (mode 0600) and logs where, as a warning; later starts read it back.
    """
    if config.fingerprinting.token:
        return config.fingerprinting.token
    path = Path(config.data_dir) / TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process generated it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    # A warning: it shows even where logging was never set up, and the operator needs the file.
    log.warning("generated a write token in %s (no fingerprinting.token configured)", path.resolve())
    return token


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries the token (constant-time comparison)."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip() or not token:
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
