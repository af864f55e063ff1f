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
