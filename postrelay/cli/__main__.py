"""`python -m postrelay.cli ...` (how `run` starts its worker, and how the tests start processes)."""

import sys

from postrelay.cli import main

sys.exit(main())
