"""The allocator tuning the engine applies to its process."""
from tunescout import engine as engine_module
from tunescout.config import config_from_dict
from tunescout.memory import keep_freed_memory


def test_keep_freed_memory_takes_effect_on_glibc():
    assert keep_freed_memory() is True


def test_opening_an_engine_tunes_the_process(tmp_path, monkeypatch):
    """The service's workers and the benchmarks build engines with from_config."""
    calls = []
    monkeypatch.setattr(engine_module, "keep_freed_memory", lambda: calls.append(1) or keep_freed_memory())
    engine_module.Engine.from_config(config_from_dict({"data_dir": str(tmp_path)})).close()
    assert calls == [1]
