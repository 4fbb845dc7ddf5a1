#!/usr/bin/env python3
"""Builds the release's Blender extension zips, one per platform:
dist/<id>-<version>-<platform>.zip (``make dist-addon``; the release workflow).

1. Takes the engine wheels (``--wheel`` each, else every
   ``movie_director_metrics-<version>-cp311-abi3-*.whl`` in ``--wheels-dir``,
   default dist/), at most one per Blender platform, all of the add-on's
   version.
2. Stages a copy of blender_addon/ in a temporary folder with those wheels
   in its ``wheels/`` and its manifest's ``wheels`` and ``platforms`` written
   from the wheels' tags.  The source tree, and its manifest, are not touched
   (``make addon`` keeps its own single development wheel there).
3. Runs Blender's own ``extension build --split-platforms`` on the copy, then
   ``extension validate`` on each zip, and checks that each zip holds
   exactly the wheel of its platform and the add-on's LICENSE.

Blender's tool is, by the first that applies:
  --blender PATH         a Blender binary: ``PATH --factory-startup --command extension ...``;
  --blender-chroot DIR   the Blender of a chroot (scripts/blender_chroot.sh's Debian trixie
                         chroot with Blender 4.3: ``--blender-chroot target/blender-trixie``;
                         needs root), staged inside it;
  otherwise              ``blender_ext.py`` from the ``bpy`` wheel (the code behind
                         ``blender --command extension``, run under plain Python), found
                         as scripts/build_addon.py finds it (``make bpy-venv``).

Usage: python scripts/build_dist_addon.py [--wheel W ...] [--wheels-dir dist] [--out-dir dist]
                                          [--blender PATH | --blender-chroot DIR]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADDON = ROOT / "blender_addon"
MANIFEST = ADDON / "blender_manifest.toml"
sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_addon  # noqa: E402  (find_blender_ext, BuildError)

BuildError = build_addon.BuildError

#: Blender's platform names, in the order the manifest lists them.
PLATFORMS = ("windows-x64", "windows-arm64", "macos-arm64", "macos-x64", "linux-x64", "linux-arm64")

WHEEL_RE = re.compile(r"movie_director_metrics-(?P<version>[^-]+)-cp311-abi3-(?P<plat>[^-]+)\.whl")


def blender_platforms(wheel_name: str) -> set[str]:
    """The Blender platforms a wheel's platform tag(s) serve.

    >>> sorted(blender_platforms("movie_director_metrics-0.1.0-cp311-abi3-manylinux_2_28_x86_64.whl"))
    ['linux-x64']
    >>> sorted(blender_platforms("movie_director_metrics-0.1.0-cp311-abi3-macosx_10_12_x86_64.macosx_11_0_arm64.macosx_10_12_universal2.whl"))
    ['macos-arm64', 'macos-x64']
    """
    m = WHEEL_RE.fullmatch(wheel_name)
    if m is None:
        raise BuildError(f"{wheel_name}: expected movie_director_metrics-<version>-cp311-abi3-<platform>.whl")
    out: set[str] = set()
    for tag in m["plat"].split("."):
        if tag == "win_amd64":
            out.add("windows-x64")
        elif tag == "win_arm64":
            out.add("windows-arm64")
        elif tag.startswith("macosx_"):
            if tag.endswith("_universal2"):
                out |= {"macos-arm64", "macos-x64"}
            elif tag.endswith("_arm64"):
                out.add("macos-arm64")
            elif tag.endswith("_x86_64"):
                out.add("macos-x64")
        elif tag.startswith(("manylinux", "musllinux")):
            if tag.endswith("_x86_64"):
                out.add("linux-x64")
            elif tag.endswith("_aarch64"):
                out.add("linux-arm64")
        if tag.startswith("linux_"):
            raise BuildError(f"{wheel_name}: a plain linux_* wheel loads only where it was built; build a manylinux one")
    if not out:
        raise BuildError(f"{wheel_name}: no Blender platform for tag {m['plat']!r}")
    return out


def pick_wheels(wheels: list[Path], version: str) -> dict[str, Path]:
    """platform -> wheel; one wheel per platform, all of ``version``."""
    by_platform: dict[str, Path] = {}
    for w in wheels:
        m = WHEEL_RE.fullmatch(w.name)
        if m is None or m["version"] != version:
            raise BuildError(f"{w.name}: not a movie_director_metrics {version} cp311-abi3 wheel (the add-on's version)")
        for p in blender_platforms(w.name):
            if p in by_platform:
                raise BuildError(f"two wheels for {p}: {by_platform[p].name} and {w.name}")
            by_platform[p] = w
    if not by_platform:
        raise BuildError("no wheels given")
    return by_platform


def stage(dest: Path, by_platform: dict[str, Path]) -> None:
    """blender_addon/ copied to ``dest`` with the wheels and a manifest that lists them."""
    shutil.copytree(ADDON, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "wheels"))
    (dest / "wheels").mkdir()
    wheels = sorted({w.name: w for w in by_platform.values()}.values(), key=lambda w: w.name)
    for w in wheels:
        shutil.copy2(w, dest / "wheels" / w.name)
    text = (dest / "blender_manifest.toml").read_text(encoding="utf-8")
    platforms = [p for p in PLATFORMS if p in by_platform]
    for key, values in (("platforms", platforms), ("wheels", [f"./wheels/{w.name}" for w in wheels])):
        line = f"{key} = [" + ", ".join(f'"{v}"' for v in values) + "]"
        text, n = re.subn(rf"(?m)^{key}\s*=\s*\[[^\]]*\]", lambda _m, line=line: line, text)
        if n != 1:
            raise BuildError(f"{MANIFEST}: expected exactly one `{key} = [...]` line, found {n}")
    (dest / "blender_manifest.toml").write_text(text, encoding="utf-8")


def run(cmd: list[str], cwd: Path | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    out = (r.stdout + r.stderr).strip()
    if out:
        print(out)
    # Blender's tool reports some failures on stdout with exit code 0.
    if r.returncode != 0 or re.search(r"(?im)^(error|fatal_error)\b", out):
        raise BuildError(f"{' '.join(cmd[:4])} ... failed (exit {r.returncode})")


def check_zip(z: Path, platform: str, wheel: Path) -> None:
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode("utf-8"))
    whls = [n for n in names if n.endswith(".whl")]
    if whls != [f"wheels/{wheel.name}"]:
        raise BuildError(f"{z.name}: wheels {whls}, expected only wheels/{wheel.name}")
    # --split-platforms keeps the source manifest and adds what this zip holds.
    generated = manifest.get("build", {}).get("generated", {})
    if generated.get("platforms") != [platform] or generated.get("wheels") != [f"./wheels/{wheel.name}"]:
        raise BuildError(f"{z.name}: [build.generated] says platforms {generated.get('platforms')} wheels {generated.get('wheels')}")
    if "LICENSE" not in names:
        raise BuildError(f"{z.name}: no LICENSE")


def main(argv: list[str] | None = None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", action="append", default=[], help="an engine wheel (repeat; default: all in --wheels-dir)")
    ap.add_argument("--wheels-dir", default=str(ROOT / "dist"), help="where to find the wheels (default: dist/)")
    ap.add_argument("--out-dir", default=str(ROOT / "dist"), help="where the zips go (default: dist/)")
    tool = ap.add_mutually_exclusive_group()
    tool.add_argument("--blender", help="a Blender binary (4.2+) to run `--command extension`")
    tool.add_argument("--blender-chroot", help="a chroot with /usr/bin/blender (4.2+); needs root")
    ap.add_argument("--blender-ext", help="path to Blender's blender_ext.py (default: from the bpy wheel)")
    args = ap.parse_args(argv)

    manifest = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    version = manifest["version"]
    if args.wheel:
        wheels = [Path(w).resolve() for w in args.wheel]
    else:
        wheels = sorted(Path(args.wheels_dir).resolve().glob(f"movie_director_metrics-{version}-cp311-abi3-*.whl"))
    for w in wheels:
        if not w.is_file():
            raise BuildError(f"{w}: no such file")
    by_platform = pick_wheels(wheels, version)
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{manifest['id']}-{version}"
    for old in out_dir.glob(f"{stem}-*.zip"):
        old.unlink()

    chroot = Path(args.blender_chroot).resolve() if args.blender_chroot else None
    tmp_parent = chroot / "tmp" if chroot else None
    if tmp_parent:
        tmp_parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_parent, prefix="mdm-dist-addon-") as tmp:
        src, built = Path(tmp) / "src", Path(tmp) / "out"
        built.mkdir()
        stage(src, by_platform)
        if chroot:
            inside = lambda p: "/" + str(p.relative_to(chroot))  # noqa: E731
            base = ["chroot", str(chroot), "/usr/bin/blender", "--factory-startup", "--command", "extension"]
            build = [*base, "build", "--split-platforms", "--source-dir", inside(src), "--output-dir", inside(built)]
            validate = lambda z: [*base, "validate", inside(z)]  # noqa: E731
        elif args.blender:
            base = [args.blender, "--factory-startup", "--command", "extension"]
            build = [*base, "build", "--split-platforms", "--source-dir", str(src), "--output-dir", str(built)]
            validate = lambda z: [*base, "validate", str(z)]  # noqa: E731
        else:
            ext = build_addon.find_blender_ext(args.blender_ext)
            base = [sys.executable, str(ext)]
            build = [*base, "build", "--split-platforms", "--source-dir", str(src), "--output-dir", str(built)]
            validate = lambda z: [*base, "validate", str(z)]  # noqa: E731
        run([*base, "validate", inside(src) if chroot else str(src)])
        run(build)
        zips = []
        for platform, wheel in sorted(by_platform.items(), key=lambda kv: PLATFORMS.index(kv[0])):
            z = built / f"{stem}-{platform.replace('-', '_')}.zip"
            if not z.is_file():
                raise BuildError(f"Blender's build made no {z.name} (made: {sorted(p.name for p in built.iterdir())})")
            run(validate(z))
            check_zip(z, platform, wheel)
            final = out_dir / z.name
            shutil.move(z, final)
            zips.append(final)
    for z in zips:
        print(z)
    return zips


if __name__ == "__main__":
    try:
        main()
    except (BuildError, subprocess.CalledProcessError) as e:
        print(f"build_dist_addon: {e}", file=sys.stderr)
        sys.exit(1)
