"""The README's usage example runs as written (keeps the README true)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

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


def test_readme_storage_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    storage_block = next(b for b in blocks if "storage=True" in b)
    monkeypatch.setenv("MOVIE_DIRECTOR_METRICS_DB", str(tmp_path / "h.sqlite3"))
    monkeypatch.chdir(tmp_path)
    for run in (1, 2):  # the second run sees the first one's request
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(storage_block, "README.md", "exec"), {})
        assert out.getvalue().split() == [str(run)]
    assert (tmp_path / "h.sqlite3").exists()
    header = (tmp_path / "comfyui-week.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("service,")
