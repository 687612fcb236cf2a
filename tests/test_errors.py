"""cnnserve/errors.py: the tree its docstring draws is the tree the module defines, each with its status."""

from __future__ import annotations

import inspect
import re

import grpc

from cnnserve import errors


def test_the_docstring_draws_every_error_under_its_parent() -> None:
    defined = {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, errors.CnnserveError) and cls.__module__ == errors.__name__
    }
    drawn: dict[str, str] = {}
    parents: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^(\s*(?:[│ ]*[├└]── )?)(\w+Error)\s+\((\w+), exit (\d)\)", line)
        if match is None:
            continue
        depth, name, status, code = len(match.group(1)), match.group(2), match.group(3), int(match.group(4))
        while parents and parents[-1][0] >= depth:
            parents.pop()
        if parents:
            assert defined[name].__base__ is defined[parents[-1][1]], name
        parents.append((depth, name))
        drawn[name] = status
        assert defined[name].exit_code == code, name
    assert set(drawn) == set(defined)
    assert all(defined[name].status == status for name, status in drawn.items())
    assert all(grpc.StatusCode[status] for status in drawn.values())
