#!/usr/bin/env bash
# Stops the local development servers; their data stays in .local/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if [ -f "$nats_pid" ] && kill -0 "$(cat "$nats_pid")" 2>/dev/null; then
  kill -TERM "$(cat "$nats_pid")"
  for _ in $(seq 1 100); do kill -0 "$(cat "$nats_pid")" 2>/dev/null || break; sleep 0.1; done
  rm -f "$nats_pid"
  echo "[local] nats-server stopped"
fi
if bin="$(pg_bin)" && [ -f "$pg_data/postmaster.pid" ]; then
  as_pg "$bin/pg_ctl" -D "$pg_data" -m fast -w stop >/dev/null && echo "[local] PostgreSQL stopped"
fi
