"""Crash-safe history in one SQLite file.

What is kept: sealed 1-minute and 1-hour buckets (exact count / errors /
sum / min / max as columns, digests and the rest as the engine's compact
blob), a readable copy of error-type counts per bucket, health runs, the
cause of each outage, and each service's error-type names.  The file is in WAL mode with a busy
timeout, so a reader (an export, ``sqlite3`` on the command line) never
blocks the writer, and a crash loses at most what was not yet flushed.

One process owns a file at a time: a second one gets
:class:`~movie_director_metrics.errors.StorageLockedError` naming the
owner.  Two writers would each hold a different part of the same buckets,
and whichever flushed last would silently win.

Faults never stop recording: a corrupt file is moved aside and replaced;
a read-only directory or a full disk is reported once
(:class:`~movie_director_metrics.errors.StorageWarning`), the engine keeps
the data in memory, and the next flush that can write catches up.
"""

from __future__ import annotations

import datetime as _dt
import os
import sqlite3
import threading
import time
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _core
from .errors import InvalidConfigError, StorageError, StorageWarning
from .filelock import OwnerLock as _OwnerLock
from .paths import expand_user, user_dir

#: Environment variable naming the database file (overrides the platform default).
STORAGE_ENV = "MOVIE_DIRECTOR_METRICS_DB"

#: Format of the engine's bucket blobs this build writes and reads.
BLOB_FORMAT = "1"

#: Error types a service can name (the engine's table); more count as "other",
#: stored under this id.
OTHER_ERROR_ID = _core.MAX_ERROR_TYPES

#: Starts and ends a namespace prefix of stored service names.  Service
#: names are printable, so a name with this control character can only be
#: a namespaced one.
NAMESPACE_MARK = "\x1f"
#: The namespace of the jobs engine's series.
JOBS_NAMESPACE = f"{NAMESPACE_MARK}jobs{NAMESPACE_MARK}"

#: Resolutions persisted, in seconds: the minute tier and the hourly roll-up.
MINUTE, HOUR = 60, 3600

#: Forward migrations, in order; ``PRAGMA user_version`` counts those applied.
MIGRATIONS: tuple[str, ...] = (
    # 1: services, buckets, error types, health runs.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE services (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE error_types (
        service_id INTEGER NOT NULL REFERENCES services(id),
        type_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (service_id, type_id)
    ) WITHOUT ROWID;
    CREATE TABLE buckets (
        service_id INTEGER NOT NULL REFERENCES services(id),
        resolution_s INTEGER NOT NULL,
        start_s INTEGER NOT NULL,
        count INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        sum_ms REAL NOT NULL,
        min_ms REAL,
        max_ms REAL,
        partial INTEGER NOT NULL DEFAULT 0,
        blob BLOB,
        PRIMARY KEY (service_id, resolution_s, start_s)
    ) WITHOUT ROWID;
    CREATE TABLE bucket_errors (
        service_id INTEGER NOT NULL,
        resolution_s INTEGER NOT NULL,
        start_s INTEGER NOT NULL,
        type_id INTEGER NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (service_id, resolution_s, start_s, type_id)
    ) WITHOUT ROWID;
    CREATE TABLE health_runs (
        service_id INTEGER NOT NULL REFERENCES services(id),
        first_s INTEGER NOT NULL,
        last_s INTEGER NOT NULL,
        up INTEGER NOT NULL,
        PRIMARY KEY (service_id, first_s)
    ) WITHOUT ROWID;
    """,
    # 2: LLM usage (one row per request) and alert events.
    """
    CREATE TABLE llm_usage (
        id INTEGER PRIMARY KEY,
        at_s REAL NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        input_uncached INTEGER,
        cache_read INTEGER,
        cache_write INTEGER,
        output INTEGER,
        reasoning INTEGER,
        cost_usd REAL,
        latency_ms REAL NOT NULL,
        ttft_ms REAL,
        ok INTEGER NOT NULL,
        error TEXT,
        usage_known INTEGER NOT NULL,
        output_tokens_per_s REAL
    );
    CREATE INDEX llm_usage_by_time ON llm_usage (at_s);
    CREATE TABLE alert_events (
        id INTEGER PRIMARY KEY,
        at_s REAL NOT NULL,
        target TEXT NOT NULL,
        rule TEXT NOT NULL,
        state TEXT NOT NULL,
        value REAL,
        message TEXT NOT NULL
    );
    CREATE INDEX alert_events_by_time ON alert_events (at_s);
    """,
    # 3: jobs (one row per finished job) and the keys of the jobs engine's series.
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        model TEXT,
        workflow TEXT,
        job_id TEXT,
        source TEXT NOT NULL,
        submitted_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL NOT NULL,
        queue_wait_ms REAL,
        processing_ms REAL NOT NULL,
        ok INTEGER NOT NULL,
        error TEXT,
        peak_vram_bytes REAL,
        tags TEXT NOT NULL
    );
    CREATE INDEX jobs_by_time ON jobs (finished_at);
    CREATE TABLE job_series (
        name TEXT PRIMARY KEY,
        service TEXT NOT NULL,
        by_label TEXT NOT NULL,
        label TEXT NOT NULL,
        measure TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 4: alert events keep their from-state, severity, kind and threshold as
    # columns (they were only in the message text).  Rows written before
    # are filled from their message ("<from> -> <to>[ (repeat)]: [<severity>] ...").
    """
    ALTER TABLE alert_events ADD COLUMN from_state TEXT;
    ALTER TABLE alert_events ADD COLUMN severity TEXT;
    ALTER TABLE alert_events ADD COLUMN kind TEXT;
    ALTER TABLE alert_events ADD COLUMN threshold REAL;
    UPDATE alert_events SET
        from_state = CASE WHEN instr(message, ' -> ') > 0
                          THEN substr(message, 1, instr(message, ' -> ') - 1) END,
        severity = CASE WHEN instr(message, ': [') > 0
                        THEN substr(message, instr(message, ': [') + 3,
                                    instr(substr(message, instr(message, ': [') + 3), ']') - 1) END,
        kind = CASE WHEN instr(message, ' (repeat): ') > 0 THEN 'repeat' ELSE 'transition' END
    """,
    # 5: why each outage began (the collectors' diagnosis; incidents.py):
    # one row per streak of failed probes, updated while the streak lasts.
    """
    CREATE TABLE outage_causes (
        id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        at_s REAL NOT NULL,
        cause TEXT NOT NULL,
        detail TEXT,
        probes INTEGER NOT NULL,
        last_s REAL NOT NULL,
        UNIQUE (service, at_s)
    );
    CREATE INDEX outage_causes_by_time ON outage_causes (last_s);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Retention:
    """How long history stays on disk (pruned hourly)."""

    minute_days: float = 7.0
    hour_days: float = 365.0

    def __post_init__(self) -> None:
        for name in ("minute_days", "hour_days"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 1 / 24 <= v <= 3650):
                raise InvalidConfigError(
                    f"Retention.{name}={v!r} is out of range: expected a number of days from 1/24 to 3650"
                )

    def seconds(self, resolution_s: int) -> float:
        return 86_400.0 * (self.minute_days if resolution_s == MINUTE else self.hour_days)


def default_path() -> Path:
    """The database file: ``$MOVIE_DIRECTOR_METRICS_DB`` if set, else
    ``metrics.sqlite3`` in the platform's user data directory (see
    :func:`movie_director_metrics.paths.user_dir`)."""
    env = os.environ.get(STORAGE_ENV)
    if env:
        return expand_user(env, STORAGE_ENV, InvalidConfigError)
    return user_dir("data") / "metrics.sqlite3"


def _utc_stamp() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class _Watermarks:
    """What was written, per service: the newest complete bucket start per
    resolution (re-sent once, for a late second), and the time of the last
    health write."""

    buckets: dict[tuple[str, int], int] = field(default_factory=dict)
    health: dict[str, float] = field(default_factory=dict)


class Storage:
    """The SQLite file behind a monitor.  Used by ``Monitor(storage=...)``;
    all methods are called from one thread at a time (the monitor's flush
    lock)."""

    def __init__(self, path: str | os.PathLike[str], retention: Retention | None = None) -> None:
        self.path = expand_user(path, "storage path", InvalidConfigError).absolute()
        self.retention = retention or Retention()
        self._conn: sqlite3.Connection | None = None
        self._lock = _OwnerLock(self.path)
        self._ids: dict[str, int] = {}
        # Per service id: error-type name -> the id the file stores it under.
        self._stored_ids: dict[int, dict[str, int]] = {}
        self.marks = _Watermarks()
        self.last_error: str | None = None
        self._warned = False
        self._last_prune = 0.0

    # ---- opening ---------------------------------------------------------

    def open(self) -> None:
        """Opens (creating, migrating or replacing a corrupt file as needed).
        Raises StorageLockedError when another process owns the file,
        StorageError for a file from a newer version, OSError/sqlite3.Error
        when the file cannot be created (the caller retries later)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            conn = self._connect_checked()
            self._migrate(conn)
        except BaseException:
            self._lock.release()
            raise
        self._conn = conn

    def _connect_checked(self) -> sqlite3.Connection:
        if self.path.exists():
            try:
                conn = self._connect()
                ok = conn.execute("PRAGMA quick_check").fetchone()
                if ok is not None and ok[0] == "ok":
                    return conn
                conn.close()
                reason = f"quick_check said {ok[0] if ok else 'nothing'!r}"
            except sqlite3.DatabaseError as e:
                reason = str(e)
            self._move_aside(reason)
        return self._connect()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN ... COMMIT).
        conn = sqlite3.connect(
            self.path, timeout=5.0, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _move_aside(self, reason: str) -> None:
        dest = self.path.with_name(f"{self.path.name}.corrupt-{_utc_stamp()}")
        os.replace(self.path, dest)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.replace(side, dest.with_name(dest.name + suffix))
        warnings.warn(
            StorageWarning(
                f"the metrics database {self.path} could not be read ({reason}); "
                f"it was moved aside to {dest} and a fresh one started"
            ),
            stacklevel=4,
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.close()
            raise StorageError(
                f"{self.path} has schema version {version}, newer than this build's "
                f"{SCHEMA_VERSION}: upgrade movie_director_metrics, or pass another storage path"
            )
        for v in range(version, SCHEMA_VERSION):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _statements(MIGRATIONS[v]):
                    conn.execute(stmt)
                if v == 0:
                    conn.executemany(
                        "INSERT INTO meta VALUES (?, ?)",
                        [("blob_format", BLOB_FORMAT), ("created_at", str(time.time()))],
                    )
                conn.execute(f"PRAGMA user_version={v + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        fmt = conn.execute("SELECT value FROM meta WHERE key='blob_format'").fetchone()
        self.blob_format_ok = fmt is not None and fmt[0] == BLOB_FORMAT

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._conn.close()
            self._conn = None
        self._lock.release()

    # ---- writing ---------------------------------------------------------

    def _service_id(self, conn: sqlite3.Connection, name: str) -> int:
        sid = self._ids.get(name)
        if sid is None:
            conn.execute(
                "INSERT OR IGNORE INTO services (name, created_at) VALUES (?, ?)", (name, time.time())
            )
            sid = int(conn.execute("SELECT id FROM services WHERE name=?", (name,)).fetchone()[0])
            self._ids[name] = sid
        return sid

    def _error_ids(self, conn: sqlite3.Connection, sid: int, live: list[str]) -> list[int] | None:
        """Maps this process's error-type ids to the file's: a name keeps
        the id it was first stored under, whatever order this process met
        it in (new names take the next free id, past 32 they count as
        "other").  None when the two agree, so blobs are written as they are."""
        stored = self._stored_ids.get(sid)
        if stored is None:
            stored = dict(conn.execute("SELECT name, type_id FROM error_types WHERE service_id=?", (sid,)).fetchall())
            self._stored_ids[sid] = stored
        ids = []
        for name in live:
            if name not in stored and len(stored) < OTHER_ERROR_ID:
                stored[name] = len(stored)
                conn.execute("INSERT INTO error_types VALUES (?, ?, ?)", (sid, stored[name], name))
            ids.append(stored.get(name, OTHER_ERROR_ID))
        return None if ids == list(range(len(ids))) else ids

    def write(self, core: Any, resolutions: Sequence[int], now: float, final: bool, namespace: str = "") -> int:
        """Writes what changed since the last write, in one transaction;
        returns the number of bucket rows written.  Watermarks move only
        after the commit, so a failed write is retried whole.  A
        ``namespace`` (see ``JOBS_NAMESPACE``) keeps another engine's
        services apart from the monitor's."""
        conn = self._conn
        assert conn is not None
        marks: dict[tuple[str, int], int] = {}
        health_marks: dict[str, float] = {}
        written = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for engine_name in core.services():
                svc = core.service(engine_name)
                name = namespace + engine_name
                sid = self._service_id(conn, name)
                error_ids = self._error_ids(conn, sid, svc.error_types())
                for res in resolutions:
                    since = self.marks.buckets.get((name, res), 0)
                    rows = svc.stored_buckets(res, since, final, error_ids)
                    conn.executemany(
                        "INSERT OR REPLACE INTO buckets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            (sid, res, b.start_s, b.count, b.errors, b.sum_ms, _opt(b.count, b.min_ms),
                             _opt(b.count, b.max_ms), b.partial, b.blob)
                            for b in rows
                        ],
                    )
                    conn.executemany(
                        "INSERT OR REPLACE INTO bucket_errors VALUES (?, ?, ?, ?, ?)",
                        [(sid, res, b.start_s, tid, n) for b in rows for tid, n in b.error_counts],
                    )
                    complete = [b.start_s for b in rows if not b.partial]
                    if complete:
                        marks[(name, res)] = max(complete)
                    written += len(rows)
                since_h = self.marks.health.get(name, 0.0)
                runs = svc.stored_health(int(since_h))
                conn.executemany(
                    "INSERT OR REPLACE INTO health_runs VALUES (?, ?, ?, ?)",
                    [(sid, f, l, int(up)) for f, l, up in runs],
                )
                health_marks[name] = now
            conn.execute("COMMIT")
        except BaseException:
            # Names cached during this transaction were rolled back with it.
            self._stored_ids.clear()
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        self.marks.buckets.update(marks)
        self.marks.health.update(health_marks)
        if now - self._last_prune >= 3600:
            self.prune(now)
        return written

    def prune(self, now: float) -> None:
        """Deletes buckets and health runs older than the retention."""
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            for res in (MINUTE, HOUR):
                cutoff = int(now - self.retention.seconds(res))
                for table in ("buckets", "bucket_errors"):
                    conn.execute(f"DELETE FROM {table} WHERE resolution_s=? AND start_s<?", (res, cutoff))
                    if res == MINUTE:
                        # Other sub-hour tiers (the jobs engine's 10 minutes)
                        # are kept as long as minutes.
                        conn.execute(
                            f"DELETE FROM {table} WHERE resolution_s NOT IN (?, ?) AND start_s<?", (MINUTE, HOUR, cutoff)
                        )
            conn.execute(
                "DELETE FROM health_runs WHERE last_s<?", (int(now - self.retention.seconds(HOUR)),)
            )
            for table, at in _ROW_TABLES.items():
                conn.execute(f"DELETE FROM {table} WHERE {at}<?", (now - self.retention.seconds(HOUR),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._last_prune = now

    def append(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Appends rows (LLM usage, alert events, jobs, job series keys) in
        one transaction; a job series key already stored is kept."""
        if not rows:
            return
        conn = self._conn
        assert conn is not None and (table in _ROW_TABLES or table == "job_series")
        marks = ", ".join("?" for _ in columns)
        verb = "INSERT OR IGNORE" if table == "job_series" else "INSERT"
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def write_outage_causes(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Writes outage cause entries in one transaction: a new streak is
        inserted, one already stored (same service and start) gets its
        newer probe count and last time."""
        if not rows:
            return
        conn = self._conn
        assert conn is not None
        marks = ", ".join("?" for _ in columns)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                f"INSERT INTO outage_causes ({', '.join(columns)}) VALUES ({marks}) "
                "ON CONFLICT (service, at_s) DO UPDATE SET probes = excluded.probes, last_s = excluded.last_s",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def recent(self, table: str, columns: Sequence[str], since: float) -> list[tuple[Any, ...]]:
        """Rows of ``table`` at or after ``since`` (epoch s), oldest first."""
        conn = self._conn
        assert conn is not None
        at = _ROW_TABLES[table]
        return conn.execute(
            f"SELECT {', '.join(columns)} FROM {table} WHERE {at}>=? ORDER BY {at}, id", (since,)
        ).fetchall()

    def distinct_job_services(self) -> list[tuple[str]]:
        """Services with stored job rows."""
        conn = self._conn
        assert conn is not None
        return conn.execute("SELECT DISTINCT service FROM jobs").fetchall()

    def job_series(self) -> list[tuple[str, str, str, str, str]]:
        """Stored keys of the jobs engine's series: (name, service, by,
        label, measure)."""
        conn = self._conn
        assert conn is not None
        return conn.execute("SELECT name, service, by_label, label, measure FROM job_series").fetchall()

    # ---- reading ---------------------------------------------------------

    def load(
        self, core: Any, resolutions: Sequence[int], tier_windows: dict[int, int], now: float, namespace: str = ""
    ) -> dict[str, int]:
        """Puts persisted history back into a fresh engine: buckets within
        each tier's window, health runs within the longest.  Returns counts
        by outcome (restored / out_of_window / rejected, services).  Only
        the services of ``namespace`` are loaded (``""``: the monitor's)."""
        conn = self._conn
        assert conn is not None
        totals = {"services": 0, "restored": 0, "out_of_window": 0, "rejected": 0, "skipped_services": 0}
        if not getattr(self, "blob_format_ok", True):
            warnings.warn(StorageWarning(f"{self.path} holds buckets in another format; history not reloaded"), stacklevel=3)
            return totals
        longest = max(tier_windows.values(), default=0)
        for sid, name in conn.execute("SELECT id, name FROM services ORDER BY id").fetchall():
            self._ids[name] = sid
            if _namespace_of(name) != namespace:
                continue
            has_data = conn.execute(
                "SELECT 1 FROM buckets WHERE service_id=? AND start_s>=? LIMIT 1", (sid, now - longest)
            ).fetchone() or conn.execute(
                "SELECT 1 FROM health_runs WHERE service_id=? AND last_s>=? LIMIT 1", (sid, now - longest)
            ).fetchone()
            if not has_data:
                continue
            try:
                svc = core.service(name[len(namespace):])
            except Exception as e:  # ServiceLimitError, InvalidNameError
                totals["skipped_services"] += 1
                warnings.warn(StorageWarning(f"history of service {name!r} not reloaded: {e}"), stacklevel=3)
                continue
            names = [n for (n,) in conn.execute(
                "SELECT name FROM error_types WHERE service_id=? ORDER BY type_id", (sid,)
            )]
            for res in resolutions:
                rows = conn.execute(
                    "SELECT start_s, count, errors, sum_ms, coalesce(min_ms, 0), coalesce(max_ms, 0), blob "
                    "FROM buckets WHERE service_id=? AND resolution_s=? AND start_s>=? ORDER BY start_s",
                    (sid, res, int(now - tier_windows[res])),
                ).fetchall()
                report = svc.restore_buckets(res, rows, names)
                for k in ("restored", "out_of_window", "rejected"):
                    totals[k] += report[k]
                complete = [r[0] for r in rows]
                if complete:
                    self.marks.buckets[(name, res)] = max(complete)
            runs = conn.execute(
                "SELECT first_s, last_s, up FROM health_runs WHERE service_id=? AND last_s>=? ORDER BY first_s",
                (sid, int(now - longest)),
            ).fetchall()
            svc.restore_health([(f, l, bool(u)) for f, l, u in runs])
            totals["services"] += 1
        if totals["rejected"]:
            warnings.warn(
                StorageWarning(f"{totals['rejected']} damaged buckets in {self.path} were skipped"), stacklevel=3
            )
        return totals

    def rows(self, service: str, resolution_s: int, start: float, end: float) -> list[tuple[Any, ...]]:
        """Stored buckets of a service with ``start <= bucket start < end``
        (for exports), in the shape ``Service.restore_buckets`` takes."""
        conn = self._conn
        assert conn is not None
        sid = self._ids.get(service)
        if sid is None:
            return []
        return conn.execute(
            "SELECT start_s, count, errors, sum_ms, coalesce(min_ms, 0), coalesce(max_ms, 0), blob "
            "FROM buckets WHERE service_id=? AND resolution_s=? AND start_s>=? AND start_s<? ORDER BY start_s",
            (sid, resolution_s, int(start), int(end)),
        ).fetchall()

    def health_runs(self, service: str, start: float) -> list[tuple[int, int, bool]]:
        conn = self._conn
        assert conn is not None
        sid = self._ids.get(service)
        if sid is None:
            return []
        return [
            (f, l, bool(u))
            for f, l, u in conn.execute(
                "SELECT first_s, last_s, up FROM health_runs WHERE service_id=? AND last_s>=? ORDER BY first_s",
                (sid, int(start)),
            )
        ]

    def error_types(self, service: str) -> list[str]:
        conn = self._conn
        assert conn is not None
        sid = self._ids.get(service)
        if sid is None:
            return []
        return [n for (n,) in conn.execute("SELECT name FROM error_types WHERE service_id=? ORDER BY type_id", (sid,))]

    def service_names(self) -> list[str]:
        conn = self._conn
        assert conn is not None
        return [n for (n,) in conn.execute("SELECT name FROM services ORDER BY id") if not _namespace_of(n)]


#: Tables of appended rows and the column that times each row (pruned
#: with the health runs, by the hourly retention).  An outage cause is
#: timed by the last probe of its streak, as a health run by its last second.
_ROW_TABLES = {"llm_usage": "at_s", "alert_events": "at_s", "jobs": "finished_at", "outage_causes": "last_s"}


def _namespace_of(stored_name: str) -> str:
    """The namespace of a stored service name: ``""`` for the monitor's own
    services, else the ``NAMESPACE_MARK``-delimited prefix."""
    if not stored_name.startswith(NAMESPACE_MARK):
        return ""
    end = stored_name.find(NAMESPACE_MARK, 1)
    return stored_name[: end + 1] if end > 0 else ""


def _opt(count: int, v: float) -> float | None:
    """min/max of an empty bucket are NULL, not a fake 0 or infinity."""
    return v if count else None


def _statements(script: str) -> Iterator[str]:
    """A migration script's statements (each runs inside the migration's
    transaction; ``executescript`` would commit on its own)."""
    for stmt in script.split(";"):
        if stmt.strip():
            yield stmt


class Flusher:
    """The background thread that flushes every ``interval_s`` seconds.  It
    waits on an Event (the GIL is free while it waits), and recording never
    waits for it: the engine's recorders are lock-free.  It holds its
    monitor weakly, so a monitor nobody references can still be collected
    (and closed)."""

    def __init__(self, flush: Any, interval_s: float) -> None:
        self._flush = weakref.WeakMethod(flush)
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mdm-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            flush = self._flush()
            if flush is None:
                return
            flush()
            del flush

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
