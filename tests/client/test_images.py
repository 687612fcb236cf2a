"""Images read into ImageItems and grouped into requests under the message limit (cnnserve.client.images)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnserve.client.errors import InvalidArgument, ResourceExhausted
from cnnserve.client.images import chunk, prepare


def test_chunks_fit_the_message_limit_and_keep_order() -> None:
    images = [np.full((28, 28), i, np.uint8) for i in range(100)]  # 784 bytes each
    items = prepare(images)
    groups = list(chunk(items, max_bytes=8192, max_count=1000))
    assert [item.id for group in groups for item in group] == [str(i) for i in range(100)]
    assert all(sum(item.nbytes for item in group) <= 8192 for group in groups) and len(groups) > 10
    assert [len(g) for g in chunk(items, max_bytes=1 << 20, max_count=30)] == [30, 30, 30, 10]
    with pytest.raises(ResourceExhausted, match="8192"):
        list(chunk(prepare(np.zeros((100, 100), np.uint8)), max_bytes=8192, max_count=10))
    with pytest.raises(InvalidArgument, match="uint8"):
        prepare(np.zeros((28, 28), np.float32))
    with pytest.raises(InvalidArgument, match="at least one"):
        prepare([])
