"""`grpc.reflection.v1.ServerReflection`, beside the v1alpha service grpcio-reflection provides (it has no v1),
and the descriptor pool both answer from.

v1 is v1alpha under a new package name: the same messages, field for field. So the v1 service runs
grpcio-reflection's own servicer on v1alpha's (de)serializers, and the v1 file is v1alpha's descriptor renamed,
added to the descriptor pool so that reflection can describe its own v1 service too (`grpcurl describe`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha
from grpc_reflection.v1alpha._async import ReflectionServicer

SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_FILE_NAME = "grpc/reflection/v1/reflection.proto"
_V1ALPHA, _V1 = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."


class SymbolPool:
    """The default descriptor pool, finding the file of a method too (`grpcurl describe Service.Method`): the upb
    pool's FindFileContainingSymbol knows messages, enums and services but not their methods."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str) -> Any:  # the pool's own method name
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError as not_found:
            try:
                return self._pool.FindMethodByName(symbol).containing_service.file
            except KeyError:
                raise not_found from None


#: What both reflection services answer from (typed as the pool it stands in for: they only call its Find* methods).
POOL = cast(descriptor_pool.DescriptorPool, SymbolPool(descriptor_pool.Default()))


def _add_v1_file(pool: descriptor_pool.DescriptorPool) -> None:
    """v1alpha's reflection.proto as package grpc.reflection.v1, in `pool` (once)."""
    try:
        pool.FindFileByName(_FILE_NAME)
        return
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    v1alpha.DESCRIPTOR.CopyToProto(file)
    file.name, file.package = _FILE_NAME, "grpc.reflection.v1"
    file.options.Clear()  # v1alpha's options name v1alpha's packages in other languages
    for message in file.message_type:
        for entry in message.field:
            if entry.type_name.startswith(_V1ALPHA):
                entry.type_name = _V1 + entry.type_name.removeprefix(_V1ALPHA)
    for service in file.service:
        for method in service.method:
            method.input_type = _V1 + method.input_type.removeprefix(_V1ALPHA)
            method.output_type = _V1 + method.output_type.removeprefix(_V1ALPHA)
    pool.Add(file)


def add_to_server(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection v1 on `server`, listing `service_names` (which should include SERVICE_NAME)."""
    _add_v1_file(descriptor_pool.Default())
    servicer = ReflectionServicer(tuple(service_names), pool=POOL)
    handler = grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=v1alpha.ServerReflectionRequest.FromString,
                response_serializer=v1alpha.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
