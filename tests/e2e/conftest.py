"""Fixtures of the deployment test: the compose stack of docker-compose.yml, built and started for real.

`deploy_stack` does, once per module, what the README tells a user without registry access to do: start a Docker
engine (installing it when missing), build the local base image (docker/build-local-base.sh, cached in
~/.cache/cnnserve) and the wheelhouse (docker/make-wheelhouse.sh, cached too), build the server, balancer and
Prometheus images with `compose build`, and bring the stack up with two server replicas. Only 127.0.0.1 ports are
published, on free ports, under a project name of its own, so a user's stack on 8001/9090 is not disturbed. At the
end: `compose down -v` and, if the test started dockerd, dockerd stops.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .stack import (
    REPO,
    Stack,
    StackError,
    docker_engine,
    free_port,
    grpc_health,
    install_missing_tools,
    run,
    wait_until,
)

PROJECT = "cnnserve-e2e"
REPLICAS = 2
#: The model the stack serves: the shipped repository unless CNNSERVE_MODELS_DIR names another one.
MODELS_DIR = Path(os.environ.get("CNNSERVE_MODELS_DIR", REPO / "models"))
DEFAULT_MODEL = "fashion_lenet"


@pytest.fixture(scope="module")
def compose_command() -> list[str]:
    return install_missing_tools()


@pytest.fixture(scope="module")
def deploy_stack(compose_command: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (MODELS_DIR / DEFAULT_MODEL).is_dir():
        pytest.fail(f"no {DEFAULT_MODEL} in {MODELS_DIR}: the stack serves the shipped model repository")
    logs = tmp_path_factory.mktemp("deploy")
    with docker_engine(logs / "dockerd.log"):
        started = time.monotonic()
        base_image = run(["docker/build-local-base.sh"], timeout_s=1200).stdout.strip().splitlines()[-1]
        run(["docker/make-wheelhouse.sh", "server", "cpu"], timeout_s=600)
        grpc_port, prometheus_port = free_port(), free_port()
        env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": PROJECT,
            "CNNSERVE_PUBLISH_ADDRESS": "127.0.0.1",
            "CNNSERVE_GRPC_PORT": str(grpc_port),
            "CNNSERVE_PROMETHEUS_PORT": str(prometheus_port),
            "CNNSERVE_MODELS_DIR": str(MODELS_DIR),
            "CNNSERVE_DEFAULT_MODEL": DEFAULT_MODEL,
            # Built on the debootstrapped base with the host's wheels: no registry, no index inside the build.
            "CNNSERVE_BASE_IMAGE": base_image,
            "CNNSERVE_TOOLS_BASE_IMAGE": base_image,
            "CNNSERVE_WHEELHOUSE": "docker/wheelhouse",
            # Tags of their own, so the test never replaces a user's cnnserve/* images.
            "CNNSERVE_SERVER_IMAGE": f"{PROJECT}/server:test",
            "CNNSERVE_LB_IMAGE": f"{PROJECT}/lb:test",
            "CNNSERVE_PROMETHEUS_IMAGE": f"{PROJECT}/prometheus:test",
        }
        stack = Stack(
            compose=tuple(compose_command),
            env=env,
            grpc_address=f"127.0.0.1:{grpc_port}",
            prometheus_url=f"http://127.0.0.1:{prometheus_port}",
        )
        stack.run("down", "-v", "--remove-orphans")  # what an interrupted earlier run may have left
        stack.run("build", "server", "lb", "prometheus", timeout_s=1200)
        built = time.monotonic()
        try:
            stack.run("up", "-d", "--no-build", "--scale", f"server={REPLICAS}", timeout_s=300)
            servers = stack.containers("server")
            assert len(servers) == REPLICAS, f"expected {REPLICAS} server containers, got {servers}"
            # The images' own HEALTHCHECK (grpc.health.v1 inside the container) must turn healthy.
            for container in servers:
                wait_until(f"{container[:12]} healthy", lambda c=container: stack.health(c) == "healthy", timeout_s=120)
            wait_until(
                "SERVING through the balancer",
                lambda: grpc_health(stack.grpc_address) == "SERVING",
                timeout_s=60,
            )
            ready = time.monotonic()
            print(  # the deployment's timings, for the CI log (pytest -s / -rA)
                f"\ndeploy: images built in {built - started:.0f} s, stack ready {ready - built:.0f} s later"
            )
            yield stack
        except (StackError, AssertionError):
            print(f"\ndeploy: the stack did not come up; compose logs:\n{stack.logs()}")
            raise
        finally:
            (logs / "compose.log").write_text(stack.logs())  # kept for a failed test to be read afterwards
            stack.run("down", "-v", "--remove-orphans", check=False, timeout_s=300)
