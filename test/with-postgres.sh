#!/usr/bin/env bash
# Run a command with CREDGW_TEST_POSTGRES_DSN pointing at a throwaway
# PostgreSQL cluster on 127.0.0.1 (a free port), made under a temporary
# directory and removed afterwards. If CREDGW_TEST_POSTGRES_DSN is already set,
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

port=""
for p in $(seq 25432 25532); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || { echo "with-postgres: no free port in 25432-25532" >&2; exit 1; }

cleanup() {
  as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

as_pg "$bindir/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync >/dev/null
# -w: pg_ctl returns once the server accepts connections.
as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c max_connections=300" start >/dev/null

export CREDGW_TEST_POSTGRES_DSN="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
echo "with-postgres: throwaway PostgreSQL on 127.0.0.1:$port" >&2
set +e
"$@"
status=$?
set -e
exit $status
