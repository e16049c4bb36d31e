#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 for the integration tests:
# use the running one, start an installed cluster, or install PostgreSQL with apt on a fresh machine.
# Then make sure the test role can log in over TCP (user postgres, password postgres unless overridden).
set -euo pipefail

HOST=127.0.0.1
PORT=5432
PGUSER_NAME=${TRAINYARD_TEST_PG_USER:-postgres}
PGPASS=${TRAINYARD_TEST_PG_PASSWORD:-postgres}

listening() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }
as_postgres() { if command -v runuser >/dev/null; then runuser -u postgres -- "$@"; else su postgres -c "$*"; fi; }

if ! listening; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "ensure_postgres: installing PostgreSQL with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q postgresql
  fi
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    pg_createcluster "$version" main
  fi
  echo "ensure_postgres: starting cluster $version/main"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || pg_ctlcluster "$version" main start
  for _ in $(seq 1 60); do listening && break; sleep 0.5; done
  listening || { echo "ensure_postgres: PostgreSQL did not start on $HOST:$PORT" >&2; exit 1; }
fi

if ! PGPASSWORD="$PGPASS" psql -h "$HOST" -p "$PORT" -U "$PGUSER_NAME" -d postgres -tAc 'select 1' >/dev/null 2>&1; then
  echo "ensure_postgres: setting the password of role $PGUSER_NAME for TCP logins"
  as_postgres psql -v ON_ERROR_STOP=1 -d postgres -c "ALTER ROLE \"$PGUSER_NAME\" WITH LOGIN SUPERUSER PASSWORD '$PGPASS'" \
    || as_postgres psql -v ON_ERROR_STOP=1 -d postgres -c "CREATE ROLE \"$PGUSER_NAME\" WITH LOGIN SUPERUSER PASSWORD '$PGPASS'"
  PGPASSWORD="$PGPASS" psql -h "$HOST" -p "$PORT" -U "$PGUSER_NAME" -d postgres -tAc 'select 1' >/dev/null
fi
echo "ensure_postgres: PostgreSQL ready on $HOST:$PORT"
