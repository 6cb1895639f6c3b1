#!/usr/bin/env bash
# Check that the package stands alone: build a wheel from the tree, install it with its base
# dependencies (versions from requirements.txt) into a fresh virtualenv outside the tree, and
# check that it carries every source file, that `tunescout serve` answers GET /api/health with
# 200 on a free port with an empty data dir, and that `tunescout_uploader --help` runs.
# Usage: bash scripts/check_package.sh [PYTHON]   (default python3; pip's cache is reused)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-python3}
work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

"$PYTHON" -m pip wheel -q --no-deps --wheel-dir "$work/dist" .
wheel=$(ls "$work"/dist/tunescout-*.whl)
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --constraint requirements.txt "$wheel"
echo "installed $(basename "$wheel") and its base dependencies into a fresh venv"

# Every tracked file of the three packages must be in the wheel (code and anything it reads).
git ls-files dejavu tunescout uploader | "$work/venv/bin/python" -c '
import os, sys, zipfile
inside = set(zipfile.ZipFile(sys.argv[1]).namelist())
missing = [p for p in sys.stdin.read().split() if os.path.exists(p) and p not in inside]
sys.exit(f"not in the wheel: {missing}" if missing else 0)' "$wheel"

(cd "$work" && "$work/venv/bin/python" -c '
import importlib.metadata, tunescout
assert importlib.metadata.version("tunescout") == tunescout.__version__, "version differs from tunescout.__version__"
print("tunescout", tunescout.__version__)')
"$work/venv/bin/tunescout_uploader" --help >/dev/null

port=$("$work/venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir "$work/run"
# Started from an empty folder so that no ./config.json applies: the defaults serve SQLite.
(cd "$work/run" && exec env -u TUNESCOUT_CONFIG TUNESCOUT_DATA_DIR="$work/run/data" \
    "$work/venv/bin/tunescout" serve --host 127.0.0.1 --port "$port" --workers 1 \
    >"$work/serve.log" 2>&1) &
server=$!
"$work/venv/bin/python" - "$port" "$server" <<'EOF' || { cat "$work/serve.log" >&2; exit 1; }
import os, sys, time, urllib.request

url, pid = f"http://127.0.0.1:{sys.argv[1]}/api/health", int(sys.argv[2])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            print(f"GET /api/health: {response.status}")
            sys.exit(0 if response.status == 200 else 1)
    except OSError as exc:
        if getattr(exc, "code", None):  # an HTTP error status: the server answered, but not 200
            sys.exit(f"GET /api/health: {exc.code}")
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit("tunescout serve exited before answering")
        time.sleep(0.5)
sys.exit("tunescout serve did not answer within 60 s")
EOF
echo "package check passed"
