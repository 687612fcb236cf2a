"""cnnserve/process.py: the one map of errors to exit codes, for every `cnnserve` program."""

from __future__ import annotations

import pytest

from cnnserve.client.errors import BenchError, NotFound, ServerUnreachable
from cnnserve.errors import CheckpointError, ConfigError, ExportError, ModelCardError, RepositoryError
from cnnserve.process import EXIT_FAILURE, EXIT_STARTUP, EXIT_USAGE, exit_code, fail
from cnnserve.server.errors import InferenceError, StartupError


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("bad flag"), EXIT_USAGE),
        (CheckpointError("unreadable"), EXIT_STARTUP),
        (ModelCardError("no labels"), EXIT_STARTUP),
        (RepositoryError("version 1 exists"), EXIT_STARTUP),
        (StartupError("port in use"), EXIT_STARTUP),
        (ServerUnreachable("no server"), EXIT_STARTUP),
        (BenchError("no server"), EXIT_STARTUP),
        (ExportError("exporter failed"), EXIT_FAILURE),
        (InferenceError("onnxruntime failed"), EXIT_FAILURE),
        (NotFound("no such model"), EXIT_FAILURE),
        (OSError("disk full"), EXIT_FAILURE),
    ],
)
def test_once_the_job_runs_the_error_class_says(error: BaseException, code: int) -> None:
    assert exit_code(error) == code


def test_the_phase_decides_before_the_job_runs() -> None:
    assert exit_code(NotFound("no such model"), "starting") == EXIT_STARTUP  # e.g. classify's model lookup
    assert exit_code(OSError("unwritable"), "starting") == EXIT_STARTUP
    assert exit_code(ModelCardError("3 labels for 10 outputs"), "configuring") == EXIT_USAGE  # import's flags
    assert exit_code(ConfigError("token in clear text"), "starting") == EXIT_STARTUP  # refused when connecting


def test_fail_says_the_program_and_the_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert fail("cnnserve export", ExportError("exporter failed")) == EXIT_FAILURE
    assert fail("cnnserve bench", BenchError("no server at 127.0.0.1:1"), what="cannot start: ") == EXIT_STARTUP
    assert capsys.readouterr().err.splitlines()[-1] == "cnnserve bench: cannot start: no server at 127.0.0.1:1"
