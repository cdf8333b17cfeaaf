#!/usr/bin/env bash
# Runs examples/node/register_and_query.js (@grpc/grpc-js from npm, locked by package-lock.json)
# against a live gateway on ephemeral loopback ports, with a dev PKI made for this run.
# Usage: scripts/node-example.sh [path-to-signaalpoort-binary]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/signaalpoort}
work=$(mktemp -d)
trap 'kill -TERM "${pid:-0}" 2>/dev/null || true; wait "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

(cd examples/node && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)

# Two free loopback ports (bound and released here; the gateway takes them a moment later).
read -r grpc_port admin_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')

"$bin" pki init --dir "$work/pki" >/dev/null
"$bin" dev --pki "$work/pki" --data "$work/data" --listen "127.0.0.1:$grpc_port" \
    --admin "127.0.0.1:$admin_port" --no-demo >"$work/gateway.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    if "$bin" healthcheck --admin "127.0.0.1:$admin_port" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$work/gateway.log"; exit 1; fi
    sleep 0.1
done
node examples/node/register_and_query.js --endpoint "127.0.0.1:$grpc_port" --pki "$work/pki" \
    || { echo "--- gateway log"; cat "$work/gateway.log"; exit 1; }
