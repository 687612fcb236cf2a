"""The batch CLI's results file (cnnserve.client.classify.output): rows written as CSV or JSON lines from real
Classifications, and read back by --resume, which drops failed and torn rows so those inputs run again."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cnnserve.client import Client
from cnnserve.client.classify.output import COLUMNS, Row, RowWriter, format_of, prepare_resume
from cnnserve.server.app import RunningServer

from ..conftest import FashionModel, FashionTree


@pytest.fixture
def rows(running_server: RunningServer, fashion_model: FashionModel, fashion_tree: FashionTree) -> list[Row]:
    """Three classified images and a missing file, as the job makes rows of them."""
    paths = [str(p) for p in fashion_tree.paths[:3]] + ["missing.png"]
    with Client(running_server.address) as client:
        results = client.classify(paths, model=fashion_model.name, top_k=2, on_error="return")
    return [Row.of(result) for result in results]


def test_the_format_comes_from_the_flag_else_the_suffix() -> None:
    assert format_of("out.jsonl", None) == format_of("out.ndjson", None) == "jsonl"
    assert format_of("out.csv", None) == format_of("-", None) == format_of("out.jsonl", "csv") == "csv"
    assert format_of("-", "jsonl") == "jsonl"


def test_csv_and_jsonl_rows_hold_the_same_fields(rows: list[Row], tmp_path: Path) -> None:
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"results.{fmt}"
        writer = RowWriter(str(out), fmt)
        writer.write(rows)
        writer.close()
        if fmt == "csv":
            with out.open(newline="") as stream:
                read = list(csv.DictReader(stream))
            assert tuple(read[0]) == COLUMNS
            got = [(r["path"], r["label"], r["error"], json.loads(r["top_k"])) for r in read]
        else:
            read = [json.loads(line) for line in out.read_text().splitlines()]
            got = [(r["path"], r["label"], r["error"], r["top_k"]) for r in read]
        assert got == [(r.path, r.label, r.error, r.fields()["top_k"]) for r in rows], fmt
        assert len(got[0][3]) == 2 and got[3][1] == "" and got[3][2].startswith("INVALID_ARGUMENT: cannot read")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_resume_keeps_the_classified_rows_and_drops_failed_and_torn_ones(
    rows: list[Row], tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"results.{fmt}"
    writer = RowWriter(str(out), fmt)  # type: ignore[arg-type]
    writer.write(rows)
    writer.close()
    with out.open("a") as stream:
        stream.write('{"path": "torn' if fmt == "jsonl" else "torn.png,Bag,0.5")  # killed mid-row: no newline
    done = prepare_resume(str(out), fmt)  # type: ignore[arg-type]
    assert done == {row.path: row.label for row in rows[:3]}
    # The file now holds exactly the kept rows; appending the rerun gives one row per input.
    appended = RowWriter(str(out), fmt, append=True)  # type: ignore[arg-type]
    appended.write([rows[3]])
    appended.close()
    assert len(out.read_text().splitlines()) == (5 if fmt == "csv" else 4)  # (header), 3 kept, the rerun's row
    assert prepare_resume(str(out), fmt) == done  # type: ignore[arg-type]  # the failure runs again next time
    assert len(out.read_text().splitlines()) == (4 if fmt == "csv" else 3)
