"""The default model's rule: --default-model, else the repository's `default` file, else its only model, else
none; a name the repository lacks stops the start."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnserve.server.default_model import DEFAULT_FILE, check, choose, missing_message, read_default_file
from cnnserve.server.errors import StartupError


def test_the_flag_wins_then_the_file_then_the_only_model() -> None:
    assert choose("a", "b", ["a", "b"]) == "a"
    assert choose(None, "b", ["a", "b"]) == "b"
    assert choose(None, None, ["a"]) == "a"
    assert choose(None, None, ["a", "b"]) is None


def test_the_default_file_holds_one_name(tmp_path: Path) -> None:
    assert read_default_file(tmp_path) is None
    (tmp_path / DEFAULT_FILE).write_text("# the default\n\nfashion_lenet\n")
    assert read_default_file(tmp_path) == "fashion_lenet"
    for text in ("a\nb\n", "", "a/1\n"):
        (tmp_path / DEFAULT_FILE).write_text(text)
        with pytest.raises(StartupError, match="must hold one model name"):
            read_default_file(tmp_path)


def test_a_name_the_repository_lacks_stops_the_start(tmp_path: Path) -> None:
    check("a", None, ["a", "b"], tmp_path)
    with pytest.raises(StartupError, match=r"--default-model 'c' is not in .*; it has: a, b"):
        check("c", None, ["a", "b"], tmp_path)
    with pytest.raises(StartupError, match=f"{DEFAULT_FILE} names 'c', which is not in"):
        check(None, "c", ["a", "b"], tmp_path)


def test_the_message_without_a_default_lists_the_ready_models() -> None:
    assert missing_message(["b", "a", "b"]).endswith("name one of the ready models: a, b")
    assert missing_message([]).endswith("ready models: none")
