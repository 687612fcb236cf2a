"""VersionPolicy: which versions of one model are loaded, read from `<repository>/<model>/policy.json`.

{"latest": 2}          the 2 highest versions that load (a version that fails is skipped, the next one down
                       is tried), Triton's `latest { num_versions: 2 }`
{"specific": [1, 3]}   exactly these versions (those on disk)
{"all": true}          every version found; also what a model without policy.json gets (the behaviour of
                       cnnserve before version policies: every version loads, the highest READY one answers
                       requests that name no version)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cnnserve.server.errors import PolicyError

POLICY_FILE = "policy.json"


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    kind: Literal["latest", "specific", "all"] = "all"
    latest: int = 1  # kind "latest": how many READY versions
    specific: tuple[int, ...] = ()  # kind "specific": the versions

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest {self.latest}"
        if self.kind == "specific":
            return f"specific {list(self.specific)}"
        return "all"

    @classmethod
    def read(cls, model_dir: Path) -> VersionPolicy:
        """The policy in model_dir/policy.json, or `all` when there is none. PolicyError when it is invalid."""
        path = model_dir / POLICY_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise PolicyError(f"cannot read {path}: {exc.strerror or exc}") from exc
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, where: str = POLICY_FILE) -> VersionPolicy:
        expected = 'expected {"latest": N}, {"specific": [versions]} or {"all": true}'
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{where} is not JSON ({exc}); {expected}") from exc
        if not isinstance(data, dict) or len(data) != 1:
            raise PolicyError(f"{where} holds {text.strip()[:80]!r}; {expected}")
        ((kind, value),) = data.items()
        if kind == "latest" and _positive_int(value):
            return cls("latest", latest=value)
        if kind == "specific" and isinstance(value, list) and value and all(_positive_int(v) for v in value):
            return cls("specific", specific=tuple(sorted(set(value))))
        if kind == "all" and value is True:
            return cls("all")
        raise PolicyError(f"{where} holds {text.strip()[:80]!r}; {expected} (N and versions positive integers)")

    def candidates(self, versions: list[int]) -> list[int]:
        """The versions on disk this policy may load, highest first (for `latest`, in the order to try them)."""
        ordered = sorted(versions, reverse=True)
        if self.kind == "specific":
            return [v for v in ordered if v in self.specific]
        return ordered


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
