"""The Dockerfile's install steps and health check, run for real outside Docker.

There is no Docker engine here: the build stage's COPY and RUN instructions run in a
temporary folder (the image's virtual environment path swapped for a temporary one),
then the final stage's ENTRYPOINT and HEALTHCHECK run from that virtual environment.
Only PIP_NO_CACHE_DIR is left out of the image's environment, so pip's cache keeps the
test fast.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from clearly_exporter import __version__
from tests.bundle.helpers import (
    KUBERNETES,
    ROOT,
    Instruction,
    dockerfile_stages,
    load_yaml,
    require_redis,
)
from tests.support import Proc, free_port, http_get, parse_metrics, select, wait_for

CACHE_FREE = {"PIP_NO_CACHE_DIR"}


@dataclass(frozen=True)
class Image:
    """The image's virtual environment, installed under a temporary folder."""

    venv: Path
    env: dict[str, str]

    def command(self, args: list[str]) -> list[str]:
        """``args`` as the image runs them: its PATH puts the virtual environment first."""
        return [str(self.venv / "bin" / args[0]), *args[1:]]


def env_of(stage: list[Instruction], venv_path: str, venv: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    for instruction in stage:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.args):
                key, _, value = pair.partition("=")
                if key not in CACHE_FREE:
                    value = value.replace("$PATH", env["PATH"]).replace(venv_path, str(venv))
                    env[key] = value
    return env


def copy_sources(args: str, workdir: Path) -> None:
    *sources, destination = shlex.split(args)
    target = workdir / destination
    for source in sources:
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    build, final = dockerfile_stages()[0], dockerfile_stages()[-1]
    venv_path = next(
        i.args.split()[1] for i in final if i.keyword == "COPY" and i.args.startswith("--from")
    )
    root = tmp_path_factory.mktemp("image")
    venv, workdir = root / "venv", root / "src"
    env = env_of(build, venv_path, venv)
    for instruction in build:
        if instruction.keyword == "WORKDIR":
            workdir = root / instruction.args.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            copy_sources(instruction.args, workdir)
        elif instruction.keyword == "RUN":
            command = instruction.args.replace(venv_path, str(venv))
            result = subprocess.run(
                ["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True,
                timeout=280,
            )  # fmt: skip
            assert result.returncode == 0, f"RUN {command}\n{result.stdout}\n{result.stderr}"
    return Image(venv, env_of(final, venv_path, venv))


def test_the_entrypoint_runs_from_a_fresh_install(image: Image) -> None:
    entrypoint = json.loads(
        next(i.args for i in dockerfile_stages()[-1] if i.keyword == "ENTRYPOINT")
    )
    result = subprocess.run(
        image.command([*entrypoint, "--version"]), env=image.env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"clearly-exporter, version {__version__}"
    help_text = subprocess.run(
        image.command([*entrypoint, "run", "--help"]), env=image.env, capture_output=True, text=True
    ).stdout
    assert "--otlp-endpoint" in help_text


def healthcheck(image: Image, port: int) -> int:
    """Run the Dockerfile's HEALTHCHECK command as Docker would in the container."""
    check = next(i.args for i in dockerfile_stages()[-1] if i.keyword == "HEALTHCHECK")
    command = json.loads(check[check.index("CMD") + 3 :])
    env = image.env | {"CLEARLY_EXPORTER_PORT": str(port)}
    return subprocess.run(image.command(command), env=env, capture_output=True).returncode


def start(image: Image, broker: str, tmp: Path) -> tuple[Proc, int]:
    """The installed exporter, configured only by environment, as in a container."""
    port = free_port()
    env = image.env | {
        "CLEARLY_EXPORTER_BROKER": broker,
        "CLEARLY_EXPORTER_PORT": str(port),
        "CLEARLY_EXPORTER_HOST": "127.0.0.1",
    }
    proc = Proc(image.command(["clearly-exporter", "run"]), env, tmp / f"run-{port}.log").start()
    url = f"http://127.0.0.1:{port}/healthz"
    wait_for(lambda: http_get(url)[0] in (200, 503), 60, "the installed exporter serving")
    return proc, port


def test_healthcheck_passes_while_the_broker_is_connected(image: Image, tmp_path: Path) -> None:
    proc, port = start(image, require_redis(), tmp_path)
    try:
        wait_for(lambda: healthcheck(image, port) == 0, 30, "a passing health check")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the exporter said:\n{proc.output()[-3000:]}") from None
    finally:
        proc.stop()
    assert healthcheck(image, port) != 0, "nothing listens any more"


def test_the_image_runs_the_engine_compiled(image: Image, tmp_path: Path) -> None:
    proc, port = start(image, "redis://127.0.0.1:1/0", tmp_path)
    try:
        status, body, _ = http_get(f"http://127.0.0.1:{port}/metrics")
    finally:
        proc.stop()
    assert status == 200
    assert select(parse_metrics(body), "clearly_exporter_build_info", engine="mypyc"), body


def test_healthcheck_fails_while_the_broker_is_unreachable(image: Image, tmp_path: Path) -> None:
    """Not ready then, but alive: Kubernetes must not restart it (and lose its state)."""
    container = load_yaml(KUBERNETES / "deployment.yaml")["spec"]["template"]["spec"]
    probes = container["containers"][0]
    proc, port = start(image, "redis://127.0.0.1:1/0", tmp_path)
    try:
        assert healthcheck(image, port) != 0
        url = f"http://127.0.0.1:{port}"
        assert http_get(url + probes["readinessProbe"]["httpGet"]["path"])[0] == 503
        assert http_get(url + probes["livenessProbe"]["httpGet"]["path"])[0] == 200
    finally:
        proc.stop()
