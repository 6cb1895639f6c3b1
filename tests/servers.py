"""Real database servers for the tests: fresh MySQL/ClickHouse databases, and a private ClickHouse.

`make test` starts MariaDB, Redis and ClickHouse (scripts/start_servers.sh). The tests make their
own MariaDB user over the unix socket (root over TCP is refused by a stock Debian MariaDB) and
their own databases, which are dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

MYSQL_SOCKET = os.environ.get("TUNESCOUT_TEST_MYSQL_SOCKET", "/run/mysqld/mysqld.sock")
MYSQL_USER, MYSQL_PASSWORD = "tunescout_test", "tunescout-test-pw"
CLICKHOUSE_PORT = int(os.environ.get("TUNESCOUT_TEST_CLICKHOUSE_PORT", "9000"))
PREFIX = "tstest_"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A port where nothing listens (an instance that is down)."""
    return free_port()


def fresh_name() -> str:
    return PREFIX + uuid.uuid4().hex[:12]


def mysql_root():
    """Root over the unix socket (the only way a stock Debian MariaDB lets root in)."""
    import MySQLdb

    return MySQLdb.connect(unix_socket=MYSQL_SOCKET, user="root", autocommit=True)


def mysql_ready() -> bool:
    try:
        import MySQLdb
    except ImportError:  # no driver (requirements-dev.txt)
        return False
    try:
        conn = mysql_root()
    except MySQLdb.OperationalError:  # no server on the socket, or root not let in
        return False
    cur = conn.cursor()
    for host in ("127.0.0.1", "localhost"):
        cur.execute(f"CREATE USER IF NOT EXISTS '{MYSQL_USER}'@'{host}' IDENTIFIED BY '{MYSQL_PASSWORD}'")
        cur.execute(f"GRANT ALL PRIVILEGES ON `{PREFIX.replace('_', chr(92) + '_')}%`.* TO '{MYSQL_USER}'@'{host}'")
    conn.close()
    return True


def mysql_database(name: str, port: int = 3306) -> dict:
    return {"host": "127.0.0.1", "port": port, "user": MYSQL_USER, "password": MYSQL_PASSWORD, "database": name}


def drop_mysql(name: str) -> None:
    conn = mysql_root()
    conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


POSTGRES_PORT = int(os.environ.get("TUNESCOUT_TEST_POSTGRES_PORT", "5432"))
POSTGRES_USER = os.environ.get("TUNESCOUT_TEST_POSTGRES_USER", "postgres")


def postgres_admin():
    """The superuser over TCP, in the maintenance database (trust auth on 127.0.0.1)."""
    import psycopg

    return psycopg.connect(
        host="127.0.0.1", port=POSTGRES_PORT, user=POSTGRES_USER, dbname="postgres", autocommit=True, connect_timeout=3
    )


def postgres_ready() -> bool:
    try:
        import psycopg
    except ImportError:  # no driver (requirements-dev.txt)
        return False
    try:
        postgres_admin().close()
    except psycopg.OperationalError:  # no server, or the superuser not let in over TCP
        return False
    return True


def postgres_database(name: str, port: int = POSTGRES_PORT) -> dict:
    return {"host": "127.0.0.1", "port": port, "user": POSTGRES_USER, "password": "", "database": name}


def drop_postgres(name: str) -> None:
    with postgres_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def clickhouse_ready(port: int = CLICKHOUSE_PORT) -> bool:
    return port_open(port)


def clickhouse_database(name: str, port: int = CLICKHOUSE_PORT) -> dict:
    return {"host": "127.0.0.1", "port": port, "user": "default", "password": "", "database": name}


def drop_clickhouse(name: str, port: int = CLICKHOUSE_PORT) -> None:
    from clickhouse_driver import Client

    client = Client("127.0.0.1", port=port)
    client.execute(f"DROP DATABASE IF EXISTS `{name}`")
    client.disconnect()


def wait_clickhouse_mutations(name: str, port: int = CLICKHOUSE_PORT, timeout_s: float = 30.0) -> None:
    """Until the background deletes (ALTER ... DELETE) of database `name` have run."""
    from clickhouse_driver import Client

    client = Client("127.0.0.1", port=port)
    deadline = time.monotonic() + timeout_s
    while client.execute("SELECT count() FROM system.mutations WHERE database = %(db)s AND is_done = 0", {"db": name})[
        0
    ][0]:
        assert time.monotonic() < deadline, f"mutations of {name} still running"
        time.sleep(0.02)
    client.disconnect()


_CH_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{dir}/server.log</log><errorlog>{dir}/server.err.log</errorlog></logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>{port}</tcp_port>
    <http_port>{http_port}</http_port>
    <path>{dir}/data/</path>
    <tmp_path>{dir}/tmp/</tmp_path>
    <user_files_path>{dir}/user_files/</user_files_path>
    <format_schema_path>{dir}/format_schemas/</format_schema_path>
    <users_config>{dir}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>104857600</mark_cache_size>
</yandex>
"""
_CH_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles><default><min_compress_block_size>1024</min_compress_block_size>
        <max_compress_block_size>4096</max_compress_block_size></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
        <profile>default</profile><quota>default</quota></default></users>
    <quotas><default></default></quotas>
</yandex>
"""


class PrivateClickHouse:
    """A ClickHouse server of the test's own (its own folder and port), to stop and start at will.

    The folder is made under the system temp dir (pytest's tmp_path is private to root, and
    the server runs as the clickhouse user when the tests run as root); remove() deletes it.
    """

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="tunescout-clickhouse-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        (self.dir / "config.xml").write_text(_CH_CONFIG.format(dir=self.dir, port=self.port, http_port=free_port()))
        (self.dir / "users.xml").write_text(_CH_USERS)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "clickhouse", "clickhouse")
            for item in self.dir.iterdir():
                shutil.chown(item, "clickhouse", "clickhouse")

    def start(self) -> None:
        binary = shutil.which("clickhouse-server") or "/usr/sbin/clickhouse-server"
        cmd = [binary, f"--config-file={self.dir / 'config.xml'}"]
        if os.geteuid() == 0:
            cmd = ["setpriv", "--reuid=clickhouse", "--regid=clickhouse", "--init-groups", *cmd]
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private clickhouse did not start; see {self.dir}/server.err.log")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill the server (a crash; a graceful stop waits for open connections to close)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        while port_open(self.port):
            time.sleep(0.05)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


REDIS_PORT = int(os.environ.get("TUNESCOUT_TEST_REDIS_PORT", "6379"))


def redis_ready(port: int = REDIS_PORT) -> bool:
    return port_open(port)


class PrivateRedis:
    """A redis-server of the test's own on a free port (nothing on disk), to stop and start."""

    def __init__(self):
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("private redis did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class LiveServer:
    """`tunescout serve` in a subprocess on a free port, with a config of the test's own."""

    def __init__(self, tmp_path: Path, config: dict, workers: int = 2, threads: int = 2):
        import json
        import sys

        Path(tmp_path).mkdir(parents=True, exist_ok=True)
        self.config_path = Path(tmp_path) / "config.json"
        self.config_path.write_text(json.dumps({"data_dir": str(Path(tmp_path) / "data"), **config}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The log goes to a file: a pipe nobody reads fills up and blocks the server's logging.
        self.log_path = Path(tmp_path) / "server.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tunescout",
                "serve",
                "--config",
                str(self.config_path),
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--threads",
                str(threads),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._wait()

    def _wait(self) -> None:
        import requests

        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or a busy machine
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(self.log_path.read_text())
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.1)

    def stop(self) -> str:
        """SIGTERM, wait, and return everything the server printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.log_path.read_text()
