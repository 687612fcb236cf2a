"""cnnserve.server.errors: one tree under ServerError, drawn in full in its docstring, each error's status a gRPC
status code; and the bounds on what a message echoes of a request."""

from __future__ import annotations

import inspect
import re

import grpc

from cnnserve.errors import CnnserveError
from cnnserve.server import errors
from cnnserve.server.errors import ECHO_CHARS, ServerError, shown, shown_dims


def error_classes() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == errors.__name__
    }


def test_every_server_error_is_drawn_in_the_tree_with_its_status_and_parent() -> None:
    assert errors.__doc__ is not None
    drawn: dict[str, tuple[str, str]] = {}  # name -> (status, parent)
    by_depth = {0: "CnnserveError"}  # the tree's names indent 4 columns per level
    for line in errors.__doc__.splitlines():
        match = re.search(r"(\w+Error)\s+([A-Z_]+)\b", line)
        if match is None:
            continue
        depth = (match.start(1) - 4) // 4
        drawn[match.group(1)] = (match.group(2), by_depth[depth - 1])
        by_depth[depth] = match.group(1)
    classes = error_classes()
    assert set(drawn) == set(classes), "the docstring draws exactly the errors the module defines"
    for name, (status, parent) in drawn.items():
        cls = classes[name]
        assert issubclass(cls, ServerError) and issubclass(cls, CnnserveError)
        assert cls.status == status, name  # type: ignore[attr-defined]
        assert cls.__mro__[1].__name__ == parent, name
        assert grpc.StatusCode[status] is not None  # a real status name: the one mapping indexes by it


def test_echoed_strings_and_shapes_are_cut() -> None:
    assert shown("abc") == "'abc'"
    long = "x" * (ECHO_CHARS + 50)
    assert shown(long) == repr("x" * ECHO_CHARS) + f"... ({len(long)} characters)"
    assert shown_dims([1, 2, 3]) == "[1, 2, 3]"
    assert shown_dims(list(range(20))) == "[0, 1, 2, 3, 4, 5, 6, 7, ... (20 dimensions)]"
