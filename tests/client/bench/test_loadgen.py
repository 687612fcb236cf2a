"""`cnnserve bench` against a real server: short runs (about a second per point), never timed assertions.

What a user relies on: every point reports non-zero throughput with no errors against a healthy server, the JSON
lines parse and agree with the table's arithmetic, several processes merge into one point, and a server that is
down or a model that does not exist stop the run at once with one clear line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cnnserve.client.bench import loadgen
from cnnserve.client.bench.loadgen import BenchConfig, main, parse_duration
from cnnserve.process import EXIT_OK, EXIT_STARTUP, EXIT_USAGE
from cnnserve.server.app import RunningServer

SHORT = ["--duration", "1s", "--warmup", "0.2s"]


@pytest.fixture(scope="module")
def model(running_server: RunningServer) -> str:
    """A READY model of the running server (a LeNet when there is one: the cheapest to serve)."""
    ready = [s.name for s in running_server.state.repository.statuses() if s.state == "READY"]
    return next((name for name in ready if "lenet" in name), ready[0])


def read_points(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_v2_points_report_throughput_latency_and_generator_cpu(
    running_server: RunningServer, model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "points.jsonl"
    code = main(["--server", running_server.address, "--model", model, "--concurrency", "1,2", *SHORT,
                 "--json-out", str(out)])  # fmt: skip

    assert code == EXIT_OK
    points = read_points(out)
    assert [(p["protocol"], p["concurrency"], p["images_per_request"]) for p in points] == [("v2", 1, 1), ("v2", 2, 1)]
    for point in points:
        assert point["model"] == model
        assert point["errors"] == {}
        assert point["requests"] > 0
        assert point["images_per_s"] == pytest.approx(point["requests"] / point["duration_s"])
        latency = point["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        assert len(point["loadgen_cpu"]) == 1 and 0 < point["loadgen_cpu"][0] < 2
        assert point["loadgen_cpu_us_per_request"] > 0
    table = capsys.readouterr().out
    assert "p99 ms" in table and "loadgen CPU" in table
    assert len([line for line in table.splitlines() if line.startswith("v2 ")]) == 2


def test_classifier_protocol_counts_every_image_of_a_request(running_server: RunningServer, model: str) -> None:
    config = BenchConfig(server=running_server.address, model=model, protocol="classifier", concurrency=(2,),
                         images_per_request=(1, 4), duration_s=1.0, warmup_s=0.2)  # fmt: skip

    points = loadgen.run(config)

    assert [(p.images_per_request, p.error_count) for p in points] == [(1, 0), (4, 0)]
    assert all(p.requests > 0 for p in points)
    assert points[1].images_per_s == pytest.approx(4 * points[1].requests_per_s)


@pytest.mark.parametrize(("protocol", "loop"), [("v2", "uvloop"), ("classifier", "uvloop"), ("v2", "asyncio")])
def test_streams_carry_the_same_requests(running_server: RunningServer, model: str, protocol: str, loop: str) -> None:
    config = BenchConfig(server=running_server.address, model=model, protocol=protocol, rpc="stream",  # type: ignore[arg-type]
                         concurrency=(2,), images_per_request=(3,), duration_s=1.0, warmup_s=0.2, loop=loop)  # type: ignore[arg-type]  # fmt: skip

    (point,) = loadgen.run(config)

    assert (point.rpc, point.error_count) == ("stream", 0)
    assert point.requests > 0 and point.images_per_s == pytest.approx(3 * point.requests_per_s)


@pytest.mark.slow  # spawns two interpreters that import grpc: about 5 s
def test_several_processes_merge_into_one_point(running_server: RunningServer, model: str, tmp_path: Path) -> None:
    out = tmp_path / "points.jsonl"
    code = main(["--server", running_server.address, "--model", model, "--concurrency", "3", "--processes", "2",
                 *SHORT, "--json-out", str(out)])  # fmt: skip

    assert code == EXIT_OK
    (point,) = read_points(out)
    assert point["processes"] == 2 and len(point["loadgen_cpu"]) == 2
    assert point["requests"] > 0 and point["errors"] == {}


def test_json_lines_on_stdout_move_the_table_to_stderr(
    running_server: RunningServer, model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--server", running_server.address, "--model", model, "--concurrency", "1", *SHORT,
                 "--json-out", "-"]) == EXIT_OK  # fmt: skip

    captured = capsys.readouterr()
    (line,) = captured.out.splitlines()
    assert json.loads(line)["requests"] > 0
    assert "p50 ms" in captured.err


def test_unknown_model_stops_before_the_run_with_the_servers_reason(
    running_server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--server", running_server.address, "--model", "no_such_model", *SHORT])

    assert code == EXIT_STARTUP
    err = capsys.readouterr().err
    assert "NOT_FOUND" in err and "no_such_model" in err


def test_unreachable_server_fails_fast_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code = main(["--server", "127.0.0.1:1", "--timeout", "1s", *SHORT])

    assert code == EXIT_STARTUP
    assert time.monotonic() - started < 5
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "127.0.0.1:1" in line


@pytest.mark.parametrize(
    "flags", [["--concurrency", "0"], ["--concurrency", "a,b"], ["--duration", "soon"], ["--server", "nohostport"]]
)
def test_bad_flags_are_usage_errors(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:  # argparse exits for a value it cannot convert; main() returns for one that fails validation
        code = main(flags)
    except SystemExit as exited:
        code = exited.code  # type: ignore[assignment]
    assert code == EXIT_USAGE
    assert capsys.readouterr().err.strip()


def test_durations_parse() -> None:
    assert [parse_duration(t) for t in ("10s", "500ms", "2m", "1.5")] == [10.0, 0.5, 120.0, 1.5]
