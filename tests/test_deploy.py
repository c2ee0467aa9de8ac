"""Deployment artifacts under deploy/: parsed and checked for the properties operators rely on.

No Docker engine or cluster is needed: files are parsed (PyYAML comes with uvicorn[standard]), the
healthcheck script runs against a local HTTP server, and deploy/redis.conf is loaded by a real redis-server.
Tool-based checks (yamllint, Kubernetes schemas, promtool, systemd-analyze) live in .ci/validate-deploy.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from postrelay.adapters import adapter_class
from postrelay.core.config import parse_config
from tests.support.http_server import LocalHTTPServer, Reply
from tests.support.redis_server import free_port, redis_binary

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
NAMESPACE = "postrelay"
SERVE_CMD = ["postrelay", "serve", "--config", "/etc/postrelay/postrelay.toml", "--host", "0.0.0.0",
             "--port", "8000", "--workers", "2"]
PLACEHOLDER = re.compile(r"REPLACE_?ME")
VAR_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-[^}]*)?\}")

# The metrics contract: name -> (type, labels).
METRICS: dict[str, tuple[str, set[str]]] = {
    "postrelay_events_received_total": ("counter", {"source", "outcome"}),
    "postrelay_signature_failures_total": ("counter", {"source"}),
    "postrelay_ingest_seconds": ("histogram", set()),
    "postrelay_queue_depth": ("gauge", set()),
    "postrelay_deliveries_total": ("counter", {"destination", "outcome"}),
    "postrelay_dlq_size": ("gauge", set()),
    "postrelay_circuit_state": ("gauge", {"destination"}),
    "postrelay_followups_pending": ("gauge", set()),
    "postrelay_followup_lag_seconds": ("histogram", set()),
    "postrelay_http_requests_total": ("counter", {"path", "status"}),
    "postrelay_worker_heartbeat_age_seconds": ("gauge", set()),
    "postrelay_deliveries_overdue": ("gauge", set()),
}
# Required alert -> the metric it must be built on.
REQUIRED_ALERTS = {
    "PostrelayDLQGrowing": "postrelay_dlq_size",
    "PostrelayCircuitOpen": "postrelay_circuit_state",
    "PostrelayIngest5xxRate": "postrelay_http_requests_total",
    "PostrelayFollowupLagHigh": "postrelay_followup_lag_seconds_bucket",
    "PostrelayWorkerHeartbeatStale": "postrelay_worker_heartbeat_age_seconds",
    "PostrelayQueueDepthGrowing": "postrelay_queue_depth",
    "PostrelayDeliveriesOverdue": "postrelay_deliveries_overdue",
}


# ---- helpers ---------------------------------------------------------------------------------------------

def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def k8s_objects() -> list[dict[str, Any]]:
    """Every Kubernetes object in deploy/k8s (kustomization files excluded)."""
    objs = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        objs.extend(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)
    return objs


def k8s(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name} in deploy/k8s, found {len(found)}"
    return found[0]


def pod_templates() -> list[tuple[str, dict[str, Any]]]:
    return [(f'{o["kind"]}/{o["metadata"]["name"]}', o["spec"]["template"]) for o in k8s_objects()
            if o["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}]


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of an env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=value: {line!r}"
            values[key] = value
    return values


def example_env() -> dict[str, str]:
    return env_file(DEPLOY / ".env.example")


def secret_env() -> dict[str, str]:
    return dict(k8s("Secret", "postrelay-secrets")["stringData"])


def toml_vars(data: Any) -> set[str]:
    """${VAR} names referenced by the string values of a parsed TOML (or YAML) document."""
    if isinstance(data, str):
        return set(VAR_REF.findall(data))
    if isinstance(data, dict):
        return set().union(*(toml_vars(v) for v in data.values())) if data else set()
    if isinstance(data, list):
        return set().union(*(toml_vars(v) for v in data)) if data else set()
    return set()


def example_toml_text() -> str:
    return (DEPLOY / "postrelay.example.toml").read_text(encoding="utf-8")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction (CMD [...]) as a list."""
    start = args.index("[")
    return yaml.safe_load(args[start:])


def dockerignore_allows(path: str) -> bool:
    """Whether deploy/Dockerfile.dockerignore lets `path` into the build context (last match wins)."""
    allowed = True
    for line in (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if re.fullmatch(f"{regex}(/.*)?", path):
            allowed = negate
    return allowed


def systemd_unit(name: str) -> dict[str, list[str]]:
    """`Section.Key` -> values (systemd allows repeated keys)."""
    section, values = "", {}
    for line in (DEPLOY / "systemd" / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key}", []).append(value)
    return values


# ---- Dockerfile ------------------------------------------------------------------------------------------

def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    ins = dockerfile_instructions()
    froms = [args for word, args in ins if word == "FROM"]
    assert len(froms) >= 2, "expected a build stage and a runtime stage"
    base = dict(re.findall(r"ARG (\w+)=(\S+)", " ".join(f"{w} {a}" for w, a in ins if w == "ARG")))
    resolved = [re.sub(r"\$\{(\w+)\}", lambda m: base.get(m.group(1), m.group(0)), f.split()[0]) for f in froms]
    assert all(image == "python:3.11-slim" for image in resolved), resolved
    runs = " ".join(args for word, args in ins if word == "RUN")
    assert re.search(r"pip install (--no-deps )?\.(\s|$)", runs), "the package is installed with `pip install .`"


def test_dockerfile_runtime_is_non_root_with_python_healthcheck() -> None:
    stage = final_stage()
    users = [args for word, args in stage if word == "USER"]
    assert users, "the runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"USER {users[-1]} is root"
    checks = [args for word, args in stage if word == "HEALTHCHECK"]
    assert len(checks) == 1
    check = checks[0]
    assert "/healthz" in check and "python" in check
    assert not re.search(r"\b(curl|wget)\b", check), "python:3.11-slim has neither curl nor wget"
    assert ("EXPOSE", "8000") in stage


def test_dockerfile_default_cmd_is_the_receiver() -> None:
    cmds = [args for word, args in final_stage() if word == "CMD"]
    assert cmds and exec_form(cmds[-1]) == SERVE_CMD


def test_dockerfile_copies_only_what_the_context_contains() -> None:
    for word, args in dockerfile_instructions():
        if word != "COPY" or "--from=" in args:
            continue
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for src in sources:
            if src in {".", "./"}:
                continue
            assert (ROOT / src).exists(), f"COPY {src}: missing from the repository"
            assert dockerignore_allows(src), f"COPY {src}: excluded by Dockerfile.dockerignore"


def test_dockerignore_lets_in_every_package_and_keeps_secrets_out() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in includes:
        package = pattern.rstrip("*").rstrip(".")
        assert dockerignore_allows(f"{package}/__init__.py"), f"package {package} is not in the build context"
    assert dockerignore_allows("pyproject.toml")
    for leak in (".git/config", ".venv/bin/python", "deploy/.env", ".env", "dump.rdb", "tests/conftest.py",
                 "postrelay/__pycache__/cli.cpython-311.pyc"):
        assert not dockerignore_allows(leak), f"{leak} would be sent to the Docker daemon"


# ---- healthcheck script ----------------------------------------------------------------------------------

def run_healthcheck(url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEPLOY / "healthcheck.py"), url], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "POSTRELAY_HEALTHCHECK_TIMEOUT": "5", **env})


def test_healthcheck_exits_zero_only_on_2xx() -> None:
    replies = {"/healthz": Reply(200, {"status": "ok"}), "/readyz": Reply(503, {"status": "unavailable"})}
    with LocalHTTPServer(lambda req: replies.get(req.path, Reply(404))) as server:
        assert run_healthcheck(f"{server.url}/healthz").returncode == 0
        failed = run_healthcheck(f"{server.url}/readyz")
        assert failed.returncode == 1 and "503" in failed.stderr
        # Proxy variables must not divert a probe of the local process.
        proxied = run_healthcheck(f"{server.url}/healthz", HTTP_PROXY="http://127.0.0.1:9",
                                  http_proxy="http://127.0.0.1:9", NO_PROXY="", no_proxy="")
        assert proxied.returncode == 0, proxied.stderr
    refused = run_healthcheck(f"http://127.0.0.1:{free_port()}/healthz")
    assert refused.returncode == 1 and "unhealthy" in refused.stderr


# ---- Redis ------------------------------------------------------------------------------------------------

def redis_conf() -> dict[str, str]:
    conf = {}
    for line in (DEPLOY / "redis.conf").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            conf[key] = value.strip()
    return conf


def test_redis_conf_is_durable_and_never_evicts() -> None:
    conf = redis_conf()
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "everysec"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf.get("maxmemory"), "noeviction needs a maxmemory, or the OOM killer decides instead"
    assert conf["no-appendfsync-on-rewrite"] == "no"
    text = (DEPLOY / "redis.conf").read_text(encoding="utf-8")
    assert re.search(r"#\s+always\b", text) and "power loss" in text, "explain `always` and the loss windows"


def test_redis_conf_loads_in_a_real_redis_server(tmp_path: Path) -> None:
    binary = redis_binary()  # the suite needs a redis-server anyway (CI installs it)
    port = free_port()
    proc = subprocess.Popen([binary, str(DEPLOY / "redis.conf"), "--port", str(port), "--dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port, socket_connect_timeout=0.2, decode_responses=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail(f"redis-server rejected deploy/redis.conf:\n{out}")
                time.sleep(0.05)
        for key, want in {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}.items():
            assert client.config_get(key)[key] == want
        assert int(client.config_get("maxmemory")["maxmemory"]) > 0
    finally:
        client.close()
        proc.terminate()
        proc.wait(15)


# ---- docker compose ----------------------------------------------------------------------------------------

def compose() -> dict[str, Any]:
    return load_yaml(DEPLOY / "docker-compose.yml")


def compose_default(value: str) -> str:
    """`${VAR:-default}` -> default (what compose uses when .env does not set VAR)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def flag(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


def test_compose_redis_has_aof_and_noeviction() -> None:
    redis_svc = compose()["services"]["redis"]
    cmd = [str(a) for a in redis_svc["command"]]
    assert cmd[0] == "redis-server"
    assert flag(cmd, "--appendonly") == "yes"
    assert flag(cmd, "--appendfsync") == "everysec"
    assert flag(cmd, "--maxmemory-policy") == "noeviction"
    assert compose_default(flag(cmd, "--maxmemory"))
    data = [v for v in redis_svc["volumes"] if str(v).endswith(":/data")]
    assert data and data[0].split(":")[0] in compose()["volumes"], "AOF must live on a named volume"
    assert "redis-cli ping" in " ".join(redis_svc["healthcheck"]["test"])
    assert "ports" not in redis_svc, "Redis must not be published on the host"


def test_compose_receiver_and_workers() -> None:
    services = compose()["services"]
    receiver, worker = services["receiver"], services["worker"]
    cmd = [compose_default(str(a)) for a in receiver["command"]]
    assert cmd[:2] == ["postrelay", "serve"] and flag(cmd, "--port") == "8000"
    assert int(flag(cmd, "--workers")) >= 2, "several uvicorn workers"
    assert "/readyz" in " ".join(receiver["healthcheck"]["test"])
    assert [str(a) for a in worker["command"]][:2] == ["postrelay", "worker"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["healthcheck"] == {"disable": True}, "the image's /healthz check cannot pass in a worker"
    for svc in (receiver, worker):
        assert svc["env_file"] == [".env"]
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["read_only"] is True and "ALL" in svc["cap_drop"]
        assert compose_default(svc["volumes"][0]["source"]) == "./postrelay.example.toml"
        assert svc["volumes"][0]["target"] == "/etc/postrelay/postrelay.toml"
        build = svc["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
        assert "$$@" in svc["entrypoint"][2], "the placeholder guard must exec the command"


def test_compose_variables_are_in_env_example() -> None:
    used = toml_vars(compose())
    assert used, "expected ${VAR} substitutions"
    assert used <= set(example_env()), f"not in deploy/.env.example: {sorted(used - set(example_env()))}"


# ---- env files and the example config --------------------------------------------------------------------

def test_env_example_is_compose_and_systemd_compatible() -> None:
    for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), line
        assert not re.search(r"[\s\"'$`\\]", value), f"quote-, space- and $-free values only: {line!r}"


def test_every_config_variable_is_provided_everywhere() -> None:
    used = toml_vars(tomllib.loads(example_toml_text()))
    assert {"REDIS_URL", "POSTRELAY_API_TOKEN", "POSTGRID_WEBHOOK_SECRET", "POSTALYTICS_TOKEN"} <= used
    missing_env = used - set(example_env())
    assert not missing_env, f"deploy/.env.example lacks {sorted(missing_env)}"
    receiver = k8s("Deployment", "postrelay-receiver")["spec"]["template"]["spec"]["containers"][0]
    k8s_env = set(secret_env()) | {e["name"] for e in receiver.get("env", [])}
    missing_k8s = used - k8s_env
    assert not missing_k8s, f"k8s Secret/env lacks {sorted(missing_k8s)}"


@pytest.mark.parametrize("env_source", ["env_example", "k8s_secret"])
def test_example_config_is_valid_with_each_env_source(env_source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = example_env() if env_source == "env_example" else secret_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    data = tomllib.loads(example_toml_text())
    config = parse_config(data)
    assert config.server.redis_url == env["REDIS_URL"]
    assert config.server.data_dir == "/var/lib/postrelay"
    assert config.server.appendfsync == redis_conf()["appendfsync"]
    # Adapter settings too, as `postrelay check-config` does.
    for dest in config.destinations.values():
        adapter_class(dest.type).Settings.model_validate(dest.settings)


def test_placeholders_are_marked_so_the_guards_catch_them() -> None:
    secrets = toml_vars(tomllib.loads(example_toml_text())) - {"REDIS_URL"}
    for source, env in (("deploy/.env.example", example_env()), ("k8s Secret", secret_env())):
        for key in secrets | ({"REDIS_PASSWORD", "REDIS_URL"} if source == "k8s Secret" else set()):
            assert PLACEHOLDER.search(env[key]), f"{source}: {key} has a real-looking value"


# ---- Kubernetes --------------------------------------------------------------------------------------------

def containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = template["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def test_receiver_deployment_probes_and_security() -> None:
    dep = k8s("Deployment", "postrelay-receiver")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    main = next(c for c in pod["containers"] if c["name"] == "receiver")
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz?check=redis"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports["http"] == 8000
    assert main["readinessProbe"]["httpGet"]["port"] in {"http", 8000}
    assert main["command"] + main["args"] == SERVE_CMD
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    for kind in ("requests", "limits"):
        assert main["resources"][kind]["memory"]
    assert main["resources"]["requests"]["cpu"], "the HPA needs a CPU request"
    mounts = {m["mountPath"] for m in main["volumeMounts"]}
    assert {"/etc/postrelay", "/tmp", "/var/lib/postrelay"} <= mounts, "read-only root: writable dirs mounted"


def test_every_pod_is_non_root_and_read_only() -> None:
    templates = pod_templates()
    assert len(templates) == 3
    for name, template in templates:
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        for c in containers(template):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, f"{name}/{c['name']}"
            assert sc["allowPrivilegeEscalation"] is False, f"{name}/{c['name']}"
            assert sc["capabilities"]["drop"] == ["ALL"], f"{name}/{c['name']}"
            assert c["resources"]["limits"]["memory"], f"{name}/{c['name']}"


def test_postrelay_pods_refuse_placeholders_and_check_config() -> None:
    for name in ("postrelay-receiver", "postrelay-worker"):
        init = k8s("Deployment", name)["spec"]["template"]["spec"]["initContainers"][0]
        script = init["command"][-1]
        assert "REPLACE_?ME" in script and "postrelay check-config /etc/postrelay/postrelay.toml" in script
        # The guard really fails on a placeholder and runs the command otherwise.
        fake_bin = "exec postrelay check-config /etc/postrelay/postrelay.toml"
        probe = script.replace(fake_bin, "echo config-checked")
        bad = subprocess.run(["sh", "-ec", probe], env={"PATH": os.environ["PATH"], "X": "whsec_REPLACEME00"},
                             capture_output=True, text=True, check=False)
        assert bad.returncode == 1 and "X" in bad.stderr
        good = subprocess.run(["sh", "-ec", probe], env={"PATH": os.environ["PATH"], "X": "real"},
                              capture_output=True, text=True, check=False)
        assert good.returncode == 0 and "config-checked" in good.stdout


def test_hpa_targets_the_receiver_deployment_on_cpu() -> None:
    hpa = k8s("HorizontalPodAutoscaler", "postrelay-receiver")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
    k8s("Deployment", ref["name"])  # exists
    assert ref["name"] == "postrelay-receiver"
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"] == ["cpu"]


def test_selectors_match_their_pods() -> None:
    pods = {name.split("/")[1]: t["metadata"]["labels"] for name, t in pod_templates()}
    for obj in k8s_objects():
        kind = obj["kind"]
        if kind in {"Deployment", "StatefulSet"}:
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert obj["spec"]["selector"]["matchLabels"].items() <= labels.items(), obj["metadata"]["name"]
        elif kind in {"Service", "PodDisruptionBudget"}:
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            matched = [n for n, labels in pods.items() if selector.items() <= labels.items()]
            assert len(matched) == 1, f"{kind}/{obj['metadata']['name']} selects {matched}"


def test_services_and_statefulset_fit_together() -> None:
    svc = k8s("Service", "postrelay-receiver")
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    sts = k8s("StatefulSet", "redis")
    headless = k8s("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    # REDIS_URL names pod 0 of the StatefulSet through the headless service, with the Redis password.
    secret = secret_env()
    assert f'@{sts["metadata"]["name"]}-0.{headless["metadata"]["name"]}:6379/' in secret["REDIS_URL"]
    assert f':{secret["REDIS_PASSWORD"]}@' in secret["REDIS_URL"]


def test_redis_statefulset_has_aof_noeviction_and_a_volume() -> None:
    sts = k8s("StatefulSet", "redis")
    assert sts["spec"]["replicas"] == 1
    container = sts["spec"]["template"]["spec"]["containers"][0]
    args = [str(a) for a in container.get("command", []) + container["args"]]
    assert args[0] == "redis-server"
    assert flag(args, "--appendonly") == "yes"
    assert flag(args, "--appendfsync") == "everysec"
    assert flag(args, "--maxmemory-policy") == "noeviction"
    assert flag(args, "--dir") == "/data"
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    assert claim["spec"]["resources"]["requests"]["storage"]


def test_references_to_configmaps_and_secrets_resolve() -> None:
    secret_keys = set(secret_env())
    configmaps = {o["metadata"]["name"] for o in k8s_objects() if o["kind"] == "ConfigMap"}
    for name, template in pod_templates():
        for volume in template["spec"].get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, name
        for c in containers(template):
            for source in c.get("envFrom", []):
                assert source["secretRef"]["name"] == "postrelay-secrets", name
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "postrelay-secrets" and ref["key"] in secret_keys, (name, ref)
    cm = k8s("ConfigMap", "postrelay-config")
    assert cm["data"]["postrelay.toml"] == example_toml_text(), "k8s/base/configmap.yaml drifted from the example"


def test_namespaced_objects_live_in_the_namespace() -> None:
    for obj in k8s_objects():
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == NAMESPACE
        else:
            assert obj["metadata"].get("namespace") == NAMESPACE, f'{obj["kind"]}/{obj["metadata"]["name"]}'


def kustomization(path: Path) -> dict[str, Any]:
    return load_yaml(path / "kustomization.yaml")


def test_kustomizations_reference_existing_files() -> None:
    dirs = [p.parent for p in K8S.rglob("kustomization.yaml")]
    assert len(dirs) == 4
    listed: set[Path] = set()
    for d in dirs:
        for res in kustomization(d)["resources"]:
            target = (d / res).resolve()
            assert target.exists(), f"{d.relative_to(ROOT)}: resource {res} does not exist"
            assert K8S.resolve() in target.parents or target == K8S.resolve()
            if target.is_file():
                listed.add(target)
            # kustomize refuses to include a directory that contains the including one
            assert target.is_file() or target not in d.resolve().parents, f"{d}: {res} is a cycle"
    manifests = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert manifests == listed, f"not in any kustomization: {sorted(map(str, manifests - listed))}"


def test_external_redis_overlay_drops_the_statefulset_and_sets_the_url() -> None:
    overlay = K8S / "overlays" / "external-redis"
    config = kustomization(overlay)
    included = {(overlay / r).resolve() for r in config["resources"]}
    assert (K8S / "redis").resolve() not in included and K8S.resolve() not in included
    assert (K8S / "base").resolve() in included
    base_files = [K8S / "base" / r for r in kustomization(K8S / "base")["resources"]]
    kinds = {doc["kind"] for f in base_files for doc in yaml.safe_load_all(f.read_text()) if doc}
    assert "StatefulSet" not in kinds
    ops = [op for p in config["patches"] if p["target"]["kind"] == "Secret" for op in yaml.safe_load(p["patch"])]
    url = next(op["value"] for op in ops if op["path"] == "/stringData/REDIS_URL")
    assert re.fullmatch(r"redis\+sentinel://[^/]+:26379(,[^/]+:26379)+/\w+/\d+", url), url
    removed = {op["path"].rsplit("/", 1)[1] for op in ops if op["op"] == "remove"}
    assert removed <= set(secret_env())


# ---- systemd ------------------------------------------------------------------------------------------------

HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
    "CapabilityBoundingSet": "", "SystemCallArchitectures": "native",
}


@pytest.mark.parametrize("unit", ["postrelay-receiver.service", "postrelay-worker@.service"])
def test_systemd_units_are_hardened_and_read_secrets_from_a_file(unit: str) -> None:
    u = systemd_unit(unit)
    for key, want in HARDENING.items():
        assert u.get(f"Service.{key}") == [want], f"{unit}: {key}={want}"
    assert u["Service.User"][0] not in {"root", "0"}
    assert u["Service.EnvironmentFile"] == ["/etc/postrelay/postrelay.env"]
    assert u["Service.StateDirectory"] == ["postrelay"]
    assert u["Service.Restart"] == ["on-failure"]
    assert any("check-config" in cmd for cmd in u["Service.ExecStartPre"])
    assert any("REPLACE_?ME" in cmd for cmd in u["Service.ExecStartPre"])
    exec_start = shlex.split(u["Service.ExecStart"][0])
    assert exec_start[0] == "/opt/postrelay/bin/postrelay"
    if unit.startswith("postrelay-worker@"):
        assert exec_start[1:] == ["worker", "--config", "/etc/postrelay/postrelay.toml"]
        assert "%i" in u["Unit.Description"][0]
    else:
        assert exec_start[1:4] == ["serve", "--config", "/etc/postrelay/postrelay.toml"]
        assert "--workers" in exec_start


# ---- Prometheus alerts ---------------------------------------------------------------------------------------

def alert_rules() -> dict[str, dict[str, Any]]:
    doc = load_yaml(DEPLOY / "prometheus" / "alerts.yml")
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    return {rule["alert"]: rule for rule in rules}


def metric_refs(expr: str) -> list[tuple[str, str]]:
    """(function applied or '', metric name) for each postrelay_* series selector in a PromQL expression."""
    found = []
    for m in re.finditer(r"postrelay_[a-z_]+", expr):
        before = expr[:m.start()]
        fn = re.search(r"(\w+)\s*\(\s*$", before)
        found.append((fn.group(1) if fn else "", m.group(0)))
    return found


def contract_metric(name: str) -> tuple[str, str]:
    """(base metric, suffix) for a series name, e.g. ('postrelay_ingest_seconds', '_bucket')."""
    if name in METRICS:
        return name, ""
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and METRICS.get(base, ("",))[0] == "histogram":
            return base, suffix
    raise AssertionError(f"{name} is not in the metrics contract")


def test_required_alerts_exist_with_labels_and_annotations() -> None:
    rules = alert_rules()
    for alert, metric in REQUIRED_ALERTS.items():
        assert alert in rules, f"missing alert {alert}"
        assert metric in rules[alert]["expr"], f"{alert} should be built on {metric}"
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name


def test_alert_expressions_are_promql_over_contract_metrics() -> None:
    for name, rule in alert_rules().items():
        expr = rule["expr"]
        for open_, close in ("()", "[]", "{}"):
            depth = 0
            for ch in expr:
                depth += (ch == open_) - (ch == close)
                assert depth >= 0, f"{name}: unbalanced {open_}{close}"
            assert depth == 0, f"{name}: unbalanced {open_}{close}"
        assert re.search(r"(>|<|==|!=)\s*[\d.]+\s*$", expr) or expr.startswith("absent("), \
            f"{name}: expected a threshold comparison"
        refs = metric_refs(expr)
        assert refs, f"{name}: uses no postrelay metric"
        for fn, series in refs:
            base, suffix = contract_metric(series)
            kind, labels = METRICS[base]
            if fn in {"rate", "increase", "irate"}:
                assert kind == "counter" or suffix == "_bucket", f"{name}: {fn}() over the {kind} {series}"
            if fn in {"delta", "deriv"}:
                assert kind == "gauge", f"{name}: {fn}() over the {kind} {series}"
            selector = re.search(re.escape(series) + r"\{([^}]*)\}", expr)
            if selector:
                used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector.group(1)))
                allowed = labels | ({"le"} if suffix == "_bucket" else set())
                assert used <= allowed, f"{name}: {series} has no label(s) {used - allowed}"
        for by in re.findall(r"by \(([^)]*)\)", expr):
            for label in (x.strip() for x in by.split(",")):
                assert any(label in METRICS[contract_metric(s)[0]][1] | {"le"} for _, s in refs), \
                    f"{name}: aggregates by unknown label {label}"


def test_every_alert_has_a_promtool_unit_test() -> None:
    tests = load_yaml(DEPLOY / "prometheus" / "alerts.test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    tested = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"]}
    assert set(alert_rules()) <= tested, f"untested alerts: {sorted(set(alert_rules()) - tested)}"
    firing = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"] if case["exp_alerts"]}
    assert set(alert_rules()) <= firing, "each alert needs a case where it fires"


# ---- docs and CI script ----------------------------------------------------------------------------------------

def test_docs_cover_every_artifact_and_the_loss_windows() -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for rel in ("deploy/Dockerfile", "deploy/Dockerfile.dockerignore", "deploy/docker-compose.yml",
                "deploy/.env.example", "deploy/redis.conf", "deploy/postrelay.example.toml",
                "deploy/systemd/", "deploy/k8s/", "deploy/k8s/overlays/external-redis",
                "deploy/prometheus/alerts.yml", ".ci/validate-deploy"):
        assert rel in doc, f"docs/deploy.md does not mention {rel}"
    for phrase in ("everysec", "always", "redis+sentinel://", "noeviction"):
        assert phrase in doc


def test_validate_deploy_script_is_valid_bash() -> None:
    script = ROOT / ".ci" / "validate-deploy"
    assert os.access(script, os.X_OK), ".ci/validate-deploy must be executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
