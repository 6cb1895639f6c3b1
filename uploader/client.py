"""UploadClient: POST one file (or its local fingerprint) to /api/fingerprint, with retries."""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path

import requests

RETRY_STATUSES = {429, 500, 502, 503, 504}


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: str  # "stored", "exists" or "failed"
    song_id: int | None = None
    reason: str = ""


class UploadClient:
    """Uploads with the bearer token; 429, 5xx and connection errors are retried with exponential
    back-off (honouring Retry-After); other 4xx are final. The token is never logged."""

    def __init__(
        self, url: str, token: str, retries: int = 6, backoff_s: float = 1.0, timeout_s: float = 600.0, sleep=time.sleep
    ):
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout = (10.0, timeout_s)
        self._sleep = sleep
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"

    def server_digest(self) -> str:
        """The fingerprint parameters' digest the server uses (GET /api/health)."""
        resp = self._session.get(f"{self.url}/api/health", timeout=self.timeout)
        return resp.json().get("params_digest", "")

    def upload_file(self, path: Path, name: str) -> Outcome:
        def send():
            with path.open("rb") as f:
                return self._session.post(
                    f"{self.url}/api/fingerprint",
                    files={"file": (path.name, f)},
                    data={"name": name},
                    timeout=self.timeout,
                )

        return self._with_retries(send)

    def upload_fingerprint(self, packed: bytes, name: str) -> Outcome:
        def send():
            return self._session.post(
                f"{self.url}/api/fingerprint",
                files={"fingerprint": (f"{name}.tsfp", packed, "application/octet-stream")},
                data={"name": name},
                timeout=self.timeout,
            )

        return self._with_retries(send)

    def _with_retries(self, send) -> Outcome:
        reason = ""
        for attempt in range(self.retries + 1):
            try:
                resp = send()
            except requests.RequestException as exc:
                reason, wait = f"connection error: {type(exc).__name__}", None
            else:
                body = _json(resp)
                if resp.status_code == 200:
                    return Outcome("stored", body.get("song_id"))
                if resp.status_code == 409:
                    return Outcome("exists", body.get("song_id"))
                reason = f"HTTP {resp.status_code}: {body.get('message', resp.reason)}"
                if resp.status_code not in RETRY_STATUSES:
                    return Outcome("failed", reason=reason)
                wait = _retry_after(resp)
            if attempt < self.retries:
                # Retry-After counts whole seconds: a 0 means "within this second", not "at once",
                # so it waits backoff_s. Jitter either way, so that parallel uploads do not retry
                # in lock-step.
                base = max(wait, self.backoff_s) if wait is not None else self.backoff_s * 2**attempt
                delay = base * (1 + random.random() / 2)
                self._sleep(min(delay, 120.0))
        return Outcome("failed", reason=f"{reason} (after {self.retries} retries)")


def _json(resp) -> dict:
    try:
        body = resp.json()
        return body if isinstance(body, dict) else {}
    except ValueError:
        return {}


def _retry_after(resp) -> float | None:
    try:
        return max(0.0, float(resp.headers.get("Retry-After", "")))
    except ValueError:
        return None
