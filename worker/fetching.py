"""Reading an asset's bytes from its `source`: a local path, a `file://` URL or `http(s)://`.

Blocking by design: it runs on the hashing threads, never on the event loop. Every read is bounded
in bytes and in time, so a huge file or a server that streams forever costs a clear error, not a
stuck worker thread. Failures are sorted into the error tree: missing and refused sources are
permanent, timeouts and server errors transient.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from worker.errors import SourceNotFound, SourceRefused, SourceUnavailable, TooLarge

_CHUNK = 1 << 20


#: Hosts that serve cloud credentials; never fetched, whatever the configuration says.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """Bounds on one read, and what the worker may read at all."""

    max_bytes: int
    timeout_s: float
    connect_timeout_s: float
    roots: tuple[Path, ...] | None = None
    """Local sources must lie under one of these folders (after resolving links); None = any."""
    hosts: tuple[str, ...] | None = None
    """URL hosts allowed: names, or address ranges such as `10.20.0.0/16`; None = any host but
    link-local and cloud-metadata addresses."""


def fetch(source: str, limits: FetchLimits) -> bytes:
    """The bytes at `source`, or an error from the tree saying why not."""
    if source.startswith(("http://", "https://")):
        return _fetch_http(source, limits)
    path = Path(unquote(urlsplit(source).path)) if source.startswith("file://") else Path(source)
    return _read_file(path, limits)


def _check_path(path: Path, roots: tuple[Path, ...] | None) -> None:
    if roots is None:
        return
    real = Path(os.path.realpath(path))  # resolves `..` and symbolic links out of a root
    if not any(real == root or root in real.parents for root in roots):
        raise SourceRefused(f"{path} is outside the configured source roots")


def _read_file(path: Path, limits: FetchLimits) -> bytes:
    _check_path(path, limits.roots)
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


def check_host(host: str, allowed: tuple[str, ...] | None) -> None:
    """Refuse a URL host the configuration does not allow.

    Cloud metadata services live on link-local addresses; a portal message must never make the
    worker fetch credentials from them, so those are refused in every configuration.
    """
    if host.lower().rstrip(".") in METADATA_HOSTS:
        raise SourceRefused(f"{host} is a cloud metadata service, which the worker never fetches")
    try:
        addresses = {ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as e:
        raise SourceUnavailable(f"cannot resolve {host}: {e}") from e
    for address in addresses:
        if address.is_link_local or address.is_multicast or address.is_unspecified:
            raise SourceRefused(f"{host} resolves to {address}, which the worker never fetches")
    if allowed is None or host.lower() in (entry.lower() for entry in allowed):
        return
    networks = []
    for entry in allowed:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue  # a host name, compared above
    if networks and all(any(a in net for net in networks) for a in addresses):
        return
    raise SourceRefused(f"{host} is not among the configured source hosts")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a host the configuration allows."""

    def __init__(self, allowed: tuple[str, ...] | None) -> None:
        self._allowed = allowed

    def redirect_request(
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        target = urlsplit(newurl)
        if target.scheme not in ("http", "https"):
            raise SourceRefused(f"redirect to {newurl} leaves HTTP")
        check_host(target.hostname or "", self._allowed)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch_http(url: str, limits: FetchLimits) -> bytes:
    check_host(urlsplit(url).hostname or "", limits.hosts)
    deadline = time.monotonic() + limits.timeout_s
    request = urllib.request.Request(url, headers={"User-Agent": "dupfinder-worker"})
    opener = urllib.request.build_opener(_CheckedRedirects(limits.hosts))
    try:
        with opener.open(request, timeout=limits.connect_timeout_s) as response:
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
