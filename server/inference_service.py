"""The Open Inference Protocol (KServe v2) service `inference.GRPCInferenceService`, with Triton's extensions
classification, model_configuration, statistics and model_repository (index always; load and unload with
--model-control-mode explicit).

Protobuf ends here: each request is converted once into numpy and back (cnnserve.server.tensors); the repository
and its batchers below know no protocol. Errors are mapped once by
@rpc_servicer (cnnserve.server.statuses).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc
from cnnserve.proto import model_config_pb2 as mc
from cnnserve.server import control
from cnnserve.server.deadlines import deadline_of
from cnnserve.server.errors import (
    InvalidInputError,
    LimitExceededError,
    ModelControlError,
    ModelNotReadyError,
    shown_dims,
)
from cnnserve.server.pipeline import ordered_pipeline
from cnnserve.server.stats import Duration, Recorded
from cnnserve.server.statuses import failure_of, rpc_servicer
from cnnserve.server.tensors import checked_datatype, decode_inputs, infer_response, requested_outputs, timeout_us

if TYPE_CHECKING:
    from cnnserve.server.lifecycle import ModelController
    from cnnserve.server.repository import ServedModel
    from cnnserve.server.state import ServerState


#: Triton's platform string for an ONNX model run by onnxruntime (what Triton's clients and tools expect).
PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
#: The extensions implemented here, and only those. `model_repository` includes load and unload, so it is
#: advertised only with --model-control-mode explicit (RepositoryIndex alone is served in the other modes).
EXTENSIONS = ("classification", "model_configuration", "statistics", "binary_tensor_data")
REPOSITORY_EXTENSIONS = ("model_repository", "model_repository(unload_dependents)")
#: Requests of one ModelStreamInfer stream that may be in flight at once (they batch together on the server).
STREAM_WINDOW = 64


@rpc_servicer
class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """Serves GRPCInferenceService from a ServerState (repository, config, phase)."""

    def __init__(self, state: ServerState) -> None:
        self._state = state

    # --- health and metadata -------------------------------------------------------------------------------

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._state.ready)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        try:
            served = self._state.repository.get(request.name, request.version)
        except ModelNotReadyError:  # known but not loaded: not ready; unknown (NOT_FOUND) propagates, as Triton
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=served.healthy and not self._state.draining)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        explicit = self._state.config.model_control_mode == "explicit"
        extensions = EXTENSIONS + REPOSITORY_EXTENSIONS if explicit else EXTENSIONS
        return pb.ServerMetadataResponse(
            name=self._state.server_name, version=self._state.server_version, extensions=extensions
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        served = self._state.repository.get(request.name, request.version)
        versions = [str(m.version) for m in self._state.repository.served() if m.name == served.name]
        response = pb.ModelMetadataResponse(name=served.name, versions=versions, platform=PLATFORM)
        for spec, field in ((served.input_spec, response.inputs), (served.output_spec, response.outputs)):
            field.add(name=spec.name, datatype=checked_datatype(spec.dtype), shape=spec.shape)
        return response

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        served = self._state.repository.get(request.name, request.version)
        config = self._state.config
        card = served.card
        on_gpu = served.provider.startswith("CUDA")
        model_config = mc.ModelConfig(
            name=served.name,
            platform=PLATFORM,
            backend=BACKEND,
            max_batch_size=served.max_batch_size,
            input=[
                mc.ModelInput(
                    name=card.input.name,
                    data_type=f"TYPE_{checked_datatype(card.input.dtype)}",  # TYPE_UINT8 / TYPE_FP32
                    format=mc.ModelInput.FORMAT_NCHW,
                    dims=card.input.shape,
                )
            ],
            output=[mc.ModelOutput(name=card.output.name, data_type=mc.TYPE_FP32, dims=[card.num_classes])],
            instance_group=[
                mc.ModelInstanceGroup(
                    name=f"{served.name}_{served.version}",
                    count=served.batcher.instances,
                    kind=mc.ModelInstanceGroup.KIND_GPU if on_gpu else mc.ModelInstanceGroup.KIND_CPU,
                )
            ],
            dynamic_batching=mc.ModelDynamicBatching(
                max_queue_delay_microseconds=config.max_queue_delay_us,
                default_queue_policy=mc.ModelQueuePolicy(
                    timeout_action=mc.ModelQueuePolicy.REJECT,
                    allow_timeout_override=True,
                    max_queue_size=config.max_queue_size,
                ),
            ),
            model_transaction_policy=mc.ModelTransactionPolicy(decoupled=False),
        )
        return pb.ModelConfigResponse(config=model_config)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        repository = self._state.repository
        if request.version:
            models = [repository.get(request.name, request.version)]
        elif request.name:
            repository.get(request.name)  # NOT_FOUND for an unknown model, UNAVAILABLE when none is ready
            models = [m for m in repository.served() if m.name == request.name]
        else:
            models = repository.served()
        return pb.ModelStatisticsResponse(model_stats=[_statistics(m) for m in models])

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        if self._state.controller is not None:
            await self._state.controller.refresh_index()
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=s.name, version=str(s.version), state=s.state, reason=s.reason
                )
                for s in self._state.repository.statuses()
                if s.state == "READY" or not request.ready
            ]
        )

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        for key in request.parameters:
            if key == "config" or key.startswith("file:"):
                raise InvalidInputError(
                    f"load parameter {key!r} is not supported: cnnserve loads the model's files from its repository "
                    "and its card is its configuration; send no parameters"
                )
            raise InvalidInputError(f"unknown load parameter {key!r}; RepositoryModelLoad takes no parameters")
        await self._controller().load(request.model_name)
        await control.forward(self._state, context, "RepositoryModelLoad", request)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        for key, parameter in request.parameters.items():
            if key != "unload_dependents":
                raise InvalidInputError(f"unknown unload parameter {key!r}; expected only unload_dependents (bool)")
            if parameter.WhichOneof("parameter_choice") != "bool_param":
                raise InvalidInputError(
                    f"unload parameter unload_dependents is a {parameter.WhichOneof('parameter_choice')}; expected bool"
                )
        # unload_dependents is accepted: cnnserve models have no dependents (no ensembles)
        await self._controller().unload(request.model_name)
        await control.forward(self._state, context, "RepositoryModelUnload", request)
        return pb.RepositoryModelUnloadResponse()

    def _controller(self) -> ModelController:
        controller = self._state.controller
        if controller is None:
            raise ModelControlError("this server has no model control")
        return controller

    # --- inference ---------------------------------------------------------------------------------------------

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        return await self._infer(request, context)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async def answer(request: pb.ModelInferRequest) -> pb.ModelStreamInferResponse:
            try:
                return pb.ModelStreamInferResponse(infer_response=await self._infer(request, context))
            except Exception as error:  # one request's failure is its response; the stream goes on
                code, message = failure_of(error, "ModelStreamInfer")
                return pb.ModelStreamInferResponse(
                    error_message=f"{code.name}: {message}",
                    infer_response=pb.ModelInferResponse(
                        model_name=request.model_name, model_version=request.model_version, id=request.id
                    ),
                )

        async for response in ordered_pipeline(request_iterator, answer, STREAM_WINDOW, self._state.closing):
            yield response

    async def _infer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        served = self._state.repository.get(request.model_name, request.model_version)
        with Recorded(served.stats):
            limit = self._state.config.max_infer_batch_size
            shape = request.inputs[0].shape if request.inputs else ()
            if shape and shape[0] > limit:
                raise LimitExceededError(
                    f"inputs[0].shape {shown_dims(shape)} has a batch of {shape[0]}; "
                    f"at most {limit} per request are accepted (--max-infer-batch-size): split it"
                )
            if request.raw_input_contents or not request.inputs or not request.inputs[0].HasField("contents"):
                pixels = decode_inputs(request, served.input_spec)  # views the raw bytes: microseconds
            else:  # typed contents are converted value by value: off the loop, so it keeps answering meanwhile
                loop = asyncio.get_running_loop()
                pixels = await loop.run_in_executor(None, decode_inputs, request, served.input_spec)
            outputs = requested_outputs(request, served)
            logits = await served.infer(pixels, deadline=deadline_of(context, timeout_us(request)))
            return infer_response(request, served, logits, outputs)


def _statistics(served: ServedModel) -> pb.ModelStatistics:
    stats = served.stats

    def duration(d: Duration) -> pb.StatisticDuration:
        return pb.StatisticDuration(count=d.count, ns=d.ns)

    return pb.ModelStatistics(
        name=served.name,
        version=str(served.version),
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=duration(stats.success),
            fail=duration(stats.fail),
            queue=duration(stats.queue),
            compute_input=duration(stats.compute_input),
            compute_infer=duration(stats.compute_infer),
            compute_output=duration(stats.compute_output),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=size,
                compute_input=duration(batch.compute_input),
                compute_infer=duration(batch.compute_infer),
                compute_output=duration(batch.compute_output),
            )
            for size, batch in sorted(stats.batches.items())
        ],
    )


def add_to_server(server: grpc.aio.Server, state: ServerState) -> None:
    """Register GRPCInferenceService on `server`."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(state), server)
