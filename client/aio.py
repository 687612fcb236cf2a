"""AsyncClient: the asyncio twin of cnnserve.client.client.Client, on a grpc.aio channel.

The same methods and rules (state, deadlines, retries, errors, chunking), awaited; classify() sends the requests
of a long list concurrently and classify_stream() is an async iterator.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np

from cnnserve.client import deadlines, wire
from cnnserve.client.channel import State, Stubs, channel_options, credentials
from cnnserve.client.config import DEFAULT_TARGET, NO_RETRIES, ClientConfig, config_of
from cnnserve.client.connect import wait_connected_aio
from cnnserve.client.errors import NotFound, closed_error, refused, rpc_error, status_error, stream_ended, unreachable
from cnnserve.client.images import ImageItem, ImagesInput, sends, split_rows
from cnnserve.client.plan import END_OF_BATCHES, OnError, finish, plan
from cnnserve.client.results import Classification, Health, ModelVersion, RepositoryModel

T = TypeVar("T")


class AsyncClient:
    """The asyncio twin of Client: the same methods, awaited, on a grpc.aio channel.

    Use it from one event loop. classify() sends the requests of a long list concurrently.
    """

    def __init__(self, target: str | ClientConfig = DEFAULT_TARGET, **options: Any) -> None:
        self.config = config_of(target, options)
        self._state = State.UNOPENED
        self._channel: grpc.aio.Channel | None = None
        self._stubs_: Stubs | None = None

    @property
    def state(self) -> State:
        return self._state

    async def open(self) -> AsyncClient:
        """Connect; with connect_timeout_s set, wait that long for the server, else raise ServerUnreachable."""
        if self._state is State.CLOSED:
            raise closed_error(self.config.target)
        if self._state is State.OPEN:
            return self
        creds, options = credentials(self.config), channel_options(self.config)
        target = self.config.target
        channel = (
            grpc.aio.secure_channel(target, creds, options) if creds else grpc.aio.insecure_channel(target, options)
        )
        if self.config.connect_timeout_s is not None:
            timeout_s = self.config.connect_timeout_s
            outcome = await wait_connected_aio(channel, target, timeout_s, wait=self.config.wait_for_server)
            if outcome != "ready":
                await channel.close(None)
                raise refused(target) if outcome == "refused" else unreachable(target, timeout_s)
        self._channel, self._stubs_, self._state = channel, Stubs.on(channel), State.OPEN
        return self

    async def close(self) -> None:
        """Close the channel; calls in flight fail with CANCELLED. Closing twice is harmless."""
        if self._channel is not None:
            await self._channel.close(None)
        self._channel, self._stubs_, self._state = None, None, State.CLOSED

    async def __aenter__(self) -> AsyncClient:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _stubs(self) -> Stubs:
        if self._stubs_ is None:
            await self.open()
        assert self._stubs_ is not None
        return self._stubs_

    async def _call(
        self, method: str, rpc: Callable[..., Awaitable[T]], request: Any, deadline: float | None, retry: bool = True
    ) -> T:
        policy = self.config.retry if retry else NO_RETRIES
        attempt = 0
        while True:
            try:
                return await rpc(request, timeout=deadlines.remaining(deadline), metadata=self.config.metadata)
            except grpc.RpcError as exc:  # grpc.aio.AioRpcError is one
                error = rpc_error(exc, method=method, target=self.config.target)
                pause = deadlines.retry_pause(policy, error, attempt, deadline)
                if pause is None:
                    raise error from exc
            await asyncio.sleep(pause)
            attempt += 1

    async def classify(
        self,
        images: ImagesInput,
        *,
        top_k: int | None = None,
        model: str | None = None,
        version: int | None = None,
        timeout: float | None = None,
        on_error: OnError = "raise",
    ) -> list[Classification]:
        """As Client.classify; the requests of a long list run concurrently, results still in input order."""
        stubs, deadline = await self._stubs(), deadlines.deadline_of(timeout, self.config)

        async def one(group: list[ImageItem]) -> list[Classification]:
            request = wire.classify_request(group, top_k=top_k or 0, model=model, version=version)
            response = (
                await self._call("Classify", stubs.classifier.Classify, request, deadline) if request.images else None
            )
            return wire.classifications(group, response, model=model, version=version)

        # Reading files is blocking I/O: do it off the event loop.
        groups = await asyncio.to_thread(plan, images, self.config, on_error)
        tasks = [asyncio.ensure_future(one(group)) for group in groups]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            # The first failure is raised as itself (not in an ExceptionGroup); the other requests are cancelled.
            for task in tasks:
                task.cancel()
            raise
        return finish([r for part in parts for r in part], on_error)

    async def classify_stream(
        self,
        batches: Iterable[ImagesInput],
        *,
        top_k: int | None = None,
        model: str | None = None,
        version: int | None = None,
        timeout: float | None = None,
        on_error: OnError = "raise",
    ) -> AsyncIterator[list[Classification]]:
        """As Client.classify_stream, as an async iterator (files are read off the event loop)."""
        stubs, target = await self._stubs(), self.config.target
        plans: asyncio.Queue[Any] = asyncio.Queue()  # per batch, its groups; then END_OF_BATCHES or an exception

        async def requests() -> AsyncIterator[Any]:
            try:
                for batch in batches:
                    groups = await asyncio.to_thread(plan, batch, self.config, on_error)
                    plans.put_nowait(groups)
                    for request in wire.stream_requests(groups, top_k=top_k, model=model, version=version):
                        yield request
            except Exception as exc:  # handed to the reader, raised after the batches before it
                plans.put_nowait(exc)
            else:
                plans.put_nowait(END_OF_BATCHES)

        call = stubs.classifier.ClassifyStream(requests(), timeout=timeout, metadata=self.config.metadata)
        responses = call.__aiter__()
        ended = asyncio.Event()
        call.add_done_callback(lambda _: ended.set())

        async def next_plan() -> Any:
            while True:
                with contextlib.suppress(asyncio.QueueEmpty):
                    return plans.get_nowait()
                if ended.is_set():  # the call ended without asking for more requests
                    code = await call.code()
                    if code is not grpc.StatusCode.OK:
                        raise status_error(code.name, await call.details(), "ClassifyStream", target)
                    raise stream_ended(target)
                getter, waiter = asyncio.ensure_future(plans.get()), asyncio.ensure_future(ended.wait())
                await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if getter.done():
                    return getter.result()
                getter.cancel()

        try:
            while (groups := await next_plan()) is not END_OF_BATCHES:
                if isinstance(groups, BaseException):
                    raise groups
                answers = [await anext(responses, None) for group in groups if sends(group)]
                yield finish(
                    wire.stream_classifications(groups, answers, target, model=model, version=version), on_error
                )
        except grpc.RpcError as exc:
            raise rpc_error(exc, method="ClassifyStream", target=target) from exc
        finally:
            call.cancel()

    async def infer(
        self,
        array: np.ndarray,
        *,
        model: str | None = None,
        version: int | None = None,
        input_name: str = "input",
        output_name: str | None = "logits",
        timeout: float | None = None,
    ) -> np.ndarray:
        """As Client.infer."""
        stubs, deadline = await self._stubs(), deadlines.deadline_of(timeout, self.config)
        if model is None:
            model = await self.default_model(timeout=timeout)
        outputs = []
        for rows in split_rows(
            np.asarray(array), max_bytes=self.config.max_message_bytes, max_rows=self.config.max_images_per_request
        ):
            request = wire.infer_request(
                rows, model=model, version=version, input_name=input_name, output_name=output_name
            )
            response = await self._call("ModelInfer", stubs.inference.ModelInfer, request, deadline)
            outputs.append(wire.infer_output(response, output_name))
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    async def models(self, *, timeout: float | None = None) -> list[ModelVersion]:
        """As Client.models."""
        stubs, deadline = await self._stubs(), deadlines.deadline_of(timeout, self.config)
        response = await self._call("ListModels", stubs.classifier.ListModels, wire.list_models_request(), deadline)
        return wire.model_versions(response)[0]

    async def default_model(self, *, timeout: float | None = None) -> str:
        """As Client.default_model."""
        stubs, deadline = await self._stubs(), deadlines.deadline_of(timeout, self.config)
        response = await self._call("ListModels", stubs.classifier.ListModels, wire.list_models_request(), deadline)
        return wire.default_model(response, self.config.target)

    async def health(self, service: str = "", *, timeout: float | None = None) -> Health:
        """As Client.health."""
        stubs, deadline = await self._stubs(), deadlines.deadline_of(timeout, self.config)
        request = wire.health_request(service)
        try:
            response = await self._call("Health/Check", stubs.health.Check, request, deadline, retry=False)
        except NotFound:
            return Health(service=service, status="SERVICE_UNKNOWN")
        return wire.health(service, response)

    async def ready(
        self, model: str | None = None, *, version: int | None = None, timeout: float | None = None
    ) -> bool:
        """As Client.ready."""
        stubs, deadline = await self._stubs(), deadlines.deadline_of(timeout, self.config)
        if model is None:
            request: Any = wire.server_ready_request()
            return wire.is_ready(await self._call("ServerReady", stubs.inference.ServerReady, request, deadline, False))
        request = wire.model_ready_request(model, version)
        return wire.is_ready(await self._call("ModelReady", stubs.inference.ModelReady, request, deadline, False))

    async def load_model(self, model: str, *, timeout: float | None = None) -> None:
        """As Client.load_model."""
        stubs, deadline = await self._stubs(), deadlines.deadline_of(timeout, self.config)
        request = wire.load_request(model)
        await self._call("RepositoryModelLoad", stubs.inference.RepositoryModelLoad, request, deadline)

    async def unload_model(self, model: str, *, unload_dependents: bool = False, timeout: float | None = None) -> None:
        """As Client.unload_model."""
        stubs, deadline = await self._stubs(), deadlines.deadline_of(timeout, self.config)
        request = wire.unload_request(model, unload_dependents)
        await self._call("RepositoryModelUnload", stubs.inference.RepositoryModelUnload, request, deadline)

    async def repository_index(self, *, ready: bool = False, timeout: float | None = None) -> list[RepositoryModel]:
        """As Client.repository_index."""
        stubs, deadline = await self._stubs(), deadlines.deadline_of(timeout, self.config)
        request = wire.repository_index_request(ready)
        response = await self._call("RepositoryIndex", stubs.inference.RepositoryIndex, request, deadline)
        return wire.repository_models(response)
