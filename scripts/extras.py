"""Prints pyproject.toml's requirements, one per line, for ``pip install``
(the Makefile installs the test and bench extras without building the
package first; pyproject.toml stays their one home).

Usage: python scripts/extras.py NAME...   (``dependencies`` = the runtime
requirements, any other NAME = that optional extra)
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path


def requirements(names: list[str]) -> list[str]:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    out: list[str] = []
    for name in names:
        out += project["dependencies"] if name == "dependencies" else project["optional-dependencies"][name]
    return out


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
