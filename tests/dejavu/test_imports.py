import subprocess
import sys

SERVICE_MODULES = {"tunescout", "flask", "redis", "MySQLdb", "clickhouse_driver", "av", "sqlite3"}


def test_dejavu_imports_nothing_from_the_service():
    mods = subprocess.check_output([sys.executable, "-c", "import sys, dejavu; print(*sys.modules)"], text=True).split()
    assert not [m for m in mods if m.split(".")[0] in SERVICE_MODULES]
