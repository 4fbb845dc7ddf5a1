"""The README's usage example runs as written (keeps the README true)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "the README has no python example"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "README.md", "exec"), {})
    printed = out.getvalue().splitlines()
    # count (2 records + 3 in the batch + the timed block), success rate,
    # p95, uptime, error counts
    count, rate, p95, uptime, errors = printed[0].split(" ", 4)
    assert (int(count), float(rate), float(uptime), errors) == (6, 5 / 6, 100.0, "{'timeout': 1}")
    assert 182.5 < float(p95) <= 30_000.0
    assert printed[1].startswith("[('comfyui', ")
