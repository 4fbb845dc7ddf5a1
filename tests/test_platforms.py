"""The per-OS branches, run here (Linux) with the platform monkeypatched and
real files:

* per-user directories: Windows (history in ``%LOCALAPPDATA%``, config in
  ``%APPDATA%``), macOS (``~/Library/Application Support``), Linux/BSD
  (``$XDG_DATA_HOME`` / ``$XDG_CONFIG_HOME`` and their defaults), the
  ``MOVIE_DIRECTOR_METRICS_*`` overrides first;
* the storage owner lock, both strategies driven by the same tests: POSIX
  ``flock`` for real, and the Windows ``msvcrt.locking`` branch against a
  stand-in ``msvcrt`` module (the real one exists only on Windows and
  cannot run here) with the same semantics over the same real file: one
  byte range locked from the current position, ``LK_NBLCK`` refused at once
  with ``OSError`` while any other handle (another process, or another
  open in this one) holds an overlapping byte, dropped when the holder
  dies.  It is built on Linux open-file-description locks
  (``F_OFD_SETLK``), which belong to one open file like a Windows handle's
  lock; on Windows the same tests take the real ``msvcrt``;
* paths with spaces, non-ASCII names and Windows drive letters in storage,
  exports and config files.  Real files for the first two; drive letters
  through ``ntpath``/``PureWindowsPath``, Windows' own rules written in
  Python, since a ``C:`` path cannot be opened here.

What this cannot prove: that Windows' ``LockFile`` (under
``msvcrt.locking``) and its folders behave as documented.  The release
workflow's test job runs this file on Windows and macOS runners, where the
real ``msvcrt`` and the real folders take the stand-ins' place.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import ntpath
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import ModuleType

import pytest

import movie_director_metrics as mdm
from movie_director_metrics import cli, filelock, paths
from movie_director_metrics import storage as st
from movie_director_metrics.collectors import config as cfg
from movie_director_metrics.errors import StorageLockedError
from movie_director_metrics.monitor import resolve_storage

#: Two hours ago, on a whole hour: recent enough for the CLI's default windows.
T0 = float(int(time.time()) // 3600 * 3600 - 7200)

#: A directory name with a space, accents, a CJK name and a space in a
#: second level: every part of the path code must keep it as it is.
SPACED = Path("my history") / "Ünïcødé 日本"

ON_WINDOWS = sys.platform == "win32"


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """The platform rules, not the test-wide overrides, unless a test sets them."""
    for var in (st.STORAGE_ENV, cfg.CONFIG_ENV):
        monkeypatch.delenv(var, raising=False)


# ---- per-user directories: the rules ---------------------------------------------------------


WIN_HOME = PureWindowsPath("C:/Users/Ünï Cødé")
WIN_ENV = {
    "LOCALAPPDATA": r"C:\Users\Ünï Cødé\AppData\Local",
    "APPDATA": r"\\profiles.example\users$\Ünï Cødé\AppData\Roaming",  # a redirected roaming folder
    "XDG_DATA_HOME": "/ignored/on/windows",
}


def test_windows_history_is_machine_local_and_config_roams() -> None:
    data = paths.platform_dir("data", "win32", WIN_ENV, WIN_HOME) / paths.APP
    conf = paths.platform_dir("config", "win32", WIN_ENV, WIN_HOME) / paths.APP
    assert str(data) == r"C:\Users\Ünï Cødé\AppData\Local\movie_director_metrics"
    assert data.drive == "C:"
    assert str(conf) == r"\\profiles.example\users$\Ünï Cødé\AppData\Roaming\movie_director_metrics"
    assert conf.drive == r"\\profiles.example\users$"


@pytest.mark.parametrize("value", [None, "", "   ", r"relative\AppData", "D:"])
def test_windows_falls_back_to_the_profile_folders(value: str | None) -> None:
    """Unset, blank or not absolute (``D:`` alone is drive-relative): the
    profile's own AppData folders."""
    env = {} if value is None else {"LOCALAPPDATA": value, "APPDATA": value}
    assert paths.platform_dir("data", "win32", env, WIN_HOME) == WIN_HOME / "AppData" / "Local"
    assert paths.platform_dir("config", "win32", env, WIN_HOME) == WIN_HOME / "AppData" / "Roaming"


def test_windows_forward_slashes_are_normalised_not_mangled() -> None:
    got = paths.platform_dir("data", "win32", {"LOCALAPPDATA": "E:/Profiles/x y/Local"}, WIN_HOME)
    assert str(got) == r"E:\Profiles\x y\Local"


def test_macos_uses_application_support_for_both_and_ignores_xdg() -> None:
    home = PurePosixPath("/Users/ünï cødé")
    env = {"XDG_DATA_HOME": "/tmp/xdg-data", "XDG_CONFIG_HOME": "/tmp/xdg-config", "LOCALAPPDATA": "C:/x"}
    for kind in ("data", "config"):
        assert paths.platform_dir(kind, "darwin", env, home) == home / "Library" / "Application Support"


@pytest.mark.parametrize("platform", ["linux", "freebsd14", "openbsd7"])
def test_other_unixes_follow_xdg(platform: str) -> None:
    home = PurePosixPath("/home/ünï")
    env = {"XDG_DATA_HOME": "/srv/data home/日本", "XDG_CONFIG_HOME": "/etc/xdg conf", "APPDATA": "C:/x"}
    assert paths.platform_dir("data", platform, env, home) == PurePosixPath("/srv/data home/日本")
    assert paths.platform_dir("config", platform, env, home) == PurePosixPath("/etc/xdg conf")


@pytest.mark.parametrize("value", [None, "", " \t", "relative/dir", "~/data"])
def test_xdg_defaults_when_unset_blank_or_relative(value: str | None) -> None:
    """The XDG Base Directory specification: a relative value is invalid and ignored."""
    home = PurePosixPath("/home/ünï")
    env = {} if value is None else {"XDG_DATA_HOME": value, "XDG_CONFIG_HOME": value}
    assert paths.platform_dir("data", "linux", env, home) == home / ".local" / "share"
    assert paths.platform_dir("config", "linux", env, home) == home / ".config"


def test_platform_dir_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="'cache'"):
        paths.platform_dir("cache", "linux", {}, PurePosixPath("/h"))  # type: ignore[arg-type]


# ---- per-user directories: the real functions, with real files ----------------------------


@pytest.fixture
def fake_msvcrt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModuleType, str]]:
    """(the msvcrt module the Windows branch imports, the folder a child
    process puts on sys.path for it; "" on Windows, where it is the real one)."""
    if ON_WINDOWS:
        import msvcrt

        yield msvcrt, ""
        return
    if not hasattr(__import__("fcntl"), "F_OFD_SETLK"):
        pytest.skip("the msvcrt stand-in needs Linux open-file-description locks (F_OFD_SETLK)")
    folder = tmp_path_factory.mktemp("fake msvcrt")
    (folder / "msvcrt.py").write_text(FAKE_MSVCRT, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("msvcrt", folder / "msvcrt.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module, str(folder)


def _as_platform(monkeypatch: pytest.MonkeyPatch, platform: str, msvcrt: ModuleType | None = None) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    if msvcrt is not None:
        monkeypatch.setitem(sys.modules, "msvcrt", msvcrt)


def _profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A home and every per-user variable, each in a folder with a space and
    non-ASCII characters."""
    root = tmp_path / SPACED
    dirs = {
        "HOME": root / "home ø",
        "USERPROFILE": root / "home ø",  # Windows' home (Path.home() there)
        "LOCALAPPDATA": root / "AppData Lōcal",
        "APPDATA": root / "AppData Rōaming",
        "XDG_DATA_HOME": root / "xdg dätä",
        "XDG_CONFIG_HOME": root / "xdg cønfig",
    }
    for var, d in dirs.items():
        d.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(d))
    return dirs


@pytest.mark.parametrize(
    "platform, data_base, config_base",
    [
        ("win32", "LOCALAPPDATA", "APPDATA"),
        ("darwin", "HOME/Library/Application Support", "HOME/Library/Application Support"),
        ("linux", "XDG_DATA_HOME", "XDG_CONFIG_HOME"),
    ],
)
def test_default_history_and_config_files_per_platform(
    platform: str,
    data_base: str,
    config_base: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """``Monitor(storage=True)`` creates its file, and ``load_config()``
    reads its own, where the monkeypatched platform keeps them; nothing
    lands in another platform's folder."""
    dirs = _profile(tmp_path, monkeypatch)

    def base(spec: str) -> Path:
        var, _, rest = spec.partition("/")
        return dirs[var] / rest if rest else dirs[var]

    msvcrt = request.getfixturevalue("fake_msvcrt")[0] if platform == "win32" else None
    _as_platform(monkeypatch, platform, msvcrt)
    db = st.default_path()
    assert db == base(data_base) / "movie_director_metrics" / "metrics.sqlite3"
    assert cfg.default_config_path() == base(config_base) / "movie_director_metrics" / "backends.toml"
    if ON_WINDOWS and platform != "win32":
        return  # the POSIX lock (flock) does not exist on Windows

    with mdm.Monitor(storage=True, manual_clock=True, start_time=T0) as m:
        assert m.storage_error is None
        m.service("comfyui").record(12.5)
        m.advance(61.0)
    assert db.is_file() and db.with_name("metrics.sqlite3.lock").is_file()

    conf = cfg.default_config_path()
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text('[[backend]]\nname = "cømfy 日本"\nkind = "comfyui"\nurl = "http://127.0.0.1:8188"\n', encoding="utf-8")
    assert [b.name for b in cfg.load_config()] == ["cømfy 日本"]

    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {db.relative_to(tmp_path), db.with_name("metrics.sqlite3.lock").relative_to(tmp_path),
                       conf.relative_to(tmp_path)} | {p.relative_to(tmp_path) for p in db.parent.glob("metrics.sqlite3-*")}


def test_the_overrides_come_first_on_every_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dirs = _profile(tmp_path, monkeypatch)
    monkeypatch.setenv(st.STORAGE_ENV, "~/my db ø.sqlite3")
    monkeypatch.setenv(cfg.CONFIG_ENV, str(tmp_path / SPACED / "backends 日本.toml"))
    for platform in ("win32", "darwin", "linux"):
        _as_platform(monkeypatch, platform)
        assert st.default_path() == dirs["HOME"] / "my db ø.sqlite3"
        assert cfg.default_config_path() == tmp_path / SPACED / "backends 日本.toml"


# ---- the owner lock: both strategies, the same tests --------------------------------------

FAKE_MSVCRT = '''\
"""A stand-in for Windows' msvcrt.locking, for tests on Linux (the real
module exists only on Windows).  Same contract: locking(fd, mode, nbytes)
locks nbytes from the descriptor's current position; LK_NBLCK raises
OSError(EACCES) at once when another handle holds an overlapping byte;
LK_UNLCK of a range this handle does not hold raises OSError.  The lock is
a Linux open-file-description lock on the real file: held by one open file
like a Windows handle's (a second open in the same process is refused
too), and dropped by the kernel when its holder dies."""
import errno, fcntl, os, struct

LK_UNLCK, LK_LOCK, LK_NBLCK, LK_RLCK, LK_NBRLCK = 0, 1, 2, 3, 4

#: (mode, position, nbytes, file size) of every call, in order.
calls = []
_held = set()  # (fd, position, nbytes) this process holds


def _ofd(fd, kind, start, length):
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", kind, os.SEEK_SET, start, length, 0))


def locking(fd, mode, nbytes):
    pos = os.lseek(fd, 0, os.SEEK_CUR)
    calls.append((mode, pos, nbytes, os.fstat(fd).st_size))
    if mode == LK_NBLCK:
        try:
            _ofd(fd, fcntl.F_WRLCK, pos, nbytes)
        except OSError:
            raise OSError(errno.EACCES, "Permission denied") from None
        _held.add((fd, pos, nbytes))
    elif mode == LK_UNLCK:
        if (fd, pos, nbytes) not in _held:
            raise OSError(errno.EACCES, "Permission denied")
        _held.discard((fd, pos, nbytes))
        _ofd(fd, fcntl.F_UNLCK, pos, nbytes)
    else:
        raise NotImplementedError(f"mode {mode}: not used by the code under test")
'''

HOLDER = """
import sys, time
from pathlib import Path
from movie_director_metrics import filelock
fake_dir, db = sys.argv[1], sys.argv[2]
if fake_dir:  # the msvcrt branch on a system that is not Windows
    sys.path.insert(0, fake_dir)
    import msvcrt
    sys.platform = "win32"
lock = filelock.OwnerLock(Path(db))
lock.acquire()
print(type(filelock.platform_strategy()).__name__, flush=True)
time.sleep(60)
"""


class Branch:
    """One strategy of the lock, as this process and a child take it."""

    def __init__(self, name: str, strategy: type, fake_dir: str | None) -> None:
        self.name, self.strategy, self.fake_dir = name, strategy, fake_dir

    def holder(self, db: Path) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", HOLDER, self.fake_dir or "", str(db)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == self.strategy.__name__
        return child


@pytest.fixture(params=["posix", "msvcrt"])
def branch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Branch:
    if request.param == "posix":
        if ON_WINDOWS:
            pytest.skip("flock is POSIX")
        return Branch("posix", filelock.FlockStrategy, None)
    module, fake_dir = request.getfixturevalue("fake_msvcrt")
    if fake_dir:
        _as_platform(monkeypatch, "win32", module)
    return Branch("msvcrt", filelock.MsvcrtStrategy, fake_dir)


def _db(tmp_path: Path) -> Path:
    d = tmp_path / SPACED
    d.mkdir(parents=True, exist_ok=True)
    return d / "hïstory 日本.sqlite3"


def test_the_platform_picks_the_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    for platform, strategy in (("win32", filelock.MsvcrtStrategy), ("darwin", filelock.FlockStrategy),
                               ("linux", filelock.FlockStrategy), ("freebsd14", filelock.FlockStrategy)):
        monkeypatch.setattr(sys, "platform", platform)
        assert type(filelock.platform_strategy()) is strategy


@pytest.mark.skipif(ON_WINDOWS, reason="checks the guard that keeps msvcrt off other systems")
def test_the_msvcrt_branch_never_runs_off_windows(tmp_path: Path) -> None:
    with open(tmp_path / "x.lock", "a+b", buffering=0) as f, pytest.raises(NotImplementedError, match="Windows only"):
        filelock.MsvcrtStrategy().try_lock(f)


def test_a_second_process_is_refused_and_told_the_owner(branch: Branch, tmp_path: Path) -> None:
    db = _db(tmp_path)
    child = branch.holder(db)
    try:
        text = db.with_name(db.name + ".lock").read_text(encoding="utf-8")
        assert text.startswith(f"process {child.pid} on ")
        with pytest.raises(StorageLockedError, match=rf"in use by process {child.pid} on ") as e:
            mdm.Monitor(storage=db)
        assert e.value.path == str(db) and e.value.owner == text
        # Opening the lock file to try did not truncate the owner's text.
        assert db.with_name(db.name + ".lock").read_text(encoding="utf-8") == text
    finally:
        child.kill()
        child.wait()
    # The OS dropped the dead owner's lock.
    with mdm.Monitor(storage=db) as m:
        assert m.storage_error is None
        assert db.with_name(db.name + ".lock").read_text(encoding="utf-8").startswith(f"process {os.getpid()} on ")


def test_a_second_open_in_the_same_process_is_refused(branch: Branch, tmp_path: Path) -> None:
    db = _db(tmp_path)
    first = filelock.OwnerLock(db)
    first.acquire()
    try:
        assert type(filelock.platform_strategy()) is branch.strategy
        for _ in range(3):  # a refused open closes its file without dropping the owner's lock
            with pytest.raises(StorageLockedError, match=rf"in use by process {os.getpid()} on "):
                filelock.OwnerLock(db).acquire()
    finally:
        first.release()
    assert not first.held
    again = filelock.OwnerLock(db)
    again.acquire()  # released means released
    again.release()
    first.release()  # twice is harmless


def test_release_then_reacquire_many_times(branch: Branch, tmp_path: Path) -> None:
    db = _db(tmp_path)
    lock = filelock.OwnerLock(db)
    for _ in range(5):
        lock.acquire()
        with pytest.raises(StorageLockedError):
            filelock.OwnerLock(db).acquire()
        lock.release()


def test_msvcrt_locks_one_fixed_byte_past_the_owner_text(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_msvcrt: tuple[ModuleType, str]
) -> None:
    """Windows locks are mandatory: a locked byte cannot be read by anyone
    else.  So every process locks the same byte (not the end of the file,
    where "a+" puts the position and which moves with the text), far past
    the text, and unlocks it before closing."""
    module, fake_dir = fake_msvcrt
    if not fake_dir:
        pytest.skip("the real msvcrt keeps no record of its calls")
    _as_platform(monkeypatch, "win32", module)
    db = _db(tmp_path)
    lock_file = db.with_name(db.name + ".lock")
    lock_file.write_bytes(b"x" * 300)  # a longer text of an earlier owner
    lock = filelock.OwnerLock(db)
    lock.acquire()
    size = lock_file.stat().st_size
    with pytest.raises(StorageLockedError):
        filelock.OwnerLock(db).acquire()
    lock.release()
    calls = module.calls
    assert [c[:3] for c in calls] == [
        (module.LK_NBLCK, filelock.MSVCRT_LOCK_OFFSET, 1),  # the owner
        (module.LK_NBLCK, filelock.MSVCRT_LOCK_OFFSET, 1),  # refused
        (module.LK_UNLCK, filelock.MSVCRT_LOCK_OFFSET, 1),  # released, before the close
    ]
    assert calls[0][3] == 300 and 0 < size < filelock.MSVCRT_LOCK_OFFSET
    assert lock_file.stat().st_size == size  # locking past the end did not grow the file
    assert lock_file.read_text(encoding="utf-8").startswith(f"process {os.getpid()} on ")


def test_the_fake_msvcrt_refuses_what_windows_refuses(tmp_path: Path, fake_msvcrt: tuple[ModuleType, str]) -> None:
    """The stand-in itself: overlapping ranges of two handles conflict,
    disjoint ones do not, and unlocking what is not held fails."""
    module, fake_dir = fake_msvcrt
    if not fake_dir:
        pytest.skip("the stand-in is for systems without msvcrt")
    p = tmp_path / "f"
    p.write_bytes(b"")
    with open(p, "a+b", buffering=0) as a, open(p, "a+b", buffering=0) as b:
        a.seek(10)
        module.locking(a.fileno(), module.LK_NBLCK, 5)
        b.seek(14)
        with pytest.raises(OSError):
            module.locking(b.fileno(), module.LK_NBLCK, 1)
        b.seek(15)
        module.locking(b.fileno(), module.LK_NBLCK, 1)
        with pytest.raises(OSError):
            module.locking(a.fileno(), module.LK_UNLCK, 1)  # a holds 10..14, not 15
        a.seek(10)
        module.locking(a.fileno(), module.LK_UNLCK, 5)
        b.seek(10)
        module.locking(b.fileno(), module.LK_NBLCK, 5)


# ---- spaces, non-ASCII names and drive letters ------------------------------------------


def test_storage_export_and_cli_in_folders_with_spaces_and_non_ascii(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _db(tmp_path)
    with mdm.Monitor(storage=db, manual_clock=True, start_time=T0) as m:
        svc = m.service("cømfy 日本")
        for i in range(120):
            svc.record(10.0 + i % 7, ok=i % 30 != 0, error=None if i % 30 else "timeout")
            m.advance(1.0)
        out_dir = tmp_path / "exports ø" / "wöche 週"
        out_dir.mkdir(parents=True)
        csv_path = m.export(out_dir / "stats 日本.csv", "csv", window="1h")
        json_path = m.export(str(out_dir / "stats 日本.json"), "json", window="1h")
        jobs_path = m.export_jobs(out_dir / "jobs ø.csv", window="1h")
    assert csv_path == out_dir / "stats 日本.csv" and json_path == out_dir / "stats 日本.json"
    with open(csv_path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["service"] for r in rows} == {"cømfy 日本"} and sum(int(r["requests"]) for r in rows) == 120
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    assert [s["service"] for s in doc["services"]] == ["cømfy 日本"]
    assert jobs_path.is_file()
    # Nothing left beside them (the atomic write's temporary files are gone).
    assert sorted(p.name for p in out_dir.iterdir()) == ["jobs ø.csv", "stats 日本.csv", "stats 日本.json"]

    # A new process reads the history back from the same file.
    with mdm.Monitor(storage=str(db), manual_clock=True, start_time=T0 + 180) as m:
        assert m.stats("cømfy 日本", "1h").count == 120
    # The CLI, from the history file to an export, both paths with spaces and non-ASCII.
    cli_out = out_dir / "cli ëxport.json"
    rc = cli.main(["export", str(cli_out), "--storage", str(db), "--window", "24h"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.strip() == f"wrote {cli_out}"
    assert json.loads(cli_out.read_text(encoding="utf-8"))["services"][0]["summary"]["requests"] == 120


def test_config_files_in_folders_with_spaces_and_non_ascii(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / SPACED / "cønfig dir" / "backends 日本.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text('[[backend]]\nname = "ollama ø"\nkind = "ollama"\nurl = "http://127.0.0.1:11434"\n', encoding="utf-8")
    assert [b.name for b in cfg.load_config(conf)] == ["ollama ø"]
    assert [b.name for b in cfg.load_config(str(conf))] == ["ollama ø"]
    monkeypatch.setenv(cfg.CONFIG_ENV, str(conf))
    assert cfg.default_config_path() == conf
    assert [b.name for b in cfg.load_config()] == ["ollama ø"]
    with pytest.raises(mdm.ConfigError, match="Ünïcødé 日本"):
        cfg.load_config(conf.with_name("missing ø.toml"))


#: Windows paths as a user writes them, and what Windows makes of them.
WINDOWS_PATHS = [
    (r"C:\Users\x\hist.db", ("C:\\", "Users", "x", "hist.db")),
    ("D:/renders/日本 ø/out.csv", ("D:\\", "renders", "日本 ø", "out.csv")),
    (r"\\nas\share\my history\h.sqlite3", ("\\\\nas\\share\\", "my history", "h.sqlite3")),
    (r"C:\Program Files\Blender Foundation\hist.db", ("C:\\", "Program Files", "Blender Foundation", "hist.db")),
]


@pytest.mark.parametrize("text, parts", WINDOWS_PATHS)
def test_drive_letters_survive_expansion_under_windows_rules(
    text: str, parts: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``paths.expanded`` with ``ntpath`` is what ``expand_user`` does on
    Windows (``os.path`` is ``ntpath`` there); a drive or share is not ``~``
    and comes back as written."""
    monkeypatch.setenv("USERPROFILE", r"C:\Users\Ünï Cødé")
    got = paths.expanded(text, ntpath)
    assert got == text
    win = PureWindowsPath(got)
    assert win.parts == parts and win.is_absolute()
    # The lock file sits beside the database, on the same drive.
    lock = filelock.OwnerLock(win)  # type: ignore[arg-type]  # only its name arithmetic is used
    assert PureWindowsPath(lock.path) == win.with_name(win.name + ".lock") and lock.path.drive == win.drive


def test_home_expands_to_the_windows_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERPROFILE", r"C:\Users\Ünï Cødé")
    got = PureWindowsPath(paths.expanded(r"~\my history\hist.db", ntpath))
    assert got == PureWindowsPath(r"C:\Users\Ünï Cødé\my history\hist.db") and got.drive == "C:"
    assert paths.expanded("~/out.csv", ntpath) == r"C:\Users\Ünï Cødé/out.csv"  # Windows reads "/" as "\"


def test_a_toml_storage_value_with_a_drive_letter_is_kept_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path from a TOML file (literal or escaped string) reaches the
    storage code unchanged: on Windows it names C:\\...; here, where a
    backslash is an ordinary character, it is one file name in the
    current directory, created as exactly that name."""
    doc = tomllib.loads("a = 'C:\\Users\\x\\hist.db'\nb = \"C:\\\\Users\\\\x\\\\hist.db\"\n")
    assert doc["a"] == doc["b"] == r"C:\Users\x\hist.db"
    resolved = resolve_storage(doc["a"])
    assert resolved is not None and str(resolved) == r"C:\Users\x\hist.db"
    assert PureWindowsPath(paths.expanded(doc["a"], ntpath)).parts == ("C:\\", "Users", "x", "hist.db")
    if ON_WINDOWS:
        return
    monkeypatch.chdir(tmp_path)
    with mdm.Monitor(storage=doc["a"]) as m:
        assert m.storage_error is None
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [
        r"C:\Users\x\hist.db",
        r"C:\Users\x\hist.db.lock",
    ]


def test_expand_user_keeps_spaces_non_ascii_and_unknown_users() -> None:
    home = Path.home()
    assert paths.expand_user("~/my history/Ünïcødé 日本.db", "storage", ValueError) == home / "my history" / "Ünïcødé 日本.db"
    if not ON_WINDOWS:  # Windows guesses a sibling of the own profile for ~other
        assert paths.expand_user("~no-such-user-ø/x.db", "storage", ValueError) == Path("~no-such-user-ø/x.db")
    assert paths.expand_user("rel dir/ø.db", "storage", ValueError) == Path("rel dir/ø.db")
    with pytest.raises(ValueError, match="storage 'a\\\\x00b' holds a NUL"):
        paths.expand_user("a\x00b", "storage", ValueError)
