"""`python -m worker.cli`: the `dupfinder` command."""

import sys

from worker.cli import main

sys.exit(main())
