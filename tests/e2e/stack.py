"""A real Docker engine and a real docker compose stack, for the deployment test (tests/e2e/test_deploy.py).

What a user (or CI on a fresh Debian machine) would do by hand, as functions: install the engine and compose when
they are missing, start `dockerd` when none answers (and stop it again), build the local base image and the
wheelhouse with the scripts in docker/, then build, start, inspect and remove the compose stack. Commands run with
their output captured; a failing one raises with its last lines, so a CI log says what broke.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
#: Debian packages: the engine, compose (v1, the one Debian bookworm ships) and debootstrap for the base image.
PACKAGES = {"dockerd": "docker.io", "debootstrap": "debootstrap"}
COMPOSE_PACKAGE = "docker-compose"
OUTPUT_TAIL_LINES = 40


class StackError(AssertionError):
    """A command of the deployment failed; the message has the command and the end of its output."""


def run(
    argv: Sequence[str], *, timeout_s: float, env: Mapping[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command in the repository root, output captured (stderr merged into stdout)."""
    started = time.monotonic()
    result = subprocess.run(
        list(argv),
        cwd=REPO,
        env=dict(env) if env is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout_s,
    )
    logger.info("%s: exit %d in %.1f s", " ".join(argv), result.returncode, time.monotonic() - started)
    if check and result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-OUTPUT_TAIL_LINES:])
        raise StackError(f"`{' '.join(argv)}` exited with {result.returncode}; its output ends with:\n{tail}")
    return result


def _succeeds(argv: Sequence[str]) -> bool:
    try:
        return subprocess.run(list(argv), capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def compose_command() -> list[str] | None:
    """`docker compose` (the v2 plugin) when installed, else `docker-compose` (v1), else None."""
    if _succeeds(["docker", "compose", "version"]):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def install_missing_tools() -> list[str]:
    """apt-get install what is missing of the engine, compose and debootstrap; returns the compose command."""
    missing = [package for binary, package in PACKAGES.items() if not shutil.which(binary)]
    if compose_command() is None:
        missing.append(COMPOSE_PACKAGE)
    if missing:
        if os.geteuid() != 0:
            raise StackError(f"missing {', '.join(missing)}: install them (apt-get install) or run as root")
        logger.info("installing %s", " ".join(missing))
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-qq"], timeout_s=300, env=apt_env)
        run(["apt-get", "install", "-y", "-qq", *missing], timeout_s=600, env=apt_env)
    command = compose_command()
    if command is None:
        raise StackError(f"no docker compose after installing {COMPOSE_PACKAGE}")
    return command


@contextmanager
def docker_engine(log_path: Path, *, start_timeout_s: float = 60) -> Iterator[None]:
    """A Docker engine that answers; `dockerd` is started in the background when none does, and stopped after."""
    if _succeeds(["docker", "info"]):
        yield
        return
    logger.info("starting dockerd (log: %s)", log_path)
    with log_path.open("w") as log:
        daemon = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _succeeds(["docker", "info"]):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"dockerd did not start; its log ends with:\n{_tail(log_path)}")
            time.sleep(0.5)
        yield
    finally:
        daemon.terminate()  # dockerd stops its containers and the containerd it started
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-OUTPUT_TAIL_LINES:])


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def grpc_health(address: str, *, timeout_s: float = 3.0) -> str:
    """The grpc.health.v1 status name of the whole server at `address`, or the gRPC error code's name."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError as error:
            return str(error.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def http_json(url: str, *, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.load(response)


def metric_total(address: str, name: str) -> float:
    """Sum of every sample of the metric `name` (all label sets) on the Prometheus endpoint at `address`."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " ")
    )


def wait_until(description: str, predicate: Any, *, timeout_s: float, interval_s: float = 0.5) -> Any:
    """Poll `predicate()` until it returns something truthy; that value, or StackError naming what never happened."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout_s:.0f} s waiting for {description} (last: {value!r})")
        time.sleep(interval_s)


@dataclass(frozen=True, slots=True)
class Stack:
    """One compose project of docker-compose.yml, driven with the environment that configures it."""

    compose: tuple[str, ...]
    env: Mapping[str, str]
    grpc_address: str  # the balancer, 127.0.0.1:PORT
    prometheus_url: str  # http://127.0.0.1:PORT

    def run(self, *args: str, timeout_s: float = 180, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*self.compose, *args], timeout_s=timeout_s, env=self.env, check=check)

    def containers(self, service: str) -> list[str]:
        """Ids of the service's running containers, in a stable order."""
        ids = self.run("ps", "-q", service).stdout.split()
        running = run(["docker", "ps", "-q", "--no-trunc"], timeout_s=30).stdout.split()
        return sorted(cid for cid in ids if any(full.startswith(cid) for full in running))

    def inspect(self, container: str, template: str) -> str:
        return run(["docker", "inspect", "--format", template, container], timeout_s=30).stdout.strip()

    def health(self, container: str) -> str:
        """Docker's view of the image's HEALTHCHECK: starting, healthy or unhealthy."""
        return self.inspect(container, "{{.State.Health.Status}}")

    def ip_address(self, container: str) -> str:
        return self.inspect(container, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")

    def published(self, container: str, container_port: int) -> str:
        """127.0.0.1:PORT where the container's port is published (Docker chose PORT)."""
        mapping = self.inspect(container, f'{{{{json (index .NetworkSettings.Ports "{container_port}/tcp")}}}}')
        (binding,) = json.loads(mapping)
        return f"{binding['HostIp']}:{binding['HostPort']}"

    def prometheus(self, path: str, **params: str) -> Any:
        """GET a Prometheus API path; its `data` (the API's status must be success)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        reply = http_json(f"{self.prometheus_url}{path}{query}")
        if reply.get("status") != "success":
            raise StackError(f"Prometheus {path}: {reply}")
        return reply["data"]

    def logs(self) -> str:
        return self.run("logs", "--no-color", "--tail", "60", check=False).stdout
