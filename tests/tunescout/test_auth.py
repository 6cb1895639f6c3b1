import logging

from tunescout.auth import bearer_matches, resolve_write_token
from tunescout.config import config_from_dict


def test_a_generated_token_is_logged_with_its_file_once(tmp_path, caplog):
    config = config_from_dict({"data_dir": str(tmp_path)})
    with caplog.at_level(logging.INFO, logger="tunescout.auth"):
        token = resolve_write_token(config)
        assert resolve_write_token(config) == token
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith(f"generated a write token in {(tmp_path / 'write_token').resolve()}")
    assert bearer_matches(f"Bearer {token}", token) and not bearer_matches("Bearer other", token)
