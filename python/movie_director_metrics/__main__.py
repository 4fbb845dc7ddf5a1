"""``python -m movie_director_metrics``: the same as the
``movie-director-metrics`` command."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
