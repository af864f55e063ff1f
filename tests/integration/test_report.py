"""`dupfinder scan --html` opened in a real browser: headless Chromium (Debian's `chromium`) loads
the page, every thumbnail loads, and the screenshot it takes is kept in `test-artefacts/`
(git-ignored) for a person to look at."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli import dupfinder
from tests.images import photo, write

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / "test-artefacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: Headless, and nothing that would reach for the network at start.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _browser(tmp: Path, *args: str) -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs chromium (.ci/run); it is missing")
        pytest.skip("chromium is not installed (apt install chromium)")
    done = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def test_the_report_shows_every_set_with_its_thumbnails_in_a_browser(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    big = photo(40, (800, 600))
    write(folder / "big.png", big)
    write(folder / "sub" / "copy.jpg", big.resize((400, 300)), "JPEG", quality=85)
    write(folder / "<b>odd</b> name.png", photo(41))  # a set of its own with the next one
    write(folder / "twin.png", photo(41))
    write(folder / "alone.png", photo(42))
    report = tmp_path / "out" / "report.html"

    result = dupfinder("scan", "--quiet", "--html", str(report), str(folder))

    assert result.returncode == 0, result.stderr
    assert f"wrote {report}" in result.stderr
    page = report.read_text()
    assert "<b>odd</b>" not in page and "&lt;b&gt;odd&lt;/b&gt;" in page  # names are escaped
    assert "5 files, 0 unreadable, 2 duplicate sets, 2 duplicates" in page
    assert page.count("<figure") == 4 and "alone.png" not in page
    assert "original (the most pixels)" in page
    thumbnails = sorted((tmp_path / "out" / "report_files").iterdir())
    assert len(thumbnails) == 4

    dom = _browser(tmp_path, "--virtual-time-budget=5000", "--dump-dom", report.as_uri())
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None, dom[:500]
    assert 'data-state="loaded"' in body.group(1)
    assert 'data-images="4"' in body.group(1) and 'data-broken="0"' in body.group(1)

    ARTEFACTS.mkdir(exist_ok=True)
    shot = ARTEFACTS / "scan-report.png"
    shot.unlink(missing_ok=True)
    _browser(tmp_path, "--window-size=1200,900", f"--screenshot={shot}", report.as_uri())
    assert shot.stat().st_size > 10_000
