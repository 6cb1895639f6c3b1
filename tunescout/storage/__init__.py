"""BACKENDS: the registry of database types (the only place naming them), and opening a store by type.

Config validation reads this registry for the known types and their default ports; the store
classes are imported on first use, so that a SQLite deployment never needs a database driver.
"""

from __future__ import annotations

import dataclasses
import importlib


@dataclasses.dataclass(frozen=True)
class Backend:
    """One database type: its fingerprint store and result store classes ("module:Class"), its
    default port (None: embedded, no server) and the pip extra that installs its driver."""

    store: str
    result_store: str
    default_port: int | None = None
    extra: str | None = None

    @property
    def embedded(self) -> bool:
        return self.default_port is None


BACKENDS: dict[str, Backend] = {
    "sqlite": Backend("tunescout.storage.sqlite:SQLiteStore", "tunescout.storage.sqlite:SQLiteResultStore"),
    "mysql": Backend("tunescout.storage.mysql:MySQLStore", "tunescout.storage.mysql:MySQLResultStore", 3306, "mysql"),
    "postgres": Backend(
        "tunescout.storage.postgres:PostgresStore", "tunescout.storage.postgres:PostgresResultStore", 5432, "postgres"
    ),
    "clickhouse": Backend(
        "tunescout.storage.clickhouse:ClickHouseStore",
        "tunescout.storage.clickhouse:ClickHouseResultStore",
        9000,
        "clickhouse",
    ),
}


def _load(database_type: str, target: str):
    """The class named by target; StorageError naming the pip extra when its driver is missing."""
    module, name = target.split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        from ..errors import StorageError

        extra = BACKENDS[database_type].extra
        raise StorageError(
            f"database_type {database_type!r} needs its driver ({exc.name}): pip install 'tunescout[{extra}]'"
        ) from exc


def store_class(database_type: str):
    """The FingerprintStore class of a database type.

    Raises:
        StorageError: its database driver is not installed.
    """
    return _load(database_type, BACKENDS[database_type].store)


def result_store_class(database_type: str):
    """The ResultStore class of a database type.

    Raises:
        StorageError: its database driver is not installed.
    """
    return _load(database_type, BACKENDS[database_type].result_store)
