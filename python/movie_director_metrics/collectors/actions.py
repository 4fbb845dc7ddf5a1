"""Actions on a backend, only on an explicit user action: interrupt the
running job, delete a pending one, free memory, unload a model.

Each is one request, sent only when the user asked for it (the CLI's
``action`` command after a confirmation, Blender's operators after a
confirm dialog, on a worker thread), and reports the server's own answer.
A remote backend obeys Online Access / ``allow_remote`` like every other
call.  The requests follow each server's own API:

* ComfyUI (``server.py``): ``POST /interrupt`` (``{"prompt_id"}`` interrupts
  only that prompt when it is the running one), ``POST /queue``
  ``{"delete": [prompt_id]}`` (a pending prompt), ``POST /free``
  ``{"unload_models": true, "free_memory": true}``.
* A1111/Forge (``modules/api/api.py``): ``POST /sdapi/v1/interrupt``,
  ``POST /sdapi/v1/skip``.
* Ollama (``api/types.go``): ``POST /api/generate`` ``{"model": m,
  "keep_alive": 0}`` unloads ``m``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..net import is_loopback
from .config import BackendConfig
from .http import HttpClient, ProbeError

__all__ = ["ACTIONS", "Action", "ActionResult", "action_names", "run_action"]


@dataclass(frozen=True)
class Action:
    """One action of one kind: its request, and what its target is."""

    name: str
    title: str
    method: str
    path: str
    #: What the action needs: None, "prompt_id" or "model".
    target: str | None = None
    #: Says what happens, for the confirmation.
    confirm: str = ""

    def body(self, target: str | None) -> Any:
        if self.name == "interrupt" and self.path == "/interrupt":
            return {"prompt_id": target} if target else {}
        if self.name == "delete":
            return {"delete": [target]}
        if self.name == "free":
            return {"unload_models": True, "free_memory": True}
        if self.name == "unload":
            return {"model": target, "keep_alive": 0}
        return None


#: kind -> action name -> Action (the one home of the set).
ACTIONS: dict[str, dict[str, Action]] = {
    "comfyui": {
        "interrupt": Action("interrupt", "Interrupt", "POST", "/interrupt", "prompt_id",
                            "stops the running prompt (with a prompt id: only if that one runs)"),
        "delete": Action("delete", "Delete pending", "POST", "/queue", "prompt_id",
                         "removes a waiting prompt from the queue"),
        "free": Action("free", "Free memory", "POST", "/free", None,
                       "unloads every model and frees cached memory (the next prompt loads again)"),
    },
    "a1111": {
        "interrupt": Action("interrupt", "Interrupt", "POST", "/sdapi/v1/interrupt", None,
                            "stops the running generation"),
        "skip": Action("skip", "Skip", "POST", "/sdapi/v1/skip", None,
                       "skips the current image of the batch"),
    },
    "ollama": {
        "unload": Action("unload", "Unload model", "POST", "/api/generate", "model",
                         "unloads the model from memory now (keep_alive: 0)"),
    },
}


def action_names(kind: str) -> list[str]:
    """The actions a kind has (empty for one without)."""
    return list(ACTIONS.get(kind, {}))


@dataclass(frozen=True)
class ActionResult:
    """What the server answered: ``ok``, its HTTP status (None when no
    answer came) and a one-line message (the server's own text when it
    sent one)."""

    backend: str
    action: str
    ok: bool
    status: int | None
    message: str


def run_action(
    config: BackendConfig, action: str, target: str | None = None, *, allow_remote: bool = False
) -> ActionResult:
    """Sends ``action`` to the backend of ``config`` and returns its answer.
    Never raises for what the server or the network does (that is the
    result); ``ValueError`` for an action the kind has not or a missing
    target."""
    kinds = ACTIONS.get(config.kind, {})
    act = kinds.get(action)
    if act is None:
        have = ", ".join(kinds) or "none"
        raise ValueError(f"action={action!r}: a {config.kind} backend has these actions: {have}")
    if act.target is not None and action in ("delete", "unload") and not target:
        raise ValueError(f"{action} needs a {act.target}")
    if not allow_remote and not is_loopback(config.host):
        return ActionResult(config.name, action, False, None,
                            f"{config.host} is another machine and online access is off: nothing was sent")
    client = HttpClient(
        config.url, connect_timeout_s=config.connect_timeout_s, read_timeout_s=max(config.read_timeout_s, 10.0),
        headers=config.headers(), keep_alive=False,
    )
    try:
        resp = client.request(act.method, act.path, act.body(target), ok_statuses=tuple(range(200, 300)))
    except ProbeError as e:
        said = ""
        if e.body:
            said = " ".join(e.body.decode("utf-8", "replace").split())[:200]
        return ActionResult(config.name, action, False, e.status, f"{e}" + (f": {said}" if said else ""))
    finally:
        client.close()
    text = " ".join(resp.body.decode("utf-8", "replace").split())[:200]
    return ActionResult(config.name, action, True, resp.status, f"HTTP {resp.status}" + (f": {text}" if text else ""))
