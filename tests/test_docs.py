"""The user guide in docs/ stays true: its examples run, its links resolve,
its names exist.

How a fenced block in ``docs/*.md`` is treated (the convention is also
written down for contributors in docs/architecture.md):

* ``python``: run, in document order, in one namespace per page (a page
  reads like one session), with stdout captured.  The working directory is
  a fresh sandbox per page and ``MOVIE_DIRECTOR_METRICS_DB`` /
  ``MOVIE_DIRECTOR_METRICS_CONFIG`` / ``XDG_*`` point into it; the config
  file there lists two simulated backends on loopback (``comfyui`` and
  ``llm``, from ``movie_director_metrics.simulator``), so "your backends"
  are real HTTP servers.  Monitors, servers and collectors a page leaves in
  its namespace are closed afterwards.
* ``sh``: every command is run or checked.  ``movie-director-metrics ARGS``
  (and ``python -m movie_director_metrics ARGS``) runs as ``python -m
  movie_director_metrics ARGS`` in the sandbox and must exit 0; ``watch``
  without ``--once`` and ``serve`` keep running, so they are started,
  seen to come up (``serve`` on a free port, scraped once), and stopped
  with Ctrl-C (SIGINT), which must also exit 0.  ``python -c`` runs too.
  Build and tooling commands, which take minutes, are checked instead of
  run: ``make T`` with ``make -n T`` (the target exists and expands),
  ``cargo`` by the packages, tests and examples it names, ``pip install``
  by the extras and paths it names, ``python -m pytest``/``python
  scripts/...`` by the paths.  Any other command fails the test.
* ``toml``: parsed; ``[[backend]]`` tables with the collectors' config
  parser, ``[[rule]]`` tables with the alert-rule parser (and added to an
  alert manager).  ``json``: parsed; a price table with ``PriceTable``.
  ``promql``: every metric and label must be one ``/metrics`` emits.
  ``yaml``: the scrape target's port must be the server's default.
* ``<!-- test: file NAME -->`` before a ``toml`` or ``json`` block: the
  block is saved as NAME in the sandbox, as the page tells the reader to.
* ``text``: not run (illustrations, layouts) unless marked
  ``<!-- test: output -->``: then it must equal the stdout of the block
  before it, where a line ``...`` matches any lines and ``...`` inside a
  line matches any text.
* ``<!-- test: skip live-backend -->`` / ``<!-- test: skip blender -->``
  on the line before a block: not run, because it needs a real hosted or
  local AI backend, or Blender.  These are the only exceptions, counted in
  :data:`EXPECTED_SKIPS`; a skipped python block must still compile and a
  skipped ``movie-director-metrics`` command must still parse.

Besides: every relative link (and ``#anchor``) in docs/ resolves; the
Grafana dashboard parses and uses only metric families, labels and label
values that ``Monitor.openmetrics()`` emits (rendered with every kind of
data); and the reference pages name every field, metric, error type and
family the code has.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GRAFANA = DOCS / "grafana" / "movie_director_metrics.json"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))

#: Blocks allowed not to run, by reason.  Adding one is a visible change here.
EXPECTED_SKIPS = {"live-backend": 4, "blender": 3}
LANGUAGES = {"python", "sh", "toml", "json", "yaml", "promql", "text"}
#: Labels whose values form a fixed vocabulary the exporter defines.
VOCABULARY_LABELS = {"quantile", "outcome", "state", "window", "result", "kind"}

_FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*test:\s*(.*?)\s*-->$")


# ---- reading the pages --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Block:
    page: str
    line: int  # 1-based line of the first code line
    lang: str
    code: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"

    @property
    def skip_reason(self) -> str | None:
        if self.marker and self.marker.startswith("skip"):
            return self.marker.removeprefix("skip").strip()
        return None


def blocks(page: str) -> list[Block]:
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2)
        prev = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mk = _MARKER.match(prev)
        j = i + 1
        while j < len(lines) and lines[j].strip() != fence:
            j += 1
        assert j < len(lines), f"docs/{page}:{i + 1}: unclosed code fence"
        out.append(Block(page, i + 2, lang, "\n".join(lines[i + 1 : j]) + "\n", mk.group(1) if mk else None))
        i = j + 1
    return out


def prose(page: str) -> str:
    """The page without its code blocks and inline code (for links)."""
    text = re.sub(r"^(`{3,}).*?^\1\s*$", "", (DOCS / page).read_text(encoding="utf-8"), flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def all_blocks() -> list[Block]:
    return [b for p in PAGES for b in blocks(p)]


# ---- the sandbox ------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulator() -> Iterator[Any]:
    from movie_director_metrics.simulator import Simulator

    with Simulator(seed=7) as sim:
        yield sim


@dataclasses.dataclass
class Sandbox:
    dir: Path
    env: dict[str, str]
    last_stdout: str = ""


def make_sandbox(base: Path, sim: Any) -> Sandbox:
    base.mkdir(parents=True, exist_ok=True)
    config = base / "config" / "movie_director_metrics" / "backends.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'[[backend]]\nname = "comfyui"\nkind = "comfyui"\nurl = "{sim.comfyui.url}"\n\n'
        f'[[backend]]\nname = "llm"\nkind = "openai"\nurl = "{sim.llm.url}"\n',
        encoding="utf-8",
    )
    env = {
        "MOVIE_DIRECTOR_METRICS_DB": str(base / "data" / "movie_director_metrics" / "metrics.sqlite3"),
        "MOVIE_DIRECTOR_METRICS_CONFIG": str(config),
        "XDG_DATA_HOME": str(base / "data"),
        "XDG_CONFIG_HOME": str(base / "config"),
        "COLUMNS": "120",
    }
    return Sandbox(base, env)


def _close_leftovers(namespace: dict[str, Any]) -> None:
    from movie_director_metrics import Monitor, _core
    from movie_director_metrics.collectors.scheduler import Collectors
    from movie_director_metrics.metrics_server import MetricsServer
    from movie_director_metrics.simulator import Simulator

    for value in namespace.values():
        if isinstance(value, (Monitor, _core.Monitor, MetricsServer, Simulator)):
            value.close()
        elif isinstance(value, Collectors):
            value.stop()


# ---- running python -------------------------------------------------------------------


def run_python(block: Block, namespace: dict[str, Any], box: Sandbox) -> None:
    code = compile("\n" * (block.line - 1) + block.code, f"docs/{block.page}", "exec")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, namespace)
    box.last_stdout = out.getvalue()


# ---- running and checking shell commands ----------------------------------------------


def commands(block: Block) -> list[list[str]]:
    """The block's commands as argv lists (continuations joined, comments dropped)."""
    joined = block.code.replace("\\\n", " ")
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def _strip_env(argv: list[str]) -> list[str]:
    while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):
        argv = argv[1:]
    return argv


def _is_python(word: str) -> bool:
    return Path(word).name in ("python", "python3", "python3.11")


def run_sh(block: Block, box: Sandbox, *, execute: bool) -> None:
    outputs = []
    for argv in commands(block):
        argv = _strip_env(argv)
        where = f"{block.where}: {shlex.join(argv)}"
        head = argv[0]
        if head == "movie-director-metrics":
            outputs.append(mdm(argv[1:], box, where, execute=execute))
        elif _is_python(head) and argv[1:3] == ["-m", "movie_director_metrics"]:
            outputs.append(mdm(argv[3:], box, where, execute=execute))
        elif _is_python(head) and argv[1:2] == ["-c"]:
            compile(argv[2], where, "exec")
            if execute:
                outputs.append(_run([sys.executable, "-c", argv[2]], box, where).stdout)
        elif _is_python(head) and argv[1:3] == ["-m", "pytest"]:
            check_paths([a.split("::")[0] for a in argv[3:] if not a.startswith("-") and ("/" in a or a.endswith(".py"))], where)
        elif _is_python(head) and argv[1:3] == ["-m", "pip"]:
            check_pip(argv[3:], where)
        elif _is_python(head) and len(argv) > 1 and argv[1].endswith(".py"):
            check_paths([argv[1]], where)
        elif Path(head).name == "pip":
            check_pip(argv[1:], where)
        elif head == "make":
            check_make(argv[1:], where)
        elif head == "cargo":
            check_cargo(argv[1:], where)
        elif head == "cd":
            check_paths(argv[1:], where)
        elif head in (".", "source"):  # the venv `make build` creates
            assert argv[1:] == [".venv/bin/activate"] and "VENV ?= .venv" in (ROOT / "Makefile").read_text(), where
        elif head == "blender":
            assert block.skip_reason == "blender", f"{where}: a blender command must be marked skip blender"
        else:
            pytest.fail(f"{where}: no rule runs or checks {head!r}; add one to tests/test_docs.py or change the docs")
    box.last_stdout = "".join(outputs)


def _run(argv: list[str], box: Sandbox, where: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, cwd=box.dir, env={**os.environ, **box.env}, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{where}: exit {r.returncode}\n--- stdout\n{r.stdout[-2000:]}\n--- stderr\n{r.stderr[-2000:]}"
    return r


def mdm(args: list[str], box: Sandbox, where: str, *, execute: bool) -> str:
    from movie_director_metrics.cli import build_parser

    try:  # every documented command line must parse, run or not
        build_parser().parse_args(args)
    except SystemExit as e:
        assert e.code == 0, f"{where}: the CLI rejects these arguments"
    if not execute:
        return ""
    argv = [sys.executable, "-m", "movie_director_metrics", *args]
    if args[:1] == ["serve"] or (args[:1] == ["watch"] and "--once" not in args):
        return _run_until_interrupted(argv, args[0], box, where)
    return _run(argv, box, where).stdout


def _run_until_interrupted(argv: list[str], command: str, box: Sandbox, where: str) -> str:
    """Starts a command that runs until Ctrl-C, checks it came up, sends
    SIGINT and expects a clean exit 0.  ``serve`` gets a free port."""
    if command == "serve":
        if "--port" in argv:
            i = argv.index("--port")
            del argv[i : i + 2]
        argv += ["--port", "0"]
    err_file = box.dir / f".stderr-{command}"
    with err_file.open("w") as err_sink:
        proc = subprocess.Popen(
            argv, cwd=box.dir, env={**os.environ, **box.env}, stdout=subprocess.PIPE, stderr=err_sink, text=True
        )
    out: list[str] = []

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            out.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if command == "serve":  # its first line says where it listens
            deadline = time.monotonic() + 10
            while not out and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            url = re.search(r"(http://\S+/metrics)", out[0]) if out else None
            assert url, f"{where}: did not come up (exit {proc.poll()}): {out}"
            with urllib.request.urlopen(url.group(1), timeout=5) as resp:
                assert resp.status == 200
        else:  # the dashboard draws its first frame at once, then every --refresh
            time.sleep(1.0)
        assert proc.poll() is None, f"{where}: exited early with {proc.returncode}"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    err = err_file.read_text()
    assert proc.returncode == 0, f"{where}: exit {proc.returncode} after Ctrl-C\n{err[-2000:]}"
    assert out, f"{where}: printed nothing"
    return "".join(out)


def check_paths(paths: list[str], where: str) -> None:
    for p in paths:
        assert (ROOT / p).exists(), f"{where}: {p} does not exist in the repository"


def check_make(targets: list[str], where: str) -> None:
    r = subprocess.run(["make", "-n", "-C", str(ROOT), *targets], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"{where}: make -n {' '.join(targets)} failed:\n{r.stderr[-1000:]}"


def _workspace_crates() -> set[str]:
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    return {tomllib.loads((ROOT / m / "Cargo.toml").read_text())["package"]["name"] for m in members}


def check_cargo(args: list[str], where: str) -> None:
    assert args[0] in ("test", "run", "build", "bench", "clippy", "fmt"), f"{where}: cargo {args[0]}?"
    crates = _workspace_crates()
    package = args[args.index("-p") + 1] if "-p" in args else None
    if package is not None:
        assert package in crates, f"{where}: no workspace crate {package!r} ({sorted(crates)})"
    for flag, sub in (("--test", "tests"), ("--example", "examples")):
        if flag in args:
            assert package is not None, f"{where}: {flag} without -p"
            check_paths([f"crates/{package}/{sub}/{args[args.index(flag) + 1]}.rs"], where)


def check_pip(args: list[str], where: str) -> None:
    assert args[:1] == ["install"], f"{where}: only pip install is documented"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = pyproject["optional-dependencies"]
    makefile = (ROOT / "Makefile").read_text()
    for spec in (a for a in args[1:] if not a.startswith("-")):
        name, _, rest = spec.partition("[")
        for extra in filter(None, rest.rstrip("]").split(",")):
            assert extra in extras, f"{where}: no extra {extra!r} in pyproject.toml"
        if name == ".":
            continue
        if "/" in name:  # a built file: a make target must write into its directory
            assert f"--out {Path(name).parent}" in makefile or f"-w {Path(name).parent}" in makefile, (
                f"{where}: nothing in the Makefile writes {name}"
            )
        elif name != pyproject["name"]:
            pytest.fail(f"{where}: only this project is installed by the docs, not {name!r}")


# ---- config blocks ----------------------------------------------------------------------


def check_toml(block: Block) -> None:
    from movie_director_metrics.alerts import AlertManager, parse_rules
    from movie_director_metrics.collectors.config import parse_config
    from movie_director_metrics.monitor import STORAGE_TIERS, Monitor

    data = tomllib.loads(block.code)
    if "backend" in data or "defaults" in data:
        assert parse_config(data, block.where)
    if "rule" in data:
        rules = parse_rules(block.code)
        with Monitor(tiers=STORAGE_TIERS, manual_clock=True) as m:
            manager = AlertManager(m, sources={"model": lambda name, metric, window: None})
            for rule in rules:
                manager.add_rule(rule)


def check_json(block: Block) -> None:
    from movie_director_metrics.llm.prices import PriceTable

    data = json.loads(block.code)
    if isinstance(data, dict) and any(
        isinstance(v, (dict, list)) and "cost_per_token" in json.dumps(v) for v in data.values()
    ):
        PriceTable(user=data)


def check_yaml(block: Block) -> None:
    import inspect

    from movie_director_metrics.metrics_server import serve_metrics

    default_port = inspect.signature(serve_metrics).parameters["port"].default
    ports = re.findall(r"127\.0\.0\.1:(\d+)", block.code)
    assert ports and all(int(p) == default_port for p in ports), f"{block.where}: scrape a port other than {default_port}?"


def check_output(block: Block, actual: str) -> None:
    pattern = []
    for line in block.code.rstrip("\n").splitlines():
        if line.strip() == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
        else:
            pattern.append(".*".join(map(re.escape, line.rstrip().split("..."))) + r"[ \t]*\n")
    got = "\n".join(line.rstrip() for line in actual.rstrip("\n").splitlines()) + "\n"
    assert re.fullmatch("".join(pattern), got), (
        f"{block.where}: the output shown differs from what the example prints:\n{got}"
    )


# ---- the per-page test ------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(
    page: str, simulator: Any, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = make_sandbox(tmp_path_factory.mktemp(Path(page).stem), simulator)
    for key, value in box.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(box.dir)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    try:
        for block in blocks(page):
            assert block.lang in LANGUAGES, f"{block.where}: tag the block with one of {sorted(LANGUAGES)}"
            skip = block.skip_reason
            if skip is not None:
                assert skip in EXPECTED_SKIPS, f"{block.where}: skip reasons are {sorted(EXPECTED_SKIPS)}"
            if block.marker and block.marker.startswith("file "):  # "save this as NAME"
                assert block.lang in ("toml", "json"), f"{block.where}: only config blocks are saved"
                (box.dir / block.marker.removeprefix("file ").strip()).write_text(block.code, encoding="utf-8")
            if block.marker == "output":
                assert block.lang == "text", f"{block.where}: an output block is a text block"
                check_output(block, box.last_stdout)
            elif block.lang == "python":
                if skip is None:
                    run_python(block, namespace, box)
                else:
                    compile(block.code, block.where, "exec")
            elif block.lang == "sh":
                run_sh(block, box, execute=skip is None)
            elif block.lang == "toml":
                check_toml(block)
            elif block.lang == "json":
                check_json(block)
            elif block.lang == "yaml":
                check_yaml(block)
            elif block.lang == "promql":
                check_promql(block.code, block.where)
    finally:
        _close_leftovers(namespace)


def test_only_live_backend_and_blender_blocks_are_not_run() -> None:
    skipped = Counter(b.skip_reason for b in all_blocks() if b.skip_reason is not None)
    assert dict(skipped) == EXPECTED_SKIPS
    for b in all_blocks():
        if b.skip_reason == "blender":
            assert "bpy" in b.code or "blender" in b.code, f"{b.where}: marked blender but does not use it"
        allowed = b.marker in (None, "output", "skip live-backend", "skip blender")
        assert allowed or (b.marker or "").startswith("file "), f"{b.where}: marker {b.marker!r}?"


# ---- links ----------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, link text kept, markup
    and punctuation (but ``-`` and ``_``) dropped, spaces to ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    text = text.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^(`{3,}).*?^\1\s*$", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    seen: Counter[str] = Counter()
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M):
        s = slug(m.group(1))
        out.add(s if not seen[s] else f"{s}-{seen[s]}")
        seen[s] += 1
    return out


def test_relative_links_resolve() -> None:
    checked = 0
    for page in PAGES:
        src = DOCS / page
        for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose(page)):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (src.parent / path).resolve() if path else src
            assert dest.exists(), f"docs/{page}: link {target} points at nothing"
            if anchor:
                assert dest.suffix == ".md", f"docs/{page}: anchor on a non-Markdown target {target}"
                assert anchor in anchors(dest), f"docs/{page}: no heading #{anchor} in {dest.relative_to(ROOT)}"
            checked += 1
    assert checked > 30


def test_index_lists_every_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for page in PAGES:
        if page != "index.md":
            assert f"]({page})" in index, f"docs/index.md does not link {page}"


# ---- /metrics names -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exposition() -> dict[str, dict[str, set[str]]]:
    return _exposition()


@functools.cache
def _exposition() -> dict[str, dict[str, set[str]]]:
    """sample name -> label -> values seen, from a monitor with every kind
    of data (storage on, so the 7d/30d uptime windows are there too)."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    from movie_director_metrics import GAUGES, Monitor

    with tempfile.TemporaryDirectory() as tmp, Monitor(storage=Path(tmp) / "h.sqlite3") as m:
        s = m.service("comfyui")
        s.record(120.0)
        s.record(3000.0, ok=False, error="timeout")
        s.health(True, latency_ms=3.0)
        s.health(False)
        s.set_queue(running=1, pending=2)
        s.record_processing(900.0)
        s.set_resource(**{g: 50.0 for g in GAUGES})
        m.llm.record("openai", "gpt-4o", {"prompt_tokens": 10, "completion_tokens": 5}, latency_ms=400, ttft_ms=100)
        m.llm.record("example", "unpriced-model", None, latency_ms=400)
        with m.jobs.job("comfyui", model="sdxl.safetensors", workflow="shot") as job:
            job.started()
        m.jobs.job("comfyui", model="flux1-dev").finish(ok=False, error="oom")
        text = m.openmetrics()
    out: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):  # type: ignore[no-untyped-call]
        for sample in family.samples:
            labels = out.setdefault(sample.name, {})
            for k, v in sample.labels.items():
                labels.setdefault(k, set()).add(v)
    return out


def _source_families() -> set[str]:
    src = (ROOT / "python" / "movie_director_metrics" / "openmetrics.py").read_text(encoding="utf-8")
    return set(re.findall(r'"(mdm_[a-z0-9_]+)"', src))


_SELECTOR = re.compile(r"\b(mdm_[a-zA-Z0-9_]+)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def check_promql(expr: str, where: str) -> None:
    samples = _exposition()
    names = []
    for name, braces in _SELECTOR.findall(expr):
        assert name in samples, f"{where}: {name} is not a sample /metrics emits ({sorted(samples)})"
        names.append(name)
        for label, op, value in _MATCHER.findall(braces or ""):
            assert label in samples[name], f"{where}: {name} has no label {label!r}"
            if op == "=" and "$" not in value and label in VOCABULARY_LABELS:
                assert value in samples[name][label], f"{where}: {name}{{{label}}} is never {value!r}"
    for group in _GROUPING.findall(expr):
        for label in filter(None, (g.strip() for g in group.split(","))):
            assert any(label in samples[n] for n in names), f"{where}: no metric in the query has label {label!r}"


def _strings(node: Any, key: str | None = None) -> Iterator[tuple[str | None, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v, key)
    elif isinstance(node, str):
        yield key, node


def test_grafana_dashboard_uses_real_families(exposition: dict[str, dict[str, set[str]]]) -> None:
    board = json.loads(GRAFANA.read_text(encoding="utf-8"))
    assert board["panels"] and board["title"]
    exprs = [s for k, s in _strings(board) if k == "expr"]
    assert len(exprs) >= 6
    for i, expr in enumerate(exprs):
        check_promql(expr, f"{GRAFANA.name} expr {i}")
    for key, s in _strings(board):
        if key in ("query", "definition") and "mdm_" in s:  # template variables
            for name in re.findall(r"\bmdm_\w+", s):
                assert name in exposition, f"{GRAFANA.name}: variable query uses {name}"
    used = " ".join(exprs)
    for needed in (
        "mdm_request_latency_seconds_bucket", "mdm_requests_total", "mdm_uptime_ratio",
        "mdm_queue_depth", "mdm_vram_used_bytes", "mdm_llm_cost_usd_total",
    ):
        assert needed in used.replace(" ", ""), f"the dashboard has no panel on {needed}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


# ---- the reference pages name everything the code has -----------------------------------------


def _code_text(page: str) -> str:
    """Inline code spans and code blocks of a page: where names belong."""
    text = (DOCS / page).read_text(encoding="utf-8")
    fenced = re.findall(r"^(`{3,}).*?$(.*?)^\1\s*$", text, re.S | re.M)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"^(`{3,}).*?^\1\s*$", "", text, flags=re.S | re.M))
    return "\n".join([*(body for _, body in fenced), *spans])


def _mentions(page: str, names: set[str] | list[str] | tuple[str, ...], what: str) -> None:
    code = _code_text(page)
    missing = sorted(n for n in names if not re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", code))
    assert not missing, f"docs/{page} does not name these {what} in code: {missing}"


def test_metrics_page_covers_every_field() -> None:
    from movie_director_metrics import GAUGES, METRICS, ServiceStats, _core

    fields = {n for n in dir(ServiceStats) if not n.startswith("_") and n != "as_dict"}
    _mentions("metrics.md", fields, "ServiceStats fields")
    _mentions("metrics.md", set(METRICS) | set(GAUGES), "metrics/gauges")
    _mentions("metrics.md", {n for n in dir(_core.GaugeStats) if not n.startswith("_")}, "GaugeStats fields")


def test_backends_page_covers_kinds_keys_and_error_types() -> None:
    from movie_director_metrics.collectors.config import KINDS, BackendConfig
    from movie_director_metrics.collectors.http import ERROR_TYPES
    from movie_director_metrics.collectors.scheduler import COLLECTOR_ERROR, BackendStatus

    _mentions("backends.md", set(ERROR_TYPES) | {COLLECTOR_ERROR}, "error types")
    _mentions("backends.md", set(KINDS), "kinds")
    _mentions("backends.md", {f.name for f in dataclasses.fields(BackendConfig)}, "config keys")
    _mentions("backends.md", {f.name for f in dataclasses.fields(BackendStatus)}, "BackendStatus fields")


def test_alerts_page_covers_fields_and_metrics() -> None:
    from movie_director_metrics.alerts import DERIVED_METRICS, SERVICE_METRICS, AlertRule

    _mentions("alerts.md", {f.name for f in dataclasses.fields(AlertRule) if f.init}, "rule fields")
    _mentions("alerts.md", set(SERVICE_METRICS) | set(DERIVED_METRICS), "metrics")


def test_llm_page_covers_stats_columns() -> None:
    from movie_director_metrics.llm.report import EXPORT_COLUMNS

    _mentions("llm.md", set(EXPORT_COLUMNS), "LlmStats fields")


def test_export_page_lists_every_csv_column(tmp_path: Path) -> None:
    from movie_director_metrics import Monitor

    with Monitor() as m:
        m.service("comfyui").record(100.0)
        header = m.export(tmp_path / "x.csv", "csv", window="5m", resolution="raw").read_text().splitlines()[0]
    columns = set(header.split(","))
    gauges = {c for c in columns if c.endswith(("_avg", "_max")) and not c.startswith("queue_depth")}
    _mentions("export.md", columns - gauges, "CSV columns")
    _mentions("export.md", {c.rsplit("_", 1)[0] for c in gauges}, "gauges")


def test_prometheus_page_covers_every_family(exposition: dict[str, dict[str, set[str]]]) -> None:
    families = {re.sub(r"_(sum|count|bucket)$", "", n) for n in exposition}
    _mentions("prometheus.md", families, "families")
    known = set(exposition) | _source_families() | {f + "_total" for f in _source_families()}
    for page in PAGES:
        for name in set(re.findall(r"\bmdm_[a-z0-9_]+", (DOCS / page).read_text(encoding="utf-8"))):
            assert name in known, f"docs/{page}: {name} is not a /metrics name"
