"""`make serve`'s demo stops on the first Ctrl-C, wherever in its start-up the signal lands and whichever of its
threads the kernel hands it to (a signal for the process may go to any thread not blocking it)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The demo must be gone this long after the signal (it drains with --grace-period-s 1).
EXIT_WITHIN_S = 10.0


def start_demo(repository: Path, samples: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "cnnserve", "demo", "--model-repository", str(repository)),
            *("--port", "0", "--metrics-port", "-1", "--grace-period-s", "1", "--samples", str(samples)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"},
    )


def finish(process: subprocess.Popen[str], output: list[str]) -> int:
    """Wait for the exit (killing it, and failing, if it does not come in time); its exit code."""
    try:
        rest, _ = process.communicate(timeout=EXIT_WITHIN_S)
    except subprocess.TimeoutExpired:
        process.kill()
        rest, _ = process.communicate()
        pytest.fail("the demo ignored SIGINT; its output:\n" + "".join(output) + rest)
    output.append(rest)
    return process.returncode


def read_until(process: subprocess.Popen[str], prefix: str, output: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line)
        if line.startswith(prefix):
            return
    pytest.fail(f"the demo ended before printing {prefix!r}:\n" + "".join(output))


@pytest.fixture
def demo(linear_repository: Path, repo_root: Path) -> Iterator[Callable[[], subprocess.Popen[str]]]:
    """Starts demos that get SIGINT as from a terminal. A shell without job control starts background jobs with
    SIGINT ignored, and a child inherits that until the demo installs its handler: a signal in its first instants
    would be lost. A handler here instead becomes the default action in a child (exec resets handlers)."""
    samples = repo_root / "samples" / "fashion-mnist" / "sandal"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield lambda: start_demo(linear_repository, samples)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigint_at_any_point_of_start_up_stops_the_demo(demo: Callable[[], subprocess.Popen[str]]) -> None:
    # From "still importing" to "serving": once the demo has its handler, SIGINT means drain and exit 0; before,
    # Python's own KeyboardInterrupt ends it. Either way it ends, at once.
    for delay_s in (0.0, 0.3, 0.6, 0.9, 1.2, 1.5, 2.0):
        process, output = demo(), []
        time.sleep(delay_s)
        process.send_signal(signal.SIGINT)
        code = finish(process, output)
        assert code in (0, 130, -signal.SIGINT), f"after {delay_s} s: exit {code}\n" + "".join(output)
        assert "Traceback" not in "".join(output) or code != 0


def test_sigint_after_press_ctrl_c_stops_the_demo_whichever_thread_gets_it(
    demo: Callable[[], subprocess.Popen[str]],
) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "tgkill"):
        pytest.skip("needs glibc's tgkill to aim a signal at one thread")
    for target in ("main", "others"):
        process, output = demo(), []
        read_until(process, "Press Ctrl-C", output)
        if target == "main":
            process.send_signal(signal.SIGINT)
        else:
            # What the kernel may do with a terminal's Ctrl-C: deliver it to a thread other than the main one.
            threads = [int(t) for t in os.listdir(f"/proc/{process.pid}/task") if int(t) != process.pid]
            assert threads, "the demo runs its server on threads of its own"
            for tid in threads:
                libc.tgkill(process.pid, tid, signal.SIGINT)
        assert finish(process, output) == 0, "".join(output)
        assert "stopping: draining" in "".join(output)
