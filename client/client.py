"""Client: the blocking client. Classify images and run raw tensors on a cnnserve server (or infer on any v2 server).

It is a context manager with explicit state: UNOPENED -> OPEN -> CLOSED. A call on an unopened client opens it;
a call on a closed one raises ClientClosedError. Every RPC goes through one `_call`, which applies the method's
deadline, retries UNAVAILABLE with jittered backoff (cnnserve.client.deadlines decides) and maps gRPC errors to
cnnserve.client.errors. AsyncClient (cnnserve.client.aio) is its asyncio twin.

    with Client("127.0.0.1:8001") as client:
        [result] = client.classify("shoe.png", top_k=3)
        print(result.label, result.probability)

`classify` always returns a list, one Classification per image in input order, even for a single image: the
return type never depends on the argument's shape (a 4-D array is N images, a 3-D one is one image).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import grpc
import numpy as np

from cnnserve.client import deadlines, wire
from cnnserve.client.channel import State, Stubs, channel_options, credentials
from cnnserve.client.config import DEFAULT_TARGET, NO_RETRIES, ClientConfig, config_of
from cnnserve.client.connect import wait_connected
from cnnserve.client.errors import NotFound, closed_error, refused, rpc_error, stream_ended, unreachable
from cnnserve.client.images import ImagesInput, sends, split_rows
from cnnserve.client.plan import END_OF_BATCHES, OnError, finish, plan
from cnnserve.client.results import Classification, Health, ModelVersion, RepositoryModel

T = TypeVar("T")


class Client:
    """A blocking client. Thread-safe once open: every thread shares its one gRPC channel.

    `Client(target, **options)` takes the fields of ClientConfig as options (timeout_s, retry, tls, token, ...),
    or `Client(config)` a ClientConfig.
    """

    def __init__(self, target: str | ClientConfig = DEFAULT_TARGET, **options: Any) -> None:
        self.config = config_of(target, options)
        self._state = State.UNOPENED
        self._channel: grpc.Channel | None = None
        self._stubs_: Stubs | None = None

    @property
    def state(self) -> State:
        return self._state

    def open(self) -> Client:
        """Connect; with connect_timeout_s set, wait that long for the server, else raise ServerUnreachable."""
        if self._state is State.CLOSED:
            raise closed_error(self.config.target)
        if self._state is State.OPEN:
            return self
        creds, options = credentials(self.config), channel_options(self.config)
        target = self.config.target
        channel = grpc.secure_channel(target, creds, options) if creds else grpc.insecure_channel(target, options)
        if self.config.connect_timeout_s is not None:
            outcome = wait_connected(channel, target, self.config.connect_timeout_s, wait=self.config.wait_for_server)
            if outcome != "ready":
                channel.close()
                raise refused(target) if outcome == "refused" else unreachable(target, self.config.connect_timeout_s)
        self._channel, self._stubs_, self._state = channel, Stubs.on(channel), State.OPEN
        return self

    def close(self) -> None:
        """Close the channel; calls in flight fail with CANCELLED. Closing twice is harmless."""
        if self._channel is not None:
            self._channel.close()
        self._channel, self._stubs_, self._state = None, None, State.CLOSED

    def __enter__(self) -> Client:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def _stubs(self) -> Stubs:
        if self._stubs_ is None:
            self.open()
        assert self._stubs_ is not None
        return self._stubs_

    def _call(self, method: str, rpc: Callable[..., T], request: Any, deadline: float | None, retry: bool = True) -> T:
        policy = self.config.retry if retry else NO_RETRIES
        attempt = 0
        while True:
            try:
                return rpc(request, timeout=deadlines.remaining(deadline), metadata=self.config.metadata)
            except grpc.RpcError as exc:
                error = rpc_error(exc, method=method, target=self.config.target)
                pause = deadlines.retry_pause(policy, error, attempt, deadline)
                if pause is None:
                    raise error from exc
            time.sleep(pause)
            attempt += 1

    def classify(
        self,
        images: ImagesInput,
        *,
        top_k: int | None = None,
        model: str | None = None,
        version: int | None = None,
        timeout: float | None = None,
        on_error: OnError = "raise",
    ) -> list[Classification]:
        """Top-k labels of each image, in input order (see cnnserve.client.images for what an image may be).

        top_k None: the server's default (5, or every class when fewer). A list longer than one request may
        carry goes as several calls. on_error="raise" raises InvalidArgument when any image fails; "return"
        answers a failed image with a Classification whose `error` says why.
        """
        stubs, deadline = self._stubs, deadlines.deadline_of(timeout, self.config)
        results: list[Classification] = []
        for group in plan(images, self.config, on_error):
            request = wire.classify_request(group, top_k=top_k or 0, model=model, version=version)
            response = self._call("Classify", stubs.classifier.Classify, request, deadline) if request.images else None
            results += wire.classifications(group, response, model=model, version=version)
        return finish(results, on_error)

    def classify_stream(
        self,
        batches: Iterable[ImagesInput],
        *,
        top_k: int | None = None,
        model: str | None = None,
        version: int | None = None,
        timeout: float | None = None,
        on_error: OnError = "raise",
    ) -> Iterator[list[Classification]]:
        """Classify a long job over one ClassifyStream call: one list of results per batch, in order.

        Batches are drawn lazily (by gRPC's sending thread) as the stream has room, so a job of any length runs
        in bounded memory. `timeout` bounds the whole stream (default: none). A stream is never retried: results
        already handed out cannot be taken back, so a failure is raised where it happens.
        """
        stubs, target = self._stubs, self.config.target
        plans: queue.Queue[Any] = queue.Queue()  # per batch, its groups; then END_OF_BATCHES or an exception

        def requests() -> Iterator[Any]:
            try:
                for batch in batches:
                    groups = plan(batch, self.config, on_error)
                    plans.put(groups)
                    yield from wire.stream_requests(groups, top_k=top_k, model=model, version=version)
            except Exception as exc:  # handed to the reader, raised after the batches before it
                plans.put(exc)
            else:
                plans.put(END_OF_BATCHES)

        call = stubs.classifier.ClassifyStream(requests(), timeout=timeout, metadata=self.config.metadata)

        def next_plan() -> Any:
            while True:
                try:
                    return plans.get(timeout=0.05)
                except queue.Empty:
                    if call.done() and plans.empty():  # the call ended without asking for more requests
                        next(call, None)  # raises its error, if it has one
                        raise stream_ended(target) from None

        try:
            while (groups := next_plan()) is not END_OF_BATCHES:
                if isinstance(groups, BaseException):
                    raise groups
                responses = [next(call, None) for group in groups if sends(group)]
                yield finish(
                    wire.stream_classifications(groups, responses, target, model=model, version=version), on_error
                )
        except grpc.RpcError as exc:
            raise rpc_error(exc, method="ClassifyStream", target=target) from exc
        finally:
            call.cancel()

    def infer(
        self,
        array: np.ndarray,
        *,
        model: str | None = None,
        version: int | None = None,
        input_name: str = "input",
        output_name: str | None = "logits",
        timeout: float | None = None,
    ) -> np.ndarray:
        """One output of ModelInfer for a batched tensor (batch axis first, e.g. uint8 (N, C, H, W)).

        model None: the server's default model. A tensor larger than a message goes as several calls of whole
        rows; the outputs are concatenated in order.
        """
        stubs, deadline = self._stubs, deadlines.deadline_of(timeout, self.config)
        if model is None:
            model = self.default_model(timeout=timeout)
        outputs = []
        for rows in split_rows(
            np.asarray(array), max_bytes=self.config.max_message_bytes, max_rows=self.config.max_images_per_request
        ):
            request = wire.infer_request(
                rows, model=model, version=version, input_name=input_name, output_name=output_name
            )
            outputs.append(
                wire.infer_output(self._call("ModelInfer", stubs.inference.ModelInfer, request, deadline), output_name)
            )
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def models(self, *, timeout: float | None = None) -> list[ModelVersion]:
        """Every model version the server found, ready or not, sorted by name and version."""
        deadline = deadlines.deadline_of(timeout, self.config)
        response = self._call("ListModels", self._stubs.classifier.ListModels, wire.list_models_request(), deadline)
        return wire.model_versions(response)[0]

    def default_model(self, *, timeout: float | None = None) -> str:
        """The model that calls naming none go to; InvalidArgument when the server has several and no default."""
        deadline = deadlines.deadline_of(timeout, self.config)
        response = self._call("ListModels", self._stubs.classifier.ListModels, wire.list_models_request(), deadline)
        return wire.default_model(response, self.config.target)

    def health(self, service: str = "", *, timeout: float | None = None) -> Health:
        """grpc.health.v1 status of the whole server ("") or of one model (its name). Never retried."""
        request, deadline = wire.health_request(service), deadlines.deadline_of(timeout, self.config)
        try:
            response = self._call("Health/Check", self._stubs.health.Check, request, deadline, retry=False)
        except NotFound:
            return Health(service=service, status="SERVICE_UNKNOWN")
        return wire.health(service, response)

    def ready(self, model: str | None = None, *, version: int | None = None, timeout: float | None = None) -> bool:
        """Whether the server (model None) or a model version can serve now; NotFound for an unknown model."""
        stubs, deadline = self._stubs, deadlines.deadline_of(timeout, self.config)
        if model is None:
            ready = self._call("ServerReady", stubs.inference.ServerReady, wire.server_ready_request(), deadline, False)
            return wire.is_ready(ready)
        request = wire.model_ready_request(model, version)
        return wire.is_ready(self._call("ModelReady", stubs.inference.ModelReady, request, deadline, retry=False))

    # --- model control (the server's --model-control-mode explicit) ---------------------------------------------

    def load_model(self, model: str, *, timeout: float | None = None) -> None:
        """Load (or reload) `model` on the server; returns once its versions are READY. NotFound for a model the
        repository lacks, InvalidArgument (with each version's reason) when none loads, FailedPrecondition when
        the server does not run with --model-control-mode explicit."""
        request, deadline = wire.load_request(model), deadlines.deadline_of(timeout, self.config)
        self._call("RepositoryModelLoad", self._stubs.inference.RepositoryModelLoad, request, deadline)

    def unload_model(self, model: str, *, unload_dependents: bool = False, timeout: float | None = None) -> None:
        """Unload `model`; returns once its queued and running requests finished."""
        request, deadline = wire.unload_request(model, unload_dependents), deadlines.deadline_of(timeout, self.config)
        self._call("RepositoryModelUnload", self._stubs.inference.RepositoryModelUnload, request, deadline)

    def repository_index(self, *, ready: bool = False, timeout: float | None = None) -> list[RepositoryModel]:
        """Every model version in the server's repository with its state and reason (only READY ones if `ready`)."""
        request, deadline = wire.repository_index_request(ready), deadlines.deadline_of(timeout, self.config)
        response = self._call("RepositoryIndex", self._stubs.inference.RepositoryIndex, request, deadline)
        return wire.repository_models(response)
