import json
import re
from pathlib import Path

import pytest

import tunescout.config as config_module
from tunescout.config import Config, ConfigError, InstanceConfig, config_from_dict, load_config, masked
from tunescout.storage import BACKENDS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_defaults_are_one_sqlite_instance_and_shard():
    config = config_from_dict({})
    assert [i.database_type for i in config.instances] == ["sqlite"]
    assert [r.database_type for r in config.results] == ["sqlite"]


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            {"instances": [{"database_type": "oracle"}]},
            f"instances[0].database_type: 'oracle' is not one of {', '.join(sorted(BACKENDS))}",
        ),
        ({"results": [{"database": {"query_timeout_s": 0}}]}, "results[0].database.query_timeout_s: must be > 0"),
        (
            {"instances": [{"database": {"connect_timeout_s": -1}}]},
            "instances[0].database.connect_timeout_s: must be > 0",
        ),
        ({"fingerprinting": {"allow": "maybe"}}, "fingerprinting.allow: 'maybe' is not a bool"),
        ({"logging": {"format": "xml"}}, "logging.format: 'xml' is not one of plain, json"),
        ({"logging": {"level": "loud"}}, "logging.level: 'loud' is not one of DEBUG"),
        ({"recognizing": {"max_duration": "long"}}, "recognizing.max_duration"),
        ({"recognizing": {"max_duration": -1}}, "recognizing.max_duration: must be > 0"),
        ({"recognizing": {"counts_refresh_s": -1}}, "recognizing.counts_refresh_s: must be >= 0"),
        (
            {"recognizing": {"memory_index": True, "counts_refresh_s": 0}},
            "recognizing.memory_index: needs recognizing.counts_refresh_s > 0",
        ),
        ({"nonsense": 1}, "nonsense: unknown key"),
        ({"scanning": {"workers": 0}}, "scanning.workers: must be > 0"),
        ({"scanning": {"allowed_urls": "http://a/"}}, "scanning.allowed_urls: must be a list"),
        (
            {"scanning": {"allowed_urls": ["https://radio.example.org"]}},
            "scanning.allowed_urls[0]: 'https://radio.example.org' must be an http(s) URL prefix with a host",
        ),
        ({"scanning": {"allowed_urls": ["file:///etc/"]}}, "scanning.allowed_urls[0]"),
        (
            {"instances": [{"database_type": "mysql", "database": {"host": "h"}}]},
            "instances[0].database.database: required",
        ),
    ],
)
def test_errors_name_the_key_path(raw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(raw)


def test_tunescout_style_limits_and_env_token(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps({"recognizing": {"rate_limit": "5 per second"}, "fingerprinting": {"token": "from-file"}})
    )
    config = load_config(path, env={"TUNESCOUT_TOKEN": "from-env"})
    assert config.rate_limit.recognizing == "5 per second"
    assert config.fingerprinting.token == "from-env"


def test_every_registered_type_is_accepted_and_servers_need_a_database_name():
    for name, backend in BACKENDS.items():
        database = {} if backend.embedded else {"database": "fp"}
        config = config_from_dict({"instances": [{"database_type": name, "database": database}]})
        assert config.instances[0].database_type == name


def test_timeouts_have_one_key_per_purpose():
    config = config_from_dict(
        {
            "recognizing": {"instance_timeout_s": 2},
            "instances": [{"database": {"connect_timeout_s": 1.5, "query_timeout_s": 30}}],
        }
    )
    assert config.recognizing.instance_timeout_s == 2.0
    assert (config.instances[0].database.connect_timeout_s, config.instances[0].database.query_timeout_s) == (1.5, 30.0)
    assert (config.results[0].database.connect_timeout_s, config.results[0].database.query_timeout_s) == (5.0, 60.0)


def test_redis_user_of_tunescout_config_is_accepted():
    assert config_from_dict({"redis": {"host": "r", "user": "tunescout"}}).redis.user == "tunescout"


@pytest.mark.parametrize(
    "text, value",
    [
        ("true", True),
        ("True", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        ("no", False),
    ],
)
def test_booleans_written_as_strings_are_accepted(text, value):
    config = config_from_dict({"fingerprinting": {"allow": text}, "rate_limit": {"enabled": text}})
    assert config.fingerprinting.allow is value and config.rate_limit.enabled is value


def test_legacy_fetching_results_rate_limit_is_accepted():
    config = config_from_dict({"fetching_results": {"rate_limit": "7 per second"}})
    assert config.rate_limit.fetching_results == "7 per second"
    with pytest.raises(ConfigError, match=re.escape("fetching_results: unknown key")):
        config_from_dict({"fetching_results": {"rate_limit": "7 per second", "other": 1}})


def test_a_malformed_default_config_json_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text('{"data_dir": "x",}')
    with pytest.raises(ConfigError, match=re.escape("config.json: not valid JSON")):
        load_config(env={})
    (tmp_path / "config.json").write_bytes(b'{"data_dir": "\xff"}')
    with pytest.raises(ConfigError, match=re.escape("config.json: not UTF-8 text")):
        load_config(env={})


def test_logging_defaults_and_environment_overrides(tmp_path):
    assert (config_from_dict({}).logging.level, config_from_dict({}).logging.format) == ("INFO", "plain")
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"logging": {"level": "WARNING", "format": "plain"}}))
    config = load_config(path, env={"TUNESCOUT_LOG_LEVEL": "debug", "TUNESCOUT_LOG_FORMAT": "json"})
    assert (config.logging.level, config.logging.format) == ("debug", "json")
    with pytest.raises(ConfigError, match=re.escape("logging.format: 'yaml' is not one of plain, json")):
        load_config(path, env={"TUNESCOUT_LOG_FORMAT": "yaml"})


def test_masked_hides_secrets():
    config = config_from_dict(
        {
            "fingerprinting": {"token": "t"},
            "instances": [{"database_type": "mysql", "database": {"database": "d", "password": "pw"}}],
        }
    )
    text = json.dumps(masked(config))
    assert "pw" not in text and '"t"' not in text


def test_every_field_is_documented():
    import dataclasses

    docs = DOCS.read_text()

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            yield prefix + f.name
            section = getattr(config_module, kind, None)
            if dataclasses.is_dataclass(section):
                yield from walk(section, prefix + f.name + ".")

    keys = list(walk(Config, "")) + ["instances[]." + k for k in walk(InstanceConfig, "")]
    missing = [key for key in keys if f"`{key}`" not in docs]
    assert not missing


def test_the_database_types_table_matches_the_registry():
    section = DOCS.read_text().split("## Database types", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+?) \|$", section, re.M))
    assert rows == {name: "embedded" if b.embedded else f"`{b.default_port}`" for name, b in BACKENDS.items()}


def test_the_sharded_example_config_is_valid():
    from tunescout.config import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "deploy" / "config.sharded.json", env={})
    assert [i.database_type for i in config.instances] == ["clickhouse", "clickhouse", "mysql"]
    assert len(config.results) == 2
