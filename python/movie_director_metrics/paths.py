"""Per-user locations: the platform's data directory (history) and config
directory (backends.toml, alerts.toml), and ``~`` expansion of the paths a
user passes in.

The rules are platformdirs' (``user_data_dir`` / ``user_config_dir`` with
``appauthor=False``), written out here instead of importing it: the
Blender extension would have to bundle it as a second wheel, and Blender
installs every extension's wheels into one shared ``site-packages``, where
another extension's platformdirs of a different version would collide
with ours.  Where the rules differ from platformdirs' it is said below.

- Windows: data (the history) in ``%LOCALAPPDATA%\\movie_director_metrics``,
  config (backends.toml, alerts.toml) in ``%APPDATA%\\movie_director_metrics``;
  ``~\\AppData\\Local`` / ``~\\AppData\\Roaming`` when a variable is unset.
- macOS: ``~/Library/Application Support/movie_director_metrics`` (both kinds).
- Others (Linux, the BSDs): ``$XDG_DATA_HOME`` / ``$XDG_CONFIG_HOME``, else
  ``~/.local/share`` / ``~/.config``, then ``/movie_director_metrics``.

Windows: the history is machine-local (``%LOCALAPPDATA%``, platformdirs'
default): a roaming profile copies its files at every logon and logoff,
and folder redirection may put ``%APPDATA%`` on a network share, where
SQLite's WAL mode does not work.  The two small config files roam
with the user (``%APPDATA%``, platformdirs' ``roaming=True``).

macOS: ``$XDG_*`` are not read (recent platformdirs releases read them):
an app started from the Dock or Finder never sees a shell's variables, so
honouring them would give the command line and a GUI-started program two
different histories.

Others (Linux, the BSDs): a ``$XDG_*`` value that is empty, blank or not
an absolute path is ignored, as the XDG Base Directory specification
says ("If an implementation encounters a relative path in any of these
variables it should consider the path invalid and ignore it");
platformdirs uses a relative one as it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path, PurePath
from types import ModuleType
from typing import Literal, TypeVar

APP = "movie_director_metrics"

P = TypeVar("P", bound=PurePath)

#: (environment variable, default below the home directory) per platform
#: family and kind; ``win32`` reads the variable, else the default.
_WINDOWS = {"data": ("LOCALAPPDATA", ("AppData", "Local")), "config": ("APPDATA", ("AppData", "Roaming"))}
_XDG = {"data": ("XDG_DATA_HOME", (".local", "share")), "config": ("XDG_CONFIG_HOME", (".config",))}


def platform_dir(kind: Literal["data", "config"], platform: str, environ: Mapping[str, str], home: P) -> P:
    """The per-user ``kind`` directory of ``platform`` (a ``sys.platform``
    value), without the application's folder.  Pure: the result is of
    ``home``'s path class, so a ``PureWindowsPath`` home gives the
    Windows answer on any OS (the tests use that)."""
    if kind not in ("data", "config"):
        raise ValueError(f"kind={kind!r}: expected 'data' or 'config'")
    flavor = type(home)
    if platform == "darwin":
        return home / "Library" / "Application Support"
    var, default = (_WINDOWS if platform == "win32" else _XDG)[kind]
    value = environ.get(var, "").strip()
    if value and flavor(value).is_absolute():
        return flavor(value)
    return home.joinpath(*default)


def user_dir(kind: Literal["data", "config"]) -> Path:
    """``<platform dir>/movie_director_metrics`` for this OS (see the module
    docs): ``kind="data"`` holds the history, ``"config"`` backends.toml
    and alerts.toml.  Not created here."""
    return platform_dir(kind, sys.platform, os.environ, Path.home()) / APP


def expanded(text: str, pathmod: ModuleType = os.path) -> str:
    """``text`` with a leading ``~`` or ``~user`` expanded by ``pathmod``
    (``os.path``; ``ntpath`` gives Windows' rules on any OS), kept as
    written when that home is unknown.  Nothing else is touched: drive
    letters, UNC shares, spaces and non-ASCII names come back as they were."""
    return str(pathmod.expanduser(text))


def expand_user(path: str | os.PathLike[str], what: str, error: type[Exception]) -> Path:
    """``path`` with a leading ``~`` expanded (``~name`` of a user that does
    not exist is kept as written).  ``error``, naming ``what`` and the value,
    for a path holding a NUL character: no file name can, and the standard
    library's own ``ValueError("embedded null byte")`` says neither which
    argument nor what was expected."""
    text = os.fspath(path)
    if "\x00" in text:
        raise error(f"{what} {text!r} holds a NUL character: expected a file path")
    return Path(expanded(text))
