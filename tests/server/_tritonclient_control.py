"""Run as a script, in its own process: the unmodified tritonclient[grpc] loading, unloading and reloading models
on a cnnserve server in --model-control-mode explicit.

    python _tritonclient_control.py ADDRESS

The repository holds `linear` (valid, not loaded at start) and `broken` (a wrong sha256). Every check asserts; the
process exits non-zero with the failed check's message. It ends with `linear` loaded.
"""

from __future__ import annotations

import sys

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def infer(client: triton.InferenceServerClient) -> np.ndarray:
    pixels = np.zeros((2, 1, 28, 28), dtype=np.uint8)
    tensor = triton.InferInput("input", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels)
    logits: np.ndarray = client.infer("linear", [tensor]).as_numpy("logits")
    return logits


def failure_of(call: object, *args: object, **kwargs: object) -> InferenceServerException:
    try:
        call(*args, **kwargs)  # type: ignore[operator]
    except InferenceServerException as error:
        return error
    raise AssertionError(f"{call} did not raise")


def main(address: str) -> None:
    client = triton.InferenceServerClient(url=address)
    extensions = client.get_server_metadata(as_json=True)["extensions"]
    assert "model_repository" in extensions, extensions
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert index["linear"]["state"] == "UNAVAILABLE" and "not loaded" in index["linear"]["reason"], index
    assert not client.is_model_ready("linear")

    client.load_model("linear")
    assert client.is_model_ready("linear"), "linear not ready after load_model"
    assert infer(client).shape == (2, 10)
    client.unload_model("linear", unload_dependents=True)
    assert not client.is_model_ready("linear"), "linear still ready after unload_model"
    error = failure_of(infer, client)
    assert "UNAVAILABLE" in str(error.status()), error
    client.load_model("linear")  # reload
    assert infer(client).shape == (2, 10)

    error = failure_of(client.load_model, "no_such_model")
    assert "NOT_FOUND" in str(error.status()) and "no such model folder" in error.message(), error
    error = failure_of(client.load_model, "broken")
    assert "INVALID_ARGUMENT" in str(error.status()) and "sha256" in error.message(), error
    error = failure_of(client.load_model, "linear", config='{"max_batch_size": 4}')
    assert "INVALID_ARGUMENT" in str(error.status()) and "'config' is not supported" in error.message(), error
    assert infer(client).shape == (2, 10), "the server stopped serving after a failed load"
    states = {m["name"]: m["state"] for m in client.get_model_repository_index(as_json=True)["models"]}
    assert states == {"linear": "READY", "broken": "UNAVAILABLE"}, states


if __name__ == "__main__":
    main(sys.argv[1])
