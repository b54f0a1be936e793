#!/bin/sh
# Creates the three Tessera databases (<prefix>_keys, <prefix>_issuer, <prefix>_revocation).
#
# The postgres image runs this once, when its data volume is first initialised
# (/docker-entrypoint-initdb.d), as POSTGRES_USER over the local socket, so the databases are
# owned by the role Tessera connects as. `tessera migrate` would also create a missing database,
# but only with the CREATEDB privilege; creating them here lets operators run Tessera as a role
# without it. Safe to run again: existing databases are left alone.
set -e

prefix="${TESSERA_DATABASE_PREFIX:-tessera}"
case "$prefix" in
  *[!A-Za-z0-9_]* | "") echo "TESSERA_DATABASE_PREFIX must be letters, digits and _" >&2; exit 1 ;;
esac

for service in keys issuer revocation; do
  db="${prefix}_${service}"
  exists=$(psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    --no-psqlrc --tuples-only --no-align \
    --command "SELECT 1 FROM pg_database WHERE datname = '${db}'")
  if [ "$exists" != "1" ]; then
    psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
      --no-psqlrc --quiet --command "CREATE DATABASE \"${db}\""
    echo "created database ${db}"
  fi
done
