"""ClassifyConfig (cnnserve.client.classify.config): the flags of `cnnserve classify`, their defaults, and the
two variables they read (CNNSERVE_SERVER, CNNSERVE_TOKEN; a flag wins)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnserve.client.classify.batch import build_parser
from cnnserve.client.classify.config import ClassifyConfig
from cnnserve.client.config import DEFAULT_TARGET


def config_of(*argv: str, **environ: str) -> ClassifyConfig:
    return ClassifyConfig.from_args(build_parser().parse_args(list(argv)), environ)


def test_defaults_are_those_the_help_states() -> None:
    config = config_of("in/")
    assert config.inputs == ("in/",) and config.server == DEFAULT_TARGET
    assert (config.batch_size, config.concurrency, config.output, config.timeout_s, config.retries) == (
        32, 4, "-", 60.0, 4,
    )  # fmt: skip
    assert config.connect_timeout_s == 5.0 and not (config.wait or config.resume or config.quiet or config.tls)
    client = config.client
    assert client.retry.max_attempts == 5 and client.timeout_s == 60.0 and client.metadata == ()
    help_text = " ".join(build_parser().format_help().split())
    assert "images per request (default 32)" in help_text and "[env CNNSERVE_SERVER]" in help_text


def test_flags_win_over_variables_and_only_server_and_token_read_one(tmp_path: Path) -> None:
    environ = {"CNNSERVE_SERVER": "10.0.0.1:9000", "CNNSERVE_TOKEN": "s3cret", "CNNSERVE_BATCH_SIZE": "7"}
    config = config_of("in/", **environ)
    assert config.server == "10.0.0.1:9000" and config.token == "s3cret" and config.batch_size == 32
    config = config_of("in/", "--server", "127.0.0.1:1", "--token", "flag", "--batch-size", "8", **environ)
    assert (config.server, config.token, config.batch_size) == ("127.0.0.1:1", "flag", 8)
    assert config_of("in/", CNNSERVE_SERVER="").server == DEFAULT_TARGET  # empty counts as unset
    ca = tmp_path / "ca.pem"
    tls = config_of("in/", "--tls-root-cert", str(ca), "--timeout", "2.5", "-q").client
    assert tls.tls is not None and tls.tls.root_cert == ca and tls.timeout_s == 2.5


@pytest.mark.parametrize("flags", [["--batch-size", "0"], ["--concurrency", "-1"], ["--format", "xml"]])
def test_bad_values_are_usage_errors(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["in/", *flags])
    assert exit_info.value.code == 2 and flags[0] in capsys.readouterr().err
