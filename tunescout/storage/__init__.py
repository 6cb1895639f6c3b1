"""BACKENDS registry: open_store / open_result_store by database_type (the only place naming them)."""
from __future__ import annotations

import dataclasses
import importlib

from ..config import Config, InstanceConfig, port_of, sqlite_path
from .base import FingerprintStore, IdSlot, ResultStore

# database_type -> (fingerprint store, result store), imported lazily so that a
# SQLite deployment never needs a database driver.
BACKENDS = {
    "sqlite": ("tunescout.storage.sqlite:SQLiteStore", "tunescout.storage.sqlite:SQLiteResultStore"),
    "mysql": ("tunescout.storage.mysql:MySQLStore", "tunescout.storage.mysql:MySQLResultStore"),
    "clickhouse": ("tunescout.storage.clickhouse:ClickHouseStore",
                   "tunescout.storage.clickhouse:ClickHouseResultStore"),
}


def _load(target: str):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def store_class(database_type: str):
    """The FingerprintStore class of a database type."""
    return _load(BACKENDS[database_type][0])


def result_store_class(database_type: str):
    """The ResultStore class of a database type."""
    return _load(BACKENDS[database_type][1])


def _location(config: Config, instance: InstanceConfig):
    """A SQLite file path, or a server's DatabaseConfig with its port resolved."""
    if instance.database_type == "sqlite":
        return sqlite_path(config, instance.database)
    return dataclasses.replace(instance.database, port=port_of(instance))


def open_store(config: Config, index: int) -> FingerprintStore:
    """Open fingerprint instance ``index`` of the config (connections are made on first use)."""
    instance = config.instances[index]
    cls = store_class(instance.database_type)
    return cls(_location(config, instance), IdSlot(index, len(config.instances)),
               timeout_s=config.recognizing.instance_timeout_s)


def open_result_store(config: Config, index: int) -> ResultStore:
    """Open result shard ``index`` of the config."""
    instance = config.results[index]
    return result_store_class(instance.database_type)(_location(config, instance),
                                                      timeout_s=config.recognizing.instance_timeout_s)
