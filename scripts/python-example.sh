#!/usr/bin/env bash
# Runs examples/python/register_signal.py against a live gateway started from the release binary.
# Usage: scripts/python-example.sh [path-to-signaalpoort-binary]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/signaalpoort}
work=$(mktemp -d)
trap 'kill -TERM "${pid:-0}" 2>/dev/null || true; wait "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

python3 -m pip install --quiet --disable-pip-version-check "grpcio>=1.60" "grpcio-tools>=1.60" >/dev/null
mkdir -p examples/python/gen
python3 -m grpc_tools.protoc -I proto --python_out=examples/python/gen --grpc_python_out=examples/python/gen \
    proto/signaalpoort/v1/*.proto
touch examples/python/gen/signaalpoort/__init__.py examples/python/gen/signaalpoort/v1/__init__.py

"$bin" pki init --dir "$work/pki" >/dev/null
"$bin" dev --pki "$work/pki" --data "$work/data" --listen 127.0.0.1:7543 --admin 127.0.0.1:7544 --no-demo >"$work/gateway.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    if "$bin" healthcheck --admin 127.0.0.1:7544 >/dev/null 2>&1; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$work/gateway.log"; exit 1; fi
    sleep 0.1
done
python3 examples/python/register_signal.py --endpoint 127.0.0.1:7543 --pki "$work/pki"
echo "python example: OK"
