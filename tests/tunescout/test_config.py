import json
import re
from pathlib import Path

import pytest

from tunescout.config import (Config, ConfigError, InstanceConfig, config_from_dict, load_config,
                              masked)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_defaults_are_one_sqlite_instance_and_shard():
    config = config_from_dict({})
    assert [i.database_type for i in config.instances] == ["sqlite"]
    assert [r.database_type for r in config.results] == ["sqlite"]


@pytest.mark.parametrize("raw, message", [
    ({"instances": [{"database_type": "postgres"}]},
     "instances[0].database_type: 'postgres' is not one of clickhouse, mysql, sqlite"),
    ({"recognizing": {"max_duration": "long"}}, "recognizing.max_duration"),
    ({"recognizing": {"max_duration": -1}}, "recognizing.max_duration: must be > 0"),
    ({"recognizing": {"counts_refresh_s": -1}}, "recognizing.counts_refresh_s: must be >= 0"),
    ({"nonsense": 1}, "nonsense: unknown key"),
    ({"instances": [{"database_type": "mysql", "database": {"host": "h"}}]},
     "instances[0].database.database: required"),
])
def test_errors_name_the_key_path(raw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(raw)


def test_tunescout_style_limits_and_env_token(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"recognizing": {"rate_limit": "5 per second"},
                                "fingerprinting": {"token": "from-file"}}))
    config = load_config(path, env={"TUNESCOUT_TOKEN": "from-env"})
    assert config.rate_limit.recognizing == "5 per second"
    assert config.fingerprinting.token == "from-env"


def test_masked_hides_secrets():
    config = config_from_dict({"fingerprinting": {"token": "t"}, "instances": [
        {"database_type": "mysql", "database": {"database": "d", "password": "pw"}}]})
    text = json.dumps(masked(config))
    assert "pw" not in text and '"t"' not in text


def test_every_field_is_documented():
    import dataclasses
    docs = DOCS.read_text()

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            sub = {
                n: getattr(__import__("tunescout.config", fromlist=[n]), n)
                for n in ("DatabaseConfig", "FingerprintingConfig", "RecognizingConfig",
                          "RedisConfig", "RateLimitConfig")}
            yield prefix + f.name
            if kind in sub:
                yield from walk(sub[kind], prefix + f.name + ".")

    keys = list(walk(Config, "")) + ["instances[]." + k for k in walk(InstanceConfig, "")]
    missing = [key for key in keys if f"`{key}`" not in docs]
    assert not missing


def test_the_sharded_example_config_is_valid():
    from tunescout.config import load_config
    config = load_config(Path(__file__).resolve().parents[2] / "deploy" / "config.sharded.json", env={})
    assert [i.database_type for i in config.instances] == ["clickhouse", "clickhouse", "mysql"]
    assert len(config.results) == 2
