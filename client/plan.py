"""The plan of one classify() call: its images read and grouped into requests, and its results checked against
`on_error` (what Client and AsyncClient share for Classify and ClassifyStream).
"""

from __future__ import annotations

from typing import Literal

from cnnserve.client.config import ClientConfig
from cnnserve.client.errors import InvalidArgument
from cnnserve.client.images import ImageItem, ImagesInput, chunk, prepare
from cnnserve.client.results import Classification

OnError = Literal["raise", "return"]


def plan(images: ImagesInput, config: ClientConfig, on_error: OnError) -> list[list[ImageItem]]:
    """The images of one classify() call, read and grouped into requests that fit the message limit."""
    items = prepare(images, read_errors=on_error == "return")
    return list(chunk(items, max_bytes=config.max_message_bytes, max_count=config.max_images_per_request))


def finish(results: list[Classification], on_error: OnError) -> list[Classification]:
    """The results of classify(), or InvalidArgument naming the first failed image when on_error is "raise"."""
    failed = [r for r in results if not r.ok]
    if failed and on_error == "raise":
        first = failed[0]
        raise InvalidArgument(
            f"{len(failed)} of {len(results)} images could not be classified; first: {first.id}: {first.error} "
            f"(pass on_error='return' to get the other results)",
            method="Classify",
            details=first.error,
        )
    return results


#: Put on a stream's plan queue after the last batch.
END_OF_BATCHES = None
