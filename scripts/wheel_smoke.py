"""Imports an installed wheel and exercises it once (run by `make wheel-check`)."""

import sys

import numpy as np

import movie_director_metrics as mdm

with mdm.Monitor(manual_clock=True, start_time=1_700_000_000.0) as m:
    s = m.service("smoke")
    s.record(12.0)
    s.record_many(np.array([1.0, 2.0]))
    assert m.stats("smoke").count == 3
td = mdm.TDigest()
td.update_many(np.arange(1000.0))
assert td.quantile(0.5) == 499.5
print(f"wheel ok on CPython {sys.version.split()[0]} ({mdm._core.__file__.rsplit('/', 1)[-1]})")
