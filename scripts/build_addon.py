#!/usr/bin/env python3
"""Builds the Blender extension zip: dist/<id>-<version>.zip.

1. Builds the engine wheel (``maturin build --release``; ``pip wheel .``
   when maturin is missing), or takes ``--wheel PATH``.
2. Puts it in ``blender_addon/wheels/`` as the only wheel there (Blender
   keeps every wheel that matches a platform, so exactly one per platform)
   and points the manifest's ``wheels`` list at it.
3. Runs Blender's own extension tool, ``blender_ext.py`` from the installed
   ``bpy`` wheel, under plain Python: ``validate`` on the source, ``build``
   into the zip, then ``validate`` on the zip.  No Blender binary is needed.

``blender_ext.py`` is looked up in the ``bpy`` of this interpreter, then of
``.venv/bpy`` (``make bpy-venv``) and ``.venv/bpy5`` (``make bpy5-venv``);
``--blender-ext PATH`` or ``$BLENDER_EXT`` override them.  The script runs
under plain CPython 3.11 and 3.13 alike, whichever Blender it comes from.

Usage: python scripts/build_addon.py [--wheel PATH] [--out-dir dist] [--quiet]
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADDON = ROOT / "blender_addon"


def newest_source_mtime() -> float:
    """When the newest file the zip is built from last changed (the add-on,
    the engine's Python and Rust sources, the build configuration)."""
    paths = [*ADDON.rglob("*.py"), ADDON / "blender_manifest.toml", ROOT / "scripts" / "build_addon.py"]
    paths += [*(ROOT / "python").rglob("*.py"), *(ROOT / "crates").rglob("*.rs"), ROOT / "pyproject.toml"]
    paths += list((ROOT / "crates").rglob("Cargo.toml"))
    return max(p.stat().st_mtime for p in paths if p.is_file())


def default_zip() -> Path:
    """dist/'s extension zip (as ``make addon`` names it)."""
    m = tomllib.loads((ADDON / "blender_manifest.toml").read_text(encoding="utf-8"))
    return ROOT / "dist" / f"{m['id']}-{m['version']}.zip"


def fresh_zip() -> Path:
    """dist/'s zip, rebuilt first when a source is newer than it (the tests
    and the benchmarks use this, so they never run an old add-on)."""
    z = default_zip()
    if z.is_file() and z.stat().st_mtime >= newest_source_mtime():
        return z
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--quiet"], capture_output=True, text=True,
                       timeout=1800)
    if r.returncode != 0 or not z.is_file():
        raise RuntimeError(f"scripts/build_addon.py failed:\n{r.stdout}\n{r.stderr}")
    return z
MANIFEST = ADDON / "blender_manifest.toml"
BPY_VENVS = (ROOT / ".venv" / "bpy", ROOT / ".venv" / "bpy5")


class BuildError(RuntimeError):
    pass


def find_blender_ext(explicit: str | None = None) -> Path:
    """Blender's extension CLI script shipped inside the ``bpy`` wheel."""
    if explicit or os.environ.get("BLENDER_EXT"):
        p = Path(explicit or os.environ["BLENDER_EXT"])
        if not p.is_file():
            raise BuildError(f"--blender-ext {p}: no such file")
        return p
    roots = []
    spec = importlib.util.find_spec("bpy")  # does not import (and start) Blender
    if spec is not None and spec.submodule_search_locations:
        roots += list(spec.submodule_search_locations)
    for venv in BPY_VENVS:
        roots += glob.glob(str(venv / "lib" / "python3*" / "site-packages" / "bpy"))
    for root in roots:
        hits = sorted(glob.glob(os.path.join(root, "*", "scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py")))
        if hits:
            return Path(hits[-1])
    raise BuildError(
        "Blender's extension tool (blender_ext.py) was not found: install the bpy wheel "
        "(`make bpy-venv` or `make bpy5-venv`), or pass --blender-ext PATH"
    )


def build_wheel(out_dir: Path, quiet: bool) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    maturin = shutil.which("maturin") or str(Path(sys.executable).with_name("maturin"))
    if Path(maturin).exists() or shutil.which("maturin"):
        cmd = [maturin, "build", "--release", "--out", str(out_dir), "--interpreter", sys.executable]
        if quiet:
            cmd.append("--quiet")
    else:
        cmd = [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-w", str(out_dir)] + (["--quiet"] if quiet else [])
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    wheels = sorted(out_dir.glob("movie_director_metrics-*-cp311-abi3-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise BuildError(f"no movie_director_metrics-*-cp311-abi3-*.whl in {out_dir}")
    return wheels[-1]


def install_wheel(wheel: Path) -> bool:
    """Makes ``wheel`` the only one in blender_addon/wheels and the only
    entry of the manifest's ``wheels``; True when the manifest changed."""
    if not re.fullmatch(r"movie_director_metrics-[^-]+-cp311-abi3-[^-]+\.whl", wheel.name):
        raise BuildError(f"{wheel.name}: expected a movie_director_metrics cp311-abi3 wheel")
    dest = ADDON / "wheels"
    dest.mkdir(exist_ok=True)
    for old in dest.glob("*.whl"):
        if old.name != wheel.name:
            old.unlink()
    if wheel.resolve() != (dest / wheel.name).resolve():
        shutil.copy2(wheel, dest / wheel.name)
    text = MANIFEST.read_text(encoding="utf-8")
    line = f'wheels = ["./wheels/{wheel.name}"]'
    new, n = re.subn(r"(?m)^wheels\s*=\s*\[[^\]]*\]", line, text)
    if n != 1:
        raise BuildError(f"{MANIFEST}: expected exactly one `wheels = [...]` line, found {n}")
    if new != text:
        MANIFEST.write_text(new, encoding="utf-8")
        return True
    return False


def run_ext(blender_ext: Path, *args: str) -> None:
    cmd = [sys.executable, str(blender_ext), *args]
    print("+", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    out = (r.stdout + r.stderr).strip()
    if out:
        print(out)
    # blender_ext reports some failures on stdout with exit code 0.
    if r.returncode != 0 or re.search(r"(?im)^(error|fatal_error)\b", out):
        raise BuildError(f"blender_ext {args[0]} failed (exit {r.returncode})")


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", help="use this engine wheel instead of building one")
    ap.add_argument("--out-dir", default=str(ROOT / "dist"), help="where the zip goes (default: dist/)")
    ap.add_argument("--blender-ext", help="path to Blender's blender_ext.py")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    blender_ext = find_blender_ext(args.blender_ext)
    if args.wheel:
        wheel = Path(args.wheel).resolve()
        if not wheel.is_file():
            raise BuildError(f"--wheel {wheel}: no such file")
    else:
        wheel = build_wheel(ROOT / "target" / "addon-wheel", args.quiet)
    if install_wheel(wheel):
        print(f"{MANIFEST.relative_to(ROOT)}: wheels now lists {wheel.name}")

    manifest = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)  # blender_ext build needs it to exist
    zip_path = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    run_ext(blender_ext, "validate", str(ADDON))
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_zip = Path(tmp) / zip_path.name
        run_ext(blender_ext, "build", "--source-dir", str(ADDON), "--output-filepath", str(tmp_zip))
        run_ext(blender_ext, "validate", str(tmp_zip))
        os.replace(tmp_zip, zip_path)  # never leave a half-written zip at the final path
    print(zip_path)
    return zip_path


if __name__ == "__main__":
    try:
        main()
    except (BuildError, subprocess.CalledProcessError) as e:
        print(f"build_addon: {e}", file=sys.stderr)
        sys.exit(1)
