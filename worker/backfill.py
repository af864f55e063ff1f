"""`dupfinder backfill`: publish AssetUploaded payloads from a file to the backfill queue.

Safe on a busy system: messages go to `dupfinder.backfill` (served by the same hashing code as live
uploads, by workers of their own), at a bounded rate, each confirmed by RabbitMQ before it counts.
Resumable: the line reached is recorded in a state file every second, so a run that is
interrupted continues where it stopped (re-sending at most a second's worth of lines, which the
worker treats as harmless replays). Invalid lines are listed and never stop the run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError

from schemas.messages import AssetUploaded
from worker.core.errors import clipped, describe

#: Decides whether an upload can be skipped: returns a reason ("already hashed from the same
#: bytes", "deleted") or None to send it.
KnownCheck = Callable[[AssetUploaded], str | None]


@dataclass
class Report:
    """What a backfill run did."""

    sent: int = 0
    skipped: int = 0
    resumed_from: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)
    skip_reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "skipped": self.skipped,
            "skip_reasons": self.skip_reasons,
            "resumed_after_line": self.resumed_from,
            "refused": [{"line": n, "reason": r} for n, r in self.refused],
        }


#: Longest refusal reason kept for a line (the state file holds every refused line's).
REASON_CHARS = 300


def read_payloads(stream: IO[str], fmt: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, payload dict or the reason it cannot be read), for JSON Lines or CSV.

    Whatever a line holds, it is a payload or a refused line, never an error that ends the run.
    The stream is expected to decode with `surrogateescape`, so bytes that are not UTF-8 refuse
    their own line only.
    """
    if fmt == "csv":
        reader = csv.DictReader(stream)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield reader.line_num, f"not CSV: {e}"
                continue
            yield reader.line_num, _csv_payload(row)
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        if _not_utf8(line):
            yield number, "not UTF-8 text"
            continue
        try:
            payload = json.loads(line)
        except json.JSONDecodeError as e:
            yield number, f"not JSON: {e.msg} at column {e.colno}"
            continue
        yield number, payload if isinstance(payload, dict) else "not a JSON object"


def _not_utf8(text: str) -> bool:
    """Whether `text` carries bytes that were not UTF-8 (decoded with `surrogateescape`)."""
    return any("\udc80" <= c <= "\udcff" for c in text)


def _csv_payload(row: dict[str | Any, str | Any]) -> dict[str, Any] | str:
    if None in row:
        return "more fields than the header names"
    payload: dict[str, Any] = {k: v for k, v in row.items() if k and v not in (None, "")}
    if any(_not_utf8(str(v)) for v in payload.values()):
        return "not UTF-8 text"
    tags = payload.get("tags")
    if isinstance(tags, str):
        if tags.startswith("["):
            try:
                payload["tags"] = json.loads(tags)
            except json.JSONDecodeError as e:
                return f"tags: not a JSON list: {e.msg} at column {e.colno}"
        else:
            payload["tags"] = [t for t in tags.split(";") if t]
    return payload


class State:
    """The last line a run has handed to RabbitMQ, and every line refused up to it, kept in a
    small JSON file: a resumed run's summary still lists what the first run refused."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.line = 0
        self.done = False
        self.refused: list[tuple[int, str]] = []
        if path.exists():
            saved = json.loads(path.read_text())
            self.line, self.done = int(saved.get("line", 0)), bool(saved.get("done", False))
            self.refused = [(int(n), str(r)) for n, r in saved.get("refused", [])]
        self._saved_at = time.monotonic()

    def restart(self) -> None:
        """Forget the progress of earlier runs."""
        self.line, self.done, self.refused = 0, False, []

    def refuse(self, line: int, reason: str) -> None:
        self.refused.append((line, clipped(reason, REASON_CHARS)))

    def advance(self, line: int, *, every_s: float = 1.0) -> None:
        self.line = line
        if time.monotonic() - self._saved_at >= every_s:
            self.save()

    def save(self, *, done: bool = False) -> None:
        self.done = done
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        refused = [[n, r] for n, r in self.refused if n <= self.line]
        temporary.write_text(json.dumps({"line": self.line, "done": done, "refused": refused}))
        os.replace(temporary, self.path)  # atomic: a crash leaves the old or the new state
        self._saved_at = time.monotonic()


def backfill(
    lines: Iterable[tuple[int, dict[str, Any] | str]],
    publish: Callable[[AssetUploaded], object],
    state: State,
    *,
    known: KnownCheck | None,
    rate_per_s: float | None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Validate, filter and publish every line after the state's; record progress as it goes."""
    report = Report(resumed_from=state.line, refused=state.refused)
    start = time.monotonic()
    for number, item in lines:
        if number <= state.line:
            continue
        if isinstance(item, str):
            state.refuse(number, item)
        else:
            try:
                upload = AssetUploaded.model_validate(item)
            except ValidationError as e:
                state.refuse(number, describe(e))
            else:
                reason = known(upload) if known is not None else None
                if reason is not None:
                    report.skipped += 1
                    report.skip_reasons[reason] = report.skip_reasons.get(reason, 0) + 1
                else:
                    if rate_per_s:
                        ahead = start + report.sent / rate_per_s - time.monotonic()
                        if ahead > 0:
                            time.sleep(ahead)
                    publish(upload)  # returns once RabbitMQ confirmed it
                    report.sent += 1
        state.advance(number)
        if progress is not None:
            progress(number)
    state.save(done=True)
    return report


def local_path(source: str) -> Path | None:
    """The file behind a path or file:// source; None for HTTP sources."""
    if source.startswith("file://"):
        return Path(unquote(urlsplit(source).path))
    return Path(source) if source.startswith("/") else None


def file_sha256(path: Path) -> str | None:
    """Checksum of a local file, streamed; None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def same_bytes_check(lookup: Callable[[str, str], dict[str, Any] | None]) -> KnownCheck:
    """A `KnownCheck` over stored assets: skip deleted ones and ones hashed from these bytes."""

    def check(upload: AssetUploaded) -> str | None:
        doc = lookup(upload.portal_id, upload.asset_id)
        if doc is None:
            return None
        if doc.get("state") == "deleted":
            return "deleted"
        path = local_path(upload.source)
        hashed = doc.get("state") == "hashed" and doc.get("sha256")
        if hashed and path is not None and file_sha256(path) == doc["sha256"]:
            return "already hashed from the same bytes"
        return None

    return check
