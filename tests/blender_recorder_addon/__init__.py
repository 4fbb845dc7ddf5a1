"""Test-only Blender add-on: "another add-on" that instruments its own
work through ``movie_director_metrics.shared()``, the way a render or
generation add-on would, without knowing where the Movie Director
extension keeps its monitor.

``tests/blender_helpers.py`` copies it into the throw-away user scripts
directory and enables it next to the extension, in the same ``bpy``
process.  Its operators submit a job (tagged with a shot), report its
progress and finish it; they have no ``UNDO`` option, so they never mark
the .blend as modified.  Each reports back what it did as a plain dict in
:data:`log` for the driver to check: whether a call raised (none may).
"""

from __future__ import annotations

from typing import Any

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty
from bpy.types import Operator

bl_info = {
    "name": "Movie Director recorder (test only)",
    "author": "movie_director_metrics tests",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "category": "Development",
    "description": "Records jobs through movie_director_metrics.shared() for the add-on's tests",
}

#: Unfinished jobs by shot.
jobs: dict[str, Any] = {}
#: What each call did: {"op", "shot", "raised"}.
log: list[dict[str, Any]] = []


def _handle() -> Any:
    # Imported per call, as an add-on that only *may* find the engine would.
    import movie_director_metrics

    return movie_director_metrics.shared()


def _call(op: str, shot: str, fn: Any) -> None:
    try:
        fn()
        log.append({"op": op, "shot": shot, "raised": ""})
    except Exception as e:  # instrumentation must never raise: recorded for the driver
        log.append({"op": op, "shot": shot, "raised": f"{type(e).__name__}: {e}"})


class MDMREC_OT_submit(Operator):
    """Submit one job of a shot (queued, then started)"""

    bl_idname = "mdm_recorder.submit"
    bl_label = "Submit Shot"

    shot: StringProperty(name="Shot")  # type: ignore[valid-type]
    service: StringProperty(name="Service", default="storyboard")  # type: ignore[valid-type]
    model: StringProperty(name="Model", default="sdxl")  # type: ignore[valid-type]
    workflow: StringProperty(name="Workflow", default="txt2img")  # type: ignore[valid-type]
    started: BoolProperty(name="Started", default=True)  # type: ignore[valid-type]

    def execute(self, context):  # type: ignore[no-untyped-def]
        def submit() -> None:
            job = _handle().job(self.service, model=self.model, workflow=self.workflow, tags={"shot": self.shot})
            if self.started:
                job.started(job_id=f"prompt-{self.shot}")
            jobs[self.shot] = job

        _call("submit", self.shot, submit)
        return {"FINISHED"}


class MDMREC_OT_progress(Operator):
    """Report a job's progress"""

    bl_idname = "mdm_recorder.progress"
    bl_label = "Shot Progress"

    shot: StringProperty(name="Shot")  # type: ignore[valid-type]
    fraction: FloatProperty(name="Fraction", default=0.5, min=0.0, max=1.0)  # type: ignore[valid-type]

    def execute(self, context):  # type: ignore[no-untyped-def]
        _call("progress", self.shot, lambda: jobs[self.shot].progress(self.fraction))
        return {"FINISHED"}


class MDMREC_OT_finish(Operator):
    """Finish a job: its result arrived, or it failed with an error type"""

    bl_idname = "mdm_recorder.finish"
    bl_label = "Finish Shot"

    shot: StringProperty(name="Shot")  # type: ignore[valid-type]
    ok: BoolProperty(name="OK", default=True)  # type: ignore[valid-type]
    error: StringProperty(name="Error", default="")  # type: ignore[valid-type]

    def execute(self, context):  # type: ignore[no-untyped-def]
        _call("finish", self.shot, lambda: jobs.pop(self.shot).finish(ok=self.ok, error=self.error or None))
        return {"FINISHED"}


class MDMREC_OT_request(Operator):
    """Record one plain request of a service (not a job)"""

    bl_idname = "mdm_recorder.request"
    bl_label = "Record Request"

    service: StringProperty(name="Service", default="storyboard")  # type: ignore[valid-type]
    latency_ms: FloatProperty(name="Latency", default=100.0, min=0.0)  # type: ignore[valid-type]

    def execute(self, context):  # type: ignore[no-untyped-def]
        _call("request", "", lambda: _handle().service(self.service).record(self.latency_ms))
        return {"FINISHED"}


classes = (MDMREC_OT_submit, MDMREC_OT_progress, MDMREC_OT_finish, MDMREC_OT_request)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
    jobs.clear()
    log.clear()
