#!/usr/bin/env bash
# The test command (README): the whole Rust suite, then the Python client against a live gateway.
# PostgreSQL: set SIGNAALPOORT_TEST_DATABASE_URL (an admin URL, e.g.
# postgres://postgres@127.0.0.1:5432/postgres) to run every end-to-end test on PostgreSQL as well;
# this script sets it by itself when a local server answers.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SIGNAALPOORT_TEST_DATABASE_URL:-}" ]; then
    candidate=postgres://postgres@127.0.0.1:5432/postgres
    if python3 - "$candidate" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", 5432), timeout=1); s.close()
PY
    then
        export SIGNAALPOORT_TEST_DATABASE_URL=$candidate
    fi
fi

# Every PostgreSQL test makes its own database; this run's share a prefix and are dropped at exit.
if [ -n "${SIGNAALPOORT_TEST_DATABASE_URL:-}" ]; then
    export SIGNAALPOORT_TEST_DB_PREFIX="sp_test_$(python3 -c 'import secrets; print(secrets.token_hex(6))')_"
    drop_run_databases() {
        command -v psql >/dev/null || return 0
        psql "$SIGNAALPOORT_TEST_DATABASE_URL" -Atq -c \
            "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE);', datname) FROM pg_database
              WHERE left(datname, length('$SIGNAALPOORT_TEST_DB_PREFIX')) = '$SIGNAALPOORT_TEST_DB_PREFIX'" \
            | psql "$SIGNAALPOORT_TEST_DATABASE_URL" -q >/dev/null || true
    }
    trap drop_run_databases EXIT
fi

cargo test --workspace --locked

if [ -n "${SIGNAALPOORT_TEST_DATABASE_URL:-}" ]; then
    echo "PostgreSQL suite: ran against ${SIGNAALPOORT_TEST_DATABASE_URL%%@*}@… (fresh database per test)"
else
    echo "PostgreSQL suite: NOT RUN — no server on 127.0.0.1:5432. To run it: start PostgreSQL and set"
    echo "  SIGNAALPOORT_TEST_DATABASE_URL=postgres://USER@HOST:5432/postgres, then run scripts/test.sh again."
fi

# Every target with the test run's feature set (a no-op after it; `-p signaalpoort` alone would
# rebuild a hundred crates with other features).
cargo build --locked --workspace --all-targets
scripts/python-example.sh target/debug/signaalpoort
