import json
import logging

import pytest
from click.testing import CliRunner

from tunescout.cli import main
from tunescout.logs import JsonFormatter, configure_logging


@pytest.fixture(autouse=True)
def root_logger():
    """Put the root logger back as it was (configure_logging changes process-wide state)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_time_level_logger_message_and_extra_fields(capsys):
    configure_logging("info", "json")
    logging.getLogger("tunescout.test").warning("instance %d skipped", 2, extra={"instance": 2})
    logging.getLogger("tunescout.test").debug("below the level")
    [line] = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert {
        "level": "WARNING",
        "logger": "tunescout.test",
        "message": "instance 2 skipped",
        "instance": 2,
    }.items() <= record.items()
    assert record["time"].endswith("+00:00")


def test_json_lines_carry_the_traceback(capsys):
    configure_logging("INFO", "json")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("tunescout.test").exception("failed")
    record = json.loads(capsys.readouterr().err)
    assert record["message"] == "failed" and "ValueError: boom" in record["exc_info"]


def test_plain_lines_and_configuring_twice_keeps_one_handler(capsys):
    configure_logging("DEBUG", "json")
    configure_logging("DEBUG", "plain")
    logging.getLogger("tunescout.test").debug("hello")
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(" DEBUG tunescout.test: hello")


def test_the_cli_takes_level_and_format_from_the_environment(tmp_path, capsys):
    (tmp_path / "c.json").write_text(json.dumps({"logging": {"level": "ERROR", "format": "plain"}}))
    result = CliRunner().invoke(
        main,
        ["check-config", str(tmp_path / "c.json")],
        env={"TUNESCOUT_LOG_LEVEL": "debug", "TUNESCOUT_LOG_FORMAT": "json"},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["logging"] == {"level": "debug", "format": "json"}
    logging.getLogger("tunescout.test").debug("after the command")
    record = json.loads(capsys.readouterr().err)
    assert record["message"] == "after the command" and record["level"] == "DEBUG"
    assert any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
