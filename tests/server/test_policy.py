"""VersionPolicy: policy.json in its three forms, the versions each lets load, and PolicyError for anything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnserve.server.errors import PolicyError, VersionError
from cnnserve.server.policy import POLICY_FILE, VersionPolicy


def test_no_policy_file_means_all_versions(tmp_path: Path) -> None:
    policy = VersionPolicy.read(tmp_path)
    assert policy == VersionPolicy("all") and policy.candidates([1, 3, 2]) == [3, 2, 1]


@pytest.mark.parametrize(
    ("text", "policy", "candidates", "described"),
    [
        ('{"latest": 2}', VersionPolicy("latest", latest=2), [3, 2, 1], "latest 2"),
        ('{"specific": [3, 1, 3]}', VersionPolicy("specific", specific=(1, 3)), [3, 1], "specific [1, 3]"),
        ('{"all": true}', VersionPolicy("all"), [3, 2, 1], "all"),
    ],
)
def test_the_three_forms(
    tmp_path: Path, text: str, policy: VersionPolicy, candidates: list[int], described: str
) -> None:
    (tmp_path / POLICY_FILE).write_text(text)
    read = VersionPolicy.read(tmp_path)
    assert read == policy and read.candidates([1, 2, 3]) == candidates and read.describe() == described


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "is not JSON"),
        ('{"latest": 0}', "positive integers"),
        ('{"latest": true}', "positive integers"),
        ('{"specific": []}', "positive integers"),
        ('{"all": true, "latest": 1}', 'expected {"latest": N}'),
        ("[1]", 'expected {"latest": N}'),
    ],
)
def test_anything_else_is_a_policy_error_saying_what_was_expected(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / POLICY_FILE).write_text(text)
    with pytest.raises(PolicyError, match=message) as failure:
        VersionPolicy.read(tmp_path)
    assert isinstance(failure.value, VersionError)  # it becomes each version's UNAVAILABLE reason
    assert str(tmp_path / POLICY_FILE) in str(failure.value)
