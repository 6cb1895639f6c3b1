"""Config tree (frozen dataclasses) and load_config(): the only reader of config.json."""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path

DEFAULT_CONFIG = "config.json"  # read from the working directory when no path is given
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("plain", "json")
# Strings TuneScout's own config.json writes for booleans ("allow": "true"), lower-cased.
_BOOL_STRINGS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key path."""


def _field(default, help_text: str, **kw):
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: default, metadata={"help": help_text}, **kw)
    return dataclasses.field(default=default, metadata={"help": help_text}, **kw)


@dataclasses.dataclass(frozen=True)
class DatabaseConfig:
    host: str = _field("127.0.0.1", "Database server host (server types).")
    port: int = _field(0, "Server port; 0 means the type's default port (see Database types).")
    user: str = _field("", "Database user.")
    password: str = _field("", "Database password (masked by check-config).")
    database: str = _field("", "Database name; for sqlite, the file name under data_dir.")
    path: str = _field("", "sqlite only: file path; overrides database and data_dir.")
    connect_timeout_s: float = _field(5.0, "Connecting to the database server (server types).")
    query_timeout_s: float = _field(
        60.0,
        "Longest one read may run, and a write may wait for the database's writer lock, before it fails "
        "(writes themselves and compact run as long as they take).",
    )


@dataclasses.dataclass(frozen=True)
class InstanceConfig:
    database_type: str = _field("sqlite", "A registered database type (see Database types); sqlite is a file.")
    database: DatabaseConfig = _field(DatabaseConfig(), "Connection settings.")
    redis_db_index: int = _field(0, "Redis database of this instance's lookup cache.")


@dataclasses.dataclass(frozen=True)
class FingerprintingConfig:
    allow: bool = _field(True, "Whether POST /api/fingerprint accepts writes at all.")
    token: str = _field("", "Bearer token for writes; TUNESCOUT_TOKEN overrides; empty: generated under data_dir.")
    max_file_size_mb: float = _field(200.0, "Largest upload accepted by /api/fingerprint, in MB.")
    max_duration: float = _field(
        1800.0, "Seconds of audio a song may have; a longer one is refused (422), decoding stops there."
    )
    min_hashes: int = _field(10, "Fewest fingerprint hashes a song must give (silence gives none); fewer: 422.")


@dataclasses.dataclass(frozen=True)
class RecognizingConfig:
    max_duration: float = _field(10.0, "Seconds of a query that are analysed at most.")
    max_file_size_mb: float = _field(20.0, "Largest upload accepted by /api/recognize, in MB.")
    instance_timeout_s: float = _field(
        5.0,
        "How long a recognition (and a catalogue read) waits for the instances' answers; an instance "
        "that has not answered by then is left out. Connecting and statements have their own "
        "timeouts (database.connect_timeout_s, database.query_timeout_s).",
    )
    counts_refresh_s: float = _field(
        30.0,
        "How often each worker brings its in-memory copy of every instance's common hash counts up "
        "to date (they choose which hashes are looked up first); 0 asks the instances for every clip.",
    )
    memory_index: bool = _field(
        False,
        "Each worker holds a copy of every instance's index rows in memory (about 8 bytes a row: "
        "`tunescout stats` counts them as hashes) and answers lookups from it, several times faster than "
        "the databases (docs/SCALE.md); the triplet keys are then not looked up first (unless "
        "reject_on_triplets). It is read from the instances in the background at start (until then they "
        "answer), and brought up to date every counts_refresh_s (which must be > 0): a song added or "
        "deleted through another worker is seen within that time.",
    )
    reject_on_triplets: bool = _field(
        False,
        "On an index whose instances all keep third points (ClickHouse): a clip whose triplet keys leave "
        "every song well under the bar gets no answer at once, without the pair lookup or the robust path. "
        "Unknown audio then costs one small lookup (50,000 songs: 85 ms against 2 s), but weak clips and "
        "speed, tempo or pitch changes that only those paths find are lost (white noise at 0 dB: 5 %). "
        "Client-made fingerprints are refused then (422): they carry no third points.",
    )
    reject_at_chance: bool = _field(
        False,
        "A clip whose hashes hold 200,000 index rows or more (10 s clips from about 3,000 songs on) gets no "
        "answer once 5 % of its rows are read if its best song is no further ahead of the runner-up than "
        "chance puts it. Unknown audio then costs a fraction (100,000 songs, from memory: p50 680 -> 203 ms) "
        "with the same answers in noise, codecs and speed, tempo or pitch changes, but clips in rooms and "
        "crowds are given up before the second query that finds them (chatter at 0 dB: 90 -> 57 %).",
    )


@dataclasses.dataclass(frozen=True)
class RedisConfig:
    host: str = _field("", "Redis host; empty disables the cache and shared rate limits.")
    port: int = _field(6379, "Redis port.")
    user: str = _field("", "Redis ACL user name; empty: the default user.")
    password: str = _field("", "Redis password.")
    prefix: str = _field("tunescout", "Key prefix of every key TuneScout writes.")
    ttl_s: int = _field(3600, "Lifetime of a cached lookup, in seconds.")
    timeout_s: float = _field(0.25, "Redis connect/read timeout; slower means down (queries skip the cache).")


@dataclasses.dataclass(frozen=True)
class RateLimitConfig:
    enabled: bool = _field(True, "Apply the per-endpoint limits below.")
    recognizing: str = _field("10 per second", "Limit of POST /api/recognize per client.")
    fetching_results: str = _field("50 per second", "Limit of GET /api/fetch per client.")
    fingerprinting: str = _field("10 per second", "Limit of POST /api/fingerprint per client.")
    redis_db_index: int = _field(15, "Redis database holding the counters.")
    trust_proxy: bool = _field(False, "Take the client address from X-Forwarded-For (behind a proxy).")


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    level: str = _field(
        "INFO", "Least severe level logged: DEBUG, INFO, WARNING, ERROR or CRITICAL; TUNESCOUT_LOG_LEVEL overrides."
    )
    format: str = _field(
        "plain",
        "plain (one line of text per record) or json (one JSON object per line); TUNESCOUT_LOG_FORMAT overrides.",
    )


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    header_timeout_s: float = _field(10.0, "Longest a client may take to send a request line and headers (408 after).")
    body_timeout_s: float = _field(
        30.0,
        "Longest a request body may take to arrive, plus one second per body_min_rate_bytes_s received "
        "(408 after); slow bodies are read without holding a thread that computes.",
    )
    body_min_rate_bytes_s: int = _field(10000, "Upload rate, in bytes per second, that extends body_timeout_s.")
    keepalive_s: int = _field(5, "How long an idle kept-alive connection stays open, in whole seconds.")
    max_requests: int = _field(
        20000, "Requests after which a worker is replaced by a fresh one, bounding its memory; 0 never replaces."
    )
    max_requests_jitter: int = _field(2000, "Up to this many more requests, at random, so workers restart apart.")


@dataclasses.dataclass(frozen=True)
class ScanningConfig:
    max_file_size_mb: float = _field(
        1000.0, "Largest recording accepted by POST /api/scan, in MB (checked before the body is read)."
    )
    require_token: bool = _field(
        True, "POST and DELETE /api/scan need the write token (a scan costs far more than a recognition)."
    )
    workers: int = _field(
        1, "Scans run at once on this host, over all of its worker processes (each takes a core while it runs)."
    )
    queue: int = _field(
        8, "Scans that may wait for a free worker; past it POST /api/scan answers 503 with Retry-After."
    )
    keep_days: float = _field(7.0, "Days a scan's state and timeline are kept after it was last written.")
    allowed_urls: list = _field(
        [],
        "URL prefixes (scheme, host and a path ending in /) of streams that POST /api/scan may be asked to "
        "follow with a form field url; empty: recordings are uploaded, never fetched.",
    )

    def __post_init__(self):
        object.__setattr__(self, "allowed_urls", tuple(self.allowed_urls))


@dataclasses.dataclass(frozen=True)
class Config:
    data_dir: str = _field("data", "Folder of the SQLite files and the generated token.")
    fingerprinting: FingerprintingConfig = _field(FingerprintingConfig(), "Writes.")
    recognizing: RecognizingConfig = _field(RecognizingConfig(), "Queries.")
    redis: RedisConfig = _field(RedisConfig(), "Redis cache and rate-limit storage.")
    rate_limit: RateLimitConfig = _field(RateLimitConfig(), "Per-endpoint rate limits.")
    logging: LoggingConfig = _field(LoggingConfig(), "Log level and format of the service and the CLI.")
    serving: ServingConfig = _field(ServingConfig(), "HTTP front of `tunescout serve`: timeouts and worker recycling.")
    scanning: ScanningConfig = _field(ScanningConfig(), "Scans of long recordings through POST /api/scan.")
    allowed_origin: list = _field([], 'CORS origins allowed to call the API; "*" allows all.')
    instances: list = _field([], "Fingerprint instances; empty: one SQLite file.")
    results: list = _field([], "Result-store shards; empty: one SQLite file.")

    def __post_init__(self):
        object.__setattr__(self, "instances", tuple(self.instances or (_sqlite("fingerprints.sqlite"),)))
        object.__setattr__(self, "results", tuple(self.results or (_sqlite("results.sqlite"),)))
        object.__setattr__(self, "allowed_origin", tuple(self.allowed_origin))


def _sqlite(name: str) -> InstanceConfig:
    return InstanceConfig("sqlite", DatabaseConfig(database=name))


_LIST_ITEMS = {"instances": InstanceConfig, "results": InstanceConfig, "allowed_origin": str}
# TuneScout's own config.json keeps each limit beside its endpoint; accept it there too.
_LEGACY_LIMITS = ("recognizing", "fingerprinting", "fetching_results")


def load_config(path: str | os.PathLike | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Read, validate and freeze the configuration.

    Raises:
        ConfigError: the file is missing, not JSON, or a value is invalid.
    """
    env = os.environ if env is None else env
    path = path or env.get("TUNESCOUT_CONFIG")
    if not path and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    return config_from_dict(_read_json(path) if path else {}, env)


def _read_json(path: str | os.PathLike):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc


def config_from_dict(raw: dict, env: typing.Mapping[str, str] | None = None) -> Config:
    """Build a Config from a parsed config.json and TUNESCOUT_* overrides.

    Raises:
        ConfigError: a key is unknown or a value has the wrong type or range.
    """
    raw = _move_legacy_limits(json.loads(json.dumps(raw)))
    env = env or {}
    if env.get("TUNESCOUT_TOKEN"):
        raw.setdefault("fingerprinting", {})["token"] = env["TUNESCOUT_TOKEN"]
    if env.get("TUNESCOUT_DATA_DIR"):
        raw["data_dir"] = env["TUNESCOUT_DATA_DIR"]
    for key in ("level", "format"):
        if env.get(f"TUNESCOUT_LOG_{key.upper()}"):
            raw.setdefault("logging", {})[key] = env[f"TUNESCOUT_LOG_{key.upper()}"]
    config = _build(Config, raw, "")
    _validate(config)
    return config


def _move_legacy_limits(raw: dict) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError("config: must be a JSON object")
    known = {f.name for f in dataclasses.fields(Config)}
    for section in _LEGACY_LIMITS:
        if isinstance(raw.get(section), dict) and "rate_limit" in raw[section]:
            raw.setdefault("rate_limit", {}).setdefault(section, raw[section].pop("rate_limit"))
            if section not in known and not raw[section]:  # fetching_results holds only its limit
                del raw[section]
    if isinstance(raw.get("allowed_origin"), str):
        raw["allowed_origin"] = [raw["allowed_origin"]]
    return raw


def _build(cls, raw, key_path: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{key_path or 'config'}: must be an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{_join(key_path, unknown[0])}: unknown key (known: {', '.join(fields)})")
    values = {name: _convert(fields[name], value, _join(key_path, name)) for name, value in raw.items()}
    return cls(**values)


def _convert(field: dataclasses.Field, value, key_path: str):
    hint = field.type
    if hint == "list":
        if not isinstance(value, list):
            raise ConfigError(f"{key_path}: must be a list")
        item = _LIST_ITEMS.get(field.name, str)
        if item is str:
            return [_scalar(str, v, f"{key_path}[{i}]") for i, v in enumerate(value)]
        return [_build(item, v, f"{key_path}[{i}]") for i, v in enumerate(value)]
    nested = {
        "DatabaseConfig": DatabaseConfig,
        "FingerprintingConfig": FingerprintingConfig,
        "RecognizingConfig": RecognizingConfig,
        "RedisConfig": RedisConfig,
        "RateLimitConfig": RateLimitConfig,
        "LoggingConfig": LoggingConfig,
        "ServingConfig": ServingConfig,
        "ScanningConfig": ScanningConfig,
    }
    if hint in nested:
        return _build(nested[hint], value, key_path)
    return _scalar({"str": str, "int": int, "float": float, "bool": bool}[hint], value, key_path)


def _scalar(kind, value, key_path: str):
    if kind is bool and isinstance(value, str) and value.strip().lower() in _BOOL_STRINGS:
        value = _BOOL_STRINGS[value.strip().lower()]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{key_path}: {value!r} is not a {kind.__name__}")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _validate(config: Config) -> None:
    for name in ("instances", "results"):
        for i, inst in enumerate(getattr(config, name)):
            _validate_instance(inst, f"{name}[{i}]")
    for key in ("max_duration", "max_file_size_mb", "instance_timeout_s"):
        if getattr(config.recognizing, key) <= 0:
            raise ConfigError(f"recognizing.{key}: must be > 0")
    if config.recognizing.counts_refresh_s < 0:
        raise ConfigError("recognizing.counts_refresh_s: must be >= 0")
    if config.recognizing.memory_index and not config.recognizing.counts_refresh_s:
        raise ConfigError("recognizing.memory_index: needs recognizing.counts_refresh_s > 0 (its refresh period)")
    for key in ("max_file_size_mb", "max_duration"):
        if getattr(config.fingerprinting, key) <= 0:
            raise ConfigError(f"fingerprinting.{key}: must be > 0")
    if config.fingerprinting.min_hashes < 0:
        raise ConfigError("fingerprinting.min_hashes: must be >= 0")
    if len(config.instances) > 256:
        raise ConfigError("instances: at most 256 instances")
    for key in ("header_timeout_s", "body_timeout_s", "body_min_rate_bytes_s", "keepalive_s"):
        if getattr(config.serving, key) <= 0:
            raise ConfigError(f"serving.{key}: must be > 0")
    if config.serving.max_requests < 0 or config.serving.max_requests_jitter < 0:
        raise ConfigError("serving.max_requests: must be >= 0 (and so must max_requests_jitter)")
    _validate_scanning(config.scanning)
    if config.logging.level.upper() not in LOG_LEVELS:
        raise ConfigError(f"logging.level: {config.logging.level!r} is not one of {', '.join(LOG_LEVELS)}")
    if config.logging.format not in LOG_FORMATS:
        raise ConfigError(f"logging.format: {config.logging.format!r} is not one of {', '.join(LOG_FORMATS)}")


def _validate_scanning(scanning: ScanningConfig) -> None:
    for key in ("max_file_size_mb", "workers", "keep_days"):
        if getattr(scanning, key) <= 0:
            raise ConfigError(f"scanning.{key}: must be > 0")
    if scanning.queue < 0:
        raise ConfigError("scanning.queue: must be >= 0")
    for i, prefix in enumerate(scanning.allowed_urls):
        scheme, _, rest = prefix.partition("://")
        if scheme not in ("http", "https") or "/" not in rest or not rest.split("/", 1)[0]:
            raise ConfigError(
                f"scanning.allowed_urls[{i}]: {prefix!r} must be an http(s) URL prefix with a host and a path "
                "(https://radio.example.org/ names that host only)"
            )


def _validate_instance(inst: InstanceConfig, key_path: str) -> None:
    from .storage import BACKENDS  # the registry; it imports no config, so no cycle

    backend = BACKENDS.get(inst.database_type)
    if backend is None:
        raise ConfigError(
            f"{key_path}.database_type: {inst.database_type!r} is not one of {', '.join(sorted(BACKENDS))}"
        )
    if not backend.embedded and not inst.database.database:
        raise ConfigError(f"{key_path}.database.database: required for {inst.database_type}")
    if not 0 <= inst.redis_db_index <= 15:
        raise ConfigError(f"{key_path}.redis_db_index: {inst.redis_db_index} is not in 0..15")
    for key in ("connect_timeout_s", "query_timeout_s"):
        if getattr(inst.database, key) <= 0:
            raise ConfigError(f"{key_path}.database.{key}: must be > 0")


def sqlite_path(config: Config, db: DatabaseConfig) -> Path:
    """Where a sqlite instance's file lives."""
    return Path(db.path) if db.path else Path(config.data_dir) / (db.database or "fingerprints.sqlite")


def masked(config: Config) -> dict:
    """The config as a dict with every password and token replaced by '***'."""

    def mask(obj):
        if isinstance(obj, dict):
            return {k: ("***" if k in ("password", "token") and v else mask(v)) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [mask(v) for v in obj]
        return obj

    return mask(dataclasses.asdict(config))
