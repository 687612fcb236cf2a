"""Shared fixtures. Tests mirror the packages: tests/training, tests/export, tests/server, tests/client, tests/e2e."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from cnnserve.server.app import RunningServer

REPO_ROOT = Path(__file__).resolve().parents[1]
FASHION_MNIST_DIR = Path(os.environ.get("CNNSERVE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
MODELS_DIR = REPO_ROOT / "models"
# native is what auto serves on wherever it can (a TLS server, say, cannot be native); grpcio: every server on it.
TRANSPORTS = ("auto", "grpcio")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--transport",
        choices=TRANSPORTS,
        default=None,
        help="the gRPC transport of every server the tests start, in this process or as `cnnserve serve` "
        "(default: ServerConfig's, auto: native wherever it can serve); `make test` runs tests/server once more "
        "with grpcio",
    )


def pytest_configure(config: pytest.Config) -> None:
    transport = config.getoption("--transport")
    if transport is None:
        return
    from cnnserve.server.config import ServerConfig

    # Servers in subprocesses read the variable; ServerConfig objects built here take it as their default.
    os.environ["CNNSERVE_TRANSPORT"] = transport
    defaults = list(ServerConfig.__init__.__defaults__ or ())
    names = [f.name for f in dataclasses.fields(ServerConfig) if f.default is not dataclasses.MISSING]
    defaults[names.index("transport")] = transport
    ServerConfig.__init__.__defaults__ = tuple(defaults)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(
            f"Fashion-MNIST not found in {FASHION_MNIST_DIR}; `make data` installs Debian's dataset-fashion-mnist"
        )
    return FASHION_MNIST_DIR


# --- a real model repository, made by `cnnserve export` from random-weight zoo models (owner: export) ----------

#: Labels of the 3-channel test model in `tiny_repository`.
RGB_LABELS = ("red", "green", "blue")


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with two exported models, built once per session (about 10 s):

    lenet/1     the seed LeNet, uint8 (N, 1, 28, 28), Fashion-MNIST's ten labels
    cnn_rgb/1   cnn_bn with 3 channels, uint8 (N, 3, 32, 40) (non-square), labels RGB_LABELS

    Random seeded weights (BatchNorm running statistics included), exported and parity-checked by the real export.
    """
    import torch

    from cnnserve.card import InputSpec, ModelCard, Normalization
    from cnnserve.export.config import ExportConfig
    from cnnserve.export.exporter import export_checkpoint
    from cnnserve.training.checkpoint import save_checkpoint
    from cnnserve.training.data import FASHION_MNIST_LABELS
    from cnnserve.training.models import build_model

    root = tmp_path_factory.mktemp("tiny-repository")
    repository = root / "models"
    specs = [
        ("lenet", "lenet", InputSpec(channels=1, height=28, width=28), FASHION_MNIST_LABELS, (0.2860,), (0.3530,)),
        ("cnn_rgb", "cnn_bn", InputSpec(channels=3, height=32, width=40), RGB_LABELS, (0.5,) * 3, (0.25,) * 3),
    ]
    for name, arch, spec, labels, mean, std in specs:
        torch.manual_seed(0)
        arch_args = {"in_channels": spec.channels, "num_classes": len(labels)}
        model = build_model(arch, **arch_args)
        for module in model.modules():  # non-trivial running statistics, so BatchNorm's eval mode is exercised
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        card = ModelCard(
            name=name,
            architecture=arch,
            input=spec,
            labels=tuple(labels),
            normalization=Normalization(mean, std),
            arch_args=arch_args,
            training={"note": "random weights for tests"},
        )
        checkpoint = root / f"{name}.pt"
        save_checkpoint(checkpoint, model, card)
        export_checkpoint(ExportConfig(checkpoint=checkpoint, repository=repository, name=name, version=1))
    return repository


# --- a real cnnserve server on a free port, in a background thread (owner: server-core) ----------------------


@pytest.fixture(scope="session")
def served_repository(request: pytest.FixtureRequest) -> Path:
    """The shipped models/ when they exist, else the exported `tiny_repository`."""
    if any(MODELS_DIR.glob("*/*/model.onnx")):
        return MODELS_DIR
    repository: Path = request.getfixturevalue("tiny_repository")
    return repository


@pytest.fixture(scope="session")
def grayscale_repository(served_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with only the smallest 1x28x28 model of `served_repository` (linked, not copied): what a test
    server needs when it must classify real images but not warm up every model (fashion_cnn_bn takes seconds)."""
    from cnnserve.card import ModelCard

    cards = [
        path for path in served_repository.glob("*/*/model.json") if ModelCard.load(path).input.shape == (1, 28, 28)
    ]
    if not cards:
        pytest.fail(f"{served_repository} has no 1x28x28 model")
    smallest = min(cards, key=lambda path: (path.with_name("model.onnx").stat().st_size, str(path)))
    repository = tmp_path_factory.mktemp("grayscale") / "models"
    repository.mkdir()
    (repository / smallest.parent.parent.name).symlink_to(smallest.parent.parent, target_is_directory=True)
    return repository


@pytest.fixture(scope="session")
def running_server(served_repository: Path) -> Iterator[RunningServer]:
    """One server for the whole session (gRPC and metrics on free ports): do not drain or stop it in a test;
    start your own with cnnserve.server.app.serve_in_thread for that."""
    from cnnserve.server.app import serve_in_thread
    from cnnserve.server.config import ServerConfig

    config = ServerConfig(model_repository=served_repository, port=0, metrics_port=0, grace_period_s=5.0)
    with serve_in_thread(config) as server:
        yield server


# --- TLS certificates made at test time (owner: security) ----------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """PEM files in one folder: a CA, a server certificate it signed (for localhost and 127.0.0.1), a client
    certificate it signed, and a client certificate signed by another CA (which the server must refuse)."""

    folder: Path

    def __getattr__(self, name: str) -> Path:  # ca_pem -> folder/ca.pem, client_key -> folder/client.key
        stem, _, suffix = name.rpartition("_")
        return self.folder / f"{stem.replace('_', '-')}.{suffix}"


def _write_certificates(folder: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def write(stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        (folder / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        stem: str, common_name: str, issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None, **kind: Any
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        signer_key, issuer_name = (key, name) if issuer is None else (issuer[0], issuer[1].subject)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        )
        if kind.get("server"):
            sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        elif issuer is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        cert = builder.sign(signer_key, hashes.SHA256())
        write(stem, key, cert)
        return key, cert

    ca = issue("ca", "cnnserve test CA", None)
    other_ca = issue("other-ca", "another CA", None)
    issue("server", "localhost", ca, server=True)
    issue("client", "test client", ca)
    issue("other-client", "client of another CA", other_ca)


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Certificates made once per session with the `cryptography` package: see Certificates."""
    folder = tmp_path_factory.mktemp("tls")
    _write_certificates(folder)
    return Certificates(folder)


def pytest_report_header(config: pytest.Config) -> str:
    return f"cnnserve servers' transport: {config.getoption('--transport') or 'ServerConfig default (auto)'}"
