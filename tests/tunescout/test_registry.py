"""The backend registry: the one list of database types, and a clear error for a missing driver."""

from __future__ import annotations

import sys

import pytest

from tunescout.config import ConfigError, config_from_dict
from tunescout.errors import StorageError
from tunescout.storage import BACKENDS, store_class


@pytest.mark.parametrize("database_type", sorted(BACKENDS))
def test_every_registered_type_is_a_valid_instance_and_result_shard(database_type):
    entry = {"database_type": database_type, "database": {"database": "tunescout"}}
    config = config_from_dict({"instances": [entry], "results": [entry]})
    assert config.instances[0].database_type == config.results[0].database_type == database_type


def test_an_unregistered_type_is_refused_with_the_registered_ones():
    with pytest.raises(ConfigError, match="oracle") as refused:
        config_from_dict({"instances": [{"database_type": "oracle", "database": {"database": "x"}}]})
    assert all(name in str(refused.value) for name in BACKENDS)


def test_a_missing_driver_names_the_extra_that_installs_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    monkeypatch.delitem(sys.modules, "tunescout.storage.postgres", raising=False)
    with pytest.raises(StorageError, match=r"pip install 'tunescout\[postgres\]'"):
        store_class("postgres")
