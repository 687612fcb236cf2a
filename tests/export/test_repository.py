"""export/repository.py: versions count up, --force replaces atomically, an unwritable repository is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnserve.card import CARD_FILE, MODEL_FILE
from cnnserve.errors import RepositoryError
from cnnserve.export.repository import TMP_PREFIX, check_writable, choose_version, existing_versions, write_version


def test_versions_count_up_and_force_replaces_atomically(tmp_path: Path) -> None:
    repository = tmp_path / "models"

    def write(version: int | None, payload: bytes, force: bool = False) -> Path:
        chosen = choose_version(repository, "m", version, force)
        return write_version(repository, "m", chosen, {MODEL_FILE: payload, CARD_FILE: b"{}"}, force)

    assert write(None, b"one").name == "1"
    assert write(5, b"five").name == "5"
    assert write(None, b"six").name == "6"
    with pytest.raises(RepositoryError, match="already exists; pass --force"):
        write(5, b"again")
    assert (repository / "m" / "5" / MODEL_FILE).read_bytes() == b"five"
    assert write(5, b"new five", force=True).name == "5"
    assert (repository / "m" / "5" / MODEL_FILE).read_bytes() == b"new five"
    assert sorted(p.name for p in (repository / "m").iterdir()) == ["1", "5", "6"]
    assert sorted(p.name for p in repository.iterdir()) == ["m"]  # no temporary folders left


def test_existing_versions_are_the_numbered_folders_only(tmp_path: Path) -> None:
    for name in ("3", "10", "1", "notes", f"{TMP_PREFIX}x"):
        (tmp_path / "m" / name).mkdir(parents=True)
    (tmp_path / "m" / "7").write_text("a file, not a version")
    assert existing_versions(tmp_path, "m") == [1, 3, 10]
    assert existing_versions(tmp_path, "absent") == []
    assert choose_version(tmp_path, "m", None, force=False) == 11


def test_a_repository_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "models").write_text("not a folder")
    with pytest.raises(RepositoryError, match="is not a directory; expected a folder to write into"):
        check_writable(tmp_path / "models")
    assert RepositoryError.status == "FAILED_PRECONDITION"
