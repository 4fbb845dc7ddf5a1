"""Diagnosis and actions against a real ComfyUI (issue 17), with our real
collectors and CLI.

Needs the real ComfyUI tool (``../shared/tools/comfyui``: ``start.sh``
builds and starts ComfyUI on the CPU at 127.0.0.1:8188, ``stop.sh`` stops
exactly that process); not part of ``make test`` (CI has no ComfyUI).
The script starts ComfyUI when nothing answers on its port, and stops it
at the end: the last two phases need the port free.

1. **Actions on a running prompt.**  ``movie-director-metrics check
   --json`` says the backend is up.  Two long prompts are submitted
   (EmptyImage 1024x1024 and a chain of ImageBlur nodes, several seconds
   on the CPU; each with its own colour, so ComfyUI's output cache runs
   nothing twice): A runs, B waits.  ``action comfy interrupt <B> --yes``
   (B is not the running one) leaves A running; ``action comfy delete <B>
   --yes`` takes B out of the queue (``/history`` never gets it); ``action
   comfy interrupt <A> --yes`` ends A: its ``/history`` entry ends with
   ``execution_interrupted``, after fewer nodes than the graph has, and no
   earlier than that call (so the call naming B interrupted nothing).  A
   third prompt C is ended by a plain ``action comfy interrupt --yes`` (what
   runs, whatever it is), then ``action comfy free --yes``.
2. **Nothing listens** (ComfyUI stopped): ``check --json`` and
   ``check_once`` give state "down", cause ``refused``, a hint naming the
   port; ``action comfy free --yes`` fails and says so.
3. **Another server on ComfyUI's port** (ComfyUI stopped, the same port
   bound by a small stand-in): one answering as Ollama does (``GET /``
   "Ollama is running", ``/api/tags`` ``{"models": []}``, ``/api/version``;
   anything else gin's "404 page not found"; written from Ollama's
   server/routes.go) and one answering as AUTOMATIC1111 does
   (``/internal/ping`` ``{}``; anything else, ``/sdapi/*`` included, the
   FastAPI 404 ``{"detail": "Not Found"}`` of a webui started without
   ``--api``).  With the config saying ``kind = "comfyui"``, ``check
   --json`` gives cause ``wrong_kind`` and a hint naming what answers.

Prints one JSON document (``--out`` also writes it; the reference run is
``benchmarks/reference/comfyui-diagnosis-2026-12-07.json``) and exits 1 when
a check failed.

    .venv/bin/python scripts/check_comfyui_diagnosis.py [--tools DIR] [--port 8188] [--blurs 16] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TOOLS = Path(os.environ.get("COMFY_TOOLS", ROOT.parent / "shared" / "tools" / "comfyui"))
NAME = "comfy"


class Report:
    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"checks": {}, "phases": {}}

    def check(self, name: str, ok: Any, detail: Any) -> bool:
        self.doc["checks"][name] = {"ok": bool(ok), "detail": detail}
        print(f"[{'ok' if ok else 'FAIL'}] {name}: {json.dumps(detail, default=str)[:300]}", file=sys.stderr, flush=True)
        return bool(ok)

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.doc["checks"].values())


# ---- HTTP and the CLI ----------------------------------------------------------------


def call(url: str, path: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="GET" if data is None else "POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, (json.loads(raw) if raw else None)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def answers(url: str) -> bool:
    try:
        return call(url, "/system_stats", timeout=2.0)[0] == 200
    except OSError:
        return False


def port_free(port: int, timeout_s: float = 30.0) -> bool:
    """True once nothing accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(1.0)
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return True
        time.sleep(0.2)
    return False


def cli(*args: str) -> dict[str, Any]:
    """``movie-director-metrics ARGS`` (this interpreter's engine): exit
    code, stdout (parsed when JSON), stderr."""
    r = subprocess.run([sys.executable, "-m", "movie_director_metrics", *args], capture_output=True, text=True, timeout=180)
    out: Any = r.stdout.strip()
    try:
        out = json.loads(out)
    except ValueError:
        pass
    return {"argv": ["movie-director-metrics", *args], "rc": r.returncode, "stdout": out, "stderr": r.stderr.strip()}


def write_config(path: Path, url: str) -> None:
    path.write_text(f'[[backend]]\nname = "{NAME}"\nkind = "comfyui"\nurl = "{url}"\n', encoding="utf-8")


def backend_of(result: dict[str, Any]) -> dict[str, Any]:
    """The one backend of a ``check --json`` result, less its bulky fields."""
    doc = result["stdout"]
    if not isinstance(doc, dict) or not doc.get("backends"):
        return {}
    b = dict(doc["backends"][0])
    return {k: b.get(k) for k in ("state", "cause", "hint", "last_error", "last_error_type", "version")}


# ---- phase 1: actions on the real ComfyUI ----------------------------------------------


def workflow(blurs: int) -> dict[str, Any]:
    """EmptyImage 1024x1024 -> ``blurs`` x ImageBlur -> PreviewImage (no
    model files; the tool's workflow_no_models.json with a longer chain).
    A random colour: ComfyUI would otherwise serve a repeat from its cache."""
    g: dict[str, Any] = {"1": {"class_type": "EmptyImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1,
                                                                      "color": random.randrange(1 << 24)}}}
    for i in range(blurs):
        g[str(i + 2)] = {"class_type": "ImageBlur", "inputs": {"image": [str(i + 1), 0], "blur_radius": 20, "sigma": 5.0}}
    g[str(blurs + 2)] = {"class_type": "PreviewImage", "inputs": {"images": [str(blurs + 1), 0]}}
    return g


def submit(url: str, blurs: int) -> str:
    status, reply = call(url, "/prompt", {"prompt": workflow(blurs), "client_id": "mdm-check-diagnosis"})
    if status != 200 or not isinstance(reply, dict) or "prompt_id" not in reply:
        raise SystemExit(f"POST /prompt: HTTP {status}: {reply}")
    return str(reply["prompt_id"])


def queue_ids(url: str) -> tuple[list[str], list[str]]:
    _, q = call(url, "/queue")
    return [item[1] for item in q.get("queue_running", [])], [item[1] for item in q.get("queue_pending", [])]


def wait_running(url: str, pid: str, timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pid in queue_ids(url)[0]:
            return True
        time.sleep(0.05)
    return False


def wait_history(url: str, pid: str, timeout_s: float = 180.0) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _, h = call(url, f"/history/{pid}")
        if isinstance(h, dict) and pid in h:
            return dict(h[pid])
        time.sleep(0.1)
    return None


def ending(entry: dict[str, Any] | None) -> dict[str, Any]:
    """How a prompt ended, from its /history entry."""
    if entry is None:
        return {"history": None}
    status = entry.get("status", {})
    msgs = {m[0]: m[1] for m in status.get("messages", [])}
    end = next((n for n in ("execution_interrupted", "execution_error", "execution_success") if n in msgs), None)
    out: dict[str, Any] = {"status_str": status.get("status_str"), "completed": status.get("completed"), "end_event": end,
                           "events": [m[0] for m in status.get("messages", [])]}
    start = msgs.get("execution_start", {}).get("timestamp")
    if end is not None:
        out["end_ms"] = msgs[end].get("timestamp")
        out["run_ms"] = None if start is None or out["end_ms"] is None else out["end_ms"] - start
    if end == "execution_interrupted":
        out["interrupted_at_node"] = msgs[end].get("node_id")
        out["nodes_executed"] = len(msgs[end].get("executed", []))
    return out


def phase_actions(rep: Report, url: str, cfg: Path, blurs: int) -> None:
    check = rep.check
    phase: dict[str, Any] = rep.doc["phases"].setdefault("actions", {})
    _, stats = call(url, "/system_stats")
    system = stats.get("system", {}) if isinstance(stats, dict) else {}
    rep.doc["comfyui"] = {"url": url, "comfyui_version": system.get("comfyui_version"), "pytorch_version": system.get("pytorch_version"),
                          "devices": [d.get("name") for d in stats.get("devices", [])] if isinstance(stats, dict) else []}
    up = cli("check", "--json", "--config", str(cfg))
    phase["check_up"] = backend_of(up)
    check("up_while_running", up["rc"] == 0 and phase["check_up"].get("state") == "up" and phase["check_up"].get("cause") is None,
          phase["check_up"])
    nodes = blurs + 2
    a, b = submit(url, blurs), submit(url, blurs)
    phase["prompts"] = {"A": a, "B": b, "nodes_per_prompt": nodes}
    running = wait_running(url, a)
    check("A_running_B_pending", running and b in queue_ids(url)[1], {"running": running, "queue": queue_ids(url)})
    time.sleep(1.0)  # into A's blur chain

    # an interrupt naming B (waiting, not running): ComfyUI interrupts nothing
    wrong = cli("action", NAME, "interrupt", b, "--yes", "--config", str(cfg))
    phase["interrupt_B_while_A_runs"] = wrong
    check("interrupt_naming_waiting_prompt_answered", wrong["rc"] == 0 and str(wrong["stdout"]).startswith("ok: Interrupt on comfy"),
          wrong)
    time.sleep(2.0)  # had it interrupted A, A would have ended by now (between two nodes, ~0.5 s)
    still = a in queue_ids(url)[0]
    deleted = cli("action", NAME, "delete", b, "--yes", "--config", str(cfg))
    phase["delete_B"] = deleted
    running_ids, pending_ids = queue_ids(url)
    check("delete_pending", deleted["rc"] == 0 and str(deleted["stdout"]).startswith("ok: Delete pending on comfy")
          and b not in pending_ids and b not in running_ids, {"cli": deleted, "queue": [running_ids, pending_ids]})
    t_call_ms = time.time() * 1000.0
    stop_a = cli("action", NAME, "interrupt", a, "--yes", "--config", str(cfg))
    phase["interrupt_A"] = stop_a
    end_a = ending(wait_history(url, a))
    phase["A"] = end_a
    check("A_still_running_after_interrupt_naming_B", still, {"A_running_2s_later": still})
    check("interrupt_by_prompt_id_ends_it", stop_a["rc"] == 0 and str(stop_a["stdout"]).startswith("ok: Interrupt on comfy")
          and end_a.get("end_event") == "execution_interrupted" and end_a.get("status_str") == "error"
          and 0 < end_a.get("nodes_executed", nodes) < nodes, {"cli": stop_a, "history": end_a})
    check("A_ended_by_the_call_naming_it", end_a.get("end_ms") is not None and end_a["end_ms"] >= t_call_ms - 50,
          {"interrupted_ms": end_a.get("end_ms"), "call_ms": round(t_call_ms)})
    _, hist_b = call(url, f"/history/{b}")
    check("deleted_prompt_never_ran", hist_b == {}, hist_b)

    # the plain interrupt (no prompt id): what runs now
    c = submit(url, blurs)
    phase["prompts"]["C"] = c
    running = wait_running(url, c)
    time.sleep(1.0)
    stop_c = cli("action", NAME, "interrupt", "--yes", "--config", str(cfg))
    end_c = ending(wait_history(url, c))
    phase["interrupt_C"], phase["C"] = stop_c, end_c
    check("interrupt_ends_running_prompt", running and stop_c["rc"] == 0 and end_c.get("end_event") == "execution_interrupted"
          and 0 < end_c.get("nodes_executed", nodes) < nodes, {"cli": stop_c, "history": end_c})
    free = cli("action", NAME, "free", "--yes", "--config", str(cfg))
    phase["free"] = free
    check("free_memory", free["rc"] == 0 and str(free["stdout"]).startswith("ok: Free memory on comfy"), free)
    # without --yes and without a terminal nothing is sent
    asked = cli("action", NAME, "interrupt", "--config", str(cfg))
    phase["without_yes"] = asked
    check("nothing_sent_unconfirmed", asked["rc"] != 0 and "pass --yes" in asked["stderr"], asked)


# ---- phases 2 and 3: nothing there, something else there --------------------------------


def phase_refused(rep: Report, url: str, cfg: Path, port: int) -> None:
    from movie_director_metrics.collectors import BackendConfig
    from movie_director_metrics.collectors.scheduler import check_once

    phase: dict[str, Any] = rep.doc["phases"].setdefault("refused", {})
    r = cli("check", "--json", "--config", str(cfg))
    phase["check"] = backend_of(r)
    (st,) = check_once([BackendConfig(NAME, "comfyui", url)])
    phase["check_once"] = {"state": st.state, "cause": st.cause, "hint": st.hint, "last_error": st.last_error}
    for key in ("check", "check_once"):
        got = phase[key]
        rep.check(f"refused_{key}", got.get("state") == "down" and got.get("cause") == "refused"
                  and f"127.0.0.1:{port}" in (got.get("hint") or ""), got)
    rep.check("refused_check_exit_code", r["rc"] == 1, r["rc"])
    free = cli("action", NAME, "free", "--yes", "--config", str(cfg))
    phase["action"] = free
    rep.check("action_on_stopped_server_fails", free["rc"] == 1 and "failed: Free memory on comfy" in str(free["stdout"])
              and "connection refused" in str(free["stdout"]), free)


class _StandIn(BaseHTTPRequestHandler):
    """A server answering as another kind does (``routes``: path ->
    (status, content type, body); the rest ``not_found``)."""

    routes: dict[str, tuple[int, str, bytes]] = {}
    not_found: tuple[int, str, bytes] = (404, "text/plain", b"")
    hits: list[str] = []

    def _reply(self, body_too: bool) -> None:
        type(self).hits.append(f"{self.command} {self.path}")
        status, ctype, body = self.routes.get(self.path.split("?")[0], self.not_found)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body_too:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(True)

    def do_HEAD(self) -> None:
        self._reply(False)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._reply(True)

    def log_message(self, *args: Any) -> None:
        pass


JSON = "application/json; charset=utf-8"
#: Ollama (server/routes.go): "/" and HEAD "/" answer c.String "Ollama is
#: running"; /api/version and /api/tags JSON; gin's 404 otherwise.
OLLAMA = {
    "routes": {
        "/": (200, "text/plain; charset=utf-8", b"Ollama is running"),
        "/api/version": (200, JSON, b'{"version":"0.12.6"}'),
        "/api/tags": (200, JSON, b'{"models":[]}'),
        "/api/ps": (200, JSON, b'{"models":[]}'),
    },
    "not_found": (404, "text/plain", b"404 page not found"),
}
#: AUTOMATIC1111 started without --api (modules/api/api.py is not mounted):
#: /internal/ping answers {}, the rest FastAPI's JSON 404.
A1111 = {
    "routes": {"/internal/ping": (200, "application/json", b"{}")},
    "not_found": (404, "application/json", b'{"detail":"Not Found"}'),
}


def stand_in(port: int, spec: dict[str, Any]) -> tuple[ThreadingHTTPServer, type[_StandIn]]:
    handler = type("Handler", (_StandIn,), {"routes": spec["routes"], "not_found": spec["not_found"], "hits": []})
    srv = ThreadingHTTPServer(("127.0.0.1", port), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv, handler


def phase_wrong_kind(rep: Report, cfg: Path, port: int) -> None:
    for label, spec, name in (("ollama", OLLAMA, "Ollama"), ("a1111", A1111, "AUTOMATIC1111/Forge")):
        srv, handler = stand_in(port, spec)
        try:
            r = cli("check", "--json", "--config", str(cfg))
        finally:
            srv.shutdown()
            srv.server_close()
        got = backend_of(r)
        rep.doc["phases"][f"wrong_kind_{label}"] = {"check": got, "requests_seen": list(handler.hits)}
        rep.check(f"wrong_kind_{label}", r["rc"] == 1 and got.get("state") == "down" and got.get("cause") == "wrong_kind"
                  and f"looks like {name}, not ComfyUI" in (got.get("hint") or "") and f'kind = "{label}"' in (got.get("hint") or ""), got)


# ---- the run ---------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", type=Path, default=DEFAULT_TOOLS, help="the ComfyUI tool's folder (start.sh, stop.sh)")
    ap.add_argument("--port", type=int, default=int(os.environ.get("COMFY_PORT", "8188")))
    ap.add_argument("--blurs", type=int, default=16, help="ImageBlur nodes per long prompt (~0.5 s each on 2 CPU cores)")
    ap.add_argument("--out", type=Path, help="also write the JSON document here")
    args = ap.parse_args()
    url = f"http://127.0.0.1:{args.port}"
    rep = Report()
    rep.doc.update(script="scripts/check_comfyui_diagnosis.py", date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                   python=sys.version.split()[0])
    env = dict(os.environ, COMFY_PORT=str(args.port))
    with tempfile.TemporaryDirectory(prefix="mdm-diagnosis-") as tmp:
        cfg = Path(tmp) / "backends.toml"
        write_config(cfg, url)
        rep.doc["config"] = cfg.read_text(encoding="utf-8")
        try:
            if not answers(url):
                print(f"starting ComfyUI: {args.tools / 'start.sh'}", file=sys.stderr, flush=True)
                subprocess.run(["bash", str(args.tools / "start.sh")], check=True, env=env, timeout=900)
            if not rep.check("comfyui_answers", answers(url), url):
                raise SystemExit(1)
            phase_actions(rep, url, cfg, args.blurs)
        finally:
            subprocess.run(["bash", str(args.tools / "stop.sh")], env=env, timeout=120)
        if rep.check("comfyui_stopped", port_free(args.port), f"127.0.0.1:{args.port}"):
            phase_refused(rep, url, cfg, args.port)
            phase_wrong_kind(rep, cfg, args.port)
    rep.doc["ok"] = rep.ok
    text = json.dumps(rep.doc, indent=1, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
