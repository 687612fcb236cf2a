"""The price of TLS: one plaintext server and one TLS server (same model, same flags), the same load on both.

The certificates are made with the openssl commands of README.md "Security" (an EC P-256 CA and a server
certificate for 127.0.0.1) in a temporary folder. The points are measured in turn on both servers, `--repeats`
times, and the median run of each is shown. Ratio: TLS images/s over plaintext images/s.

    .venv/bin/python benchmarks/tls.py --model-repository models
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import grpc
from harness import Measured, Pair, config_from, measure, median_by_throughput, paired_table, script_main, serve

from cnnserve.client.bench.loadgen import BenchConfig
from cnnserve.client.config import TLSConfig

POINTS = ((1, 1), (32, 1), (8, 64))  # (concurrency, images per request)
KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_certificates(folder: Path) -> None:
    """ca.crt, server.crt and server.key in `folder` (the server certificate names 127.0.0.1 and localhost)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    (folder / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("req", "-x509", *KEY, "-days", "1", "-subj", "/CN=bench-ca", "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", *KEY, "-subj", "/CN=bench", "-keyout", "server.key", "-out", "server.csr")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
        "-out", "server.crt", "-extfile", "server.ext",
    )  # fmt: skip


def compare_tls(repository: Path, config: BenchConfig, *, repeats: int, server_flags: Sequence[str] = ()) -> list[Pair]:
    with tempfile.TemporaryDirectory(prefix="cnnserve-bench-tls-") as name:
        folder = Path(name)
        make_certificates(folder)
        tls_flags = ["--tls-cert", str(folder / "server.crt"), "--tls-key", str(folder / "server.key")]
        credentials = grpc.ssl_channel_credentials((folder / "ca.crt").read_bytes())
        tls_config = dataclasses.replace(config, tls=TLSConfig(root_cert=folder / "ca.crt"))
        runs: dict[tuple[str, int, int], list[Measured]] = {}
        with (
            serve("plaintext", repository, *server_flags) as plain,
            serve("tls", repository, *server_flags, *tls_flags, credentials=credentials) as tls,
        ):
            for _ in range(repeats):
                for concurrency, images in POINTS:
                    for server, server_config in ((tls, tls_config), (plain, config)):
                        measured = measure(server, server_config, concurrency, images)
                        runs.setdefault((server.name, concurrency, images), []).append(measured)
    best = {key: median_by_throughput(values) for key, values in runs.items()}
    return [Pair(c, n, best[("tls", c, n)], best[("plaintext", c, n)]) for c, n in POINTS]


def markdown(rows: Sequence[Pair]) -> str:
    return paired_table("transport", ("TLS", "plaintext"), "TLS / plaintext", rows)


def main(argv: Sequence[str] | None = None) -> int:
    def run(args: argparse.Namespace) -> str:
        rows = compare_tls(
            args.model_repository, config_from(args), repeats=args.repeats, server_flags=args.server_flag
        )
        return markdown(rows)

    return script_main(argv, __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
