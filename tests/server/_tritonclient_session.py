"""Run as a script, in its own process: the unmodified tritonclient[grpc] against a cnnserve server.

    python _tritonclient_session.py ADDRESS MODEL PIXELS.npy EXPECTED_LOGITS.npy [ROOT_CA.pem]

With ROOT_CA.pem the client connects with ssl=True and trusts that CA.

tritonclient registers the same inference.* protobuf names as cnnserve.proto, so it cannot share a process with
cnnserve. Every check asserts; the process exits non-zero with the failed check's message.
"""

from __future__ import annotations

import queue
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def inputs_for(pixels: np.ndarray) -> list[triton.InferInput]:
    tensor = triton.InferInput("input", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels)
    return [tensor]


def main(address: str, model: str, pixels_path: str, expected_path: str, root_ca: str | None = None) -> None:
    pixels, expected = np.load(pixels_path), np.load(expected_path)
    tls = {"ssl": True, "root_certificates": root_ca} if root_ca else {}
    client = triton.InferenceServerClient(url=address, **tls)  # type: ignore[arg-type]

    assert client.is_server_live(), "is_server_live() is False"
    assert client.is_server_ready(), "is_server_ready() is False"
    assert client.is_model_ready(model), f"is_model_ready({model!r}) is False"
    try:
        client.is_model_ready("no_such_model")
        raise AssertionError("is_model_ready('no_such_model') did not raise")
    except InferenceServerException as error:
        assert "StatusCode.NOT_FOUND" in str(error.status()), f"unknown model gave {error.status()}"

    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "cnnserve" and "classification" in server["extensions"], server
    metadata = client.get_model_metadata(model, as_json=True)
    assert metadata["platform"] == "onnxruntime_onnx", metadata
    assert metadata["inputs"][0]["shape"] == ["-1", *map(str, pixels.shape[1:])], metadata  # int64 -> JSON strings
    config = client.get_model_config(model, as_json=True)["config"]
    assert config["max_batch_size"] > 0 and config["input"][0]["format"] == "FORMAT_NCHW", config
    assert config["output"][0]["name"] == "logits", config

    # infer: raw numpy in, raw numpy out, equal to onnxruntime in the test process
    result = client.infer(model, inputs_for(pixels), request_id="triton-1")
    assert result.get_response().id == "triton-1", result.get_response()
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)

    # the classification extension through InferRequestedOutput(class_count=...)
    result = client.infer(model, inputs_for(pixels), outputs=[triton.InferRequestedOutput("logits", class_count=3)])
    top = result.as_numpy("logits")
    assert top.shape == (len(pixels), 3), top.shape
    for row, answer in zip(expected, top, strict=True):
        indices = [int(element.decode().split(":")[1]) for element in answer]
        assert indices == np.argsort(-row, kind="stable")[:3].tolist(), (indices, row)

    # async_infer: a callback with (result, error)
    done: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.async_infer(model, inputs_for(pixels), callback=lambda result, error: done.put((result, error)))
    result, error = done.get(timeout=30)
    assert error is None, error
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)

    # stream: three requests in, three answers out, matched by id
    streamed: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: streamed.put((result, error)))
    for i in range(3):
        client.async_stream_infer(model, inputs_for(pixels[i : i + 1]), request_id=f"s{i}")
    answers = {}
    for _ in range(3):
        result, error = streamed.get(timeout=30)
        assert error is None, error
        answers[result.get_response().id] = result.as_numpy("logits")
    client.stop_stream()
    for i in range(3):
        np.testing.assert_allclose(answers[f"s{i}"], expected[i : i + 1], rtol=1e-5, atol=1e-5)

    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    assert stats["name"] == model and int(stats["inference_count"]) >= 3 * len(pixels) + 3, stats
    assert int(stats["inference_stats"]["success"]["count"]) >= 6, stats
    client.close()


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    except AssertionError as failure:
        print(f"tritonclient check failed: {failure}", file=sys.stderr)
        raise SystemExit(1) from None
