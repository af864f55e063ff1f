"""The worker's entry module: `dramatiq worker.app` (or `dupfinder worker`) loads this.

Importing it configures logging once and registers every actor on the broker.
"""

from __future__ import annotations

import logging

from worker import actors
from worker.config import get_settings
from worker.observability import bound_logs, use_json_logs

if get_settings().log_format == "json":
    use_json_logs()
bound_logs()
logging.getLogger().setLevel(get_settings().log_level.upper())
logging.getLogger("pika").setLevel(logging.WARNING)

broker = actors.broker

__all__ = ["broker"]
