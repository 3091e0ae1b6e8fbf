#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on loopback for the multi-worker tuner test and export
# TRITUNE_TEST_POSTGRES_URL. Meant to be sourced by .ci/run (also runs on its own: it prints the
# export line). Installs the Debian package when no server binaries exist and we are root; runs
# the server as the 'postgres' user when we are root (PostgreSQL refuses root). On any failure it
# says why and returns 0 without the variable: the postgres tests then skip, nothing else changes.

_tritune_pg_start() {
  if [ -n "${TRITUNE_TEST_POSTGRES_URL:-}" ]; then
    echo "postgres.sh: using TRITUNE_TEST_POSTGRES_URL from the environment"
    return 0
  fi
  local bindir=""
  _tritune_pg_find() {
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
      bindir=$(dirname "$(readlink -f "$(command -v pg_ctl)")")  # Debian links some tools into /usr/bin
    else
      bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    fi
  }
  _tritune_pg_find
  if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "postgres.sh: installing PostgreSQL from Debian packages"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1; } \
        || { echo "postgres.sh: could not install postgresql; postgres tests will skip"; return 0; }
      _tritune_pg_find
    fi
  fi
  if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "postgres.sh: no PostgreSQL server binaries found; postgres tests will skip"
    return 0
  fi

  local run=()
  if [ "$(id -u)" = 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
      useradd --system --no-create-home postgres 2>/dev/null \
        || { echo "postgres.sh: no 'postgres' user to run the server as; postgres tests will skip"; return 0; }
    fi
    if command -v runuser >/dev/null 2>&1; then run=(runuser -u postgres --); else run=(su postgres -s /bin/sh -c); fi
  fi
  local dir port
  dir=$(mktemp -d "${TMPDIR:-/tmp}/tritune-pg.XXXXXX")
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  _tritune_pg_as() {  # run a command as the server's user
    if [ "${run[0]:-}" = su ]; then "${run[@]}" "$*"; elif [ ${#run[@]} -gt 0 ]; then "${run[@]}" "$@"; else "$@"; fi
  }
  _tritune_pg_as "$bindir/initdb" -D "$dir/data" -U tritune -A trust --no-sync >"$dir/initdb.log" 2>&1 \
    || { echo "postgres.sh: initdb failed (see $dir/initdb.log); postgres tests will skip"; return 0; }
  _tritune_pg_as "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=50" start >/dev/null \
    || { echo "postgres.sh: the server did not start (see $dir/server.log); postgres tests will skip"; return 0; }
  if ! "$bindir/createdb" -h 127.0.0.1 -p "$port" -U tritune tritune_test; then
    echo "postgres.sh: createdb failed; postgres tests will skip"
    _tritune_pg_as "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    return 0
  fi
  export TRITUNE_TEST_POSTGRES_URL="postgresql+psycopg2://tritune@127.0.0.1:$port/tritune_test"
  export TRITUNE_TEST_POSTGRES_DIR="$dir"
  echo "postgres.sh: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)"
  echo "export TRITUNE_TEST_POSTGRES_URL=$TRITUNE_TEST_POSTGRES_URL"
  local stop
  stop="$(printf '%q ' "${run[@]}")$bindir/pg_ctl -D $dir/data -m immediate stop >/dev/null 2>&1; rm -rf $dir"
  if [ "${BASH_SOURCE[1]:-$0}" != "$0" ]; then
    # Sourced (.ci/run): stop it when that shell exits, unless the shell has its own EXIT trap.
    [ -z "$(trap -p EXIT)" ] && trap "$stop" EXIT
  else
    echo "postgres.sh: the server keeps running; stop it with: $stop"
  fi
  return 0
}

_tritune_pg_start || true
unset -f _tritune_pg_start _tritune_pg_find _tritune_pg_as 2>/dev/null || true
