"""A Redis ACL user (redis.user, as in TuneScout's config.json): the lookup cache and the rate-limit
counters log in as that user, against a real Redis."""

from __future__ import annotations

import secrets

import pytest
import redis
from limits.storage import storage_from_string

from tests import servers
from tests.conftest import need
from tunescout.config import config_from_dict
from tunescout.limits import storage_uri
from tunescout.storage.cache import redis_client

DB = 14


@pytest.fixture
def acl_user():
    """A throw-away ACL user with a password, removed afterwards."""
    need(servers.redis_ready(), "Redis on 127.0.0.1:6379 (scripts/start_servers.sh)")
    admin = redis.Redis(port=servers.REDIS_PORT)
    name, password = f"tstest-{secrets.token_hex(4)}", "p@ss:w/rd"
    admin.acl_setuser(name, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"])
    yield name, password
    admin.acl_deluser(name)
    admin.close()


def test_the_cache_and_the_limits_log_in_as_the_configured_user(acl_user):
    name, password = acl_user
    config = config_from_dict(
        {
            "redis": {"host": "127.0.0.1", "port": servers.REDIS_PORT, "user": name, "password": password},
            "rate_limit": {"redis_db_index": DB},
        }
    )
    client = redis_client(config.redis, DB)
    assert client.acl_whoami() == name
    client.close()
    limits = storage_from_string(storage_uri(config))
    assert limits.storage.acl_whoami() == name
    limits.storage.close()


def test_a_wrong_user_is_refused(acl_user):
    config = config_from_dict(
        {"redis": {"host": "127.0.0.1", "port": servers.REDIS_PORT, "user": "nobody", "password": acl_user[1]}}
    )
    with pytest.raises(redis.AuthenticationError):
        redis_client(config.redis, DB).ping()
