"""Running `dupfinder` as an operator does: a process of its own, with this environment."""

from __future__ import annotations

import os
import subprocess
import sys


def dupfinder(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `dupfinder ARGS`; returns the finished process with its text output."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )
