"""`python -m worker.cli`: the `dupfinder` command."""

from worker.cli import run

run()
