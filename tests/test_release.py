"""What a release ships agrees with itself (README "Releases and platforms").

* One version: the Cargo workspace's, which ``_core.__version__`` is
  compiled from, ``movie_director_metrics.__version__`` re-exports,
  ``movie-director-metrics --version`` prints, the installed metadata
  carries (pyproject's version is dynamic: maturin takes it from Cargo), and
  the add-on's manifest repeats.
* One licence per part: the engine MIT (LICENSE; pyproject, Cargo), the
  Blender add-on GPL-3.0-or-later (blender_addon/LICENSE; the manifest), and
  no made-up project address anywhere.
* The release workflow is clean under actionlint (when installed: ``make
  actionlint``), and actionlint does catch a broken one.
* scripts/build_dist_addon.py maps wheel tags to Blender's platforms and
  stages a manifest that lists exactly the wheels it bundles; the source
  manifest's wheels exist once ``make addon`` has put them there.

Fast (well under 10 s): nothing here builds.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import movie_director_metrics as mdm
from movie_director_metrics import _core, cli

ROOT = Path(__file__).resolve().parents[1]
ADDON = ROOT / "blender_addon"
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
PLATFORMS = ("windows-x64", "macos-arm64", "macos-x64", "linux-x64", "linux-arm64")

sys.path.insert(0, str(ROOT / "scripts"))
import build_dist_addon  # noqa: E402


def _toml(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


CARGO = _toml(ROOT / "Cargo.toml")
PYPROJECT = _toml(ROOT / "pyproject.toml")
MANIFEST = _toml(ADDON / "blender_manifest.toml")
VERSION = CARGO["workspace"]["package"]["version"]


# ---- one version ------------------------------------------------------------------------


def _cli_version() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["--version"]) == 0
    return out.getvalue().strip()


def test_one_version_everywhere() -> None:
    assert "version" in PYPROJECT["project"]["dynamic"] and "version" not in PYPROJECT["project"]
    assert "version" not in PYPROJECT["tool"]["maturin"]
    for member in CARGO["workspace"]["members"]:
        assert _toml(ROOT / member / "Cargo.toml")["package"]["version"] == {"workspace": True}, member
    assert _core.__version__ == VERSION
    assert mdm.__version__ == VERSION
    assert _cli_version() == f"movie-director-metrics {VERSION}"
    assert importlib.metadata.version("movie-director-metrics") == VERSION
    assert MANIFEST["version"] == VERSION, "the add-on's version is the engine's"


def test_version_from_the_installed_command() -> None:
    exe = shutil.which("movie-director-metrics", path=str(Path(sys.executable).parent))
    argv = [exe] if exe else [sys.executable, "-m", "movie_director_metrics"]
    r = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, f"movie-director-metrics {VERSION}"), r.stderr


# ---- licences and metadata --------------------------------------------------------------


def test_engine_is_mit_everywhere() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert CARGO["workspace"]["package"]["license"] == "MIT"
    for member in CARGO["workspace"]["members"]:
        assert _toml(ROOT / member / "Cargo.toml")["package"]["license"] == {"workspace": True}, member
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n") and "Permission is hereby granted, free of charge" in text


def test_addon_is_gpl3_or_later() -> None:
    assert MANIFEST["license"] == ["SPDX:GPL-3.0-or-later"]
    text = (ADDON / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE") and "Version 3, 29 June 2007" in text
    assert "either version 3 of the License, or\n    (at your option) any later version" in text


def test_no_made_up_addresses() -> None:
    urls = [CARGO["workspace"]["package"].get(k) for k in ("repository", "homepage", "documentation")]
    urls += list(PYPROJECT["project"].get("urls", {}).values())
    urls += [MANIFEST.get("website")]
    for url in filter(None, urls):
        assert "example.invalid" not in url and "pypi.org/project/movie-director-metrics" not in url, url


def test_changelog_keeps_an_unreleased_section() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "keepachangelog.com" in text
    headings = re.findall(r"(?m)^## \[([^\]]+)\]", text)
    assert headings[:1] == ["Unreleased"], headings


# ---- the release workflow ---------------------------------------------------------------


def _actionlint() -> str | None:
    venv_bin = Path(sys.executable).parent
    return shutil.which("actionlint", path=str(venv_bin)) or shutil.which("actionlint")


def test_workflow_builds_and_tests_every_platform() -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    assert "uses: PyO3/maturin-action@v1" in text
    for job in ("wheels", "sdist", "addon", "test", "publish"):
        assert re.search(rf"(?m)^  {job}:$", text), job
    for platform in PLATFORMS:
        # listed in both matrices: built by `wheels`, tested by `test`
        assert len(re.findall(rf"platform: {platform},", text)) == 2, platform
    assert len(re.findall(r'manylinux: "2_28"', text)) == 2
    assert "scripts/build_dist_addon.py" in text and "tests/test_blender_addon.py" in text
    assert '"bpy==4.5.*"' in text and 'python-version: "3.11"' in text
    assert re.search(r"(?m)^    if: startsWith\(github.ref, 'refs/tags/v'\)$", text)
    assert '"--split-platforms"' in (ROOT / "scripts" / "build_dist_addon.py").read_text(encoding="utf-8")


def test_actionlint_is_clean() -> None:
    exe = _actionlint()
    if exe is None:
        pytest.skip("actionlint is not installed (make actionlint; scripts/build_actionlint.sh)")
    r = subprocess.run([exe, "-no-color", "-oneline", str(WORKFLOW)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, ""), f"actionlint:\n{r.stdout}{r.stderr}"


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    exe = _actionlint()
    if exe is None:
        pytest.skip("actionlint is not installed")
    (tmp_path / ".git").mkdir()  # actionlint looks for the project root
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    bad = tmp_path / ".github" / "workflows" / "release.yml"
    text = WORKFLOW.read_text(encoding="utf-8").replace("runner: macos-15-intel", "runner: macos-15-intle", 1)
    bad.write_text(text.replace("${{ matrix.platform }}", "${{ matrix.platfrom }}", 1), encoding="utf-8")
    r = subprocess.run([exe, "-no-color", "-oneline", str(bad)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert '"macos-15-intle" is unknown' in r.stdout and '"platfrom" is not defined' in r.stdout, r.stdout


# ---- the add-on's wheels ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "platforms"),
    [
        ("win_amd64", {"windows-x64"}),
        ("macosx_11_0_arm64", {"macos-arm64"}),
        ("macosx_11_0_x86_64", {"macos-x64"}),
        ("macosx_10_12_universal2", {"macos-arm64", "macos-x64"}),
        ("manylinux_2_28_x86_64", {"linux-x64"}),
        ("manylinux_2_28_aarch64", {"linux-arm64"}),
        ("manylinux_2_17_x86_64.manylinux2014_x86_64", {"linux-x64"}),
    ],
)
def test_wheel_tags_map_to_addon_platforms(tag: str, platforms: set[str]) -> None:
    assert build_dist_addon.blender_platforms(f"movie_director_metrics-{VERSION}-cp311-abi3-{tag}.whl") == platforms


def test_a_plain_linux_wheel_is_refused() -> None:
    with pytest.raises(build_dist_addon.BuildError, match="manylinux"):
        build_dist_addon.blender_platforms(f"movie_director_metrics-{VERSION}-cp311-abi3-linux_x86_64.whl")


def test_staged_manifest_lists_exactly_the_bundled_wheels(tmp_path: Path) -> None:
    wheels = []
    for tag in ("manylinux_2_28_x86_64", "manylinux_2_28_aarch64", "win_amd64", "macosx_11_0_arm64", "macosx_11_0_x86_64"):
        w = tmp_path / f"movie_director_metrics-{VERSION}-cp311-abi3-{tag}.whl"
        w.write_bytes(b"")
        wheels.append(w)
    with pytest.raises(build_dist_addon.BuildError, match="two wheels for linux-x64"):
        build_dist_addon.pick_wheels([*wheels, tmp_path / f"movie_director_metrics-{VERSION}-cp311-abi3-manylinux_2_34_x86_64.whl"], VERSION)
    by_platform = build_dist_addon.pick_wheels(wheels, VERSION)
    source_before = (ADDON / "blender_manifest.toml").read_bytes()
    build_dist_addon.stage(tmp_path / "src", by_platform)
    assert (ADDON / "blender_manifest.toml").read_bytes() == source_before, "the source manifest is not touched"
    staged = _toml(tmp_path / "src" / "blender_manifest.toml")
    assert staged["platforms"] == ["windows-x64", "macos-arm64", "macos-x64", "linux-x64", "linux-arm64"]
    assert sorted(staged["wheels"]) == sorted(f"./wheels/{w.name}" for w in wheels)
    assert sorted(p.name for p in (tmp_path / "src" / "wheels").iterdir()) == sorted(w.name for w in wheels)
    assert (tmp_path / "src" / "LICENSE").is_file()
    assert {k: v for k, v in staged.items() if k not in ("platforms", "wheels")} == {
        k: v for k, v in MANIFEST.items() if k not in ("platforms", "wheels")
    }


def test_source_manifest_wheels_exist_once_built() -> None:
    if not list((ADDON / "wheels").glob("*.whl")):
        pytest.skip("no wheel in blender_addon/wheels yet (make addon puts one there)")
    platforms: set[str] = set()
    for entry in MANIFEST["wheels"]:
        path = ADDON / entry
        assert path.is_file(), f"the manifest lists {entry}, which blender_addon/ does not hold"
        platforms |= build_dist_addon.blender_platforms(path.name)
    assert platforms <= set(MANIFEST["platforms"]), (platforms, MANIFEST["platforms"])
