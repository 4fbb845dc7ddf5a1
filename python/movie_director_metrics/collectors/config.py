"""Backend configuration: ``backends.toml``, its location, and the
built-in defaults (the standard local ports).

::

    [defaults]                      # optional; applies to every backend
    interval_s = 1.0
    connect_timeout_s = 0.5
    read_timeout_s = 2.0

    [[backend]]
    name = "comfyui"                # service name in the engine
    kind = "comfyui"                # comfyui | a1111 | ollama | openai | http
    url = "http://127.0.0.1:8188"

    [[backend]]
    name = "gpt"
    kind = "openai"
    url = "https://api.openai.com"
    api_key_env = "OPENAI_API_KEY"  # the variable's name; the key never enters the file
    # api_key_file = "~/.config/keys/openai"  # or a file only you can read (chmod 600)
    # interval_s: hosted APIs are probed every 300 s unless set

    [[backend]]
    name = "render-farm"
    kind = "http"
    url = "http://127.0.0.1:9000"
    path = "/healthz"
    expect_status = 200
"""

from __future__ import annotations

import os
import tomllib
import unicodedata
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import _core
from ..errors import ConfigError
from ..net import is_hosted
from ..paths import expand_user, user_dir

#: Environment variable naming the config file (overrides the default location).
CONFIG_ENV = "MOVIE_DIRECTOR_METRICS_CONFIG"

KINDS: tuple[str, ...] = ("comfyui", "a1111", "ollama", "openai", "http")

#: Seconds between probes when a backend sets no ``interval_s``: a
#: machine of the user's own (loopback, the LAN) every second, a hosted
#: service (:func:`movie_director_metrics.net.is_hosted`) every 5 minutes —
#: a paid API probed every second would see ~86 400 requests a day.
LOCAL_INTERVAL_S = 1.0
HOSTED_INTERVAL_S = 300.0

#: Largest key file read (a key is a line; anything bigger is not one).
MAX_KEY_FILE_BYTES = 16 * 1024

#: (lowest, highest) accepted for each number, with its unit.
_RANGES: dict[str, tuple[float, float, str]] = {
    "interval_s": (0.1, 86_400.0, "seconds"),
    "connect_timeout_s": (0.05, 10.0, "seconds"),
    "read_timeout_s": (0.05, 120.0, "seconds"),
    "expect_status": (100, 599, "an HTTP status"),
}


@dataclass(frozen=True)
class BackendConfig:
    """One backend to watch."""

    name: str
    kind: str
    url: str
    interval_s: float = LOCAL_INTERVAL_S
    connect_timeout_s: float = 0.5
    read_timeout_s: float = 2.0
    api_key_env: str | None = None
    #: A file holding the key, used when ``api_key_env`` is unset or empty;
    #: refused unless only its owner can read it (see :func:`read_key_file`).
    api_key_file: str | None = None
    enabled: bool = True
    #: ``http`` kind: the path probed and the status that means "up".
    path: str = "/"
    expect_status: int = 200

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """The URL's port, or its scheme's default."""
        parts = urlsplit(self.url)
        try:
            explicit = parts.port
        except ValueError:
            explicit = None
        return explicit if explicit is not None else (443 if parts.scheme == "https" else 80)

    @property
    def root_url(self) -> str:
        """``scheme://host:port`` without the URL's path."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    def api_key(self) -> str | None:
        """The key: from the environment variable the config names when it
        is set, else from the key file (surrounding whitespace, such as the
        newline a file ends with, removed); None when neither gives one,
        and when the key file is refused (:meth:`key_problem` says why)."""
        key = os.environ.get(self.api_key_env, "").strip() if self.api_key_env else ""
        if key or not self.api_key_file:
            return key or None
        try:
            return read_key_file(self.api_key_file)
        except ConfigError:
            return None

    def key_source(self) -> str | None:
        """Where the key comes from, for messages (never the key):
        ``$VAR``, ``key file PATH``, or None when none is configured."""
        if self.api_key_env and os.environ.get(self.api_key_env, "").strip():
            return f"${self.api_key_env}"
        if self.api_key_file:
            return f"key file {self.api_key_file}"
        return f"${self.api_key_env}" if self.api_key_env else None

    def key_problem(self) -> str | None:
        """Why a configured key is not used (the variable is unset, the key
        file is missing or readable by others), or None."""
        if self.api_key_env and os.environ.get(self.api_key_env, "").strip():
            return None
        if self.api_key_file:
            try:
                read_key_file(self.api_key_file)
            except ConfigError as e:
                return str(e)
            return None
        if self.api_key_env:
            return f"${self.api_key_env} is not set in this process's environment"
        return None

    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header, if a key is set.  ``ConfigError``
        (naming the variable, never the key) for a key an HTTP header cannot
        carry: ``http.client`` would refuse it with a message quoting the
        whole header, key included, which would end up in the status."""
        key = self.api_key()
        if key is None:
            return {}
        if not (key.isascii() and key.isprintable()):
            raise ConfigError(
                f"backend {self.name!r}: {self.key_source()} holds a character an HTTP header cannot carry "
                "(a line break inside the key?): expected the key as printable ASCII on one line"
            )
        return {"Authorization": f"Bearer {key}"}


#: What runs when there is no config file: every kind on its standard local port.
DEFAULT_BACKENDS: tuple[BackendConfig, ...] = (
    BackendConfig("comfyui", "comfyui", "http://127.0.0.1:8188"),
    BackendConfig("a1111", "a1111", "http://127.0.0.1:7860"),
    BackendConfig("ollama", "ollama", "http://127.0.0.1:11434"),
    BackendConfig("lmstudio", "openai", "http://127.0.0.1:1234"),
)


def read_key_file(path: str | os.PathLike[str]) -> str:
    """The key in ``path`` (``~`` expanded; whitespace around it removed).
    ``ConfigError`` naming the file, never its content, when it is missing,
    empty, larger than :data:`MAX_KEY_FILE_BYTES` or not text, and on
    POSIX systems when anyone but its owner may read it or it is not owned
    by this user (as ``ssh`` refuses a private key): ``chmod 600 PATH``.
    Windows has no mode bits to check: the file's ACL is the user's to keep
    (the default ACL of a file under the profile directory is owner-only)."""
    p = expand_user(path, "api_key_file", ConfigError)
    try:
        with open(p, "rb") as f:
            st = os.fstat(f.fileno())
            problem = key_file_mode_problem(st.st_mode, st.st_uid, posix=os.name == "posix")
            if problem is not None:
                raise ConfigError(f"key file {p}: {problem}")
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"key file {p}: no such file") from None
    except OSError as e:
        raise ConfigError(f"key file {p}: cannot be read: {e.strerror or e}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"key file {p}: larger than {MAX_KEY_FILE_BYTES} bytes; expected one line holding the key")
    try:
        key = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"key file {p}: not UTF-8 text; expected one line holding the key") from None
    if not key:
        raise ConfigError(f"key file {p}: empty; expected one line holding the key")
    return key


def key_file_mode_problem(mode: int, uid: int, *, posix: bool) -> str | None:
    """Why a key file with ``mode`` and owner ``uid`` is refused, or None
    (its own function so the tests drive both OS branches)."""
    if not posix:
        return None
    if uid != os.getuid():
        return f"owned by uid {uid}, not by this user (uid {os.getuid()}); expected a file of your own"
    if mode & 0o077:
        return f"mode {mode & 0o777:o} lets others read it; expected only the owner (chmod 600)"
    return None


def default_config_path() -> Path:
    """``$MOVIE_DIRECTOR_METRICS_CONFIG``, else ``backends.toml`` in the
    platform's config directory (see :func:`movie_director_metrics.paths.user_dir`)."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return expand_user(env, CONFIG_ENV, ConfigError)  # "~name" of an unknown user: kept as written
    return user_dir("config") / "backends.toml"


def default_alerts_path(config_path: Path | None = None) -> Path:
    """``alerts.toml`` next to the backends file (``config_path``, default
    :func:`default_config_path`): the CLI and the Blender add-on find the
    alert rules and notification targets here."""
    return (config_path if config_path is not None else default_config_path()).with_name("alerts.toml")


def load_config(path: str | os.PathLike[str] | None = None) -> list[BackendConfig]:
    """The backends in ``path`` (default: :func:`default_config_path`); the
    built-in defaults when no path was given and the default file does not
    exist.  ``ConfigError`` names the file, the key and what was expected."""
    explicit = path is not None
    p = Path(path) if path is not None else default_config_path()
    if not p.exists():
        if explicit or os.environ.get(CONFIG_ENV):
            raise ConfigError(f"{p}: no such config file")
        return list(DEFAULT_BACKENDS)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:
        # TOMLDecodeError, and what tomllib lets through: an integer past
        # Python's 4300-digit limit (ValueError), arrays nested thousands
        # deep (RecursionError).
        why = e if isinstance(e, tomllib.TOMLDecodeError) else f"{type(e).__name__}: {e}"
        raise ConfigError(f"{p}: not valid TOML: {why}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot be read: {e}") from None
    return parse_config(data, str(p))


def _name_problem(name: str) -> str | None:
    """Why the engine would refuse ``name`` as a service name (its
    ``check_name``: 1 to ``MAX_NAME_CHARS`` characters, no control characters, no
    whitespace but the space; UTF-8, so no lone surrogates), or None."""
    if len(name) > _core.MAX_NAME_CHARS:
        return f"{len(name)} characters"
    for c in name:
        if unicodedata.category(c) in ("Cc", "Cs") or (c.isspace() and c != " "):
            return f"character {c!r} is not printable"
    return None


def parse_config(data: dict[str, Any], source: str = "<config>") -> list[BackendConfig]:
    """Backends from parsed TOML (see the module docs for the layout)."""
    unknown = set(data) - {"defaults", "backend"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key {sorted(unknown)[0]!r}: expected [defaults] and [[backend]] tables")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{source}: [defaults] must be a table")
    backends = data.get("backend", [])
    if not isinstance(backends, list):
        raise ConfigError(f"{source}: 'backend' must be an array of tables ([[backend]])")
    allowed = {f.name for f in fields(BackendConfig)}
    for key in defaults:
        if key not in allowed - {"name", "kind", "url"}:
            raise ConfigError(f"{source}: [defaults].{key}: unknown key; expected one of {sorted(allowed - {'name', 'kind', 'url'})}")
    out: list[BackendConfig] = []
    seen: set[str] = set()
    for i, raw in enumerate(backends):
        where = f"{source}: backend[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table")
        entry = {**defaults, **raw}
        if "api_key" in raw or "key" in raw:
            raise ConfigError(
                f"{where}: API keys are not kept in the file; set api_key_env to the name of an environment "
                "variable, or api_key_file to a file only you can read"
            )
        for key in entry:
            if key not in allowed:
                raise ConfigError(f"{where}.{key}: unknown key; expected one of {sorted(allowed)}")
        for key in ("name", "kind", "url"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ConfigError(f"{where}.{key}: missing; expected a non-empty string")
        where = f"{source}: backend[{i}] ({entry['name']!r})"
        problem = _name_problem(entry["name"])
        if problem is not None:
            raise ConfigError(f"{where}.name: {problem}; expected 1 to {_core.MAX_NAME_CHARS} printable characters (the engine's service name)")
        if entry["kind"] not in KINDS:
            raise ConfigError(f"{where}.kind = {entry['kind']!r}: expected one of {', '.join(KINDS)}")
        try:
            parts = urlsplit(entry["url"])
            parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
        except ValueError as e:
            raise ConfigError(f"{where}.url = {entry['url']!r}: {e}; expected http(s)://host[:port]") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}.url = {entry['url']!r}: expected http(s)://host[:port]")
        for key, (lo, hi, unit) in _RANGES.items():
            if key in entry:
                v = entry[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                    raise ConfigError(f"{where}.{key} = {v!r}: expected {unit} from {lo:g} to {hi:g}")
        for key in ("api_key_env", "api_key_file", "path"):
            if key in entry and not isinstance(entry[key], str):
                raise ConfigError(f"{where}.{key} = {entry[key]!r}: expected a string")
        if "enabled" in entry and not isinstance(entry["enabled"], bool):
            raise ConfigError(f"{where}.enabled = {entry['enabled']!r}: expected true or false")
        if entry["name"] in seen:
            raise ConfigError(f"{where}.name = {entry['name']!r}: used twice; names must be unique")
        seen.add(entry["name"])
        if "interval_s" not in entry:
            entry["interval_s"] = HOSTED_INTERVAL_S if is_hosted(parts.hostname) else LOCAL_INTERVAL_S
        out.append(BackendConfig(**entry))
    return out
