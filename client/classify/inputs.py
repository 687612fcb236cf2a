"""The batch CLI's INPUT arguments, expanded lazily into image paths: files, folders, glob patterns, @lists.

Nothing here reads an image or holds the whole list: folders are walked one level at a time (sorted, so a run is
repeatable and --resume sees the same order), @list files are read line by line.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from itertools import islice

from cnnserve.preprocess import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

_GLOB_CHARS = frozenset("*?[")


def walk(folder: str) -> Iterator[str]:
    """Image files (cnnserve.preprocess.IMAGE_SUFFIXES) under `folder`, recursively, in sorted order (folders and
    files by name, depth first). A file named explicitly is always taken, whatever its suffix."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        log.warning("skipping folder %s: %s", folder, exc.strerror or exc)
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from walk(entry.path)
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
            yield entry.path


def _list_file(path: str) -> Iterator[str]:
    """Paths from an @list file, one a line; blank lines and lines starting with # are skipped. `-` is stdin."""
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115 (closed below)
    try:
        for line in stream:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                yield from expand([entry])
    finally:
        if stream is not sys.stdin:
            stream.close()


def expand(inputs: Iterable[str]) -> Iterator[str]:
    """Every image path the INPUT arguments name, in order.

    A folder yields its image files recursively; a pattern with * ? [ its sorted matches (`**` crosses
    folders); `@file` the entries listed in it. A path that does not exist is passed through as it is: the job
    reports it as a row with its error instead of dropping it silently.
    """
    for arg in inputs:
        if arg.startswith("@"):
            yield from _list_file(arg[1:])
        elif os.path.isdir(arg):
            yield from walk(arg)
        elif not os.path.exists(arg) and _GLOB_CHARS & set(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                log.warning("pattern %s matches no file", arg)
            for match in matches:
                yield from walk(match) if os.path.isdir(match) else iter((match,))
        else:
            yield arg


def batched(paths: Iterable[str], size: int) -> Iterator[list[str]]:
    """Consecutive lists of `size` paths (the last may be shorter)."""
    iterator = iter(paths)
    while batch := list(islice(iterator, size)):
        yield batch


def check_list_files(inputs: Iterable[str]) -> list[str]:
    """The @list files among `inputs` that cannot be opened (checked before the job starts)."""
    return [arg for arg in inputs if arg.startswith("@") and arg != "@-" and not os.path.exists(arg[1:])]
