"""Progress of long command-line runs on stderr: a live line on a terminal, a line every few
seconds in logs."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """Progress on stderr: a live line on a terminal, a line every few seconds otherwise."""

    def __init__(self, stream: Any = None, every_s: float = 5.0) -> None:
        # The line is the program's own: past an escaping wrapper, so its `\r` stays live.
        stream = sys.stderr if stream is None else stream
        self._stream = getattr(stream, "unescaped", stream)
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._every_s = 0.2 if self._tty else every_s
        self._start = self._last = time.monotonic()

    def __call__(
        self,
        done: int,
        total: int | None,
        what: str = "hashed",
        unit: str = "files",
        *,
        final: bool = False,
    ) -> None:
        now = time.monotonic()
        final = final or done == total
        if not final and now - self._last < self._every_s:
            return
        self._last = now
        rate = done / max(now - self._start, 1e-9)
        if total is None:
            line = f"{what} {done} {unit}, {rate:.1f}/s"
        else:
            eta = (total - done) / rate if rate else 0.0
            filled = round(20 * done / total) if total else 20
            bar = "#" * filled + "." * (20 - filled)
            line = f"[{bar}] {what} {done}/{total} {unit}, {rate:.1f}/s, about {eta:.0f} s left"
        if self._tty:
            end = "\n" if final else ""
            self._stream.write(f"\r{line}{end}")
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
