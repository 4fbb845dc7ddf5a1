"""One home for every rule.

* No module of the package or of the Blender add-on reaches into another
  module's private names (an AST walk; ``_core``, the extension module, is
  a module name anyone may import, but its ``_``-names are private too).
* The window grammar: every path that takes a window (``Monitor.stats``,
  alert rules and the alert manager, exports, the LLM figures) accepts the
  same windows as the same number of seconds, each bounded only by what it
  keeps.
* ``is_loopback``: one answer, from ``movie_director_metrics.net``, for
  every part that asks.
"""

from __future__ import annotations

import ast
import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import movie_director_metrics as mdm
from movie_director_metrics import _core, collectors, net, windows
from movie_director_metrics.alerts import AlertManager, AlertRule
from movie_director_metrics.errors import ConfigError, InvalidWindowError
from movie_director_metrics.llm import LlmTracker, Usage
from movie_director_metrics.llm import is_loopback as llm_is_loopback

ROOT = Path(__file__).resolve().parents[1]
#: (directory, the package name its modules live under)
TREES = ((ROOT / "python" / "movie_director_metrics", "movie_director_metrics"), (ROOT / "blender_addon", "blender_addon"))
#: Our top-level package names: absolute imports of these are ours.
OURS = {name for _, name in TREES}
#: The extension module: its name is public to the package.
EXTENSION = "_core"


# ---- (a) no private names across modules ---------------------------------------


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass(frozen=True)
class _Module:
    name: str  # dotted: movie_director_metrics.alerts.rules
    is_package: bool  # an __init__.py

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]


def _module_of(path: Path, tree_dir: Path, top: str) -> _Module:
    rel = path.relative_to(tree_dir).with_suffix("")
    parts = [top, *rel.parts]
    if parts[-1] == "__init__":
        return _Module(".".join(parts[:-1]), True)
    return _Module(".".join(parts), False)


def _resolve(mod: _Module, level: int, module: str | None) -> str:
    """The absolute name ``from <level dots><module>`` means in ``mod``."""
    if level == 0:
        return module or ""
    base = mod.package.split(".")
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, module] if module else base)


def _is_ours(name: str) -> bool:
    return name.split(".")[0] in OURS


def _module_private_parts(importer: _Module, target: str) -> list[str]:
    """Private segments of module path ``target`` that ``importer`` may not
    use: ``_core`` is public to everyone; any other private module only to
    modules of the package that holds it."""
    bad = []
    parts = target.split(".")
    for i, part in enumerate(parts):
        if not _private(part) or part == EXTENSION:
            continue
        holder = ".".join(parts[:i])
        if importer.package != holder and not importer.package.startswith(holder + "."):
            bad.append(part)
    return bad


def _submodule_exists(package: str, name: str) -> bool:
    """Whether ``package.name`` is a module of ours (a file or a package)."""
    for tree_dir, top in TREES:
        if package == top or package.startswith(top + "."):
            base = tree_dir.joinpath(*package.split(".")[1:])
            return (base / f"{name}.py").is_file() or (base / name / "__init__.py").is_file() or (
                name == EXTENSION and (base / f"{name}.pyi").is_file()
            )
    return False


def private_uses(source: str, mod: _Module) -> list[str]:
    """Where ``source`` (the text of module ``mod``) uses a private name of
    another module of ours: ``from .x import _y``, ``from ..x import _y``,
    ``from . import _private_module`` (outside its package), ``import
    pkg._x``, and ``m._y`` on a name bound to a module of ours (``import
    movie_director_metrics as mdm``, ``from . import view as V``, ``from ..
    import _core``)."""
    tree = ast.parse(source)
    found: list[str] = []
    modules: set[str] = set()  # local names bound to modules of ours
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(mod, node.level, node.module)
            if node.level == 0 and not _is_ours(target):
                continue
            for part in _module_private_parts(mod, target):
                found.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} (module {part})")
            for alias in node.names:
                is_module = _submodule_exists(target, alias.name)
                if is_module:
                    modules.add(alias.asname or alias.name)
                    bad = _module_private_parts(mod, f"{target}.{alias.name}")
                else:
                    bad = [alias.name] if _private(alias.name) else []
                if bad:
                    found.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if not _is_ours(alias.name):
                    continue
                for part in _module_private_parts(mod, alias.name):
                    found.append(f"line {node.lineno}: import {alias.name} (module {part})")
                modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            chain = [node.attr]
            value = node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in modules and node.attr != EXTENSION:
                found.append(f"line {node.lineno}: {value.id}.{'.'.join(reversed(chain))}")
    return found


def _our_files() -> Iterator[tuple[Path, _Module]]:
    for tree_dir, top in TREES:
        for path in sorted(tree_dir.rglob("*.py")):
            if "wheels" in path.relative_to(tree_dir).parts:
                continue
            yield path, _module_of(path, tree_dir, top)


def test_no_module_uses_another_modules_private_names() -> None:
    files = list(_our_files())
    assert len(files) > 40, "the walk found the package and the add-on"
    found = [
        f"{path.relative_to(ROOT)}: {use}"
        for path, mod in files
        for use in private_uses(path.read_text(encoding="utf-8"), mod)
    ]
    assert found == [], "private names used across modules (make them public where they live):\n" + "\n".join(found)


MANAGER = _Module("movie_director_metrics.alerts.manager", False)


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("from .rules import _fmt", True),
        ("from .rules import fmt, _MESSAGE_RE as M", True),
        ("from ..export import _write_atomic", True),
        ("def f():\n    from ..export import _write_atomic", True),  # inside a function too
        ("from movie_director_metrics.export import _write_atomic", True),
        ("from movie_director_metrics import export\nexport._write_atomic", True),
        ("from .. import export as e\ne._new_file_mode(p)", True),
        ("import movie_director_metrics as mdm\nmdm.export._write_atomic", True),
        ("import movie_director_metrics.export\nmovie_director_metrics.export._x", True),
        ("from .. import _core\n_core._stress_record_from_rust_threads()", True),
        ("from .._core import _StoredRow", True),
        ("from ..llm import _buckets", True),  # a private module, outside its package
        ("from ..llm._buckets import Agg", True),
        ("from .. import _core\n_core.Monitor", False),
        ("from .._core import Service", False),
        ("from .rules import fmt_epoch, __doc__", False),
        ("from . import rules\nrules.__name__", False),
        ("import os\nos._exit", False),  # not ours
        ("from collections import _x", False),  # not ours
        ("self._lock\nx._y", False),  # not modules
        ("import movie_director_metrics as mdm\nmdm._core.Monitor", False),
    ],
)
def test_the_private_name_check_catches_each_form(source: str, caught: bool) -> None:
    assert bool(private_uses(source, MANAGER)) == caught, private_uses(source, MANAGER)


def test_a_private_module_is_for_its_own_package() -> None:
    tracker = _Module("movie_director_metrics.llm.tracker", False)
    assert private_uses("from ._buckets import Agg", tracker) == []
    assert private_uses("from . import _buckets", tracker) == []
    assert private_uses("from ._buckets import _Slot", tracker) != []


# ---- (b) one window grammar --------------------------------------------------------

T0 = 1_700_000_040.0  # a whole UTC minute
DAY = 86_400  # what a default Monitor keeps
LLM_KEEPS = 30 * DAY

WINDOWS: list[Any] = [
    "1s", "90s", "1m", "5m", "5min", " 5 min ", "15m", "1h", "1.5h", "6h", "24h", "1d", "25h", "2d", "7d",
    "30d", "31d", "400d", "401d", "+5m", ".5m", "5.m", "90", " 5 m ", "2592000", "2592001", "86400", "86401",
    "0", "0s", "0.4", "0.5", "-1m", "1e3", "1e9d", "inf", "nan", "5 minutes", "5mins", "5M", "1w", "", "   ",
    "m", "min", "٣m", "1_0", "5m5", "\ud800", "5\x00m",
    1, 2, 90, 90.4, 90.5, 2.5, 0.5, 1.0, 0.99, 0, -1, DAY, DAY - 0.5, DAY + 0.4, DAY + 1, LLM_KEEPS,
    LLM_KEEPS + 0.4, LLM_KEEPS + 1, 1e300, 2**63, 2**64, 10**400, math.nan, math.inf, -math.inf, True, False,
    [5], {"s": 5},
]  # fmt: skip
# None is no window but "the default" to Monitor.stats and export (and not
# accepted as a window by rules or the LLM figures): not compared here.


class Paths:
    """Every window-taking path of the package, on one monitor with one
    request recorded; each answers the seconds it used, or None when it
    refused the window with the error it documents."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mdm-house-"))
        self.monitor = mdm.Monitor(manual_clock=True, start_time=T0)
        self.monitor.service("svc").record(5.0)
        self.llm = LlmTracker(self.monitor)
        self.llm.record("openai", "gpt-4o", Usage(input_uncached=10, output=5), 100.0)  # at a bucket start: in every window

    def engine(self, w: Any) -> int | None:
        try:
            return self.monitor.stats("svc", w).window_s
        except InvalidWindowError:  # a lone surrogate included: reported as a bad window
            return None

    def rule(self, w: Any) -> int | None:
        try:
            return AlertRule(name="r", target="svc", metric="p95_ms", comparator=">", threshold=1.0, window=w).window_s
        except ConfigError:
            return None

    def manager(self, w: Any) -> int | None:
        try:
            rule = AlertRule(name="r", target="svc", metric="p95_ms", comparator=">", threshold=1.0, window=w)
            AlertManager(self.monitor).add_rule(rule)
        except ConfigError:
            return None
        return rule.window_s

    def export(self, w: Any) -> int | None:
        try:
            path = self.monitor.export(self.dir / "x.json", "json", window=w, resolution="raw")
        except InvalidWindowError:
            return None
        seconds = json.loads(path.read_text(encoding="utf-8"))["window"]["seconds"]
        assert isinstance(seconds, int)
        return seconds

    def llm_stats(self, w: Any) -> int | None:
        try:
            (row,) = self.llm.stats(w)
        except InvalidWindowError:
            return None
        return row.window_s

    def llm_active(self, w: Any) -> bool:
        try:
            self.llm.active_models(w)
        except InvalidWindowError:
            return False
        return True

    def grammar(self, w: Any, max_s: int = windows.NO_LIMIT) -> int | None:
        try:
            return windows.window_seconds(w, max_s)
        except InvalidWindowError:
            return None


@pytest.fixture(scope="module")
def paths() -> Paths:
    return Paths()


def check_window_agrees(p: Paths, w: Any) -> None:
    grammar = p.grammar(w)  # the grammar alone, no upper bound
    engine = p.engine(w)  # a default Monitor keeps a day
    assert p.grammar(w, DAY) == engine, f"Monitor.stats({w!r}) = {engine}"
    if engine is not None:
        assert grammar == engine
    if grammar is not None and grammar < DAY:
        assert engine == grammar, f"Monitor.stats({w!r}) = {engine}, the grammar: {grammar}"
    assert p.rule(w) == grammar, f"AlertRule(window={w!r})"  # the manager bounds it, below
    assert p.manager(w) == engine, f"AlertManager.add_rule(window={w!r})"
    assert p.export(w) == engine, f"export(window={w!r})"
    llm = grammar if grammar is not None and grammar <= LLM_KEEPS else None  # the LLM buckets keep 30 days
    assert p.llm_stats(w) == llm, f"LlmTracker.stats({w!r})"
    assert p.llm_active(w) == (llm is not None), f"LlmTracker.active_models({w!r})"


@pytest.mark.parametrize("w", WINDOWS, ids=repr)
def test_every_path_reads_a_window_the_same(paths: Paths, w: Any) -> None:
    check_window_agrees(paths, w)


def test_the_grammar_answers_the_documented_windows() -> None:
    expected = {"90s": 90, "5m": 300, "5min": 300, "1h": 3600, "7d": 7 * DAY, "90": 90, 90: 90, 90.4: 90, " 5 m ": 300}
    assert {w: windows.window_seconds(w) for w in expected} == expected
    assert _core.parse_window("5min") == 300  # the engine's own grammar, which the wrapper does not change
    for bad in ("5 minutes", "0", True, None, "\ud800", "1w"):
        with pytest.raises(InvalidWindowError, match=r"window=.* is not understood: expected e\.g\. .*\"5m\""):
            windows.window_seconds(bad)
    with pytest.raises(InvalidWindowError, match=r"duration='2h' .* from 1 to 3600"):
        windows.window_seconds("2h", 3600, name="duration")


def test_alert_rules_take_5min_like_monitor_stats(paths: Paths) -> None:
    """The bug: ``AlertRule(window="5min")`` raised while ``stats(s, "5min")`` worked."""
    assert paths.monitor.stats("svc", "5min").window_s == 300
    rule = AlertRule(name="r", target="svc", metric="p95_ms", comparator=">", threshold=1.0, window="5min")
    assert rule.window_s == 300
    AlertManager(paths.monitor).add_rule(rule)


WINDOW_TEXT = st.text(alphabet="0123456789. +-_smhdinMe٣\t", max_size=8)
WINDOW_NUMBER = st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=-10, max_value=10**20)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=WINDOW_TEXT | WINDOW_NUMBER | st.floats(min_value=0, max_value=2 * DAY))
def test_every_path_reads_any_window_the_same(paths: Paths, w: Any) -> None:
    check_window_agrees(paths, w)


# ---- (c) is_loopback ---------------------------------------------------------------

LOOPBACK = [
    "localhost", "LOCALHOST", "localhost.", "LocalHost.", "api.localhost", "localhost.localdomain",
    "127.0.0.1", "127.0.0.2", "127.1.2.3", "127.255.255.254",
    "::1", "[::1]", "0:0:0:0:0:0:0:1", "0000:0000:0000:0000:0000:0000:0000:0001", "::ffff:127.0.0.1",
    "[::ffff:127.0.0.1]",
]  # fmt: skip
NOT_LOOPBACK = [
    "example.com", "10.0.0.1", "", "127.example.com", "127.0.0.1.example.com", "localhost.example.com",
    "localhost..", ".localhost", "a..localhost", "notlocalhost", "128.0.0.1", "0.0.0.0", "::", "::2",
    "::ffff:10.0.0.1", "192.168.1.1", "[::1", " localhost",
]  # fmt: skip


def _url(host: str) -> str:
    return f"http://[{host}]:8080/v1" if ":" in host and not host.startswith("[") else f"http://{host}:8080/v1"


@pytest.mark.parametrize(("host", "expected"), [(h, True) for h in LOOPBACK] + [(h, False) for h in NOT_LOOPBACK])
def test_is_loopback_table(host: str, expected: bool) -> None:
    assert net.is_loopback(host) is expected
    assert collectors.is_loopback(host) is expected  # the collectors and the CLI ask net
    if host.strip() == host and "[" not in host.strip("[]") and "]" not in host.strip("[]"):
        assert net.is_loopback_url(_url(host)) is expected, _url(host)
        assert llm_is_loopback(_url(host)) is expected, _url(host)  # LLM prices: local servers are free


def test_is_loopback_urls_and_non_strings() -> None:
    for url in ("http://127.0.0.1:8000/v1", "localhost:1234", "http://[::1]:8080", "https://api.localhost/"):
        assert net.is_loopback_url(url), url
    for url in ("https://api.openai.com/v1", "http://[bad", "", None, "http://127.0.0.1.nip.io/"):
        assert not net.is_loopback_url(url), url
    assert net.is_loopback(None) is False
    assert net.is_loopback(b"localhost") is False  # type: ignore[arg-type]


def test_is_loopback_has_one_home() -> None:
    """No module but ``net`` defines a loopback check; the collectors, the
    CLI, LLM prices and the Blender add-on import it."""
    homes = []
    users = set()
    for path, mod in _our_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "loopback" in node.name.lower():
                homes.append(f"{mod.name}.{node.name}")
            if isinstance(node, ast.ImportFrom) and _resolve(mod, node.level, node.module) == "movie_director_metrics.net":
                users.add(mod.name)
    assert homes == ["movie_director_metrics.net.is_loopback", "movie_director_metrics.net.is_loopback_url"]
    assert {
        "blender_addon.config",
        "movie_director_metrics.cli",
        "movie_director_metrics.collectors",
        "movie_director_metrics.collectors.openai",
        "movie_director_metrics.collectors.scheduler",
        "movie_director_metrics.llm.prices",
    } <= users


# ---- no import cycles -------------------------------------------------------------------


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import that can run (module level and inside functions), not
    the ones under ``if TYPE_CHECKING:`` (types only, never executed)."""
    out: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def test_the_package_has_no_import_cycles() -> None:
    """The modules of the package import each other without a cycle (at
    import time or lazily inside functions); TYPE_CHECKING imports are
    annotations only.  The extension ``_core`` is a leaf."""
    root = ROOT / "python" / "movie_director_metrics"
    modules: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules}
                continue
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    graph[name].add(sub)
                elif sub != "movie_director_metrics._core" and target in modules:
                    graph[name].add(target)
    # A package importing its own submodules (its __init__) is the normal
    # direction; a cycle is a path back to where it started.
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str], seen: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == path[0]:
                cycles.append([*path, nxt])
            elif nxt not in seen and nxt > path[0]:  # report each cycle once, from its smallest name
                seen.add(nxt)
                walk(nxt, [*path, nxt], seen)

    for start in sorted(graph):
        walk(start, [start], {start})
    assert len(modules) > 40
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles[:10])
