"""Loaded by every Python process started with this folder on PYTHONPATH (the worker's
supervisor and its Dramatiq processes too): writes each command PyMongo sends, as one JSON line,
to the file `DUPFINDER_TEST_COMMAND_LOG` names. Used by tests/integration/test_shard_keys.py."""

from __future__ import annotations

import json
import os
import threading

from pymongo import monitoring

_PATH = os.environ.get("DUPFINDER_TEST_COMMAND_LOG")
_LOCK = threading.Lock()


class _CommandLog(monitoring.CommandListener):
    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if _PATH is None:
            return
        line = json.dumps({"name": event.command_name, "command": event.command}, default=str)
        with _LOCK, open(_PATH, "a", encoding="utf-8") as log:
            log.write(line + "\n")

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


if _PATH is not None:
    monitoring.register(_CommandLog())
