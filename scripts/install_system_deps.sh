#!/usr/bin/env bash
# Install the Debian packages TuneScout and its tests need when they are missing:
# ffmpeg (the tests make and compare audio files with it; the service decodes in the process),
# espeak-ng (speech between the songs of the scan tests' broadcast), headers for mysqlclient, and
# the database servers the tests talk to.
# PostgreSQL needs no client library here: psycopg's binary wheel carries its own libpq.
set -euo pipefail
missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
for pkg in libmariadb-dev pkg-config; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${TUNESCOUT_SERVERS:-1}" = 1 ]; then
    command -v clickhouse-server >/dev/null || missing+=(clickhouse-server clickhouse-client)
    command -v mariadbd >/dev/null || missing+=(mariadb-server mariadb-client)
    command -v redis-server >/dev/null || missing+=(redis-server)
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
    # `docker compose config` validates docker-compose.yml without an engine; Debian's v1 does too.
    docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || missing+=(docker-compose)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
# Another apt may hold the lock for a while (for instance the corpus fetcher): wait for it.
apt_get() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"; }
for attempt in 1 2 3 4 5 6 7 8 9 10; do
    apt_get update -qq && break
    echo "apt-get update failed (attempt $attempt), retrying" >&2
    sleep 10
done
# Package scripts must not try to start services (there is no init system here).
printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
$SUDO chmod +x /usr/sbin/policy-rc.d
trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
apt_get install -y -qq "${missing[@]}" >/dev/null
