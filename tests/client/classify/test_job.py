"""The batch CLI's streaming job (cnnserve.client.classify.job) against a real server: rows in input order
whatever the concurrency, a failed batch as rows with its error, a lost server stopping the job; and the summary
line's words."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cnnserve.client import Client
from cnnserve.client.classify import job
from cnnserve.client.classify.inputs import batched
from cnnserve.client.classify.job import Summary
from cnnserve.client.classify.output import Row
from cnnserve.client.config import NO_RETRIES
from cnnserve.server.app import RunningServer

from ..conftest import FashionModel, FashionTree


@pytest.fixture
def client(running_server: RunningServer) -> Iterator[Client]:
    with Client(running_server.address) as client:
        yield client


def test_rows_come_in_input_order_whatever_the_concurrency(
    client: Client, fashion_model: FashionModel, fashion_tree: FashionTree
) -> None:
    paths = [str(p) for p in fashion_tree.paths[:40]] + ["missing.png"]
    written: list[Row] = []

    def classify(batch: list[str]) -> list:
        return client.classify(batch, model=fashion_model.name, top_k=1, on_error="return")

    summary = job.run(batched(iter(paths), 3), classify, written.extend, concurrency=4)
    assert [row.path for row in written] == paths
    assert (summary.written, summary.failed, summary.stopped, summary.interrupted) == (41, 1, "", False)
    labels = fashion_model.card.labels
    expected = [labels[i] for i in fashion_model.logits(fashion_tree.pixels[:40]).argmax(axis=1)]
    assert [row.label for row in written[:40]] == expected
    assert written[40].error.startswith("INVALID_ARGUMENT: cannot read image file missing.png")


def test_a_batch_the_server_refuses_is_rows_with_the_servers_status(client: Client, fashion_tree: FashionTree) -> None:
    paths = [str(p) for p in fashion_tree.paths[:4]]
    written: list[Row] = []

    def classify(batch: list[str]) -> list:
        return client.classify(batch, model="no-such-model", on_error="return")

    summary = job.run(batched(iter(paths), 2), classify, written.extend, concurrency=2)
    assert [row.path for row in written] == paths and summary.failed == 4 and not summary.stopped
    assert all(row.error.startswith("NOT_FOUND: ") and "no-such-model" in row.error for row in written)


def test_a_server_that_is_gone_stops_the_job_instead_of_failing_every_input(
    fashion_tree: FashionTree, free_port: int
) -> None:
    paths = [str(p) for p in fashion_tree.paths[:20]]
    written: list[Row] = []
    with Client(f"127.0.0.1:{free_port}", connect_timeout_s=None, retry=NO_RETRIES, timeout_s=5) as gone:
        summary = job.run(batched(iter(paths), 2), gone.classify, written.extend, concurrency=2)
    assert summary.stopped and "UNAVAILABLE" in summary.stopped
    assert summary.written == len(written) < len(paths)  # the job stopped; no row claims a failure of its own


def test_the_summary_line_says_image_for_one_and_images_otherwise() -> None:
    assert Summary(written=1, failed=0, wall_s=0.5).line().startswith("1 image, 0 failed, 0.50 s, 2.0 images/s")
    assert Summary(written=0, failed=0, wall_s=0.5).line().startswith("0 images, 0 failed")
    assert Summary(written=8, failed=3, wall_s=2.0).line().startswith("8 images, 3 failed, 2.00 s, 4.0 images/s")
