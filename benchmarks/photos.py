"""Photos at 224x224: the ImageNet efficientnet_lite0, in-process onnxruntime against the server, in one run.

1. In-process onnxruntime images/s at batch 1, 8 and 32 (benchmarks/ceiling.py's configurations; the best is the
   ceiling).
2. The server with dynamic batching (`--max-batch-size 32`) against `--max-batch-size 1`, 1, 8 and 32 callers x 1
   raw uint8 image (v2 ModelInfer), and 8 callers x 8 images against the ceiling (target: >= 80%).
3. JPEG photos (640x480 and 3000x2000, made from skimage's chelsea and coffee) through the Classifier API against
   raw uint8 tensors, 8 callers x 1 image, on the batching server.

    make models-imagenet && .venv/bin/python benchmarks/photos.py --model-repository models-imagenet
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ceiling import best, measure_ceiling
from ceiling import markdown as ceiling_markdown
from harness import (
    PORT,
    ServerProcess,
    describe,
    interleave,
    machine,
    markdown_table,
    paired_table,
    pairs,
    serve_command,
)
from PIL import Image

from cnnserve.client.bench.loadgen import BenchConfig

MODEL = "efficientnet_lite0"
BATCHING, SINGLE = "batching (max 32)", "--max-batch-size 1"
SERVED_POINTS = ((1, 1), (8, 1), (32, 1))
TARGET_POINT = (8, 8)
JPEG_SIZES = {"jpeg 640x480": (640, 480), "jpeg 3000x2000": (3000, 2000)}


def serve_slowly(name: str, repository: Path, *flags: str) -> contextlib.AbstractContextManager[ServerProcess]:
    """harness.serve with 10 minutes to become ready: the server warms every batch size of a 224x224 network."""
    command = [sys.executable, "-m", "cnnserve.cli", "serve", "--model-repository", str(repository)]
    return serve_command(name, [*command, "--port", PORT, "--metrics-port", "-1", *flags], timeout_s=600)


def make_jpegs(folder: Path, size: tuple[int, int]) -> Path:
    """chelsea and coffee stretched to `size`, JPEG quality 90: real photo content at a camera's size."""
    import skimage

    data = Path(skimage.__file__).parent / "data"
    folder.mkdir(parents=True)
    for name in ("chelsea", "coffee"):
        Image.open(data / f"{name}.png").convert("RGB").resize(size, Image.Resampling.BICUBIC).save(
            folder / f"{name}.jpg", quality=90
        )
    return folder


def run(args: argparse.Namespace) -> str:
    model_file = args.model_repository / MODEL / "1" / "model.onnx"
    lines = [f"Machine: {machine()} (before). No GPU is lent to this run: CPU only.", ""]
    ceiling = measure_ceiling(model_file, (1, 8, 32), seconds=args.ceiling_seconds, repeats=args.repeats)
    lines += ["In-process onnxruntime, images/s (CPU-us per image):", "", ceiling_markdown(ceiling), ""]
    base = BenchConfig(model=MODEL, duration_s=args.duration, warmup_s=args.warmup, timeout_s=120.0)
    with tempfile.TemporaryDirectory(prefix="photos-bench-") as tmp:
        configs = {"raw uint8": base}
        configs |= {
            label: replace(base, protocol="classifier", images=make_jpegs(Path(tmp) / label.replace(" ", "-"), size))
            for label, size in JPEG_SIZES.items()
        }
        with (
            serve_slowly(BATCHING, args.model_repository, "--max-batch-size", "32") as batching,
            serve_slowly(SINGLE, args.model_repository, "--max-batch-size", "1") as single,
        ):
            served = interleave([batching, single], {"raw uint8": base}, SERVED_POINTS, args.repeats)
            target = interleave([batching], {"raw uint8": base}, [TARGET_POINT], args.repeats)
            photos = interleave([batching], configs, [(8, 1)], args.repeats)
    rows = pairs(served, (BATCHING, "raw uint8"), (SINGLE, "raw uint8"), SERVED_POINTS)
    lines += ["Server, raw uint8 tensors (v2 ModelInfer), dynamic batching vs none:", ""]
    lines += [paired_table("server", (BATCHING, SINGLE), "batching / none", rows), ""]
    at_target = target[(BATCHING, "raw uint8", *TARGET_POINT)]
    top = max(ceiling, key=lambda p: p.images_per_s)
    served_rate = at_target.point.images_per_s
    lines += [
        f"Server at {TARGET_POINT[0]} callers x {TARGET_POINT[1]} images (raw uint8): {served_rate:,.1f} img/s = "
        f"**{served_rate / top.images_per_s:.0%}** of the in-process ceiling ({top.config}, batch {top.batch_size}: "
        f"{top.images_per_s:,.1f} img/s); {served_rate / best(ceiling, 8).images_per_s:.0%} of in-process at "
        f"batch 8 ({best(ceiling, 8).images_per_s:,.1f} img/s). Target: >= 80%. CPU per image, steadier on a "
        f"shared machine: server {at_target.server_cpu_us_per_image:,.0f} us against in-process "
        f"{top.cpu_us_per_image:,.0f} us ({top.cpu_us_per_image / at_target.server_cpu_us_per_image:.0%}: the "
        f"share of the server's CPU that is the model's), with {at_target.server_cpu:.2f} server cores busy.",
        "",
        "JPEG photos through the Classifier API vs raw uint8 tensors, 8 callers x 1 image, batching server:",
        "",
    ]
    raw = photos[(BATCHING, "raw uint8", 8, 1)].point.images_per_s
    table = []
    for label in configs:
        measured = photos[(BATCHING, label, 8, 1)]
        table.append([label, *describe(measured), f"{measured.point.images_per_s / raw:.2f}x"])
    lines += [markdown_table(["input", "img/s", "p50 ms", "p99 ms", "errors", "loadgen cores", "server cores",
                              "server CPU-us/img", "vs raw"], table), ""]  # fmt: skip
    lines.append(f"Machine: {machine()} (after).")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=Path("models-imagenet"))
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per served point")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each point")
    # A batch of 32 runs for 0.4-1.5 s here: a 2 s window would count a handful of calls.
    parser.add_argument("--ceiling-seconds", type=float, default=8.0, help="one in-process window")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per point (the median is shown)")
    args = parser.parse_args(argv)
    if not (args.model_repository / MODEL / "1" / "model.onnx").is_file():
        print(f"photos: no {MODEL} in {args.model_repository}; run `make models-imagenet` first", file=sys.stderr)
        return 3
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
