"""ResultShards: tokens that name their shard, and results stored on exactly one shard."""

from __future__ import annotations

import re
import secrets
import time

from .errors import NotFoundError, StorageError
from .storage.backoff import Backoff
from .storage.base import ResultStore

# 32 hex digits (128 random bits), then 2 hex digits naming the result shard.
_TOKEN = re.compile(r"\A[0-9a-f]{32}([0-9a-f]{2})\Z")


def new_token(shard: int) -> str:
    """A fresh token routed to result shard ``shard``."""
    return f"{secrets.token_hex(16)}{shard:02x}"


def shard_of_token(token: str, n_shards: int) -> int:
    """The shard a token routes to.

    Raises:
        NotFoundError: the token is malformed or names no configured shard.
    """
    match = _TOKEN.match(token)
    if not match or int(match.group(1), 16) >= n_shards:
        raise NotFoundError()
    return int(match.group(1), 16)


class ResultShards:
    """Store each result on one shard, chosen at random; fall back to the others."""

    def __init__(self, shards: list[ResultStore], clock=time.monotonic):
        self.shards = shards
        self.health = Backoff(len(shards), clock)

    def save(self, body_for_token) -> str:
        """Store ``body_for_token(token)`` and return the token.

        Raises:
            StorageError: no shard could store it (the result is not lost silently).
        """
        first = secrets.randbelow(len(self.shards))
        ring = [(first + step) % len(self.shards) for step in range(len(self.shards))]
        # Shards known to be down are tried last, so a result is stored if any shard can take it.
        for shard in sorted(ring, key=lambda i: not self.health.usable(i)):
            token = new_token(shard)
            try:
                self.shards[shard].put_result(token, body_for_token(token))
            except StorageError:
                self.health.failed(shard)
                continue
            self.health.ok(shard)
            return token
        raise StorageError("No result store can take the result")

    def load(self, token: str) -> str:
        """The stored body of a token.

        Raises:
            NotFoundError: malformed or unknown token.
        """
        body = self.shards[shard_of_token(token, len(self.shards))].get_result(token)
        if body is None:
            raise NotFoundError()
        return body

    def job_token(self) -> str:
        """A fresh token for a scan job, on a shard chosen at random among those not known to be down."""
        usable = [i for i in range(len(self.shards)) if self.health.usable(i)] or list(range(len(self.shards)))
        return new_token(usable[secrets.randbelow(len(usable))])

    def put_job(self, token: str, seq: int, body: str) -> None:
        """Append a state of the job on its token's shard.

        Raises:
            StorageError: the shard does not take it.
        """
        shard = shard_of_token(token, len(self.shards))
        try:
            self.shards[shard].put_job(token, seq, body, int(time.time()))
        except StorageError:
            self.health.failed(shard)
            raise
        self.health.ok(shard)

    def get_job(self, token: str) -> tuple[int, str]:
        """The job's latest (seq, body).

        Raises:
            NotFoundError: malformed or unknown token.
        """
        found = self.shards[shard_of_token(token, len(self.shards))].get_job(token)
        if found is None:
            raise NotFoundError()
        return found

    def purge_jobs(self, before: float) -> None:
        """Forget the jobs last written before epoch second ``before``, on every shard that answers."""
        for shard in self.shards:
            try:
                shard.purge_jobs(int(before))
            except StorageError:
                continue

    def check_all(self) -> list[float | None]:
        """Each shard's read round-trip in ms, or None where it does not answer."""
        latencies: list[float | None] = []
        for i, shard in enumerate(self.shards):
            start = time.perf_counter()
            try:
                shard.get_result("0" * 34)
            except StorageError:
                self.health.failed(i)
                latencies.append(None)
                continue
            self.health.ok(i)
            latencies.append((time.perf_counter() - start) * 1000)
        return latencies

    def count_results(self) -> list[int | None]:
        """Results stored on each shard (None where the shard does not answer)."""
        counts: list[int | None] = []
        for shard in self.shards:
            try:
                counts.append(shard.count_results())
            except StorageError:
                counts.append(None)
        return counts

    def close(self) -> None:
        for shard in self.shards:
            shard.close()
