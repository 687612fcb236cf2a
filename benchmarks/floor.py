"""The floor: what Python gRPC itself costs, with no batching and no model, beside cnnserve on the same points.

`--serve PORT` runs a grpc.aio server (uvloop when installed, like cnnserve) that answers the v2 calls the load
generator makes (ServerReady, ModelMetadata, ModelInfer, ModelStreamInfer) for one model of a repository: each
request is parsed and answered with zero logits of the right shape, nothing else. The comparison starts it and
`cnnserve serve` side by side and loads both alike: cnnserve's images/s over the floor's says how much of the
transport's own throughput the server keeps, and the floor's CPU per request is the part no server code can remove.
`--rpc stream` compares one stream per caller.

    .venv/bin/python benchmarks/floor.py --model-repository models
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import numpy as np
from harness import PORT, Pair, config_from, interleave, paired_table, pairs, script_main, serve, serve_command

from cnnserve.card import ModelCard
from cnnserve.client.bench.loadgen import BenchConfig
from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.proto import grpc_service_pb2_grpc as pb_grpc

POINTS = ((1, 1), (32, 1), (8, 64))  # (concurrency, images per request)


class NoModelService(pb_grpc.GRPCInferenceServiceServicer):
    """ModelInfer without a model: parse, answer zeros. Only what the load generator calls."""

    def __init__(self, card: ModelCard) -> None:
        shape = [-1, card.input.channels, card.input.height, card.input.width]
        tensor = pb.ModelMetadataResponse.TensorMetadata
        self._metadata = pb.ModelMetadataResponse(
            name=card.name,
            versions=[str(card.version)],
            platform="onnx_onnxv1",
            inputs=[tensor(name=card.input.name, datatype="UINT8", shape=shape)],
            outputs=[tensor(name=card.output.name, datatype="FP32", shape=[-1, card.num_classes])],
        )
        self._classes = card.num_classes
        self._output = card.output.name

    async def ServerReady(self, request: pb.ServerReadyRequest, context: object) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: object) -> pb.ModelMetadataResponse:
        return self._metadata

    async def ModelInfer(self, request: pb.ModelInferRequest, context: object) -> pb.ModelInferResponse:
        return self._answer(request)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: object
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for request in request_iterator:
            yield pb.ModelStreamInferResponse(infer_response=self._answer(request))

    def _answer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        n = int(request.inputs[0].shape[0])
        logits = np.zeros((n, self._classes), dtype=np.float32)
        response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        response.outputs.add(name=self._output, datatype="FP32", shape=logits.shape)
        response.raw_output_contents.append(logits.tobytes())
        return response


async def run_floor_server(port: int, card: ModelCard) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(NoModelService(card), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def compare_floor(
    repository: Path, model: str, config: BenchConfig, *, repeats: int, server_flags: Sequence[str] = ()
) -> list[Pair]:
    card_path = repository / model / "1" / "model.json"
    floor_command = [sys.executable, str(Path(__file__).resolve()), "--serve-card", str(card_path), "--serve", PORT]
    with (
        serve("cnnserve", repository, *server_flags) as served,
        serve_command("grpc floor", floor_command) as floor,
    ):
        runs = interleave([served, floor], {"": config}, POINTS, repeats)
    return pairs(runs, (served.name, ""), (floor.name, ""), POINTS)


def markdown(rows: Sequence[Pair]) -> str:
    return paired_table("server", ("cnnserve", "gRPC floor (no model)"), "cnnserve / floor", rows)


def main(argv: Sequence[str] | None = None) -> int:
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--serve", type=int, default=None, metavar="PORT", help="run the floor server (internal)")
        parser.add_argument(
            "--serve-card", type=Path, default=None, help="model.json the floor server pretends to serve"
        )

    def run(args: argparse.Namespace) -> str:
        if args.serve is not None:
            card = ModelCard.load(args.serve_card)
            try:
                import uvloop

                uvloop.run(run_floor_server(args.serve, card))
            except ImportError:
                asyncio.run(run_floor_server(args.serve, card))
            return ""
        config = config_from(args)
        return markdown(
            compare_floor(
                args.model_repository, args.model, config, repeats=args.repeats, server_flags=args.server_flag
            )
        )

    return script_main(argv, __doc__, run, add_arguments)


if __name__ == "__main__":
    sys.exit(main())
