"""Log lines stay bounded, whoever writes them and whatever a message carries."""

from __future__ import annotations

import io
import json
import logging

import pytest
from dramatiq.message import Message

from worker.observability import (
    LOG_MESSAGE_CHARS,
    LOG_TRACEBACK_CHARS,
    BoundedRecords,
    JsonFormatter,
)


@pytest.mark.parametrize("formatter", [logging.Formatter(), JsonFormatter()])
def test_a_failed_message_with_a_huge_payload_logs_a_bounded_line(
    formatter: logging.Formatter,
) -> None:
    # Given a handler as the worker sets it up, and a message whose scope is 20 MB of ids
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(BoundedRecords())
    logger = logging.getLogger("dramatiq.worker.WorkerThread.test")
    logger.addHandler(handler)
    logger.propagate = False
    ids = [f"{n:0200d}" for n in range(100_000)]
    message: Message[None] = Message(
        queue_name="q", actor_name="find_duplicates", args=({"ids": ids},), kwargs={}, options={}
    )
    try:
        # When Dramatiq logs it as it does on every failed attempt, with the error's traceback
        try:
            raise ValueError("x" * 1_000_000)
        except ValueError:
            logger.error(
                "Failed to process message %s with unhandled exception.", message, exc_info=True
            )
    finally:
        logger.removeHandler(handler)
    # Then the line is bounded, and still says what it is about
    written = stream.getvalue()
    assert len(written) < LOG_MESSAGE_CHARS + LOG_TRACEBACK_CHARS + 500
    assert "Failed to process message find_duplicates(" in written
    assert "more characters]" in written
    if isinstance(formatter, JsonFormatter):
        assert json.loads(written)["exception"].startswith("Traceback")
