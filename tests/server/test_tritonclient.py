"""The unmodified tritonclient[grpc] talks to cnnserve: live, ready, metadata, config, infer (raw numpy, equal to
onnxruntime), class_count, async_infer, stream, statistics. It runs in a separate process (_tritonclient_session.py)
because it registers the same inference.* protobuf names as cnnserve.proto."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def test_tritonclient_grpc_works_unmodified(running_server: Any, tritonclient_session: Callable[..., None]) -> None:
    tritonclient_session(running_server.address)
