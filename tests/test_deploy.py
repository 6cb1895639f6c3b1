"""Deployment files: docker-compose.yml validates, and the config it mounts is a valid TuneScout config."""

import shutil
import subprocess
from pathlib import Path

from tests.conftest import need
from tunescout.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_file_validates():
    command = compose_command()
    need(command is not None, "docker compose or docker-compose (scripts/install_system_deps.sh)")
    result = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


def test_the_mounted_config_wires_the_compose_services():
    config = load_config(ROOT / "deploy" / "docker" / "config.json", env={})
    compose = (ROOT / "docker-compose.yml").read_text()
    hosts = {i.database.host for i in (*config.instances, *config.results)} | {config.redis.host}
    assert hosts == {"clickhouse1", "clickhouse2", "mariadb", "redis"}
    for host in hosts:
        assert f"\n  {host}:\n" in compose
    assert len({i.redis_db_index for i in config.instances}) == len(config.instances)


def test_dockerfile_runs_as_a_user_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert "\nUSER tunescout\n" in text and "HEALTHCHECK" in text
    # Audio is decoded in the process (PyAV's wheels carry the FFmpeg libraries): no ffmpeg package.
    installs = [line for line in text.splitlines() if "apt-get install" in line]
    assert installs and not any("ffmpeg" in line for line in installs)
