"""How long a new version takes to serve in --model-control-mode poll: from "directory renamed into place" to
"first answer from the new version", for each shipped model, beside the load time alone (validate, session, warm-up).

A copy of the shipped repository is served with a short poll interval; one client asks the unnamed latest version
without pause; each round stages version N+1 (the same graph, the card's version changed) in a hidden folder,
renames it into place and times the first answer that names N+1 (policy.json `{"latest": 1}`: version N is
then drained and unloaded). The expected figure is about half the interval
(the rename lands at a random point of it) plus the load time.

    .venv/bin/python benchmarks/reload.py --model-repository models --poll-secs 0.5 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np

from cnnserve.card import ModelCard
from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.server.app import serve_in_thread
from cnnserve.server.config import ServerConfig
from cnnserve.server.repository import load_version


def stage(root: Path, name: str, source: Path, version: int) -> Path:
    """Copy `source` as version `version` into a hidden folder, then rename it into place; the renamed path."""
    staging = Path(tempfile.mkdtemp(prefix=".stage-", dir=root))
    shutil.copyfile(source / "model.onnx", staging / "model.onnx")
    card = json.loads((source / "model.json").read_text())
    card["version"] = version
    (staging / "model.json").write_text(json.dumps(card))
    target = root / name / str(version)
    os.replace(staging, target)
    return target


def measure(repository: Path, poll_secs: float, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cnnserve-reload-") as tmp:
        root = Path(tmp) / "models"
        shutil.copytree(repository, root)
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for name in names:  # each new version replaces the one before, as a rolling model update would
            (root / name / "policy.json").write_text('{"latest": 1}')
        config = ServerConfig(model_repository=root, port=0, metrics_port=-1, model_control_mode="poll",
                              repository_poll_secs=poll_secs)  # fmt: skip
        print(f"poll interval {poll_secs:.2f} s, {rounds} rounds per model; milliseconds")
        print(f"{'model':<18}{'load alone':>12}{'rename->answer median':>24}{'min':>8}{'max':>8}")
        with serve_in_thread(config) as server, grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for name in names:
                source = root / name / "1"
                card = ModelCard.load(source / "model.json")
                pixels = np.zeros((1, *card.input.shape), dtype=card.input.dtype)
                request = pb.ModelInferRequest(model_name=name)
                request.inputs.add(name=card.input.name, datatype="UINT8" if card.input.dtype == "uint8" else "FP32",
                                   shape=list(pixels.shape))  # fmt: skip
                request.raw_input_contents.append(pixels.tobytes())
                started = time.perf_counter()
                loaded = load_version(name, 1, source, config)
                load_ms = (time.perf_counter() - started) * 1e3
                loaded.close()  # type: ignore[union-attr]
                times = []
                for version in range(2, rounds + 2):
                    time.sleep(poll_secs * (0.37 * version % 1))  # land at different points of the interval
                    renamed = time.perf_counter()
                    stage(root, name, source, version)
                    while int(stub.ModelInfer(request, timeout=30).model_version) != version:
                        pass
                    times.append((time.perf_counter() - renamed) * 1e3)
                print(
                    f"{name:<18}{load_ms:>12.0f}{statistics.median(times):>24.0f}{min(times):>8.0f}{max(times):>8.0f}"
                )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repository", type=Path, default=Path("models"))
    parser.add_argument("--poll-secs", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    measure(args.model_repository, args.poll_secs, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
