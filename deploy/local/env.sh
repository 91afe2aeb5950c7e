# Shared settings of the local development servers (sourced, not run).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
state="$root/.local"
export LEDGER_LOCAL_NATS_PORT="${LEDGER_LOCAL_NATS_PORT:-4222}"
export LEDGER_LOCAL_NATS_MONITOR_PORT="${LEDGER_LOCAL_NATS_MONITOR_PORT:-8222}"
export LEDGER_LOCAL_NATS_HTTP="127.0.0.1:$LEDGER_LOCAL_NATS_MONITOR_PORT"
export LEDGER_LOCAL_NATS_STORE="$state/nats/jetstream"
export LEDGER_LOCAL_PG_PORT="${LEDGER_LOCAL_PG_PORT:-55432}"
pg_data="$state/pg/data"
pg_log="$state/pg/postgres.log"
nats_log="$state/nats/nats.log"
nats_pid="$state/nats/nats.pid"

pg_bin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/postgres" ]; then echo "$d"; return 0; fi
  done
  return 1
}

# PostgreSQL will not run as root: run its programs as the `postgres` user
# (or `nobody`) when started as root.
pg_user=""
if [ "$(id -u)" -eq 0 ]; then
  if id postgres >/dev/null 2>&1; then pg_user=postgres; else pg_user=nobody; fi
fi
as_pg() {
  if [ -n "$pg_user" ]; then runuser -u "$pg_user" -- "$@"; else "$@"; fi
}

nats_healthy() {
  curl -fs "http://127.0.0.1:$LEDGER_LOCAL_NATS_MONITOR_PORT/healthz" >/dev/null 2>&1
}
