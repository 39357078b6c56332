#!/usr/bin/env bash
# Run a command with CREDGW_TEST_POSTGRES_DSN pointing at a throwaway
# PostgreSQL cluster made under a temporary directory and removed
# afterwards. It listens on a Unix socket in that directory only: no TCP
# port to pick (and lose to another process) before it binds. If CREDGW_TEST_POSTGRES_DSN is already set,
# the command runs against that server instead.
set -euo pipefail

if [ -n "${CREDGW_TEST_POSTGRES_DSN:-}" ]; then
  exec "$@"
fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "with-postgres: PostgreSQL server binaries not found (run make deps)" >&2
  exit 1
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/credgw-pg.XXXXXX")
as_pg() {
  # PostgreSQL refuses to run as root.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; chmod 700 "$dir"; fi

cleanup() {
  as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

as_pg "$bindir/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync >/dev/null
# -w: pg_ctl returns once the server accepts connections.
as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 120 \
  -o "-c listen_addresses='' -k $dir -c fsync=off -c synchronous_commit=off -c max_connections=300" start >/dev/null

export CREDGW_TEST_POSTGRES_DSN="postgres://postgres@/postgres?host=$dir&sslmode=disable"
echo "with-postgres: throwaway PostgreSQL on the Unix socket in $dir" >&2
set +e
"$@"
status=$?
set -e
exit $status
