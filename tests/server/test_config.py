"""ServerConfig: flags over CNNSERVE_* variables over defaults, validated once with messages saying what was wanted."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from cnnserve.errors import ConfigError
from cnnserve.server.config import ServerConfig, available_cores, env_name, parse_config


def test_defaults_bind_loopback_and_size_threads_to_the_cores(tmp_path: Path) -> None:
    config = parse_config(["--model-repository", str(tmp_path)], environ={})
    assert config.host == "127.0.0.1"
    assert (config.port, config.metrics_port, config.max_batch_size, config.max_queue_delay_us) == (
        8001,
        8002,
        64,
        2000,
    )
    # one batch per core and one more ready behind them, one onnxruntime thread each when cores are few
    assert config.instances == available_cores() + 1 and config.intra_op_threads >= 1
    assert (config.instances - 1) * config.intra_op_threads <= available_cores()
    assert config.max_message_bytes == 0  # sized to the models at start (ModelRepository.message_bytes)


def test_flags_win_over_environment_which_wins_over_defaults(tmp_path: Path) -> None:
    environ = {
        "CNNSERVE_MODEL_REPOSITORY": str(tmp_path),
        "CNNSERVE_PORT": "9000",
        "CNNSERVE_MAX_BATCH_SIZE": "8",
        "CNNSERVE_ALLOW_CPU_FALLBACK": "yes",
        "CNNSERVE_HOST": "0.0.0.0",
    }
    config = parse_config(["--port", "9100", "--no-allow-cpu-fallback"], environ=environ)
    assert config.model_repository == tmp_path
    assert config.port == 9100  # flag beats env
    assert config.max_batch_size == 8  # env beats default
    assert config.allow_cpu_fallback is False
    assert config.host == "0.0.0.0"


def test_every_field_has_a_flag_and_an_environment_variable(tmp_path: Path) -> None:
    help_text = pytest.importorskip("argparse").ArgumentParser()
    from cnnserve.server.config import add_arguments

    add_arguments(help_text)
    usage = help_text.format_help()
    for field in fields(ServerConfig):
        assert "--" + field.name.replace("_", "-") in usage
        assert env_name(field.name) in usage


def test_limits_default_to_multiples_of_the_batch_and_parse_from_flags_and_env(tmp_path: Path) -> None:
    config = parse_config(["--model-repository", str(tmp_path), "--max-batch-size", "16"], environ={})
    assert (config.max_images_per_request, config.max_infer_batch_size) == (64, 64)
    assert config.image_formats == ("PNG", "JPEG") and config.max_image_pixels == 16_000_000
    assert (config.unhealthy_after_failures, config.allow_no_ready_models) == (5, False)
    environ = {"CNNSERVE_IMAGE_FORMATS": "png, tiff", "CNNSERVE_MAX_CONCURRENT_RPCS": "7"}
    config = parse_config(["--model-repository", str(tmp_path), "--max-connection-age-s", "600"], environ=environ)
    assert config.image_formats == ("PNG", "TIFF") and config.max_concurrent_rpcs == 7
    assert config.max_connection_age_s == 600
    with pytest.raises(ConfigError, match="image_formats must name at least one"):
        parse_config(["--model-repository", str(tmp_path), "--image-formats", " , "], environ={})


def test_intra_op_threads_default_shares_the_cores_between_instances(tmp_path: Path) -> None:
    config = ServerConfig(model_repository=tmp_path, instances=1)
    assert config.intra_op_threads == available_cores()
    explicit = ServerConfig(model_repository=tmp_path, instances=2, intra_op_threads=3)
    assert (explicit.instances, explicit.intra_op_threads) == (2, 3)


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--max-batch-size", "0"], {}, "max_batch_size must be an integer between 1 and"),
        (["--port", "70000"], {}, "port must be an integer between 0 and 65535, got 70000"),
        (["--metrics-port", "-2"], {}, "metrics_port must be an integer between -1"),
        (["--port", "9000", "--metrics-port", "9000"], {}, "port and metrics_port must differ"),
        (["--grace-period-s", "-1"], {}, "grace_period_s must be between 0 and 3600"),
        ([], {"CNNSERVE_MAX_QUEUE_SIZE": "many"}, "CNNSERVE_MAX_QUEUE_SIZE='many' is not valid"),
        ([], {"CNNSERVE_EAGER_DISPATCH": "maybe"}, "expected one of 1/0, true/false"),
        ([], {"CNNSERVE_DEVICE": "tpu"}, "device must be one of auto, cpu, cuda, got 'tpu'"),
    ],
)
def test_invalid_values_say_what_was_expected(
    tmp_path: Path, argv: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_config(["--model-repository", str(tmp_path), *argv], environ=environ)


def test_the_repository_is_required() -> None:
    with pytest.raises(ConfigError, match="pass --model-repository or set CNNSERVE_MODEL_REPOSITORY"):
        parse_config([], environ={})


def test_an_empty_environment_variable_counts_as_unset(tmp_path: Path) -> None:
    environ = {"CNNSERVE_MODEL_REPOSITORY": str(tmp_path), "CNNSERVE_DEFAULT_MODEL": "", "CNNSERVE_PORT": ""}
    config = parse_config([], environ=environ)
    assert config.default_model is None
    assert config.port == 8001
