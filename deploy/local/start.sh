#!/usr/bin/env bash
# Starts the local development servers, installing them first if needed:
# nats-server (JetStream, sync_interval: always) on 127.0.0.1:4222 and
# PostgreSQL on 127.0.0.1:55432 with database `ledger` (user `ledger`), both
# keeping their data under .local/. Running it again changes nothing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"$root/deploy/install.sh"

say() { printf '[local] %s\n' "$*"; }

# --- nats-server ---------------------------------------------------------------
if nats_healthy; then
  say "nats-server already running on 127.0.0.1:$LEDGER_LOCAL_NATS_PORT"
else
  mkdir -p "$LEDGER_LOCAL_NATS_STORE"
  # The development passwords of deploy/nats/accounts.conf, as the
  # server's environment.
  ( set -a; . "$root/deploy/nats/dev-passwords.env"; set +a
    exec nohup "$root/deploy/.tools/bin/nats-server" -c "$root/deploy/nats/single-node.conf" \
      >>"$nats_log" 2>&1 ) &
  echo $! >"$nats_pid"
  for _ in $(seq 1 100); do nats_healthy && break; sleep 0.1; done
  nats_healthy || { tail -20 "$nats_log" >&2; echo "nats-server did not start" >&2; exit 1; }
  say "nats-server started on 127.0.0.1:$LEDGER_LOCAL_NATS_PORT (log: .local/nats/nats.log)"
fi

# --- PostgreSQL ----------------------------------------------------------------
bin="$(pg_bin)"
mkdir -p "$state/pg"
if [ -n "$pg_user" ]; then chown "$pg_user" "$state/pg"; fi
if [ ! -f "$pg_data/PG_VERSION" ]; then
  say "creating the PostgreSQL cluster in .local/pg/data"
  as_pg "$bin/initdb" -D "$pg_data" -U postgres -A trust -E UTF8 --locale=C >/dev/null
fi
if as_pg "$bin/pg_isready" -q -h 127.0.0.1 -p "$LEDGER_LOCAL_PG_PORT"; then
  say "PostgreSQL already running on 127.0.0.1:$LEDGER_LOCAL_PG_PORT"
else
  as_pg "$bin/pg_ctl" -D "$pg_data" -l "$pg_log" -w -o \
    "-p $LEDGER_LOCAL_PG_PORT -c listen_addresses=127.0.0.1 -k $state/pg" start >/dev/null
  say "PostgreSQL started on 127.0.0.1:$LEDGER_LOCAL_PG_PORT (log: .local/pg/postgres.log)"
fi
psql_admin() { as_pg "$bin/psql" -X -q -h 127.0.0.1 -p "$LEDGER_LOCAL_PG_PORT" -U postgres "$@"; }
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'ledger'")" != "1" ]; then
  psql_admin -c "CREATE ROLE ledger LOGIN"
fi
if [ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = 'ledger'")" != "1" ]; then
  psql_admin -c "CREATE DATABASE ledger OWNER ledger"
  say "database 'ledger' created"
fi
say "LEDGER_NATS_URL=nats://127.0.0.1:$LEDGER_LOCAL_NATS_PORT"
say "LEDGER_NATS_USER=ledger LEDGER_NATS_PASSWORD=ledger-dev (deploy/nats/dev-passwords.env)"
say "LEDGER_DATABASE_URL=postgres://ledger@127.0.0.1:$LEDGER_LOCAL_PG_PORT/ledger"
