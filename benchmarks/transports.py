"""grpcio vs the native transport, measured by two load generators: `cnnserve bench` and Triton's perf_analyzer.

Two servers (`cnnserve serve --transport grpcio` and `--transport native`) run side by side; every point (1 image
per request at 1-64 callers, and 8 callers x 64 images), over unary calls and over one ModelStreamInfer stream
per caller, is measured on both, by both generators, interleaved. Prints one table per generator (with each
side's CPU use) and the issue's targets, and draws throughput and p99 against concurrency as a PNG.

    .venv/bin/python benchmarks/transports.py --model-repository models --chart benchmarks/transports.png
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import harness
import perf_analyzer
from harness import Measured, markdown_table, serve

from cnnserve.client.bench.loadgen import BenchConfig

CONCURRENCY = (1, 2, 4, 8, 16, 32, 64)  # the chart's axis
BIG = (8, 64)  # callers x images per request
TRANSPORTS = ("grpcio", "native")
RPCS = ("unary", "stream")
Key = tuple[str, str, str, int, int]  # (generator, transport, rpc, concurrency, images per request)


def points(concurrency: Sequence[int] = CONCURRENCY) -> list[tuple[int, int]]:
    return [(c, 1) for c in concurrency] + [BIG]


def compare_transports(
    repository: Path,
    bench: BenchConfig,
    pa: perf_analyzer.PerfAnalyzerConfig,
    pa_command: list[str] | None,
    *,
    server_flags: Sequence[str] = (),
    repeats: int = 1,
    concurrency: Sequence[int] = CONCURRENCY,
) -> dict[Key, Measured]:
    """Every (generator, transport, rpc, point), `repeats` times interleaved; the median run of each."""
    runs: dict[Key, list[Measured]] = {}
    # Both with the default flags, so they differ in the transport alone; native is what the default (auto) runs.
    same = tuple(server_flags)
    with (
        serve("grpcio", repository, "--transport", "grpcio", *same) as grpcio,
        serve("native", repository, "--transport", "native", *same) as native,
    ):
        for _ in range(repeats):
            for callers, images in points(concurrency):
                for rpc in RPCS:
                    for server in (grpcio, native):
                        key = (server.name, rpc, callers, images)
                        config = dataclasses.replace(bench, rpc=rpc)  # type: ignore[arg-type]
                        measured = harness.measure(server, config, callers, images)
                        runs.setdefault(("cnnserve bench", *key), []).append(measured)
                        if pa_command is not None:
                            measured = perf_analyzer.measure(pa_command, server, pa, callers, images, rpc)
                            runs.setdefault(("perf_analyzer", *key), []).append(measured)
    return {key: harness.median_by_throughput(values) for key, values in runs.items()}


def generators(runs: Mapping[Key, Measured]) -> list[str]:
    return list(dict.fromkeys(key[0] for key in runs))


def measured_points(runs: Mapping[Key, Measured]) -> list[tuple[int, int]]:
    return sorted({(key[3], key[4]) for key in runs}, key=lambda point: (point[1], point[0]))


def ratio(a: Measured, b: Measured) -> str:
    """a's images/s over b's, or n/a when either point failed."""
    if min(a.point.images_per_s, b.point.images_per_s) <= 0:
        return "n/a"
    return f"{a.point.images_per_s / max(b.point.images_per_s, 1e-9):.2f}x"


def _cells(m: Measured) -> list[str]:
    lat = m.point.latency_ms
    errors = f" ({m.point.error_count} err)" if m.point.error_count else ""
    return [
        f"{m.point.images_per_s:,.0f}{errors}",
        f"{lat['p50']:.2f} / {lat['p99']:.2f}",
        f"{m.server_cpu:.2f} + {sum(m.point.loadgen_cpu):.2f}",
        f"{m.server_cpu_us_per_image:.0f}" if m.point.images_per_s > 0 else "n/a",
    ]


def markdown(runs: Mapping[Key, Measured], generator: str) -> str:
    """One line per (point, rpc): both transports' figures, and native's images/s over grpcio's. The server's
    CPU-us per image moves less than images/s when neighbours take CPU."""
    header = ["callers x img/req", "rpc"]
    for transport in TRANSPORTS:
        header += [
            f"{transport} img/s",
            f"{transport} p50 / p99 ms",
            f"{transport} cores (server + generator)",
            f"{transport} server CPU-us/img",
        ]
    header.append("native / grpcio")
    body = []
    for concurrency, images in measured_points(runs):
        for rpc in RPCS:
            grpcio, native = (runs[(generator, t, rpc, concurrency, images)] for t in TRANSPORTS)
            body.append(
                [f"{concurrency} x {images}", rpc, *_cells(grpcio), *_cells(native), f"**{ratio(native, grpcio)}**"]
            )
    return markdown_table(header, body)


def targets(runs: Mapping[Key, Measured]) -> str:
    """Issue 11's targets, from perf_analyzer's figures when it ran (else cnnserve bench's), for the native
    transport: what the default server (`--transport auto`) serves on where pygrpc-native is installed."""
    generator = "perf_analyzer" if "perf_analyzer" in generators(runs) else "cnnserve bench"

    def get(transport: str, rpc: str, concurrency: int, images: int) -> Measured | None:
        found = runs.get((generator, transport, rpc, concurrency, images))
        return found if found is not None and found.point.images_per_s > 0 else None

    def check(name: str, a: Measured | None, b: Measured | None, text: str, ok: bool) -> list[str]:
        if a is None or b is None:
            return [name, "not measured (or failed)"]
        return [name, f"{text}: {'yes' if ok else '**no**'}"]

    def ips(m: Measured | None) -> float:
        return m.point.images_per_s if m is not None else float("nan")

    many, many_g = get("native", "unary", 32, 1), get("grpcio", "unary", 32, 1)
    one = get("native", "unary", 1, 1)
    big, big_g = get("native", "unary", *BIG), get("grpcio", "unary", *BIG)
    stream, stream_g = get("native", "stream", 32, 1), get("grpcio", "stream", 32, 1)
    p99 = many.point.latency_ms["p99"] if many is not None else float("nan")
    p50 = one.point.latency_ms["p50"] if one is not None else float("nan")
    rows = [
        check("32 x 1 unary: >= 5,000 img/s", many, many, f"{ips(many):,.0f}", ips(many) >= 5000),
        check("32 x 1 unary: p99 <= 15 ms", many, many, f"{p99:.1f} ms", p99 <= 15),
        check(
            "32 x 1 unary: >= 3x grpcio", many, many_g, f"{ips(many) / ips(many_g):.2f}x", ips(many) >= 3 * ips(many_g)
        ),
        check("1 x 1 unary: p50 <= 0.5 ms", one, one, f"{p50:.2f} ms", p50 <= 0.5),
        check(
            "8 x 64 unary: >= 1.3x grpcio", big, big_g, f"{ips(big) / ips(big_g):.2f}x", ips(big) >= 1.3 * ips(big_g)
        ),
        check(
            "32 x 1 stream: no slower than grpcio's",
            stream,
            stream_g,
            f"{ips(stream):,.0f} vs {ips(stream_g):,.0f}",
            ips(stream) >= ips(stream_g),
        ),
    ]
    label = f"target ({generator}, the default server: native)"
    return markdown_table([label, "measured"], rows)


def chart(runs: Mapping[Key, Measured], path: Path, title: str) -> None:
    """Throughput and p99 against concurrency (1 image per request), one row of plots per generator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nan = float("nan")
    names = generators(runs)
    concurrency = [c for c, images in measured_points(runs) if images == 1]
    figure, axes = plt.subplots(len(names), 2, figsize=(12, 4.2 * len(names)), squeeze=False)
    colors = {"grpcio": "tab:blue", "native": "tab:orange"}
    for row, generator in enumerate(names):
        for transport in TRANSPORTS:
            for rpc in RPCS:
                measured = [runs[(generator, transport, rpc, c, 1)] for c in concurrency]
                style = {"color": colors[transport], "linestyle": "-" if rpc == "unary" else "--", "marker": "o"}
                label = f"{transport}, {rpc}"
                ok = [m.point.images_per_s > 0 for m in measured]  # a failed point is a gap, not a zero
                throughput = [m.point.images_per_s if good else nan for m, good in zip(measured, ok, strict=True)]
                p99 = [m.point.latency_ms["p99"] if good else nan for m, good in zip(measured, ok, strict=True)]
                axes[row][0].plot(concurrency, throughput, label=label, **style)
                axes[row][1].plot(concurrency, p99, label=label, **style)
        for column, what in enumerate(("images/s", "p99 latency, ms")):
            axis = axes[row][column]
            axis.set_xscale("log", base=2)
            axis.set_xticks(concurrency, [str(c) for c in concurrency])
            axis.set_xlabel("concurrent callers (1 image per request)")
            axis.set_ylabel(what)
            axis.set_title(f"{generator}: {what}")
            axis.grid(True, alpha=0.3)
            axis.set_ylim(bottom=0)
            axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pa-window-ms", type=int, default=1500, help="perf_analyzer measurement window")
    parser.add_argument("--no-perf-analyzer", action="store_true", help="cnnserve bench only")
    parser.add_argument("--chart", type=Path, default=None, help="write the PNG chart here")
    parser.add_argument(
        "--concurrency",
        type=lambda text: tuple(int(c) for c in text.split(",")),
        default=CONCURRENCY,
        help="callers of the 1-image points (default 1,2,4,8,16,32,64; 8 x 64 images is always measured)",
    )


def run(args: argparse.Namespace) -> str:
    """The markdown of the comparison (and the chart, when asked), for this script and run_all."""
    bench = harness.config_from(args)
    pa_command = None if args.no_perf_analyzer else perf_analyzer.find_command()
    pa = perf_analyzer.PerfAnalyzerConfig(model=args.model, window_ms=args.pa_window_ms)
    runs = compare_transports(
        args.model_repository,
        bench,
        pa,
        pa_command,
        server_flags=args.server_flag,
        repeats=args.repeats,
        concurrency=args.concurrency,
    )
    sections = ["#### Targets\n\n" + targets(runs)]
    if pa_command is None:
        sections.append("perf_analyzer did not run (benchmarks/install_perf_analyzer.sh failed or was skipped).")
    for generator in generators(runs):
        sections.append(f"#### {generator}\n\n" + markdown(runs, generator))
    if args.chart is not None:
        chart(runs, args.chart, f"cnnserve, model {args.model}: grpcio vs native transport")
        sections.append(f"Chart: `{args.chart}`.")
    return "\n\n".join(sections)


def main(argv: Sequence[str] | None = None) -> int:
    return harness.script_main(argv, __doc__, run, add_arguments)


if __name__ == "__main__":
    sys.exit(main())
