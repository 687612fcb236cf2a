"""The docker compose deployment, for real: two server replicas behind the nginx gRPC balancer, with Prometheus.

The stack (tests/e2e/conftest.py) is built from the repository's Dockerfiles on a debootstrapped base and brought
up with `--scale server=2`. These tests then do what a user does with it: classify the sample images through the
balancer with `cnnserve classify`, see in each replica's metrics and in Prometheus that both replicas served, stop a
replica and keep classifying, then turn TLS and client certificates on at the balancer and classify through them.
The GPU profile cannot run here; its configuration is validated by compose itself.

Run by `make test-deploy` (and .ci/run). Measured on the 2-core CI machine: 1.5 min with warm caches (base image,
wheelhouse, Docker layers), 6 min cold (installing docker.io, debootstrap, all builds).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import DEFAULT_MODEL, MODELS_DIR, REPLICAS
from .stack import REPO, Stack, grpc_health, metric_total, run, wait_until

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1800)]

SAMPLES = REPO / "samples" / "fashion-mnist"
SUCCESS_METRIC = "nv_inference_request_success_total"
METRICS_PORT = 8002


def sample_labels() -> dict[str, str]:
    """samples/fashion-mnist/labels.csv: image path (relative to the repository) -> true class name."""
    with (SAMPLES / "labels.csv").open(newline="") as file:
        return {f"samples/fashion-mnist/{row['file']}": row["label"] for row in csv.DictReader(file)}


def classify(*args: str, output: Path) -> dict[str, dict[str, Any]]:
    """Run `cnnserve classify` on the samples; its JSON-lines rows by image path. Any failed image fails."""
    result = subprocess.run(
        [sys.executable, "-m", "cnnserve", "classify", "samples/fashion-mnist", "--output", str(output), "-q", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"cnnserve classify {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert all(not row["error"] for row in rows), [row for row in rows if row["error"]]
    return {row["path"]: row for row in rows}


def classify_through(stack: Stack, tmp_path: Path, name: str) -> dict[str, dict[str, Any]]:
    """One request per image (--batch-size 1), four in flight, through the balancer."""
    return classify(
        "--server", stack.grpc_address, "--batch-size", "1", "--concurrency", "4", output=tmp_path / f"{name}.jsonl"
    )


def served_by_each(stack: Stack, servers: list[str]) -> list[float]:
    """Successful inference requests so far, per replica, read from each replica's own /metrics."""
    return [metric_total(stack.published(container, METRICS_PORT), SUCCESS_METRIC) for container in servers]


@pytest.fixture(scope="module")
def local_answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The same model run in-process by `cnnserve classify --local`: what the deployed replicas must answer."""
    return classify("--local", str(MODELS_DIR / DEFAULT_MODEL), output=tmp_path_factory.mktemp("local") / "a.jsonl")


def test_gpu_profile_is_a_valid_compose_configuration(compose_command: list[str]) -> None:
    result = run([*compose_command, "--profile", "gpu", "config"], timeout_s=60)
    gpu = yaml.safe_load(result.stdout)["services"]["server-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["build"]["args"]["ORT_EXTRA"] == "gpu"
    assert gpu["build"]["args"]["BASE_IMAGE"].startswith("nvidia/cuda:13.")


def test_samples_are_classified_through_the_balancer(
    deploy_stack: Stack, local_answers: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    served = classify_through(deploy_stack, tmp_path, "served")
    labels = sample_labels()
    assert set(served) == set(labels)
    # The deployed server answers exactly what the model answers in-process...
    for path, row in served.items():
        assert row["label"] == local_answers[path]["label"], path
        assert row["score"] == pytest.approx(local_answers[path]["score"], abs=1e-4), path
    # ...and that is the right class for (nearly) every sample: the model's test accuracy is about 90 %.
    correct = sum(row["label"] == labels[path] for path, row in served.items())
    assert correct >= 0.8 * len(labels), f"only {correct} of {len(labels)} samples classified correctly"


def test_both_replicas_serve_and_prometheus_scrapes_each(deploy_stack: Stack, tmp_path: Path) -> None:
    servers = deploy_stack.containers("server")
    before = served_by_each(deploy_stack, servers)
    classify_through(deploy_stack, tmp_path, "spread")
    after = served_by_each(deploy_stack, servers)

    images = len(sample_labels())
    served = [now - then for now, then in zip(after, before, strict=True)]
    assert sum(served) == images, f"replicas served {served}, expected {images} requests in all"
    assert all(count > 0 for count in served), f"a replica served nothing: {served}"

    # Prometheus found every replica through Docker's DNS and scrapes it...
    instances = {f"{deploy_stack.ip_address(c)}:{METRICS_PORT}": total for c, total in zip(servers, after, strict=True)}

    def targets_up() -> set[str]:
        targets = deploy_stack.prometheus("/api/v1/targets")["activeTargets"]
        return {t["labels"]["instance"] for t in targets if t["labels"]["job"] == "cnnserve" and t["health"] == "up"}

    wait_until("Prometheus targets up", lambda: targets_up() == set(instances), timeout_s=60)

    # ...and has stored what each replica counted (scrapes every 5 s).
    def scraped() -> dict[str, float]:
        result = deploy_stack.prometheus("/api/v1/query", query=f"sum by (instance) ({SUCCESS_METRIC})")["result"]
        return {sample["metric"]["instance"]: float(sample["value"][1]) for sample in result}

    wait_until(f"Prometheus to have {instances}", lambda: scraped() == instances, timeout_s=60)


def test_replicas_run_read_only_without_privileges_and_with_limits(deploy_stack: Stack) -> None:
    for container in deploy_stack.containers("server"):
        host = json.loads(deploy_stack.inspect(container, "{{json .HostConfig}}"))
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert host["Memory"] > 0 and host["NanoCpus"] > 0 and host["PidsLimit"] > 0
        # Nothing can be written outside the in-memory /tmp, by the server's own user.
        probe = run(
            ["docker", "exec", container, "sh", "-c", "touch /opt/x; touch /tmp/x && id -u"], timeout_s=30, check=False
        )
        lines = probe.stdout.splitlines()  # stderr merged into stdout, in no fixed order
        assert "touch: cannot touch '/opt/x': Read-only file system" in lines and "10001" in lines, probe.stdout


def test_requests_still_succeed_after_a_replica_stops(
    deploy_stack: Stack, local_answers: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    stopped, *survivors = deploy_stack.containers("server")
    assert len(survivors) == REPLICAS - 1
    run(["docker", "stop", stopped], timeout_s=60)  # SIGTERM: the replica drains and exits
    before = served_by_each(deploy_stack, survivors)

    served = classify_through(deploy_stack, tmp_path, "after-stop")
    assert {path: row["label"] for path, row in served.items()} == {
        path: row["label"] for path, row in local_answers.items()
    }
    after = served_by_each(deploy_stack, survivors)
    assert sum(after) - sum(before) == len(served), "the surviving replica should have served every request"


def test_the_balancer_terminates_tls_and_verifies_client_certificates(
    deploy_stack: Stack, local_answers: dict[str, dict[str, Any]], certificates: Any, tmp_path: Path
) -> None:
    """CNNSERVE_LB_TLS=on with a mounted folder: TLS through the balancer (plaintext refused), then with a ca.crt
    there too, mutual TLS (a client without a certificate refused). The replicas are untouched."""
    from cnnserve.client import Client, TLSConfig
    from cnnserve.client.errors import PermissionDenied, ServerUnreachable

    secrets = Path(tempfile.mkdtemp(prefix="cnnserve-lb-tls-"))
    secrets.chmod(0o755)  # the balancer runs as uid 10002
    for source, name in ((certificates.server_pem, "tls.crt"), (certificates.server_key, "tls.key")):
        shutil.copyfile(source, secrets / name)
        (secrets / name).chmod(0o644)
    tls_stack = dataclasses.replace(
        deploy_stack, env={**deploy_stack.env, "CNNSERVE_LB_TLS": "on", "CNNSERVE_LB_TLS_DIR": str(secrets)}
    )
    root_only = TLSConfig(root_cert=certificates.ca_pem)
    mutual = TLSConfig(
        root_cert=certificates.ca_pem, client_cert=certificates.client_pem, client_key=certificates.client_key
    )

    def serving(tls: TLSConfig) -> bool:
        try:
            with Client(deploy_stack.grpc_address, tls=tls, connect_timeout_s=2) as client:
                return client.health().serving
        except ServerUnreachable:
            return False

    def labels(*tls_args: str) -> dict[str, str]:
        rows = classify("--server", deploy_stack.grpc_address, *tls_args, output=tmp_path / "tls.jsonl")
        return {path: row["label"] for path, row in rows.items()}

    expected = {path: row["label"] for path, row in local_answers.items()}
    try:
        tls_stack.run("up", "-d", "--no-deps", "--no-build", "--force-recreate", "lb", timeout_s=120)
        wait_until("TLS through the balancer", lambda: serving(root_only), timeout_s=60)
        assert labels("--tls-root-cert", str(certificates.ca_pem)) == expected
        assert grpc_health(deploy_stack.grpc_address) != "SERVING"  # plaintext gets no answer

        shutil.copyfile(certificates.ca_pem, secrets / "ca.crt")
        (secrets / "ca.crt").chmod(0o644)
        tls_stack.run("up", "-d", "--no-deps", "--no-build", "--force-recreate", "lb", timeout_s=120)
        wait_until("mutual TLS through the balancer", lambda: serving(mutual), timeout_s=60)
        client_args = [
            "--tls-client-cert",
            str(certificates.client_pem),
            "--tls-client-key",
            str(certificates.client_key),
        ]
        assert labels("--tls-root-cert", str(certificates.ca_pem), *client_args) == expected
        other_ca = TLSConfig(
            root_cert=certificates.ca_pem,
            client_cert=certificates.other_client_pem,
            client_key=certificates.other_client_key,
        )
        for refused in (root_only, other_ca):  # no client certificate; one the balancer's CA did not sign
            with Client(deploy_stack.grpc_address, tls=refused) as client, pytest.raises(PermissionDenied) as error:
                client.health()
            assert error.value.code == "UNAUTHENTICATED"
    finally:
        deploy_stack.run("up", "-d", "--no-deps", "--no-build", "--force-recreate", "lb", timeout_s=120)
        shutil.rmtree(secrets, ignore_errors=True)
    wait_until("plaintext again", lambda: grpc_health(deploy_stack.grpc_address) == "SERVING", timeout_s=60)
