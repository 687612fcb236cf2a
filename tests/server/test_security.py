"""TokenStore and read_tokens: the token file's rules, the refusals each kind of metadata gets, and a reload that
keeps the tokens in force when the new file cannot work (the servers' behaviour: test_auth.py, test_tls.py)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from cnnserve.server.errors import StartupError
from cnnserve.server.security import TokenStore, read_tokens


def test_the_token_file_skips_blanks_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_bytes(b"# one per line\n\n  first-token \nsecond\n")
    assert read_tokens(path) == (b"first-token", b"second")
    path.write_bytes(b"has a space\n")
    with pytest.raises(StartupError, match="line 1: a token must be printable ASCII without spaces"):
        read_tokens(path)
    path.write_bytes(b"# nothing\n")
    with pytest.raises(StartupError, match="holds no token"):
        read_tokens(path)
    with pytest.raises(StartupError, match="cannot read --auth-token-file"):
        read_tokens(tmp_path / "missing")


def test_each_kind_of_metadata_gets_its_refusal(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("right\n")
    store = TokenStore(path)
    assert store.refusal([("authorization", "Bearer right")]) is None
    assert store.refusal([("authorization", b"bearer right")]) is None
    missing, malformed, wrong = (
        store.refusal(metadata) for metadata in ([], [("authorization", "Basic x")], [("authorization", "Bearer no")])
    )
    assert missing is not None and missing[0] == grpc.StatusCode.UNAUTHENTICATED and "Bearer <token>" in missing[1]
    assert malformed is not None and malformed[0] == grpc.StatusCode.UNAUTHENTICATED
    assert wrong is not None and wrong[0] == grpc.StatusCode.PERMISSION_DENIED


def test_a_reload_applies_new_tokens_and_keeps_the_old_when_the_file_breaks(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("old\n")
    store = TokenStore(path)
    path.write_text("new\n")
    assert store.reload() and store.refusal([("authorization", "Bearer new")]) is None
    path.write_text("")
    assert not store.reload()
    assert store.refusal([("authorization", "Bearer new")]) is None
