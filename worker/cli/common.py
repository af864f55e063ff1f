"""What the `dupfinder` commands share: exit statuses, a quick exit, and a checked connection to
the store."""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.store import AssetStore

T = TypeVar("T")

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2

#: What a terminal would act on rather than show: C0 controls but newline and tab, DEL, C1
#: controls, and the bidirectional overrides and isolates.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def leave(code: int) -> NoReturn:
    """End the process with `code` once a command is done, without the interpreter's teardown.

    Tearing down what a command imported (NumPy, Pillow, pydantic and the contract's models)
    takes about 0.15 s, after the command's last line is out: 3-4 % of a `dupfinder scan` of
    a couple of hundred photos (benchmarks/scan.py), for nothing the user sees. Exit handlers
    still run and the standard streams are flushed. Where another thread is still alive, or a
    stream cannot be flushed (a closed pipe, a full disk), the interpreter exits as it always
    does, so nothing is cut short and the failure is reported as Python reports it.
    """
    if threading.active_count() == 1:
        atexit._run_exitfuncs()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            sys.exit(code)
        os._exit(code)
    sys.exit(code)


def printable(text: str) -> str:
    """`text` with every character a terminal would act on written as an escape (`\\x1b`)."""
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)


class PrintableStream:
    """A text stream that escapes what `printable` escapes, so that nothing a tenant sent (an
    id, a title, a dead letter's body) can move an operator's cursor or rewrite the screen.

    The commands write every human line through one of these (`main` wraps stdout and
    stderr); JSON output is unchanged by it, as JSON escapes control characters itself.
    """

    def __init__(self, stream: TextIO) -> None:
        self.unescaped = stream
        """The stream itself, for text that is the program's own (a progress line's `\\r`)."""

    def write(self, text: str) -> int:
        self.unescaped.write(printable(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.unescaped, name)


async def open_store(settings: Settings) -> AssetStore:
    """A store on the configured database, pinged so that an outage is reported at once."""
    from worker.store import AssetStore

    store = AssetStore.from_settings(settings)
    try:
        await store.ping()
    except BaseException:
        await store.close()
        raise
    return store


def on_store(settings: Settings, work: Callable[[AssetStore], Awaitable[T]]) -> T:
    """`work`'s result on a freshly opened store, closed afterwards, in an event loop of its own
    (the commands are synchronous). Raises `StoreUnavailable` when the database does not answer.
    """
    import asyncio  # here: `dupfinder scan`, which shares this module, never needs it

    async def run() -> T:
        store = await open_store(settings)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())
