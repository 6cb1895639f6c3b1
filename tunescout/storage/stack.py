"""open_catalogue / open_result_stores: every configured instance's stack, built in one place.

An instance's stack, from the database up:

    backend (BACKENDS[database_type])   rows in its database
    -> CachedStore     if redis.host is set: lookups and hash counts cached in Redis
    -> MemoryIndex     if recognizing.memory_index: every row held in memory, lookups answered there
    or CountsSnapshot  if recognizing.counts_refresh_s > 0: common hash counts held in memory
and the N stacks under one ShardedStore, which fans reads out in parallel.
Each layer is a FingerprintStore over the one below it (base.StoreLayer).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from ..config import Config, DatabaseConfig, InstanceConfig, sqlite_path
from . import BACKENDS, result_store_class, store_class
from .base import FingerprintStore, IdSlot, ResultStore, StoreLayer
from .memindex import MemoryIndex
from .sharded import ShardedStore
from .snapshot import CountsSnapshot


def database_of(config: Config, instance: InstanceConfig) -> DatabaseConfig:
    """The instance's connection settings, completed: its type's default port, or an embedded
    database's file path under data_dir."""
    backend = BACKENDS[instance.database_type]
    if backend.embedded:
        return dataclasses.replace(instance.database, path=str(sqlite_path(config, instance.database)))
    return dataclasses.replace(instance.database, port=instance.database.port or backend.default_port)


def open_instance(
    config: Config,
    index: int,
    on_counts_load: Callable[[int, int], None] = lambda index, values: None,
    on_memory_load: Callable[[int, int, int], None] = lambda index, rows, nbytes: None,
) -> FingerprintStore:
    """Fingerprint instance ``index``'s stack (connections are made on first use)."""
    instance = config.instances[index]
    store: FingerprintStore = store_class(instance.database_type)(
        database_of(config, instance), IdSlot(index, len(config.instances))
    )
    if config.redis.host:
        from .cache import CachedStore, redis_client  # Redis's driver only where it is configured

        store = CachedStore(
            store, redis_client(config.redis, instance.redis_db_index), config.redis.prefix, config.redis.ttl_s
        )
    if config.recognizing.memory_index:  # (its counts are exact: no CountsSnapshot over it)
        store = MemoryIndex(
            store, config.recognizing.counts_refresh_s, on_load=functools.partial(on_memory_load, index)
        )
    elif config.recognizing.counts_refresh_s:
        store = CountsSnapshot(
            store, config.recognizing.counts_refresh_s, on_load=functools.partial(on_counts_load, index)
        )
    return store


def open_catalogue(
    config: Config,
    on_failure: Callable[[int, str], None] = lambda index, kind: None,
    on_counts_load: Callable[[int, int], None] = lambda index, values: None,
    on_memory_load: Callable[[int, int, int], None] = lambda index, rows, nbytes: None,
) -> ShardedStore:
    """Every configured fingerprint instance under one ShardedStore.

    on_failure(index, "error" | "timeout") is called when an instance fails a request;
    on_counts_load(index, values) when an instance's counts copy is loaded, on_memory_load(index,
    rows, nbytes) when its memory index changes.
    """
    stores = [open_instance(config, i, on_counts_load, on_memory_load) for i in range(len(config.instances))]
    return ShardedStore(stores, config.recognizing.instance_timeout_s, on_failure=on_failure)


def open_result_stores(config: Config) -> list[ResultStore]:
    """Every configured result shard."""
    return [result_store_class(shard.database_type)(database_of(config, shard)) for shard in config.results]


def layers(store: FingerprintStore) -> list[FingerprintStore]:
    """An instance's stack from the top down to its backend (for inspection: tests, benchmarks)."""
    stack = [store]
    while isinstance(stack[-1], StoreLayer):
        stack.append(stack[-1].store)
    return stack
