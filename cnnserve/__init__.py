"""cnnserve: train a CNN image classifier in PyTorch, export it to ONNX, serve it over gRPC with dynamic batching.

This package holds what every stage shares: the model card (`card`), image preprocessing (`preprocess`), the
error tree (`errors`) and the `cnnserve` command (`cli`). The stages are sub-packages mapped from the top-level
folders: `cnnserve.training`, `cnnserve.export`, `cnnserve.server`, `cnnserve.client`, `cnnserve.proto`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cnnserve")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
