"""Shared fixtures: seeded randomness, synthetic audio, the real-music corpus, a SQLite config."""

from __future__ import annotations

import io
import os
import wave
from pathlib import Path

import numpy as np
import pytest

from tunescout.config import DatabaseConfig, config_from_dict

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("TUNESCOUT_TEST_CORPUS", ROOT / ".cache" / "corpus_small"))
QUERIES = Path(os.environ.get("TUNESCOUT_TEST_QUERIES", ROOT / ".cache" / "queries_guard"))
SR = 11025


def need(condition: bool, reason: str) -> None:
    """Skip loudly on a developer machine, fail in CI (TUNESCOUT_REQUIRE_ALL=1)."""
    if condition:
        return
    if os.environ.get("TUNESCOUT_REQUIRE_ALL") == "1":
        pytest.fail(f"required for CI: {reason}")
    pytest.skip(f"MISSING: {reason} (run `make test` to fetch and start everything)")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def music_like(rng, seconds: float, sr: int = SR, note_seconds: float = 0.25, base_hz: float = 110.0) -> np.ndarray:
    """A random melody of decaying harmonic notes: enough structure for peaks."""
    out = np.zeros(int(seconds * sr), np.float32)
    t = np.arange(int(note_seconds * sr)) / sr
    for start in range(0, out.size - t.size, t.size // 2):
        f0 = base_hz * 2 ** (rng.integers(0, 36) / 12)
        note = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3))
        out[start : start + t.size] += (note * np.exp(-6 * t)).astype(np.float32)
    return 0.3 * out / np.abs(out).max()


def wav_bytes(samples: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


@pytest.fixture
def sqlite_config(tmp_path):
    return config_from_dict(
        {
            "data_dir": str(tmp_path / "data"),
            "fingerprinting": {"token": "s3cret-token"},
            "recognizing": {"max_file_size_mb": 1},
        }
    )


@pytest.fixture(scope="session")
def corpus() -> Path:
    need((CORPUS / "tracks.csv").exists(), f"corpus at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="session")
def queries() -> Path:
    need((QUERIES / "ground_truth.csv").exists(), f"query clips at {QUERIES}")
    return QUERIES


@pytest.fixture
def private_store():
    """A ClickHouseStore on a ClickHouse server of the test's own (to stop at will), and that server."""
    from tests import servers
    from tunescout.storage.base import IdSlot
    from tunescout.storage.clickhouse import ClickHouseStore

    need(servers.clickhouse_ready(), "ClickHouse on 127.0.0.1:9000 (scripts/start_servers.sh)")
    private = servers.PrivateClickHouse()
    private.start()
    try:
        db = DatabaseConfig(**servers.clickhouse_database(servers.fresh_name(), port=private.port))
        store = ClickHouseStore(db, IdSlot(0, 1))
        store.ensure_schema("digest-1")
        yield store, private
    finally:
        private.remove()
