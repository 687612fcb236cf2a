"""The client library (sync and asyncio): this package's top-level modules. Two programs are built on it, each a
sub-package that imports the library and never the other: `cnnserve classify` (cnnserve.client.classify) and
`cnnserve bench` (cnnserve.client.bench). The library imports neither.

    from cnnserve.client import Client
    with Client("127.0.0.1:8001") as client:
        for result in client.classify(["shoe.png", "bag.png"], top_k=3):
            print(result.id, result.label, result.probability)

Client (client.py) and AsyncClient (aio.py) also have infer() for raw tensors (Open Inference Protocol),
classify_stream() for long jobs, models(), health(), ready(), and model control: load_model(), unload_model(),
repository_index(). Errors are in cnnserve.client.errors (one tree
under ClientError). Nothing here imports torch or onnxruntime; `cnnserve classify --local` imports onnxruntime
only when asked.
"""

from cnnserve.client.aio import AsyncClient
from cnnserve.client.channel import State
from cnnserve.client.client import Client
from cnnserve.client.config import ClientConfig, RetryPolicy, TLSConfig
from cnnserve.client.errors import ClientError
from cnnserve.client.results import Classification, Health, ModelVersion, Prediction, RepositoryModel

__all__ = [
    "AsyncClient",
    "Classification",
    "Client",
    "ClientConfig",
    "ClientError",
    "Health",
    "ModelVersion",
    "Prediction",
    "RepositoryModel",
    "RetryPolicy",
    "State",
    "TLSConfig",
]
