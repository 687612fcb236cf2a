"""A seeded, bounded fuzz test on a real server: mutated requests over both APIs (unary and streams) and raw
garbage bytes on every method. No answer may be UNKNOWN or INTERNAL (those mean a bug, not a client's mistake),
the server stays alive, and a known image is still classified as onnxruntime classifies it."""

from __future__ import annotations

import io
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime
import pytest
from PIL import Image

from cnnserve.proto import classifier_pb2 as cpb
from cnnserve.proto import grpc_service_pb2 as pb
from cnnserve.server.app import serve_in_thread
from cnnserve.server.config import ServerConfig

from .conftest import linear_card

#: The streaming methods and the type of their answers (None: not looked into).
STREAMS = {
    "/cnnserve.v1.Classifier/ClassifyStream": cpb.ClassifyResponse,
    "/inference.GRPCInferenceService/ModelStreamInfer": pb.ModelStreamInferResponse,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": None,
}


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def seeds(rng: np.random.Generator) -> dict[str, list[bytes]]:
    """Valid requests per method (serialized): what the mutations start from."""
    gray = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    classify = [
        cpb.ClassifyRequest(images=[cpb.Image(id="a", encoded=encoded(gray, "PNG"))], top_k=3),
        cpb.ClassifyRequest(
            model_name="rgb",
            images=[cpb.Image(encoded=encoded(rgb, "JPEG")), cpb.Image(encoded=encoded(rgb, "PNG"))],
        ),
        cpb.ClassifyRequest(
            model_name="gray",
            images=[cpb.Image(raw=cpb.RawImage(pixels=gray.tobytes(), channels=1, height=28, width=28))],
        ),
    ]
    raw = pb.ModelInferRequest(model_name="gray", raw_input_contents=[gray.tobytes()])
    raw.inputs.add(name="input", datatype="UINT8", shape=[1, 1, 28, 28])
    raw.outputs.add(name="logits").parameters["classification"].int64_param = 3
    typed = pb.ModelInferRequest(model_name="gray", id="t")
    typed.inputs.add(name="input", datatype="UINT8", shape=[1, 1, 28, 28]).contents.uint_contents.extend(
        gray.reshape(-1).tolist()
    )
    typed.parameters["timeout"].int64_param = 5_000_000
    infer = [raw, typed]
    named = [pb.ModelMetadataRequest(name="gray", version="1"), pb.ModelMetadataRequest(name="rgb")]
    return {
        "/cnnserve.v1.Classifier/Classify": [m.SerializeToString() for m in classify],
        "/cnnserve.v1.Classifier/ClassifyStream": [m.SerializeToString() for m in classify],
        "/cnnserve.v1.Classifier/ListModels": [b""],
        "/inference.GRPCInferenceService/ModelInfer": [m.SerializeToString() for m in infer],
        "/inference.GRPCInferenceService/ModelStreamInfer": [m.SerializeToString() for m in infer],
        "/inference.GRPCInferenceService/ModelMetadata": [m.SerializeToString() for m in named],
        "/inference.GRPCInferenceService/ModelReady": [m.SerializeToString() for m in named],
        "/inference.GRPCInferenceService/ModelConfig": [m.SerializeToString() for m in named],
        "/inference.GRPCInferenceService/ModelStatistics": [m.SerializeToString() for m in named],
        "/inference.GRPCInferenceService/RepositoryIndex": [b"", b"\x10\x01"],
        "/inference.GRPCInferenceService/ServerLive": [b""],
        "/grpc.health.v1.Health/Check": [b"", b"\x0a\x04gray"],
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": [b"\x3a\x00", b"\x1a\x0cinference.abc"],
    }


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four byte-level mutations: flip, overwrite, insert, delete, duplicate a slice, truncate."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(7)
        at = rng.randrange(len(buffer) + 1)
        if kind == 0 and buffer:
            buffer[at % len(buffer)] ^= 1 << rng.randrange(8)
        elif kind == 1 and buffer:
            buffer[at % len(buffer)] = rng.randrange(256)
        elif kind == 2:
            buffer[at:at] = rng.randbytes(rng.randint(1, 8))
        elif kind == 3 and buffer:
            del buffer[at : at + rng.randint(1, 16)]
        elif kind == 4 and buffer:
            start = rng.randrange(len(buffer))
            buffer[at:at] = buffer[start : start + rng.randint(1, 64)]
        elif kind == 5:
            del buffer[at:]
        else:  # a varint that claims a huge length or value
            buffer[at:at] = bytes([rng.choice([0x0A, 0x12, 0x1A, 0x22, 0x08, 0x10])]) + b"\xff\xff\xff\xff\x07"
    return bytes(buffer)


def fuzz_one(channel: grpc.Channel, method: str, payloads: list[bytes], stream: bool, seen: Counter[str]) -> None:
    """Send the payloads (one unary call each, or one stream carrying them all) and count every status seen,
    including the per-request errors inside stream answers."""
    try:
        if not stream:
            for payload in payloads:
                call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
                try:
                    call(payload, timeout=10)
                    seen["OK"] += 1
                except grpc.RpcError as error:
                    seen[error.code().name] += 1
            return
        call = channel.stream_stream(method, request_serializer=None, response_deserializer=None)
        answer_type = STREAMS[method]
        for answer in call(iter(payloads), timeout=10):
            if answer_type is cpb.ClassifyResponse:
                message = cpb.ClassifyResponse.FromString(answer)
                seen[message.error.code or "OK"] += 1
                seen.update(r.error.code for r in message.results if r.error.code)
            elif answer_type is pb.ModelStreamInferResponse:
                text = pb.ModelStreamInferResponse.FromString(answer).error_message
                seen[text.split(":", 1)[0] if text else "OK"] += 1
            else:
                seen["OK"] += 1
        seen["OK"] += 1  # the stream itself ended well
    except grpc.RpcError as error:
        seen[error.code().name] += 1


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    import hashlib

    from .conftest import linear_onnx

    root = tmp_path_factory.mktemp("fuzz") / "models"
    for name, channels, height, width in (("gray", 1, 28, 28), ("rgb", 3, 20, 24)):
        folder = root / name / "1"
        folder.mkdir(parents=True)
        data = linear_onnx(channels, height, width, seed=channels)
        (folder / "model.onnx").write_bytes(data)
        card = linear_card(name, 1, channels, height, width)
        (folder / "model.json").write_text(card.evolve(sha256=hashlib.sha256(data).hexdigest()).to_json())
    config = ServerConfig(model_repository=root, port=0, metrics_port=-1, max_batch_size=8, default_model="gray")
    with serve_in_thread(config) as server:
        yield server.address, root


def run_fuzz(address: str, root: Path, count: int, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    base = seeds(np.random.default_rng(seed))
    methods = sorted(base)
    seen: Counter[str] = Counter()
    sent = 0
    with grpc.insecure_channel(address) as channel:
        while sent < count:
            method = rng.choice(methods)
            stream = method in STREAMS
            n = rng.randint(1, 8) if stream else 1
            payloads = []
            for _ in range(n):
                roll = rng.random()
                if roll < 0.1:  # raw garbage
                    payloads.append(rng.randbytes(rng.randint(0, 200)))
                elif roll < 0.2:  # unchanged: a valid request
                    payloads.append(rng.choice(base[method]))
                else:
                    payloads.append(mutate(rng.choice(base[method]), rng))
            fuzz_one(channel, method, payloads, stream, seen)
            sent += n
        # Alive, and a known image still gets onnxruntime's own answer.
        pixels = np.random.default_rng(99).integers(0, 256, (1, 1, 28, 28), dtype=np.uint8)
        request = cpb.ClassifyRequest(images=[cpb.Image(encoded=encoded(pixels[0, 0], "PNG"))], top_k=3)
        stub = channel.unary_unary(
            "/cnnserve.v1.Classifier/Classify",
            request_serializer=cpb.ClassifyRequest.SerializeToString,
            response_deserializer=cpb.ClassifyResponse.FromString,
        )
        (result,) = stub(request, timeout=10).results
    session = onnxruntime.InferenceSession(str(root / "gray" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": pixels})[0][0]
    assert [p.index for p in result.predictions] == list(np.argsort(-logits, kind="stable")[:3])
    return seen


@pytest.mark.parametrize(
    ("count", "seed"),
    [pytest.param(2_000, 1, id="2000"), pytest.param(20_000, 2, id="20000", marks=pytest.mark.slow)],
)
def test_fuzzed_requests_never_answer_unknown_or_internal(
    fuzz_server: tuple[str, Path], count: int, seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = run_fuzz(*fuzz_server, count, seed)
    with capsys.disabled():  # the counts per status, for the record
        counts = ", ".join(f"{status} {n}" for status, n in seen.most_common())
        print(f"\nfuzz {count} requests (seed {seed}), answers: {counts}")
    assert seen["UNKNOWN"] == 0 and seen["INTERNAL"] == 0, seen
    assert seen["OK"] > 0 and seen["INVALID_ARGUMENT"] > 0, seen  # both valid and refused requests were seen
