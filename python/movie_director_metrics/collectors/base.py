"""What every backend kind implements, and the capability model the
engine and the UIs share.

A backend kind knows one server's endpoints.  A worker thread (see
``scheduler``) drives it: ``probe()`` once per interval for liveness, then
``collect()`` for whatever else the backend can report.  Every HTTP call a
kind makes goes through ``self.call``/``self.call_json`` or, for the GETs
of its endpoints, ``self.fetch``/``self.try_fetch``.  All four share one
recording rule: each call is recorded on the service exactly once, as a
request with its final outcome (latency, and the error type on failure;
a reply of the wrong shape counts as one ``bad_json`` failure), so the
dashboard's response times and error types are the backend's own API.

``fetch`` also reads and checks the reply (JSON or text, then ``parse``
and ``check``), takes the statuses in ``absent`` as the server's answer
"not here" (a successful request giving None), and words its errors with
the kind's :meth:`Backend.explain` hook.  ``try_fetch`` is the detection
read: it never raises, returns ``(None, why)``, and on a passing failure
(:data:`~.http.TRANSIENT_ERRORS`) sets ``retry_detection`` so that
``collect()`` detects again (see :meth:`Backend.detection_due`).
"""

from __future__ import annotations

import base64
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._core import MAX_DURATION_MS, Service
from ..jobs.rows import JobRow, QueuedJob
from .config import BackendConfig
from .http import TRANSIENT_ERRORS, HttpClient, ProbeError, Response

log = logging.getLogger("movie_director_metrics.collectors")

#: The signals a backend may or may not be able to report.
SIGNALS: tuple[str, ...] = ("health", "queue", "processing", "resources", "models")

#: Turns a reply (JSON, or text) into what the caller needs; ``ValueError``
#: when it cannot (recorded and raised as ``bad_json``).
Parse = Callable[[Any], Any]

#: A shape check of a reply: what is wrong with it, or None when it is fine
#: (a problem is recorded and raised as ``bad_json``).
Check = Callable[[Any], "str | None"]

#: Reads the body of a 200 reply (``Response.json``, or that of ``fetch``).
_Read = Callable[[Response], Any]


def json_object(check: Callable[[dict[str, Any]], str | None] | None = None) -> Check:
    """A :data:`Check` that the reply is a JSON object, then (if given) that
    ``check`` accepts it.  Also a decorator for checks of objects."""

    def checked(data: Any, /) -> str | None:
        if not isinstance(data, dict):
            return f"expected a JSON object, got {type(data).__name__}"
        return check(data) if check is not None else None

    return checked


@dataclass
class Capabilities:
    """Which signals a backend reports, and for the ones it cannot, why
    (shown as "n/a" with that reason; never as zeros)."""

    available: dict[str, str] = field(default_factory=dict)  # signal -> where it comes from
    missing: dict[str, str] = field(default_factory=dict)  # signal -> why not

    def has(self, signal: str) -> bool:
        return signal in self.available

    def set(self, signal: str, source: str) -> None:
        self.available[signal] = source
        self.missing.pop(signal, None)

    def lack(self, signal: str, reason: str) -> None:
        self.missing[signal] = reason
        self.available.pop(signal, None)

    def as_dict(self) -> dict[str, str | None]:
        """signal -> source, or None for n/a (every signal present)."""
        return {s: self.available.get(s) for s in SIGNALS}


class Backend(ABC):
    """One configured backend of one kind.

    Subclasses set ``kind`` and ``default_port`` and implement ``probe``,
    ``detect`` and ``collect``.  They must not raise anything but
    :class:`ProbeError` from ``probe``; ``collect`` failures are recorded
    and swallowed by the worker.  Never touch ``bpy`` here: this runs on a
    worker thread.
    """

    kind: ClassVar[str]
    default_port: ClassVar[int | None] = None
    #: Statuses a detection read (:meth:`try_fetch`) takes as the server's
    #: answer "no such endpoint here" rather than as a failure.
    absent_statuses: ClassVar[tuple[int, ...]] = (404,)

    def __init__(self, config: BackendConfig, service: Service, client: HttpClient | None = None) -> None:
        self.config = config
        self.service = service
        self.client = client or HttpClient(
            config.url,
            connect_timeout_s=config.connect_timeout_s,
            read_timeout_s=config.read_timeout_s,
            headers=config.headers(),
        )
        self.capabilities = Capabilities()
        self.detected = False
        #: The server's version, once a probe or detect has read it.
        self.version: str | None = None
        #: Set (by :meth:`detection_missed`, so by :meth:`try_fetch`) when a
        #: detection read failed for a passing reason; kinds that retry
        #: detection check :meth:`detection_due` in ``collect``.
        self.retry_detection = False
        self._detect_tried_at = float("-inf")
        #: Where finished jobs seen on the backend go (the monitor's job
        #: tracker; set by the worker, None when nobody listens).  Kinds
        #: that can see jobs call :meth:`report_job`.
        self.on_job: Callable[[JobRow], None] | None = None
        #: Where the jobs waiting or running on the backend go (set with
        #: ``on_job``); kinds that see them call :meth:`report_queue`.
        self.on_queue: Callable[[str, list[QueuedJob]], None] | None = None

    def report_job(self, row: JobRow) -> None:
        """Hands one finished job to ``on_job``.  A job that cannot be
        recorded is logged, never raised: the backend's own signals go on."""
        if self.on_job is None:
            return
        try:
            self.on_job(row)
        except Exception as e:  # a bad row must not fail the cycle
            log.warning("%s: a job could not be recorded: %s: %s", self.config.name, type(e).__name__, e)

    def lost(self) -> None:
        """The backend stopped answering (the worker calls this when a probe
        fails): the jobs it reported as queued or running are no longer
        known, so they are withdrawn.  Kinds that remember what they
        reported override this to forget it too, so the first report after
        the backend comes back is sent whatever it holds."""
        self.report_queue([])

    def report_queue(self, jobs: list[QueuedJob]) -> None:
        """Reports the jobs waiting or running on the backend now (replacing
        the previous report).  Never raises, like :meth:`report_job`."""
        if self.on_queue is None:
            return
        try:
            self.on_queue(self.config.name, jobs)
        except Exception as e:
            log.warning("%s: the queued jobs could not be reported: %s: %s", self.config.name, type(e).__name__, e)

    # ---- recorded calls ----------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, *, ok_statuses: tuple[int, ...] = (200,)) -> Response:
        """One HTTP call, recorded on the service as a request."""
        return self._exchange(method, path, body, ok_statuses=ok_statuses)[0]

    def call_json(self, method: str, path: str, body: Any = None) -> Any:
        """A recorded call whose body must be JSON (else ``bad_json`` is
        recorded in its place)."""
        return self._exchange(method, path, body, read=Response.json)[1]

    def fetch(
        self,
        path: str,
        *,
        as_json: bool = True,
        parse: Parse | None = None,
        check: Check | None = None,
        absent: tuple[int, ...] = (),
    ) -> tuple[Any, float]:
        """One recorded GET of an endpoint: ``(reply, latency ms)``.

        The body is read as JSON (``as_json=False``: as UTF-8 text), then
        given to ``parse`` and ``check``; a body that is not JSON or text,
        that ``parse`` rejects or in which ``check`` finds a problem is
        recorded -- once -- and raised as ``bad_json``.  A status in
        ``absent`` is the server's answer "not here": recorded as a
        successful request, it gives ``(None, latency)``.  Any failure is
        raised as :class:`ProbeError` with the message :meth:`explain`
        gives it.
        """
        resp, data = self._get(path, as_json=as_json, parse=parse, check=check, absent=absent)
        return data, resp.latency_ms

    def try_fetch(
        self, path: str, *, as_json: bool = True, parse: Parse | None = None, check: Check | None = None
    ) -> tuple[Any, str]:
        """Detection read of an endpoint the server may not have: ``(reply,
        "")`` or ``(None, why)``, recorded like :meth:`fetch`, never raised.

        A status in :attr:`absent_statuses` gives :meth:`explain_absent` as
        ``why``; a failure its explained message without the ``GET path:``
        prefix, plus " (detection will retry)" when it was a passing one
        (see :meth:`detection_missed`)."""
        try:
            resp, data = self._get(path, as_json=as_json, parse=parse, check=check, absent=self.absent_statuses)
        except ProbeError as e:
            return None, self.detection_missed(e, str(e).removeprefix(f"GET {path}: "))
        if resp.status != 200:
            return None, self.redact(self.explain_absent(path, resp))
        return data, ""

    def explained(self, path: str, error: ProbeError) -> ProbeError:
        """``error`` with the message :meth:`explain` gives it, the
        credentials redacted."""
        message = self.redact(self.explain(path, error))
        return ProbeError(error.error_type, message, error.latency_ms, error.status, body=error.body)

    def redact(self, text: str) -> str:
        """``text`` with the configured key, and the forms an
        ``Authorization`` header carries it in, replaced by ``<redacted>``.
        Every message built from a server's reply passes through here: a
        server may echo the header back (in an error text, or in a line
        a parser quotes)."""
        key = self.config.api_key()
        if not key or not text:
            return text
        forms = {key, base64.b64encode(key.encode()).decode()}
        forms.update(value.split(" ", 1)[-1] for value in self.client.headers.values())
        for form in sorted(forms, key=len, reverse=True):  # longest first: a form may contain another
            if form:
                text = text.replace(form, "<redacted>")
        return text

    def _get(
        self, path: str, *, as_json: bool, parse: Parse | None, check: Check | None, absent: tuple[int, ...]
    ) -> tuple[Response, Any]:
        def read(resp: Response) -> Any:
            data = resp.json() if as_json else _text(path, resp)
            problem: str | None = None
            if parse is not None:
                try:
                    data = parse(data)
                except ValueError as e:
                    problem = str(e)
            if problem is None and check is not None:
                problem = check(data)
            if problem is not None:
                raise ProbeError("bad_json", f"GET {path}: {problem}", resp.latency_ms, resp.status)
            return data

        try:
            return self._exchange("GET", path, ok_statuses=(200, *absent), read=read)
        except ProbeError as e:
            raise self.explained(path, e) from None

    def _exchange(
        self, method: str, path: str, body: Any = None, *, ok_statuses: tuple[int, ...] = (200,), read: _Read | None = None
    ) -> tuple[Response, Any]:
        """The one recording rule: a call and the reading of a 200 reply's
        body (``read``; None for every other accepted status) are recorded
        exactly once, as a success or as the :class:`ProbeError` raised."""
        try:
            resp = self.client.request(method, path, body, ok_statuses=ok_statuses)
            data = read(resp) if read is not None and resp.status == 200 else None
        except ProbeError as e:
            self.service.record(min(e.latency_ms, MAX_DURATION_MS), ok=False, error=e.error_type)
            raise
        self.service.record(min(resp.latency_ms, MAX_DURATION_MS))
        return resp, data

    # ---- per-kind wording and detection retries ------------------------------

    def explain(self, path: str, error: ProbeError) -> str:
        """The message of a failed :meth:`fetch` of ``path``: what to do
        about it where the kind knows (credentials, a missing flag).  The
        default is the error's own message."""
        return str(error)

    def explain_absent(self, path: str, resp: Response) -> str:
        """Why :meth:`try_fetch` found no ``path`` (``resp`` has one of
        :attr:`absent_statuses`)."""
        return f"HTTP {resp.status}"

    def begin_detection(self) -> None:
        """Called first by a ``detect`` that retries: clears
        ``retry_detection`` and notes the time of this attempt."""
        self.retry_detection = False
        self._detect_tried_at = time.monotonic()

    def detection_missed(self, error: ProbeError, why: str) -> str:
        """``why`` a detection read failed with ``error``.  A passing failure
        (:data:`~.http.TRANSIENT_ERRORS`: timeout, reset, 5xx, busy) says
        nothing about whether the endpoint exists: it sets
        ``retry_detection`` and ``why`` says "(detection will retry)"."""
        if error.error_type in TRANSIENT_ERRORS:
            self.retry_detection = True
            return why + " (detection will retry)"
        return why

    def detection_due(self) -> bool:
        """True when a detection read failed for a passing reason and half
        an interval has passed since that detection: ``collect`` should
        call ``detect`` again rather than lose the signal for the session."""
        return self.retry_detection and time.monotonic() - self._detect_tried_at >= self.config.interval_s / 2

    # ---- what a kind implements ---------------------------------------------

    @abstractmethod
    def probe(self) -> float:
        """The liveness check: returns its latency in ms, raises
        :class:`ProbeError` when the backend is down.  Recorded by the
        worker as the health result."""

    @abstractmethod
    def detect(self) -> Capabilities:
        """Finds out once (after the first successful probe) which signals
        this server has; fills and returns ``self.capabilities``."""

    @abstractmethod
    def collect(self) -> None:
        """Reads the signals ``self.capabilities`` lists and records them
        (queue, processing times, resources) on ``self.service``."""

    # ---- helpers -------------------------------------------------------------

    @staticmethod
    def now() -> float:
        return time.time()


def _text(path: str, resp: Response) -> str:
    try:
        return resp.body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProbeError("bad_json", f"GET {path}: body is not UTF-8 text ({e})", resp.latency_ms, resp.status) from None
