#!/usr/bin/env bash
# Install the Debian packages TuneScout needs when they are missing (ffmpeg; headers for mysqlclient).
set -euo pipefail
missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
dpkg -s libmariadb-dev >/dev/null 2>&1 || missing+=(libmariadb-dev)
dpkg -s pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
