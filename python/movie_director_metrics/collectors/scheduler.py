"""Background workers that poll the configured backends.

CONTRACT (implemented by the collectors work; the CLI and the Blender
add-on build on exactly this API):

- ``Collectors(monitor, configs, *, allow_remote=False, resources=True)``:
  ``monitor`` is a ``movie_director_metrics.Monitor`` (or the engine's
  ``_core.Monitor``); one service per config (``config.name``).
  ``allow_remote=False`` refuses non-loopback hosts: such backends get
  state ``"blocked"`` and are never contacted (Blender's "Allow Online
  Access" switch is passed here).
- ``.start()`` starts one daemon worker per enabled backend (idempotent);
  ``.stop(timeout_s=3.0)`` stops them all and joins (idempotent); context
  manager.  Workers never raise out, never touch ``bpy``, never block the
  caller.
- Each cycle: ``probe()`` -> ``service.health(up, latency_ms)``; on the
  first success ``detect()``; then ``collect()``.  Failures back off
  exponentially (interval x 2^k, capped at 30 s), reset on success.
- ``.status() -> dict[str, BackendStatus]`` (a snapshot, thread-safe).
- ``check_once(configs, *, allow_remote=False, monitor=None) ->
  list[BackendStatus]``: probe + detect every backend once, in parallel,
  and return their states (the CLI's ``check``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackendStatus:
    """What the UIs show about one backend."""

    name: str
    kind: str
    url: str
    #: "up", "down", "unknown" (not contacted yet), "blocked" (remote host
    #: while online access is off), "disabled" (enabled = false).
    state: str
    #: signal -> where it comes from, or None for n/a (see base.SIGNALS).
    capabilities: dict[str, str | None] = field(default_factory=dict)
    #: signal -> why it is n/a.
    missing: dict[str, str] = field(default_factory=dict)
    last_error: str | None = None
    last_error_type: str | None = None
    last_latency_ms: float | None = None
    #: Consecutive failed probes (drives the backoff).
    failures: int = 0
    #: Seconds until the next probe (backoff included).
    next_poll_s: float | None = None
    #: Server version when the backend reports one.
    version: str | None = None
