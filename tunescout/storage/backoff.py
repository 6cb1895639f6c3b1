"""Backoff: skip a failing part (an instance, a result shard, Redis) for a while, then probe it again."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

MAX_BACKOFF_S = 5.0  # a part that comes back is used again within seconds


class Backoff:
    """Per-part back-off: after a failure part i is skipped for 1 s, then 2, 4, at most
    MAX_BACKOFF_S after each further failure; one success clears it."""

    def __init__(self, n: int, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._down_until = [0.0] * n
        self._backoff = [0.0] * n
        self._lock = threading.Lock()

    def usable(self, i: int) -> bool:
        return self._clock() >= self._down_until[i]

    def ok(self, i: int) -> None:
        with self._lock:
            self._backoff[i] = 0.0
            self._down_until[i] = 0.0

    def failed(self, i: int) -> None:
        with self._lock:
            self._backoff[i] = min(MAX_BACKOFF_S, max(1.0, 2 * self._backoff[i]))
            self._down_until[i] = self._clock() + self._backoff[i]
