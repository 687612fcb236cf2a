"""The batch CLI's results file: one row per input (CSV or JSON lines), and reading it back for --resume.

Columns: path, label (top-1), score (its probability), top_k (JSON list of {"label", "probability"}), error
("" when the input was classified). Probabilities are rounded to 6 decimals so that a file does not change with
the last bits of a float32 softmax.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from cnnserve.client.results import Classification
from cnnserve.errors import DataError

log = logging.getLogger(__name__)

Format = Literal["csv", "jsonl"]
COLUMNS = ("path", "label", "score", "top_k", "error")
_HEADER = ",".join(COLUMNS)
_DECIMALS = 6


@dataclass(frozen=True, slots=True)
class Row:
    path: str
    label: str
    score: float | None  # None when the input failed
    top_k: tuple[tuple[str, float], ...]
    error: str

    @classmethod
    def of(cls, result: Classification) -> Row:
        top = tuple((p.label, round(p.probability, _DECIMALS)) for p in result.top)
        score = top[0][1] if top and result.ok else None
        return cls(result.id, result.label if result.ok else "", score, top if result.ok else (), _line(result.error))

    @classmethod
    def failed(cls, path: str, error: str) -> Row:
        return cls(path, "", None, (), _line(error))

    def fields(self) -> dict[str, object]:
        return {
            "path": self.path,
            "label": self.label,
            "score": self.score,
            "top_k": [{"label": label, "probability": p} for label, p in self.top_k],
            "error": self.error,
        }


def _line(text: str) -> str:
    # One row is one line (--resume reads the file line by line), so an error message may not span lines.
    return " ".join(text.split())


def format_of(output: str, explicit: str | None) -> Format:
    """The format asked for, else the one the output's suffix names (.csv, .jsonl/.ndjson); stdout is CSV."""
    if explicit:
        return "jsonl" if explicit == "jsonl" else "csv"
    suffix = Path(output).suffix.lower()
    return "jsonl" if suffix in (".jsonl", ".ndjson", ".json") else "csv"


class RowWriter:
    """Writes rows to a file or stdout; flushes after every batch so an interrupted run keeps them.

    A file is replaced, or with `append` (--resume) added to.
    """

    def __init__(self, output: str, fmt: Format, *, append: bool = False) -> None:
        self.format = fmt
        mode = "a" if append else "w"
        self._stream: IO[str] = (
            sys.stdout if output == "-" else open(output, mode, encoding="utf-8", newline="")  # noqa: SIM115
        )
        self._csv = csv.writer(self._stream, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None and (output == "-" or self._stream.tell() == 0):
            self._csv.writerow(COLUMNS)

    def write(self, rows: list[Row]) -> None:
        for row in rows:
            if self._csv is not None:
                score = "" if row.score is None else f"{row.score:.{_DECIMALS}f}"
                top_k = json.dumps(row.fields()["top_k"])
                self._csv.writerow((row.path, row.label, score, top_k, row.error))
            else:
                self._stream.write(json.dumps(row.fields()) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._stream is not sys.stdout:
            self._stream.close()


def _parse(line: str, fmt: Format) -> tuple[str, str, str] | None:
    """(path, label, error) of one complete row, or None when the line is not one (a header, a torn line)."""
    if fmt == "jsonl":
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            return None
        return data["path"], str(data.get("label") or ""), str(data.get("error") or "")
    cells = next(csv.reader([line]), [])
    if len(cells) != len(COLUMNS) or cells == list(COLUMNS):
        return None
    return cells[0], cells[1], cells[-1]


def prepare_resume(output: str, fmt: Format) -> dict[str, str]:
    """Path -> top-1 label of the inputs `output` already has, after dropping its failed and torn rows (so those
    inputs run again).

    The file is rewritten (atomically) only when something must be dropped; the run then appends to it. Each
    path in the file appears once afterwards, so the file never holds two rows for one input.
    """
    path = Path(output)
    if not path.exists():
        return {}
    done: dict[str, str] = {}
    keep: list[str] = []
    dropped = 0
    with path.open(encoding="utf-8", newline="") as stream:
        for line in stream:
            parsed = _parse(line, fmt) if line.endswith("\n") else None  # no newline: torn by a kill
            if parsed is not None and not parsed[2] and parsed[0] not in done:
                done[parsed[0]] = parsed[1]
                keep.append(line)
            elif not (fmt == "csv" and line.rstrip("\r\n") == _HEADER):
                dropped += 1
    if dropped:
        log.info("resume: dropping %d failed or incomplete rows of %s; those inputs run again", dropped, path)
        _rewrite(path, keep, header=fmt == "csv")
    return done


def _rewrite(path: Path, lines: list[str], *, header: bool) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
            if header:
                stream.write(_HEADER + "\n")
            stream.writelines(lines)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(f"cannot rewrite {path} for --resume: {exc.strerror or exc}") from exc
