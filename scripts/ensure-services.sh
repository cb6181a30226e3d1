#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1 for the tests; install and start them
# from Debian's packages when they are missing (needs root, as on CI).
#
#   scripts/ensure-services.sh                 everything `make test` needs
#   scripts/ensure-services.sh postgres-role   only the tests' PostgreSQL role and database
#
# PostgreSQL: the tests log in over TCP as the role bpsm_test with a password, since a fresh
# Debian cluster wants one for TCP logins (scram-sha-256). The script creates that role
# (LOGIN CREATEDB, a random password) and the database "test" through the Unix socket as the
# postgres user (peer authentication), then writes the role's URL to .cache/test-pg-url
# (mode 0600), which tests/conftest.py reads. Running it again keeps a URL that still works.
# To use another database, set BPSM_TEST_PG_URL (a SQLAlchemy URL of a role that may create
# databases, e.g. postgresql+psycopg://me:pw@db.example/test): nothing is set up then.
# BPSM_PG_PORT (5432) and BPSM_PG_SOCKET_DIR (/var/run/postgresql) choose the cluster,
# BPSM_TEST_PG_URL_FILE where the URL goes.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_PORT=${BPSM_PG_PORT:-5432}
PG_SOCKET_DIR=${BPSM_PG_SOCKET_DIR:-/var/run/postgresql}
URL_FILE=${BPSM_TEST_PG_URL_FILE:-.cache/test-pg-url}
ROLE=bpsm_test

pg_ready() { pg_isready -h 127.0.0.1 -p "$PG_PORT" -q 2>/dev/null; }
redis_ready() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -n -u postgres -- "$@"; fi
}
# libpq takes the URL without SQLAlchemy's driver name.
url_works() { psql "${1/+psycopg/}" -X -Atqc 'select 1' >/dev/null 2>&1; }

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# The role and database the tests use, on the cluster at $PG_SOCKET_DIR / $PG_PORT.
ensure_test_role() {
  if [ -n "${BPSM_TEST_PG_URL:-}" ]; then
    url_works "$BPSM_TEST_PG_URL" || {
      echo "BPSM_TEST_PG_URL does not let me log in (check user, password and database)" >&2
      return 1
    }
    return 0
  fi
  if [ -s "$URL_FILE" ] && url_works "$(cat "$URL_FILE")"; then return 0; fi
  local password
  password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
  as_postgres psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" -d postgres \
    -v role="$ROLE" -v password="$password" >/dev/null <<'SQL' || {
SELECT format('CREATE ROLE %I', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role')\gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'password')\gexec
SELECT format('CREATE DATABASE test OWNER %I', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'test')\gexec
SQL
    echo "cannot set up the PostgreSQL role $ROLE as the postgres user over the socket" \
      "in $PG_SOCKET_DIR; set BPSM_TEST_PG_URL to a database the tests may use" >&2
    return 1
  }
  mkdir -p "$(dirname "$URL_FILE")"
  (umask 077 && printf 'postgresql+psycopg://%s:%s@127.0.0.1:%s/test\n' \
    "$ROLE" "$password" "$PG_PORT" >"$URL_FILE")
  url_works "$(cat "$URL_FILE")" || {
    echo "the role $ROLE was set up but cannot log in over TCP on 127.0.0.1:$PG_PORT" >&2
    return 1
  }
}

if [ "${1:-}" = postgres-role ]; then
  ensure_test_role
  echo "PostgreSQL test role ready (URL in $URL_FILE)"
  exit 0
fi

if ! pg_ready; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-client
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
fi
pg_ready || { echo "PostgreSQL is not reachable on 127.0.0.1:$PG_PORT" >&2; exit 1; }
ensure_test_role

# tests/test_deploy.py rates the systemd unit with systemd-analyze (no systemd needs to run).
command -v systemd-analyze >/dev/null || apt_install systemd

if ! redis_ready; then
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/bpsm-redis.log
  for _ in $(seq 1 30); do redis_ready && break; sleep 0.5; done
fi
redis_ready || { echo "Redis is not reachable on 127.0.0.1:6379" >&2; exit 1; }
echo "services: PostgreSQL and Redis ready"
