#!/usr/bin/env bash
# Starts a throwaway PostgreSQL or MariaDB server on 127.0.0.1 for tests, from the Debian packages that
# `scripts/install.sh --dev` installs. Its data lives in a fresh temp folder; nothing else is touched.
#   scripts/throwaway_db.sh postgres PORT   prints: DIR URL   (URL is a SQLAlchemy URL)
#   scripts/throwaway_db.sh mariadb PORT    prints: DIR URL
#   scripts/throwaway_db.sh stop DIR        stops the server and removes DIR
# Database servers refuse to run as root: under root the server runs as the packages' own
# unprivileged user (postgres, mysql).
set -euo pipefail

kind="${1:?usage: throwaway_db.sh postgres|mariadb PORT | stop DIR}"

as_user() {  # as_user USER CMD...: run unprivileged when we are root
  local user="$1"; shift
  if [[ $(id -u) == 0 ]]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [[ -x "$d/$1" ]] && { echo "$d/$1"; return; }; done
  command -v "$1"
}

wait_for() {  # wait_for SECONDS CMD...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || { echo "server did not start" >&2; return 1; }
    sleep 0.2
  done
}

case "$kind" in
  postgres)
    port="${2:?port}"
    dir=$(mktemp -d /tmp/dp-postgres.XXXXXX)
    [[ $(id -u) == 0 ]] && chown postgres "$dir"
    as_user postgres "$(pg_bin initdb)" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1
    as_user postgres "$(pg_bin pg_ctl)" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" >/dev/null
    wait_for 60 "$(pg_bin pg_isready)" -h 127.0.0.1 -p "$port"
    as_user postgres "$(pg_bin createdb)" -h 127.0.0.1 -p "$port" -U postgres datapilot
    echo "$dir postgresql+psycopg://postgres@127.0.0.1:$port/datapilot"
    ;;
  mariadb)
    port="${2:?port}"
    dir=$(mktemp -d /tmp/dp-mariadb.XXXXXX)
    user=$(id -un)
    if [[ $(id -u) == 0 ]]; then user=mysql; chown mysql "$dir"; fi
    as_user "$user" mariadb-install-db --no-defaults --datadir="$dir/data" --user="$user" \
      --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1
    # A throwaway server: no grant tables (any local client is root), no fsync.
    as_user "$user" mariadbd --no-defaults --datadir="$dir/data" --port="$port" --bind-address=127.0.0.1 \
      --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" --skip-grant-tables --innodb-flush-log-at-trx-commit=0 \
      --log-error="$dir/server.log" >/dev/null 2>&1 &
    wait_for 60 mariadb-admin --no-defaults --protocol=tcp -h 127.0.0.1 -P "$port" -u root ping
    mariadb --no-defaults --protocol=tcp -h 127.0.0.1 -P "$port" -u root -e "CREATE DATABASE datapilot"
    echo "$dir mysql+pymysql://root@127.0.0.1:$port/datapilot"
    ;;
  stop)
    dir="${2:?dir}"
    [[ "$dir" == /tmp/dp-postgres.* || "$dir" == /tmp/dp-mariadb.* ]] || { echo "not a throwaway dir: $dir" >&2; exit 2; }
    if [[ -d "$dir/data" && -f "$dir/data/PG_VERSION" ]]; then
      as_user postgres "$(pg_bin pg_ctl)" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    elif [[ -f "$dir/mysqld.pid" ]]; then
      pid=$(cat "$dir/mysqld.pid"); kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *) echo "unknown kind: $kind" >&2; exit 2 ;;
esac
