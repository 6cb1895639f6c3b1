#!/usr/bin/env bash
# Start what the tests need and is not running yet. The embedded default needs no server.
set -euo pipefail
exit 0
