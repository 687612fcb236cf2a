"""ordered_pipeline: a stream's requests run several at once, answers come back in request order, at most
`window` are in flight, and a drain ends the stream with DrainingError after answering what was read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cnnserve.server.errors import DrainingError
from cnnserve.server.pipeline import ordered_pipeline


async def numbers(count: int, gap_s: float = 0.0) -> AsyncIterator[int]:
    for number in range(count):
        if gap_s:
            await asyncio.sleep(gap_s)
        yield number


def test_answers_keep_the_request_order_while_requests_overlap() -> None:
    running = most = 0

    async def handle(number: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01 * (5 - number % 5))  # later requests finish first
        running -= 1
        return number * 10

    async def main() -> list[int]:
        return [answer async for answer in ordered_pipeline(numbers(12), handle, window=4)]

    assert asyncio.run(main()) == [n * 10 for n in range(12)]
    assert most == 4  # overlapped, and never more than the window


def test_a_failing_request_stream_ends_the_pipeline_with_its_error() -> None:
    async def requests() -> AsyncIterator[int]:
        yield 1
        raise ValueError("the stream broke")

    async def handle(number: int) -> int:
        return number

    async def main() -> list[int]:
        answers = []
        with pytest.raises(ValueError, match="the stream broke"):
            async for answer in ordered_pipeline(requests(), handle, window=2):
                answers.append(answer)
        return answers

    assert asyncio.run(main()) == [1]


def test_closing_answers_what_was_read_then_raises_draining() -> None:
    async def main() -> tuple[list[int], int]:
        closing = asyncio.Event()
        read = 0

        async def requests() -> AsyncIterator[int]:
            nonlocal read
            async for number in numbers(1000, gap_s=0.005):
                read += 1
                yield number

        async def handle(number: int) -> int:
            if number == 3:
                closing.set()
            await asyncio.sleep(0.02)
            return number

        answers = []
        with pytest.raises(DrainingError, match="shutting down"):
            async for answer in ordered_pipeline(requests(), handle, window=8, closing=closing):
                answers.append(answer)
        return answers, read

    answers, read = asyncio.run(main())
    assert answers == list(range(len(answers))) and 4 <= len(answers) == read < 1000
