"""Imports an installed wheel and exercises it once (run by `make wheel-check`)."""

import json
import sys
import tempfile
from pathlib import Path

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
# Storage, export and the shipped JSON Schema work from the installed wheel.
with tempfile.TemporaryDirectory() as d:
    with mdm.Monitor(storage=Path(d) / "h.sqlite3", manual_clock=True, start_time=1_700_000_000.0) as m:
        m.service("smoke").record(5.0)
        m.advance(120)
        out = m.export(Path(d) / "e.json", "json", window="1h")
    with mdm.Monitor(storage=Path(d) / "h.sqlite3", manual_clock=True, start_time=1_700_000_200.0) as m:
        assert m.stats("smoke", "7d").count == 1
    from movie_director_metrics import export

    schema = json.loads(export.SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert json.loads(out.read_text(encoding="utf-8"))["services"][0]["summary"]["requests"] == 1
    assert m.openmetrics().endswith("# EOF\n")
print(f"wheel ok on CPython {sys.version.split()[0]} ({mdm._core.__file__.rsplit('/', 1)[-1]})")
