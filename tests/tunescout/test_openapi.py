"""GET /api/openapi.json is a valid OpenAPI 3 document, and a property-based run (schemathesis)
against a live server finds no 5xx and no response that breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests import servers
from tests.conftest import need

TOKEN = "openapi-test-token-0123456789"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = servers.LiveServer(
        tmp_path_factory.mktemp("openapi"),
        {
            "fingerprinting": {"token": TOKEN, "max_file_size_mb": 1},
            "recognizing": {"max_file_size_mb": 1},
            "rate_limit": {"enabled": False},
        },
    )
    yield server
    server.stop()


def test_the_document_is_valid_and_covers_every_route(live):
    from openapi_spec_validator import validate

    from tunescout.app import create_app
    from tunescout.config import config_from_dict

    doc = requests.get(live.url + "/api/openapi.json", timeout=5).json()
    validate(doc)
    app = create_app(config_from_dict({"data_dir": str(live.config_path.parent / "routes")}))
    routes = {
        r.rule.replace("<token>", "{token}").replace("<int:song_id>", "{song_id}")
        for r in app.url_map.iter_rules()
        if r.endpoint != "static"
    }
    app.extensions["tunescout"].close()
    assert routes == set(doc["paths"])


def test_schemathesis_finds_no_server_error_and_no_schema_violation(live, tmp_path):
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    need(cli is not None, "schemathesis (requirements-dev.txt)")
    # positive_data_acceptance is left out: a schema cannot say "this file must be audio", so a
    # well-formed PNG upload is "valid" to the schema and rightly refused with 415.
    result = subprocess.run(
        [
            cli,
            "run",
            live.url + "/api/openapi.json",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            "30",
            "--seed",
            "2026",
            "--workers",
            "2",
            "--request-timeout",
            "30",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-8000:]
    log = live.stop()
    assert "Traceback" not in log, log[-4000:]


def test_the_document_states_the_package_version_and_the_page_limit():
    from tunescout import __version__
    from tunescout.contract import MAX_PAGE_SIZE
    from tunescout.openapi import OPENAPI

    assert OPENAPI["info"]["version"] == __version__
    [limit] = [p for p in OPENAPI["paths"]["/api/songs"]["get"]["parameters"] if p["name"] == "limit"]
    assert limit["schema"]["maximum"] == MAX_PAGE_SIZE


def test_the_document_lists_every_registered_database_type():
    from tunescout.openapi import OPENAPI
    from tunescout.storage import BACKENDS

    part = OPENAPI["components"]["schemas"]["Part"]
    assert part["properties"]["database_type"]["enum"] == sorted(BACKENDS)
    assert "postgres" in part["properties"]["database_type"]["enum"]
