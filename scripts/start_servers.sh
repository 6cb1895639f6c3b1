#!/usr/bin/env bash
# Start the servers the tests talk to, each bound to 127.0.0.1, when it does not answer yet:
# MariaDB (3306), Redis (6379), ClickHouse (native 9000), PostgreSQL (5432). Idempotent; no init
# system needed.
set -euo pipefail
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

wait_for() {  # wait_for NAME COMMAND...: poll up to 30 s
    local name=$1; shift
    for _ in $(seq 1 150); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "$name did not start; see its log" >&2
    return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 6379; then
    $SUDO mkdir -p /var/lib/redis /var/log/redis
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/tunescout.log
    wait_for redis redis-cli -h 127.0.0.1 -p 6379 ping
fi

if ! port_open 3306; then
    if [ ! -d /var/lib/mysql/mysql ]; then
        $SUDO mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    fi
    $SUDO install -d -o mysql -g mysql /run/mysqld /var/log/mysql
    $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- \
        --user=mysql --bind-address=127.0.0.1 --log-error=/var/log/mysql/error.log
    wait_for mariadb port_open 3306
fi

# ClickHouse: listen on 127.0.0.1 only, and a user profile with small compression blocks so a
# point lookup by hash decompresses little (deploy/clickhouse/users.d/tunescout.xml).
CH_ETC=/etc/clickhouse-server
if [ ! -f $CH_ETC/config.d/tunescout.xml ]; then
    $SUDO mkdir -p $CH_ETC/config.d $CH_ETC/users.d
    $SUDO cp deploy/clickhouse/config.d/tunescout.xml $CH_ETC/config.d/tunescout.xml
    $SUDO cp deploy/clickhouse/users.d/tunescout.xml $CH_ETC/users.d/tunescout.xml
fi
if ! port_open 9000; then
    $SUDO install -d -o clickhouse -g clickhouse /run/clickhouse-server /var/lib/clickhouse \
        /var/log/clickhouse-server
    $SUDO start-stop-daemon --start --oknodo --background --chuid clickhouse \
        --pidfile /run/clickhouse-server/clickhouse-server.pid \
        --exec /usr/sbin/clickhouse-server -- --config-file=$CH_ETC/config.xml \
        --pid-file=/run/clickhouse-server/clickhouse-server.pid
    wait_for clickhouse clickhouse-client --host 127.0.0.1 --query "SELECT 1"
fi
# PostgreSQL: Debian's cluster on port 5432 (created when the machine has none). The tests connect
# over TCP as the superuser `postgres`, without a password, to the database `postgres`, and create
# their own tstest_* databases.
pg_answers() { psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -w -qtAc 'SELECT 1' >/dev/null 2>&1; }
if ! pg_answers; then
    pg_version=$(pg_lsclusters -h | awk '$3 == 5432 {print $1; exit}')
    pg_cluster=$(pg_lsclusters -h | awk '$3 == 5432 {print $2; exit}')
    if [ -z "$pg_version" ]; then
        pg_version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
        pg_cluster=main
        $SUDO pg_createcluster -p 5432 "$pg_version" "$pg_cluster" >/dev/null
    fi
    pg_etc=/etc/postgresql/$pg_version/$pg_cluster
    $SUDO mkdir -p "$pg_etc/conf.d"   # Debian's postgresql.conf includes conf.d/*.conf
    echo "listen_addresses = '127.0.0.1'" | $SUDO tee "$pg_etc/conf.d/tunescout.conf" >/dev/null
    # Debian's cluster asks for a password over TCP. Trust connections from 127.0.0.1, the only
    # address the server listens on, so that the tests need no secret; the line goes first
    # because the first matching line decides.
    pg_hba=$pg_etc/pg_hba.conf
    if ! $SUDO grep -qE '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$pg_hba"; then
        $SUDO sed -i '1i host all all 127.0.0.1/32 trust' "$pg_hba"
    fi
    # restart: a running cluster reads listen_addresses only when it starts.
    if pg_lsclusters -h | awk -v v="$pg_version" -v c="$pg_cluster" '$1 == v && $2 == c && $4 == "online" {f=1} END {exit !f}'; then
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$pg_cluster" restart
    else
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$pg_cluster" start
    fi
    wait_for postgresql pg_answers
fi
echo "servers up: redis 6379, mariadb 3306, clickhouse 9000, postgresql 5432 (127.0.0.1)"
