"""`Notifier`: alert events to webhooks, ntfy, Discord, Slack and the
desktop, from one worker thread.

::

    notifier = Notifier(parse_notify("alerts.toml"), allow_remote=True)
    notifier.attach(monitor.alerts)      # every later event is offered to every target
    ...
    notifier.close()

Guarantees, in the order questions about them come up:

* **Nothing slow on the caller's thread.**  :meth:`Notifier.submit` (the
  alert manager's callback, run by ``evaluate()`` -- Blender's main thread,
  the CLI's loop) filters the event per target and appends it to that
  target's queue: a few dict and deque operations under one lock, no I/O,
  no DNS, no subprocess.  Payloads are built, and every request and
  command run, on the worker thread.
* **Bounded.**  Each target's queue holds at most ``max_queue`` waiting
  deliveries (plus the one being sent); a full queue drops its oldest,
  counted in that target's ``dropped``.  A target that never answers
  costs the worker ``timeout_s`` per attempt and fills only its own queue.
* **Retries.**  A delivery that fails for a reason that may pass (no
  connection, a timeout, HTTP 408/429/5xx, a desktop command that failed)
  is tried again after ``backoff_s``, doubling up to ``max_backoff_s``
  (a 429's ``Retry-After`` is honoured within that bound), at most
  ``retries`` times; other failures (HTTP 4xx: a wrong URL) are final.
  Later events of a target wait behind its retry, so a target sees its
  events in order: a ``resolved`` never overtakes its ``firing``.
* **Remote access.**  A target whose URL is not on this machine is
  contacted only while ``allow_remote`` is true (a bool, or a callable read
  in :meth:`submit` and :meth:`status`, i.e. on the caller's thread --
  Blender's "Allow Online Access").  Events for a blocked target are not
  queued; they count in ``skipped`` and its state is ``blocked``.  A
  desktop target on a machine without a notifier is ``unavailable``.
* **Secrets.**  URLs are shown only as :func:`~.targets.redact_url` gives
  them, in statuses, log lines and error texts (server replies and OS
  errors are scrubbed of the URL and its path and query).
* **Closing.**  :meth:`close` stops taking events, aborts the request or
  command in flight (its socket is shut down, its process killed) and
  joins the worker within ``timeout_s``; what was still queued counts as
  dropped.  :meth:`flush` waits for the queues to empty first.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

from .. import _core
from ..errors import ConfigError
from .manager import AlertEvent
from .payloads import HttpRequest, desktop_args, desktop_available, http_request
from .targets import NotifyKind, NotifyTarget, redact_url, scrub

logger = logging.getLogger(__package__ or __name__)

NotifyTargetState = Literal["idle", "ok", "retrying", "failing", "blocked", "unavailable", "closed"]

#: Largest reply body read from a notification endpoint (it is discarded).
MAX_REPLY_BYTES = 64 * 1024
#: HTTP statuses worth another try.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class EventSource(Protocol):
    """What :meth:`Notifier.attach` needs: ``AlertManager``'s callbacks."""

    def on_event(self, callback: Callable[[AlertEvent], object]) -> Callable[[AlertEvent], object]: ...
    def remove_callback(self, callback: Callable[[AlertEvent], object]) -> None: ...


@dataclass(frozen=True)
class NotifyStatus:
    """One target's deliveries so far (a snapshot).

    ``state``: ``idle`` (nothing sent yet), ``ok`` (the last delivery
    went through), ``retrying`` (the oldest waiting delivery failed and
    will be tried again), ``failing`` (the last delivery gave up),
    ``blocked`` (remote, and remote access is off), ``unavailable``
    (desktop, no notifier on this machine), ``closed``.  ``sent``:
    deliveries that went through; ``failed``: those that gave up after
    their retries (or at once: HTTP 4xx); ``dropped``: pushed out of a full
    queue or left at close; ``skipped``: not queued because the target was
    blocked or unavailable; ``queued``: waiting now.  ``url`` and
    ``last_error`` are redacted.  Times are epoch seconds.
    """

    name: str
    kind: NotifyKind
    url: str | None
    state: NotifyTargetState
    sent: int
    failed: int
    dropped: int
    skipped: int
    queued: int
    attempts: int
    last_error: str | None
    last_error_at: float | None
    last_sent_at: float | None


@dataclass
class _Delivery:
    event: AlertEvent
    attempt: int = 0            # failed tries so far
    due: float = 0.0            # monotonic s: not before


class _Lane:
    """One target's queue and counters; guarded by the notifier's lock."""

    def __init__(self, target: NotifyTarget, unavailable: bool) -> None:
        self.target = target
        self.unavailable = unavailable
        self.queue: deque[_Delivery] = deque()
        self.busy = False           # a delivery of this lane is in flight
        self.sent = self.failed = self.dropped = self.skipped = self.attempts = 0
        self.last_ok: bool | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_sent_at: float | None = None


class _Failure(Exception):
    def __init__(self, message: str, *, retry: bool, after_s: float | None = None, blocked: bool = False) -> None:
        super().__init__(message)
        self.retry = retry
        self.after_s = after_s
        self.blocked = blocked


def _bounded(name: str, value: object, lo: float, hi: float, *, integer: bool = False) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not lo <= float(value) <= hi:  # type: ignore[arg-type]
        what = "an integer" if integer else "a number"
        raise ConfigError(f"{name} = {value!r}: expected {what} from {lo:g} to {hi:g}")
    return float(value)  # type: ignore[arg-type]


class Notifier:
    """Sends alert events to ``targets`` from one worker thread (see the
    module documentation for the guarantees).

    ``allow_remote``: whether targets off this machine may be contacted (a
    bool, or a callable read on the caller's thread).  ``max_queue``:
    waiting deliveries per target.  ``timeout_s``: per attempt (connect,
    and each read; a desktop command's run).  ``retries``: further tries
    after a failure that may pass; ``backoff_s``/``max_backoff_s``: the
    first wait and the longest.
    """

    def __init__(
        self,
        targets: Iterable[NotifyTarget],
        *,
        allow_remote: bool | Callable[[], bool] = False,
        max_queue: int = 100,
        timeout_s: float = 5.0,
        retries: int = 4,
        backoff_s: float = 2.0,
        max_backoff_s: float = 60.0,
    ) -> None:
        self.max_queue = int(_bounded("max_queue", max_queue, 1, 100_000, integer=True))
        self.timeout_s = _bounded("timeout_s", timeout_s, 0.01, 300)
        self.retries = int(_bounded("retries", retries, 0, 100, integer=True))
        self.backoff_s = _bounded("backoff_s", backoff_s, 0, 3600)
        self.max_backoff_s = _bounded("max_backoff_s", max_backoff_s, 0, 86_400)
        self._allow_remote = allow_remote
        # The last answer of allow_remote on a caller's thread: what the
        # worker goes by (it never calls allow_remote itself).
        self._remote_ok = False
        self._lanes: list[_Lane] = []
        for t in targets:
            if not isinstance(t, NotifyTarget):
                raise ConfigError(f"expected NotifyTarget objects, got {type(t).__name__}")
            if any(lane.target.name == t.name for lane in self._lanes):
                raise ConfigError(f"notify target {t.name!r}: name is used twice; expected unique names")
            unavailable = t.kind == "desktop" and not desktop_available()
            self._lanes.append(_Lane(t, unavailable))
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._sources: list[EventSource] = []
        self._abort: Callable[[], None] | None = None   # cancels the attempt in flight
        self._thread = threading.Thread(target=self._run, name="movie-director-metrics-notify", daemon=True)
        self._thread.start()

    # ---- the caller's side ---------------------------------------------------

    @property
    def targets(self) -> tuple[NotifyTarget, ...]:
        return tuple(lane.target for lane in self._lanes)

    def _remote_allowed(self) -> bool:
        """Reads ``allow_remote`` (on the caller's thread) and keeps the answer for the worker."""
        allow = self._allow_remote
        ok = False
        if callable(allow):
            try:
                ok = bool(allow())
            except Exception:
                logger.exception("notify: allow_remote() failed; treated as False")
        else:
            ok = bool(allow)
        self._remote_ok = ok
        return ok

    def submit(self, event: AlertEvent) -> None:
        """Queues ``event`` for every target that wants it; returns at once
        (no I/O: see the module documentation).  Ignored after :meth:`close`."""
        allowed: bool | None = None
        with self._cond:
            if self._closed:
                return
            queued = False
            for lane in self._lanes:
                if not lane.target.wants(event):
                    continue
                if lane.target.remote and allowed is None:
                    allowed = self._remote_allowed()
                if lane.unavailable or (lane.target.remote and not allowed):
                    lane.skipped += 1
                    continue
                if len(lane.queue) >= self.max_queue:
                    lane.queue.popleft()
                    lane.dropped += 1
                lane.queue.append(_Delivery(event))
                queued = True
            if queued:
                self._cond.notify_all()

    def attach(self, manager: EventSource) -> None:
        """Subscribes :meth:`submit` to ``manager``'s events (an
        ``AlertManager``: ``monitor.alerts``); :meth:`close` unsubscribes."""
        manager.on_event(self.submit)
        with self._cond:
            self._sources.append(manager)

    def detach(self, manager: EventSource) -> None:
        """Stops taking ``manager``'s events."""
        with self._cond:
            if manager in self._sources:
                self._sources.remove(manager)
        try:
            manager.remove_callback(self.submit)
        except ValueError:
            pass

    def status(self) -> dict[str, NotifyStatus]:
        """Every target's :class:`NotifyStatus`, by name, in target order."""
        allowed = self._remote_allowed() if any(lane.target.remote for lane in self._lanes) else True
        out: dict[str, NotifyStatus] = {}
        with self._cond:
            for lane in self._lanes:
                t = lane.target
                state: NotifyTargetState
                if self._closed:
                    state = "closed"
                elif lane.unavailable:
                    state = "unavailable"
                elif t.remote and not allowed:
                    state = "blocked"
                elif lane.queue and lane.queue[0].attempt > 0:
                    state = "retrying"
                elif lane.last_ok is None:
                    state = "idle"
                else:
                    state = "ok" if lane.last_ok else "failing"
                out[t.name] = NotifyStatus(
                    t.name, t.kind, t.shown_url, state, lane.sent, lane.failed, lane.dropped, lane.skipped,
                    len(lane.queue) + lane.busy, lane.attempts, lane.last_error, lane.last_error_at, lane.last_sent_at,
                )
        return out

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Waits until every queue is empty and nothing is in flight (or
        ``timeout_s``); returns whether it got there."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while any(lane.queue or lane.busy for lane in self._lanes):
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout_s: float = 2.0) -> bool:
        """Stops the worker: no more events taken, the attempt in flight
        aborted, the thread joined within ``timeout_s`` (returns whether it
        ended); queued deliveries count as dropped.  Idempotent."""
        with self._cond:
            sources, self._sources = self._sources, []
            already = self._closed
            self._closed = True
            if not already:
                for lane in self._lanes:
                    lane.dropped += len(lane.queue)
                    lane.queue.clear()
            abort = self._abort
            self._cond.notify_all()
        for source in sources:
            try:
                source.remove_callback(self.submit)
            except ValueError:
                pass
        if abort is not None:
            abort()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        with self._cond:
            queued = sum(len(lane.queue) + lane.busy for lane in self._lanes)
        kinds = ", ".join(f"{lane.target.name} ({lane.target.kind})" for lane in self._lanes)
        return f"Notifier([{kinds}], {queued} queued{', closed' if self._closed else ''})"

    # ---- the worker ------------------------------------------------------------

    def _next(self) -> tuple[_Lane, _Delivery] | None:
        """Lock held: waits for the earliest due delivery of a lane not in
        flight; None once closed."""
        while not self._closed:
            now = time.monotonic()
            ready: tuple[_Lane, _Delivery] | None = None
            wake = math.inf
            for lane in self._lanes:
                if lane.queue and not lane.busy:
                    d = lane.queue[0]
                    if d.due <= now and (ready is None or d.due < ready[1].due):
                        ready = (lane, d)
                    wake = min(wake, d.due)
            if ready is not None:
                lane, d = ready
                lane.queue.popleft()
                lane.busy = True
                return ready
            self._cond.wait(None if wake == math.inf else max(wake - now, 0.001))
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                picked = self._next()
            if picked is None:
                return
            lane, d = picked
            error: _Failure | None = None
            try:
                if lane.target.remote and not self._remote_ok:
                    raise _Failure("remote access was turned off", retry=False, blocked=True)
                self._deliver(lane.target, d.event)
            except _Failure as e:
                error = e
            except Exception as e:  # a bug of ours: logged, never kills the worker
                logger.exception("notify target %r: delivery failed", lane.target.name)
                error = _Failure(f"{type(e).__name__}", retry=False)
            with self._cond:
                self._abort = None
                lane.busy = False
                if error is not None and error.blocked:
                    lane.skipped += 1
                    self._cond.notify_all()
                    continue
                lane.attempts += 1
                if error is None:
                    lane.sent += 1
                    lane.last_ok, lane.last_sent_at = True, time.time()
                else:
                    text = scrub(str(error), lane.target.url)
                    lane.last_error, lane.last_error_at = text, time.time()
                    again = error.retry and d.attempt < self.retries and not self._closed
                    if again:
                        wait = min(self.backoff_s * 2 ** d.attempt, self.max_backoff_s)
                        if error.after_s is not None:
                            wait = min(max(wait, error.after_s), self.max_backoff_s)
                        d.attempt += 1
                        d.due = time.monotonic() + wait
                        if len(lane.queue) >= self.max_queue:
                            lane.dropped += 1   # the retry is the oldest: it goes
                        else:
                            lane.queue.appendleft(d)
                    else:
                        lane.failed += 1
                        lane.last_ok = False
                    logger.log(logging.INFO if again else logging.WARNING, "notify target %r (%s): %s: %s%s",
                               lane.target.name, lane.target.shown_url or lane.target.kind, d.event.rule, text,
                               "; trying again" if again else "; given up")
                self._cond.notify_all()

    def _deliver(self, target: NotifyTarget, event: AlertEvent) -> None:
        if target.kind == "desktop":
            self._run_command(event)
        else:
            assert target.url is not None
            self._post(target.url, http_request(event, target))

    def _post(self, url: str, req: HttpRequest) -> None:
        # Imported here: http.client and ssl cost ~15 ms, paid only by a process that sends.
        import http.client
        import ssl

        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=self.timeout_s, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout_s)

        def abort() -> None:
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        with self._cond:
            if self._closed:
                raise _Failure("closed", retry=False)
            self._abort = abort
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"User-Agent": f"movie-director-metrics/{_core.__version__}", **req.headers}
        try:
            conn.request("POST", path, body=req.body, headers=headers)
            reply = conn.getresponse()
            reply.read(MAX_REPLY_BYTES)
            status, reason = reply.status, reply.reason
            retry_after = reply.getheader("Retry-After")
        except TimeoutError:
            raise _Failure(f"no reply within {self.timeout_s:g} s (timeout_s)", retry=True) from None
        except ssl.SSLError as e:
            raise _Failure(f"TLS failed: {e}", retry=True) from None
        except (OSError, http.client.HTTPException) as e:
            raise _Failure(f"{type(e).__name__}: {e}", retry=True) from None
        finally:
            conn.close()
        if 200 <= status < 300:
            return
        after: float | None = None
        if retry_after is not None:
            try:
                after = max(float(retry_after), 0.0)
            except ValueError:
                after = None
        raise _Failure(f"HTTP {status} {reason}".strip(), retry=status in RETRY_STATUSES, after_s=after)

    def _run_command(self, event: AlertEvent) -> None:
        import subprocess

        argv = desktop_args(event)
        if argv is None:
            raise _Failure("no desktop notifier on this machine", retry=False)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
        except OSError as e:
            raise _Failure(f"{argv[0]}: {e.strerror or e}", retry=False) from None
        with self._cond:
            self._abort = proc.kill
            closed = self._closed
        if closed:
            proc.kill()
        try:
            _, err = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise _Failure(f"{argv[0]}: no exit within {self.timeout_s:g} s (timeout_s)", retry=True) from None
        if proc.returncode != 0:
            why = err.decode("utf-8", "replace").strip()[:200] if err else ""
            raise _Failure(f"{argv[0]} exited with {proc.returncode}" + (f": {why}" if why else ""), retry=True)


__all__ = ["NotifyStatus", "Notifier", "redact_url"]
