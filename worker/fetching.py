"""Reading an asset's bytes from its `source`: a local path, a `file://` URL or `http(s)://`.

Blocking by design: it runs on the hashing threads, never on the event loop. Every read is bounded
in bytes and in time, so a huge file or a server that streams forever costs a clear error, not a
stuck worker thread. Failures are sorted into the error tree: missing and refused sources are
permanent, timeouts and server errors transient.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from worker.errors import SourceNotFound, SourceRefused, SourceUnavailable, TooLarge

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """Bounds on one read."""

    max_bytes: int
    timeout_s: float
    connect_timeout_s: float


def fetch(source: str, limits: FetchLimits) -> bytes:
    """The bytes at `source`, or an error from the tree saying why not."""
    if source.startswith(("http://", "https://")):
        return _fetch_http(source, limits)
    path = Path(unquote(urlsplit(source).path)) if source.startswith("file://") else Path(source)
    return _read_file(path, limits)


def _read_file(path: Path, limits: FetchLimits) -> bytes:
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            if size > limits.max_bytes:
                raise TooLarge(f"{path} is {size} bytes, over the limit of {limits.max_bytes}")
            data = f.read(limits.max_bytes + 1)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise SourceNotFound(f"no file at {path}") from e
    except IsADirectoryError as e:
        raise SourceRefused(f"{path} is a directory") from e
    except PermissionError as e:
        raise SourceRefused(f"no permission to read {path}") from e
    except OSError as e:  # I/O errors on network mounts and the like may pass
        raise SourceUnavailable(f"cannot read {path}: {e}") from e
    if len(data) > limits.max_bytes:  # grew while we read it
        raise TooLarge(f"{path} is over the limit of {limits.max_bytes} bytes")
    return data


def _refuse_link_local(host: str) -> None:
    # Cloud metadata services live on link-local addresses; a portal message must never make the
    # worker fetch credentials from them.
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as e:
        raise SourceUnavailable(f"cannot resolve {host}: {e}") from e
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_link_local or address.is_multicast or address.is_unspecified:
            raise SourceRefused(f"{host} resolves to {address}, which the worker never fetches")


def _fetch_http(url: str, limits: FetchLimits) -> bytes:
    host = urlsplit(url).hostname or ""
    _refuse_link_local(host)
    deadline = time.monotonic() + limits.timeout_s
    request = urllib.request.Request(url, headers={"User-Agent": "dupfinder-worker"})
    try:
        with urllib.request.urlopen(request, timeout=limits.connect_timeout_s) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > limits.max_bytes:
                raise TooLarge(f"{url} is {length} bytes, over the limit of {limits.max_bytes}")
            chunks: list[bytes] = []
            total = 0
            while chunk := response.read1(_CHUNK):
                total += len(chunk)
                if total > limits.max_bytes:
                    raise TooLarge(f"{url} sent more than the limit of {limits.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise SourceUnavailable(f"{url} took longer than {limits.timeout_s} s to send")
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as e:
        if e.code in (404, 410):
            raise SourceNotFound(f"{url} answered {e.code}") from e
        if e.code == 429 or e.code >= 500:
            raise SourceUnavailable(f"{url} answered {e.code}") from e
        raise SourceRefused(f"{url} answered {e.code}") from e
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise SourceUnavailable(f"cannot fetch {url}: {e}") from e
