"""Reading sources: bounded, and sorted into retry-me or give-up errors."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.sources import ScriptedSource, serve, serve_raw
from worker.core.errors import SourceNotFound, SourceRefused, SourceUnavailable, TooLarge
from worker.fetching import FetchLimits, fetch

LIMITS = FetchLimits(max_bytes=1000, timeout_s=2, connect_timeout_s=1)


def test_paths_and_file_urls(tmp_path: Path) -> None:
    path = tmp_path / "a b.bin"
    path.write_bytes(b"abc")
    assert fetch(str(path), LIMITS) == b"abc"
    assert fetch("file://" + str(path).replace(" ", "%20"), LIMITS) == b"abc"


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound):
        fetch(str(tmp_path / "nope"), LIMITS)
    with pytest.raises(SourceRefused):
        fetch(str(tmp_path), LIMITS)


def test_files_over_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 1001)
    with pytest.raises(TooLarge):
        fetch(str(path), LIMITS)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, SourceNotFound),
        (410, SourceNotFound),
        (403, SourceRefused),
        (500, SourceUnavailable),
        (503, SourceUnavailable),
        (429, SourceUnavailable),
    ],
)
def test_http_statuses_are_sorted(status: int, error: type[Exception]) -> None:
    with serve(ScriptedSource(b"", failures=1, status=status)) as base, pytest.raises(error):
        fetch(base + "/x", LIMITS)


def test_http_bodies_over_the_limit() -> None:
    with serve(ScriptedSource(b"x" * 5000)) as base, pytest.raises(TooLarge):
        fetch(base + "/x", LIMITS)
    with serve(ScriptedSource(b"x" * 999)) as base:
        assert fetch(base + "/x", LIMITS) == b"x" * 999


def test_unreachable_hosts_are_transient() -> None:
    with pytest.raises(SourceUnavailable):
        fetch("http://127.0.0.1:9/x.png", LIMITS)


def test_link_local_addresses_are_never_fetched() -> None:
    with pytest.raises(SourceRefused, match="never fetches"):
        fetch("http://169.254.169.254/latest/meta-data/", LIMITS)


def test_source_roots_confine_local_reads(tmp_path: Path) -> None:
    root = tmp_path / "assets"
    root.mkdir()
    inside = root / "a.bin"
    inside.write_bytes(b"ok")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"no")
    (root / "link").symlink_to(secret)
    limits = FetchLimits(1000, 2, 1, roots=(root.resolve(),))

    assert fetch(str(inside), limits) == b"ok"
    assert fetch("file://" + str(inside), limits) == b"ok"
    for escape in (str(secret), str(root / ".." / "secret.txt"), str(root / "link"), "/etc/passwd"):
        with pytest.raises(SourceRefused, match="outside the configured source roots"):
            fetch(escape, limits)


def test_source_hosts_allow_names_and_ranges_only() -> None:
    body = b"x" * 10
    with serve(ScriptedSource(body)) as base:
        port_url = base.split("://", 1)[1]
        by_name = FetchLimits(1000, 2, 1, hosts=("127.0.0.1",))
        by_range = FetchLimits(1000, 2, 1, hosts=("127.0.0.0/8",))
        elsewhere = FetchLimits(1000, 2, 1, hosts=("images.example.org", "10.0.0.0/8"))
        assert fetch(f"http://{port_url}/x", by_name) == body
        assert fetch(f"http://localhost:{port_url.split(':')[1]}/x", by_range) == body
        with pytest.raises(SourceRefused, match="not among the configured source hosts"):
            fetch(f"http://{port_url}/x", elsewhere)


def test_metadata_hosts_are_refused_in_every_configuration() -> None:
    anything = FetchLimits(1000, 2, 1, hosts=("0.0.0.0/0", "metadata.google.internal"))
    for url in ("http://169.254.169.254/latest/", "http://metadata.google.internal/x"):
        with pytest.raises(SourceRefused):
            fetch(url, anything)


def test_redirects_are_checked_too() -> None:
    import http.server
    import threading

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(SourceRefused, match="never fetches"):
            fetch(f"http://127.0.0.1:{server.server_address[1]}/x", LIMITS)
    finally:
        server.shutdown()
        server.server_close()


# ----- a fetch can never hang a thread, nor read what it may not ---------------------------------


def _within(seconds: float, call: Callable[[], object]) -> BaseException | object:
    """Run `call` on a thread; fail the test if it has not returned within `seconds`."""
    outcome: list[BaseException | object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as e:  # handed to the test, which checks its type
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the fetch still runs after {seconds} s"
    return outcome[0]


def test_fifos_sockets_and_devices_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    unix = tmp_path / "socket.jpg"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(unix))
    limits = FetchLimits(1000, 2, 1, roots=(tmp_path.resolve(),))
    try:
        for path, kind in ((fifo, "FIFO"), (unix, "")):
            error = _within(2, lambda p=path: fetch(str(p), limits))  # type: ignore[misc]
            assert isinstance(error, SourceRefused), error
            assert kind in error.detail
        error = _within(2, lambda: fetch("/dev/zero", LIMITS))
        assert isinstance(error, SourceRefused)
        assert "character device" in error.detail
    finally:
        listener.close()


def test_a_link_swapped_after_the_check_cannot_lead_outside_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "assets"
    root.mkdir()
    (root / "inside.jpg").write_bytes(b"inside")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"secret")
    swap = root / "swap.jpg"
    swap.symlink_to(root / "inside.jpg")
    real_realpath = os.path.realpath

    def swapped_after_the_check(path: Any, *args: Any, **kwargs: Any) -> str:
        # The race, made certain: the name is checked while it leads inside, then it moves out.
        resolved = real_realpath(path, *args, **kwargs)
        if str(path) == str(swap):
            swap.unlink()
            swap.symlink_to(secret)
        return resolved

    monkeypatch.setattr(os.path, "realpath", swapped_after_the_check)
    with pytest.raises(SourceRefused, match="outside the configured source roots"):
        fetch(str(swap), FetchLimits(1000, 2, 1, roots=(root.resolve(),)))


def _slow_headers(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while True:
        conn.sendall(b"X-Wait: 1\r\n")
        time.sleep(0.3)


def _endless_trailers(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n")
    while True:
        conn.sendall(b"X-Trailer: 1\r\n")
        time.sleep(0.3)


@pytest.mark.parametrize("script", [_slow_headers, _endless_trailers])
def test_the_fetch_deadline_is_a_wall_no_server_can_stretch(
    script: Callable[[socket.socket], None],
) -> None:
    limits = FetchLimits(1000, timeout_s=1.5, connect_timeout_s=1)
    with serve_raw(script, seconds=8) as base:
        started = time.monotonic()
        error = _within(4, lambda: fetch(base + "/x.png", limits))
    assert isinstance(error, SourceUnavailable), error
    assert "longer than 1.5 s" in error.detail
    assert time.monotonic() - started < 3


class _NoTraffic:
    """Stands in for `socket.create_connection`: any connection attempt fails the test."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a connection was attempted: {args}")


@pytest.mark.parametrize(
    "url",
    [
        "http://[::ffff:169.254.169.254]/latest/",
        "http://[::ffff:a9fe:a9fe]/latest/",
        "http://[::a9fe:a9fe]/latest/",
        "http://[64:ff9b::a9fe:a9fe]/latest/",
        "http://[2002:a9fe:a9fe::1]/latest/",
        "http://[fd00:ec2::254]/latest/",
        "http://[fe80::1]/latest/",
        "http://100.100.100.200/latest/",
        "http://192.0.0.192/opc/v2/",
        "http://168.63.129.16/machine",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.Google.Internal./computeMetadata/v1/",
        "http://metadata.goog/computeMetadata/v1/",
        "http://metadata%2egoogle%2einternal/computeMetadata/v1/",
    ],
)
def test_metadata_addresses_are_refused_in_every_form(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "create_connection", _NoTraffic())
    anything = FetchLimits(1000, 2, 1, hosts=("0.0.0.0/0", "::/0", "metadata.google.internal"))
    for limits in (LIMITS, anything):
        with pytest.raises(SourceRefused):
            fetch(url, limits)


@pytest.mark.parametrize(
    "answer", ["::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "fd00:ec2::254", "169.254.170.2"]
)
def test_names_resolving_to_metadata_addresses_are_refused(
    answer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "create_connection", _NoTraffic())
    limits = FetchLimits(1000, 2, 1, resolve=lambda host, port: ["127.0.0.2", answer])
    with pytest.raises(SourceRefused, match="never fetches"):
        fetch("http://images.test/x.png", limits)


def test_embedded_ipv4_forms_are_checked_against_the_hosts_list() -> None:
    body = b"y" * 10
    source = ScriptedSource(body)
    with serve(source, host="127.0.0.2") as base:
        port = base.rsplit(":", 1)[1]
        only_2 = FetchLimits(1000, 2, 1, hosts=("127.0.0.2",))
        with pytest.raises(SourceRefused, match="not among the configured source hosts"):
            fetch(f"http://[::ffff:127.0.0.3]:{port}/x", only_2)
        assert fetch(f"http://[::ffff:127.0.0.2]:{port}/x", only_2) == body


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected_to() -> None:
    body = b"z" * 10
    source = ScriptedSource(body)
    lookups: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        # First answer: an allowed address; any later one would point at the metadata service.
        lookups.append(host)
        return ["127.0.0.2"] if len(lookups) == 1 else ["169.254.169.254"]

    with serve(source, host="127.0.0.2") as base:
        port = base.rsplit(":", 1)[1]
        limits = FetchLimits(1000, 2, 1, hosts=("127.0.0.0/8",), resolve=rebinding)
        assert fetch(f"http://images.test:{port}/x.png", limits) == body
    assert lookups == ["images.test"]
    assert source.hosts == [f"images.test:{port}"]  # the name is still the one asked for


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("/" + "a" * 5000 + ".jpg", "too long"),
        ("/tmp/a\x00b.jpg", "NUL"),
        ("file:///tmp/a%00b.jpg", "NUL"),
        ("http://user:secret@127.0.0.1:9/x.png", "credentials"),
        ("http://127.0.0.1:99999/x.png", "malformed URL"),
        ("http://" + "a" * 300 + ".test/x.png", "not a valid host name"),
    ],
)
def test_permanent_faults_are_refused_at_once(
    source: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "create_connection", _NoTraffic())
    started = time.monotonic()
    with pytest.raises(SourceRefused, match=why):
        fetch(source, LIMITS)
    assert time.monotonic() - started < 0.5


def test_a_file_is_read_into_a_buffer_of_its_own_size(tmp_path: Path) -> None:
    """Not one of the limit's size: a 256 MiB buffer for every upload costs fresh pages."""
    import tracemalloc

    path = tmp_path / "small.bin"
    path.write_bytes(b"x" * 10_000)
    limits = FetchLimits(max_bytes=64 << 20, timeout_s=2, connect_timeout_s=1)
    tracemalloc.start()
    try:
        assert fetch(str(path), limits) == b"x" * 10_000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated to read 10 000"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_a_file_longer_than_its_stated_size_is_read_to_the_limit() -> None:
    # /proc files state a size of 0 and hold more: what a file growing during the read looks like
    assert os.stat("/proc/self/status").st_size == 0
    whole = fetch("/proc/self/status", FetchLimits(100_000, 2, 1))
    assert whole.startswith(b"Name:") and len(whole) > 1000
    with pytest.raises(TooLarge):
        fetch("/proc/self/status", FetchLimits(100, 2, 1))
