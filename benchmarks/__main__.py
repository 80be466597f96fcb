"""`python -m benchmarks`: run the suite and regenerate BENCHMARKS.md (see benchmarks/suite.py)."""

import sys

from benchmarks.suite import main

sys.exit(main())
