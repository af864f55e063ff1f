"""The AsyncAPI document passes the official parser (`@asyncapi/parser`, from npm) cleanly.

`./dev test` installs the parser, pinned by `tools/asyncapi/package-lock.json`, into the
git-ignored `tools/asyncapi/node_modules` wherever `node` and `npm` exist.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "asyncapi"

#: The parser's severities: 0 error, 1 warning, 2 information, 3 hint.
ERROR, WARNING = 0, 1


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_official_parser_accepts_the_document_without_errors_or_warnings() -> None:
    assert (TOOL / "node_modules" / "@asyncapi" / "parser").is_dir(), (
        "the parser is not installed: run ./dev test (npm ci --prefix tools/asyncapi)"
    )
    parsed = subprocess.run(
        ["node", str(TOOL / "check.mjs"), str(ROOT / "docs" / "asyncapi.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    diagnostics = [json.loads(line) for line in parsed.stdout.splitlines() if line.strip()]
    serious = [d for d in diagnostics if d["severity"] in (ERROR, WARNING)]
    assert serious == [], "\n".join(f"{d['path']}: {d['message']}" for d in serious[:20])
