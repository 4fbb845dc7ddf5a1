"""Per-user locations: the platform's data directory (history) and config
directory (backends.toml, alerts.toml)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

APP = "movie_director_metrics"


def user_dir(kind: Literal["data", "config"]) -> Path:
    """``<platform dir>/movie_director_metrics``: XDG on Linux
    (``$XDG_DATA_HOME`` / ``$XDG_CONFIG_HOME``, else ``~/.local/share`` /
    ``~/.config``), ``~/Library/Application Support`` on macOS and
    ``%APPDATA%`` on Windows (both kinds)."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    elif kind == "data":
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return base / APP


def expand_user(path: str | os.PathLike[str], what: str, error: type[Exception]) -> Path:
    """``path`` with a leading ``~`` expanded (``~name`` of a user that does
    not exist is kept as written).  ``error``, naming ``what`` and the value,
    for a path holding a NUL character: no file name can, and the standard
    library's own ``ValueError("embedded null byte")`` says neither which
    argument nor what was expected."""
    text = os.fspath(path)
    if "\x00" in text:
        raise error(f"{what} {text!r} holds a NUL character: expected a file path")
    try:
        return Path(text).expanduser()
    except RuntimeError:
        return Path(text)
