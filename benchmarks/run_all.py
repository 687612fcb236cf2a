"""Every benchmark in one run on one machine, printed as the markdown of benchmarks/RESULTS.md's Performance section.

By default (about 6 minutes): the grpcio and native transports side by side under two load generators,
`cnnserve bench` and Triton's perf_analyzer (benchmarks/transports.py, with a PNG chart), the issue's targets
checked against that same run, and decoding speed (benchmarks/decode.py). `--parts all` adds the earlier
sections: the ceiling (in-process onnxruntime), batching vs none, classifier PNGs vs v2 raw tensors, the gRPC
floor, one server process vs --workers N. The load generators run on the same machine as the servers, so every
row says how many cores each side used.

    .venv/bin/python benchmarks/run_all.py --model-repository models --chart benchmarks/transports.png \
        --markdown-out /tmp/performance.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import batching
import ceiling
import decode
import floor
import protocols
import transports
import workers
from harness import Pair, add_common_arguments, config_from, machine, markdown_table

from cnnserve.client.bench.loadgen import BenchConfig

PARTS = ("transports", "decode", "ceiling", "batching", "protocols", "floor", "workers")


def find(rows: Sequence[Pair], concurrency: int, images: int) -> Pair:
    return next(r for r in rows if (r.concurrency, r.images_per_request) == (concurrency, images))


def targets(
    batching_rows: Sequence[Pair], ceiling_64: float, others: Sequence[tuple[str, Sequence[Pair], bool]]
) -> str:
    """The issue's targets on this 2-core machine: the default server (unary calls) and, in more columns, other
    configurations measured in this run (the `a` side of their pairs; their ratio is batching's when they compare
    batching with none)."""

    def mark(ok: bool) -> str:
        return "yes" if ok else "**no**"

    def checks(rows: Sequence[Pair], ratio: float | None) -> list[str]:
        one, many, big = (find(rows, c, n).a.point for c, n in ((1, 1), (32, 1), (8, 64)))
        share = big.images_per_s / ceiling_64
        return [
            f"{one.latency_ms['p50']:.2f} ms: {mark(one.latency_ms['p50'] <= 0.5)}",
            f"{many.images_per_s:,.0f} img/s: {mark(many.images_per_s >= 5000)}",
            f"{many.latency_ms['p99']:.1f} ms: {mark(many.latency_ms['p99'] <= 15)}",
            f"{ratio:.1f}x: {mark(ratio >= 5)}" if ratio is not None else "not measured",
            f"{share:.0%} of {ceiling_64:,.0f}: {mark(share >= 0.7)}",
        ]

    names = [
        "1 x 1 image: p50 <= 0.5 ms",
        "32 x 1 image: >= 5,000 img/s",
        "32 x 1 image: p99 <= 15 ms",
        "32 x 1 image: >= 5x batching off",
        "8 x 64 images: >= 70% of in-process ORT at bs=64",
    ]
    columns = [checks(batching_rows, find(batching_rows, 32, 1).ratio)]
    columns += [checks(rows, find(rows, 32, 1).ratio if batching else None) for _, rows, batching in others]
    header = ["target", "default server, unary", *(label for label, _, _ in others)]
    return markdown_table(header, [[name, *cells] for name, *cells in zip(names, *columns, strict=True)])


def older_parts(args: argparse.Namespace, parts: set[str], config: BenchConfig, model: Path) -> list[str]:
    """The sections of the earlier performance issues (cnnserve bench only), each when asked for."""
    repository, repeats, flags, model_name = args.model_repository, args.repeats, args.server_flag, args.model
    stream_config = dataclasses.replace(config, rpc="stream")
    sections: list[str] = []
    ceiling_points = batching_rows = batching_stream_rows = worker_rows = None
    if "ceiling" in parts or "batching" in parts:
        print("ceiling ...", file=sys.stderr)
        ceiling_points = ceiling.measure_ceiling(model, seconds=args.ceiling_seconds, repeats=repeats)
    if "batching" in parts:
        print("batching vs none ...", file=sys.stderr)
        batching_rows = batching.compare_batching(repository, config, repeats=repeats, server_flags=flags)
        print("batching vs none, one stream per caller ...", file=sys.stderr)
        batching_stream_rows = batching.compare_batching(repository, stream_config, repeats=repeats, server_flags=flags)
    if "workers" in parts and args.workers > 1:
        print(f"--workers {args.workers} vs 1 ...", file=sys.stderr)
        worker_rows = workers.compare_workers(
            repository, config, workers=args.workers, repeats=repeats, server_flags=flags
        )
    if ceiling_points is not None and batching_rows is not None and batching_stream_rows is not None:
        others: list[tuple[str, Sequence[Pair], bool]] = [("default server, v2 stream", batching_stream_rows, True)]
        if worker_rows is not None:
            others.append((f"--workers {args.workers}, unary", worker_rows, False))
        ceiling_64 = ceiling.best(ceiling_points, 64).images_per_s
        sections.append("### Targets of the earlier issue\n\n" + targets(batching_rows, ceiling_64, others))
    if ceiling_points is not None:
        sections.append("### Ceiling: in-process onnxruntime (no gRPC)\n\n" + ceiling.markdown(ceiling_points))
    if batching_rows is not None and batching_stream_rows is not None:
        sections.append("### Dynamic batching vs `--max-batch-size 1`\n\n" + batching.markdown(batching_rows))
        sections.append(
            "### Dynamic batching vs `--max-batch-size 1`, one stream per caller (v2 ModelStreamInfer)\n\n"
            + batching.markdown(batching_stream_rows)
        )
        for name in args.batching_model:
            print(f"batching vs none with {name} ...", file=sys.stderr)
            rows = batching.compare_batching(
                repository, dataclasses.replace(config, model=name), repeats=repeats, server_flags=flags
            )
            sections.append(
                f"### Dynamic batching vs `--max-batch-size 1`, model `{name}`\n\n" + batching.markdown(rows)
            )
    if "protocols" in parts:
        print("classifier vs v2, stream vs unary ...", file=sys.stderr)
        decoding_rows, streaming_rows = protocols.compare_protocols(
            repository, config, repeats=repeats, server_flags=flags
        )
        sections.append(
            "### Classifier API with PNGs vs v2 raw tensors (the price of decoding)\n\n"
            + protocols.markdown_decoding(decoding_rows)
        )
        sections.append(
            "### One stream per caller vs one call per request (v2)\n\n" + protocols.markdown_streaming(streaming_rows)
        )
    if "floor" in parts:
        print("cnnserve vs the gRPC floor ...", file=sys.stderr)
        floor_rows = floor.compare_floor(repository, model_name, config, repeats=repeats, server_flags=flags)
        floor_stream_rows = floor.compare_floor(
            repository, model_name, stream_config, repeats=repeats, server_flags=flags
        )
        sections.append("### cnnserve vs the gRPC floor (a server with no model)\n\n" + floor.markdown(floor_rows))
        sections.append("### cnnserve vs the gRPC floor, one stream per caller\n\n" + floor.markdown(floor_stream_rows))
    if worker_rows is not None:
        sections.append(
            f"### `--workers {args.workers}` vs one process\n\n" + workers.markdown(worker_rows, args.workers)
        )
    return sections


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--workers", type=int, default=2, help="server processes to compare with one (1: skip)")
    parser.add_argument("--ceiling-seconds", type=float, default=1.0, help="one in-process window")
    parser.add_argument(
        "--batching-model",
        action="append",
        default=[],
        help="also compare batching vs none with this model of the repository (repeat), e.g. a conv-heavy one",
    )
    parser.add_argument("--markdown-out", type=Path, default=None, help="also write the markdown to this file")
    parser.add_argument(
        "--parts",
        type=lambda text: [p for p in text.split(",") if p],
        default=["transports", "decode"],
        help=f"comma-separated parts to run, of {', '.join(PARTS)}, or all (default: transports,decode: about "
        "6 minutes; all: about 20)",
    )
    parser.add_argument("--data-dir", type=Path, default=decode.DEFAULT_DATA_DIR, help="Fashion-MNIST IDX folder")
    transports.add_arguments(parser)
    parser.set_defaults(duration=2.0, warmup=0.5, repeats=1)  # within ~10 minutes on 2 cores
    args = parser.parse_args(argv)
    unknown = [p for p in args.parts if p not in (*PARTS, "all")]
    if unknown:
        parser.error(f"--parts: unknown {', '.join(unknown)}; expected some of {', '.join(PARTS)}, or all")
    config = config_from(args)
    repository, repeats, model_name = args.model_repository, args.repeats, args.model
    model = repository / model_name / "1" / "model.onnx"
    if not model.is_file():
        print(f"run_all: {model} not found; pass --model-repository and --model", file=sys.stderr)
        return 3

    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    before = machine()
    parts = set(PARTS) if "all" in args.parts else set(args.parts)
    command = shlex.join([Path(sys.executable).name, "benchmarks/run_all.py", *(argv or sys.argv[1:])])
    sections = [
        f"Run `{command}` on {started}, model `{model_name}` ({model}); {config.duration_s:g} s windows after "
        f"{config.warmup_s:g} s of warm-up, median of {repeats} interleaved runs, load generators `cnnserve bench` "
        f"({config.processes} process(es), v2 raw uint8 unless said) and perf_analyzer on the same machine.",
        f"Machine at start: {before}.",
    ]
    if "transports" in parts:
        print(f"[{started}] grpcio vs native transport, cnnserve bench and perf_analyzer ...", file=sys.stderr)
        sections.append("### grpcio vs native transport, two load generators\n\n" + transports.run(args))
    if "decode" in parts:
        print("decoding: full vs JPEG draft mode ...", file=sys.stderr)
        sections.append(
            "### Decoding: images/s per core, full decode vs JPEG draft mode\n\n"
            + decode.speed_table(decode.sample_images(args.data_dir), 1.0)
        )
    if parts & {"ceiling", "batching", "protocols", "floor", "workers"}:
        sections += older_parts(args, parts, config, model)
    sections.insert(2, f"At end: {machine()}.")
    text = "\n\n".join(sections) + "\n"
    print(text)
    if args.markdown_out is not None:
        args.markdown_out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
