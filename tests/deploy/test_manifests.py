"""The deployment files read as a user's tools would read them, checked for the fields that decide whether they work.

No Docker and no cluster: docker-compose.yml, .env.example, the Dockerfiles and the Kubernetes/KServe manifests in
deploy/ are parsed and cross-checked against each other and against the server's real configuration (every
CNNSERVE_* variable they set must be a `cnnserve serve` setting, ports and user ids must agree). The deployment
itself is exercised for real by tests/e2e/test_deploy.py.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnnserve.server.config import ServerConfig, env_name, parse_config

REPO = Path(__file__).resolve().parents[2]
GRPC_PORT = 8001
METRICS_PORT = 8002
HEALTH_PORT = 8003  # grpc.health.v1 only, plaintext: what probes can call whatever TLS or tokens 8001 requires
SERVER_UID = 10001

SERVER_ENV_NAMES = {env_name(field.name) for field in dataclasses.fields(ServerConfig)}


def load_all(relative: str) -> dict[str, dict[str, Any]]:
    """The YAML documents of a manifest file, by kind."""
    documents = [doc for doc in yaml.safe_load_all((REPO / relative).read_text()) if doc]
    by_kind = {doc["kind"]: doc for doc in documents}
    assert len(by_kind) == len(documents), f"{relative}: one document per kind expected"
    return by_kind


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def dockerfile_final_stage(relative: str) -> str:
    """The text of a Dockerfile's last stage (what the image is made of)."""
    text = (REPO / relative).read_text()
    return re.split(r"^FROM ", text, flags=re.MULTILINE)[-1]


def check_grpc_probe(container: dict[str, Any], probe: str) -> None:
    assert container[probe]["grpc"]["port"] == HEALTH_PORT, f"{probe} must call grpc.health.v1 on the health port"
    assert int(env_of(container)["CNNSERVE_HEALTH_PORT"]) == HEALTH_PORT


def check_tls_from_secret(pod: dict[str, Any], container: dict[str, Any]) -> None:
    """The server's TLS files are those of a mounted Secret (kubernetes.io/tls names: tls.crt, tls.key)."""
    env = env_of(container)
    secrets = {volume["name"]: volume["secret"]["secretName"] for volume in pod["volumes"] if "secret" in volume}
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    (volume,) = [name for name in secrets if name in mounts]
    folder = mounts[volume]["mountPath"]
    assert mounts[volume]["readOnly"] is True
    assert (env["CNNSERVE_TLS_CERT"], env["CNNSERVE_TLS_KEY"]) == (f"{folder}/tls.crt", f"{folder}/tls.key")


def check_hardened(container: dict[str, Any]) -> None:
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "/tmp" in {mount["mountPath"] for mount in container["volumeMounts"]}  # the one writable place


def check_resources(container: dict[str, Any]) -> None:
    resources = container["resources"]
    for kind in ("cpu", "memory"):
        assert kind in resources["requests"] and kind in resources["limits"], f"requests and limits of {kind}"
    assert int(resources["requests"]["cpu"]) <= int(resources["limits"]["cpu"])


def check_server_env(env: dict[str, str], model_repository: str) -> None:
    unknown = set(env) - SERVER_ENV_NAMES
    assert not unknown, f"not `cnnserve serve` settings: {sorted(unknown)}"
    assert env["CNNSERVE_MODEL_REPOSITORY"] == model_repository
    # The env values must be valid for the server, not only well-formed YAML: build the real config from them.
    parse_config([], environ=env)


# --- Kubernetes ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubernetes() -> dict[str, dict[str, Any]]:
    return load_all("deploy/kubernetes/cnnserve.yaml")


def test_deployment_runs_the_server_image_with_grpc_probes_resources_and_no_root(
    kubernetes: dict[str, dict[str, Any]],
) -> None:
    pod = kubernetes["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("cnnserve/server:")
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT, "health": HEALTH_PORT}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check_grpc_probe(container, probe)
    check_resources(container)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == SERVER_UID
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    check_hardened(container)
    check_tls_from_secret(pod, container)

    env = env_of(container)
    check_server_env(env, "/models")
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    # SIGKILL must not cut the drain short: the pause before SIGTERM plus the server's grace period fit.
    pre_stop_s = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop_s + float(env["CNNSERVE_GRACE_PERIOD_S"])


def test_service_is_headless_and_selects_the_deployment_pods(kubernetes: dict[str, dict[str, Any]]) -> None:
    deployment, service = kubernetes["Deployment"], kubernetes["Service"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    grpc = next(port for port in service["spec"]["ports"] if port["name"] == "grpc")
    assert (grpc["port"], grpc["targetPort"]) == (GRPC_PORT, "grpc")
    # The pods serve TLS: a cleartext-HTTP/2 hint would make ingresses and meshes speak plaintext to them.
    assert grpc.get("appProtocol") != "kubernetes.io/h2c"


def test_network_policy_admits_grpc_from_the_namespace_and_metrics_from_prometheus_only(
    kubernetes: dict[str, dict[str, Any]],
) -> None:
    policy, deployment = kubernetes["NetworkPolicy"], kubernetes["Deployment"]
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {rule["ports"][0]["port"]: rule for rule in policy["spec"]["ingress"]}
    assert set(rules) == {GRPC_PORT, METRICS_PORT}, "no other port may be reachable from other pods"
    assert all(len(rule["ports"]) == 1 for rule in rules.values())
    assert rules[GRPC_PORT]["from"] == [{"podSelector": {}}]  # any pod of this namespace, no other namespace
    (prometheus,) = rules[METRICS_PORT]["from"]
    assert prometheus["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert "namespaceSelector" in prometheus  # one namespace's Prometheus, not every pod labelled so


def test_disruption_budget_leaves_room_to_drain_a_node(kubernetes: dict[str, dict[str, Any]]) -> None:
    budget, deployment = kubernetes["PodDisruptionBudget"], kubernetes["Deployment"]
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]


# --- KServe --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kserve() -> dict[str, dict[str, Any]]:
    return load_all("deploy/kserve/cnnserve.yaml")


def test_inference_service_uses_the_runtime_with_the_grpc_v2_protocol(kserve: dict[str, dict[str, Any]]) -> None:
    runtime, service = kserve["ServingRuntime"], kserve["InferenceService"]
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {fmt["name"] for fmt in runtime["spec"]["supportedModelFormats"]}
    # The image serves the Open Inference Protocol ("v2") over gRPC only.
    assert model["protocolVersion"] == "grpc-v2"
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["storageUri"]


def test_runtime_container_serves_grpc_on_an_h2c_port_with_probes(kserve: dict[str, dict[str, Any]]) -> None:
    (container,) = kserve["ServingRuntime"]["spec"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"].startswith("cnnserve/server:")
    # KServe and Knative route HTTP/2 (gRPC) to the port named h2c; there must be exactly one port.
    assert container["ports"] == [{"name": "h2c", "containerPort": GRPC_PORT, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        check_grpc_probe(container, probe)
    check_resources(container)
    assert container["securityContext"]["runAsUser"] == SERVER_UID
    assert container["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    check_hardened(container)
    check_tls_from_secret(kserve["ServingRuntime"]["spec"], container)
    env = env_of(container)
    check_server_env(env, "/mnt/models")  # where KServe's storage initializer puts storageUri
    assert int(env["CNNSERVE_PORT"]) == GRPC_PORT


# --- docker compose ------------------------------------------------------------------------------------------------

COMPOSE_VARIABLE = re.compile(r"\$\{(CNNSERVE_[A-Z0-9_]+):-([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_every_compose_variable_is_in_env_example_with_the_same_default() -> None:
    used = dict(COMPOSE_VARIABLE.findall((REPO / "docker-compose.yml").read_text()))
    example = dict(
        line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines() if re.match(r"^[A-Z]", line)
    )
    assert used, "docker-compose.yml should be configured through ${CNNSERVE_...:-default} variables"
    assert {name: example.get(name) for name in used} == used


def test_compose_publishes_on_loopback_by_default_and_replicas_have_no_fixed_host_port(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    replicas = ("server", "server-gpu")
    for name, service in services.items():
        for port in service.get("ports", []):
            # The replicas' own ports (plaintext, around the balancer's TLS) never leave this machine.
            address = "127.0.0.1:" if name in replicas else "${CNNSERVE_PUBLISH_ADDRESS:-127.0.0.1}:"
            assert port.startswith(address), f"{name} publishes {port}"
    # server replicas: the host port is left to Docker ("ADDRESS::CONTAINER_PORT"), so --scale cannot clash.
    for name in replicas:
        ports = services[name]["ports"]
        assert sorted(port.rsplit("::", 1)[1] for port in ports) == [str(GRPC_PORT), str(METRICS_PORT)]
    assert services["lb"]["ports"] == [
        f"${{CNNSERVE_PUBLISH_ADDRESS:-127.0.0.1}}:${{CNNSERVE_GRPC_PORT:-8001}}:{GRPC_PORT}"
    ]


def test_compose_server_settings_are_server_settings_and_models_are_read_only(compose: dict[str, Any]) -> None:
    for name in ("server", "server-gpu"):
        service = compose["services"][name]
        env = {
            key: COMPOSE_VARIABLE.sub(lambda match: match.group(2), str(value))
            for key, value in service["environment"].items()
        }
        check_server_env(env, "/models")
        assert any(volume.endswith(":/models:ro") for volume in service["volumes"])
        assert service["build"]["dockerfile"] == "docker/server.Dockerfile"
    assert compose["services"]["server"]["environment"]["CNNSERVE_DEVICE"] == "cpu"


def test_compose_servers_and_balancer_run_with_least_privilege_and_limits(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("server", "server-gpu", "lb"):
        service = services[name]
        assert service["read_only"] is True, name
        assert any(mount.startswith("/tmp") for mount in service["tmpfs"]), f"{name}: a writable /tmp"
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
    for name in ("server", "server-gpu"):
        service = services[name]
        assert {"mem_limit", "cpus", "pids_limit"} <= set(service), f"{name}: memory, CPU and process limits"
        # Metrics are published on purpose (Prometheus scrapes them from its own container).
        assert service["environment"]["CNNSERVE_METRICS_HOST"] == "0.0.0.0"


def test_compose_balancer_is_plaintext_by_default_and_reads_tls_files_from_a_mounted_folder(
    compose: dict[str, Any],
) -> None:
    lb = compose["services"]["lb"]
    assert lb["environment"]["CNNSERVE_LB_TLS"] == "${CNNSERVE_LB_TLS:-off}"
    (mount,) = lb["volumes"]
    assert mount.endswith(":/etc/cnnserve-lb/tls:ro")
    entrypoint = (REPO / "docker/lb/entrypoint.sh").read_text()
    for line in ("listen 8001 ssl http2;", "ssl_client_verify != SUCCESS", "tls_dir=/etc/cnnserve-lb/tls"):
        assert line in entrypoint
    assert "include /tmp/cnnserve-listen.conf;" in (REPO / "docker/lb/nginx.conf").read_text()


def test_gpu_profile_reserves_one_nvidia_gpu_and_joins_the_server_pool(compose: dict[str, Any]) -> None:
    gpu = compose["services"]["server-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert (device["driver"], device["count"], device["capabilities"]) == ("nvidia", 1, ["gpu"])
    assert gpu["build"]["args"]["ORT_EXTRA"] == "gpu"
    assert gpu["environment"]["CNNSERVE_DEVICE"] == "cuda"
    # Under the CPU service's DNS name, the balancer and Prometheus find it with no change.
    assert "server" in gpu["networks"]["default"]["aliases"]


# --- images --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", ["docker/server.Dockerfile", "docker/train.Dockerfile"])
def test_python_images_run_unprivileged_from_a_virtual_environment_without_build_tools(dockerfile: str) -> None:
    final = dockerfile_final_stage(dockerfile)
    assert f"USER {SERVER_UID}:{SERVER_UID}" in final
    assert "COPY --from=build /opt/cnnserve /opt/cnnserve" in final
    assert "org.opencontainers.image.version" in final
    assert not re.search(r"\b(gcc|g\+\+|build-essential|pip install)\b", final)


def test_server_image_checks_health_through_grpc_and_serves_on_every_interface() -> None:
    final = dockerfile_final_stage("docker/server.Dockerfile")
    assert re.search(r"HEALTHCHECK .*\n?.*healthcheck\.py", final)
    assert "CNNSERVE_HOST=0.0.0.0" in final
    assert f"EXPOSE {GRPC_PORT} {METRICS_PORT}" in final
    assert 'ENTRYPOINT ["cnnserve", "serve"]' in final


def requirements(*extras: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(REPO / "docker/requirements.py"), str(REPO / "pyproject.toml"), *extras],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return [re.split(r"[<>=!~; \[]", line, maxsplit=1)[0].lower() for line in result.stdout.splitlines()]


def test_server_images_install_one_onnxruntime_and_no_torch() -> None:
    cpu, gpu = requirements("server", "cpu"), requirements("server", "gpu")
    assert "torch" not in cpu and "torch" not in gpu
    # onnxruntime and onnxruntime-gpu install the same module: exactly one per image.
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu
    assert "grpcio-health-checking" in cpu  # the HEALTHCHECK script needs it


def test_requirements_script_refuses_an_unknown_extra() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "docker/requirements.py"), str(REPO / "pyproject.toml"), "server", "tpu"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "tpu" in result.stderr and "expected" in result.stderr
