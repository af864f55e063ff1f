"""dupfinder's error tree: every failure is either worth retrying or not.

    DupfinderError
    ├── PermanentError          give up now: retrying cannot help; carries a stable `reason` code
    │   ├── InvalidMessage      the envelope or payload breaks the contract
    │   ├── SourceError         the image bytes cannot be had
    │   │   ├── SourceNotFound      nothing at that path or URL (404/410)
    │   │   └── SourceRefused       the worker may not read it, or the server refuses (4xx)
    │   └── ImageError          the bytes are not a hashable image
    │       ├── UnreadableImage     empty, truncated, corrupt or not an image
    │       ├── UnsupportedFormat   an image format this build cannot decode
    │       └── TooLarge            over the byte or pixel limit (decompression bombs)
    └── TransientError          retry with backoff: the same message may well succeed later
        ├── SourceUnavailable   timeouts, connection errors, 5xx and 429 from the source
        ├── StoreUnavailable    MongoDB unreachable or timing out
        ├── PublishFailed       RabbitMQ did not confirm a result event
        └── MemoryBusy          the process's decode budget has no room for the image now

Actors declare `throws=(PermanentError,)` so Dramatiq dead-letters those at once instead of
retrying; anything else (a bug) is retried a bounded number of times and then dead-lettered.
"""

from __future__ import annotations

from pydantic import ValidationError


def describe(error: ValidationError) -> str:
    """A validation error in one line, field by field: what a log, a failure event or a dead
    letter's reason shows."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in error.errors()
    )


def clipped(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, ending in `...` where it was cut: how a reason or a
    detail that travels in an event or a file stays bounded."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DupfinderError(Exception):
    """Base of every error dupfinder raises on purpose."""

    reason: str = "error"

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason


class PermanentError(DupfinderError):
    """Retrying cannot help; record `reason`, tell the portal, stop."""


class InvalidMessage(PermanentError):
    """The envelope or payload breaks the contract."""

    reason = "invalid_message"


class Forbidden(PermanentError):
    """The message's publisher may not act for the portal it names."""

    reason = "forbidden"


class SourceError(PermanentError):
    """The image bytes cannot be had."""


class SourceNotFound(SourceError):
    """Nothing at the source path or URL."""

    reason = "source_not_found"


class SourceRefused(SourceError):
    """The worker may not read the source, or its server refuses the request."""

    reason = "source_refused"


class ImageError(PermanentError):
    """The bytes are not an image the worker can hash."""


class UnreadableImage(ImageError):
    """Empty, truncated, corrupt, or not an image at all."""

    reason = "unreadable_image"


class UnsupportedFormat(ImageError):
    """A recognisable image format that this build cannot decode."""

    reason = "unsupported_format"


class TooLarge(ImageError):
    """Over the configured byte or pixel limit."""

    reason = "too_large"


class TransientError(DupfinderError):
    """A fault outside the message; the same message may succeed on a later attempt."""

    reason = "transient"


class SourceUnavailable(TransientError):
    """The source did not answer in time, or answered with a server error."""

    reason = "source_unavailable"


class StoreUnavailable(TransientError):
    """MongoDB could not be reached or timed out."""

    reason = "store_unavailable"


class PublishFailed(TransientError):
    """RabbitMQ did not confirm a result event."""

    reason = "publish_failed"


class MemoryBusy(TransientError):
    """Decoding this image now would take the process over its decode memory budget."""

    reason = "memory_busy"
