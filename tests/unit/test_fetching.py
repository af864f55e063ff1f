"""Reading sources: bounded, and sorted into retry-me or give-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sources import ScriptedSource, serve
from worker.errors import SourceNotFound, SourceRefused, SourceUnavailable, TooLarge
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
