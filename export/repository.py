"""The model-repository writer: `<repository>/<name>/<version>/` appears whole or not at all.

Files are written into a hidden temporary directory inside the repository (same file system), then renamed
into place, so a reader (the server's scan) never sees a half-written version and a failure leaves nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from cnnserve.errors import RepositoryError

logger = logging.getLogger(__name__)

#: Prefix of the temporary directories; readers of the repository skip names that start with ".".
TMP_PREFIX = ".cnnserve-export-"


def existing_versions(repository: Path, name: str) -> list[int]:
    """The numbered version directories of one model, ascending."""
    model_dir = repository / name
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def choose_version(repository: Path, name: str, version: int | None, force: bool) -> int:
    """`version`, or one more than the highest existing; refuses an existing directory unless `force`."""
    if version is None:
        return max(existing_versions(repository, name), default=0) + 1
    target = repository / name / str(version)
    if target.exists() and not force:
        raise RepositoryError(f"{target} already exists; pass --force to replace it, or choose another --version")
    return version


def check_writable(repository: Path) -> None:
    """Fail before the (slow) export when the repository cannot be created or written."""
    if repository.exists() and not repository.is_dir():
        raise RepositoryError(f"model repository {repository} is not a directory; expected a folder to write into")
    try:
        repository.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=repository)
    except OSError as exc:
        raise RepositoryError(
            f"cannot write to model repository {repository}: {exc.strerror or exc}; expected a writable folder"
        ) from exc
    os.rmdir(probe)


def write_version(repository: Path, name: str, version: int, files: Mapping[str, bytes], force: bool) -> Path:
    """Write `files` (file name -> bytes) as `<repository>/<name>/<version>/`, atomically; returns that path.

    With `force`, an existing version directory is replaced: it is moved aside, the new one renamed in, and
    the old one deleted, so the path always holds one complete version.
    """
    check_writable(repository)
    model_dir = repository / name
    target = model_dir / str(version)
    created_model_dir = not model_dir.exists()
    staging = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=repository))
    try:
        for file_name, data in files.items():
            path = staging / file_name
            path.write_bytes(data)
            path.chmod(0o644)
        staging.chmod(0o755)  # mkdtemp makes 0700; a server running as another user must read it
        model_dir.mkdir(exist_ok=True)
        if target.exists():
            if not force:
                raise RepositoryError(f"{target} already exists; pass --force to replace it")
            old = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=repository))
            os.replace(target, old / "old")
            os.replace(staging, target)
            shutil.rmtree(old)
            logger.info("replaced %s", target)
        else:
            os.replace(staging, target)
    except OSError as exc:
        raise RepositoryError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if created_model_dir and model_dir.is_dir() and not any(model_dir.iterdir()):
            model_dir.rmdir()
    return target
