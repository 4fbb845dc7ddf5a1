"""A ComfyUI stand-in for the poll-cost benchmark: ComfyUI's routes with a
history of N finished prompts of a G-node graph, in a process of its own
(as a real server would be), so that only the collector's CPU is measured.

Each ``(history, nodes)`` pair is served under its own path prefix,
``/h{N}g{G}``, so one process answers every size.  Entries are the history
entry recorded from a real ComfyUI 0.3.64
(``tests/fixtures/recorded/comfyui/history_prompt_id.json``) with its prompt
graph replaced by a chain of G nodes of the same shape (EmptyImage ->
ImageBlur x (G-2) -> PreviewImage) and new ids and timestamps: a 60-node
entry is ~6.5 KB of JSON, as on the real server.  ``/history`` pages like
ComfyUI's ``get_history`` (the newest ``max_items``, oldest first).

``POST /h{N}g{G}/finish`` moves one prompt through the queue: the count rises
to 1 on the first call and a new entry lands in history (and the count
falls back to 0) on the second, so a benchmark can time the cycle that
reads one finished prompt.

Run: ``python bench_comfy_standin.py 1,16,64 5,60`` prints the port, then
serves until its stdin closes.
"""

from __future__ import annotations

import copy
import json
import sys
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

RECORDED = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "recorded" / "comfyui"


def graph(nodes: int) -> dict[str, Any]:
    """An API-format prompt of ``nodes`` nodes shaped like the recorded one."""
    recorded = json.loads((RECORDED / "history_prompt_id.json").read_text())
    (entry,) = recorded.values()
    template = entry["prompt"][2]
    first, blur, last = template["1"], template["2"], template["5"]
    out: dict[str, Any] = {"1": copy.deepcopy(first)}
    for i in range(2, nodes):
        node = copy.deepcopy(blur)
        node["inputs"]["image"] = [str(i - 1), 0]
        node["_meta"]["title"] = f"Blur {i - 1}"
        out[str(i)] = node
    node = copy.deepcopy(last)
    node["inputs"]["images"] = [str(nodes - 1), 0]
    out[str(nodes)] = node
    return out


class History:
    """One stand-in server's state: its history and queue count."""

    def __init__(self, entries: int, nodes: int) -> None:
        recorded = json.loads((RECORDED / "history_prompt_id.json").read_text())
        (self.template,) = recorded.values()
        self.template = copy.deepcopy(self.template)
        self.template["prompt"][2] = graph(nodes)
        self.template["prompt"][4] = [str(nodes)]
        self.entries: OrderedDict[str, Any] = OrderedDict()
        self.remaining = 0
        self.lock = threading.Lock()
        for _ in range(entries):
            self.add()

    def add(self) -> None:
        n = len(self.entries)
        pid = f"00000000-0000-4000-8000-{n:012d}"
        e = copy.deepcopy(self.template)
        e["prompt"][0], e["prompt"][1] = n, pid
        e["prompt"][2]["1"]["inputs"]["color"] = n
        t0 = 1_760_000_000_000 + 2000 * n
        for i, (_, data) in enumerate(e["status"]["messages"]):
            data["prompt_id"], data["timestamp"] = pid, t0 + (0 if i == 0 else 1500 + n % 7)
        self.entries[pid] = e

    def page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        items = list(self.entries.items())
        if "max_items" in query:
            items = items[-int(query["max_items"][0]):]
        return dict(items)


def serve(histories: list[int], graphs: list[int]) -> ThreadingHTTPServer:
    states = {f"/h{h}g{g}": History(h, g) for h in histories for g in graphs}
    queue_idle = (RECORDED / "queue_idle.json").read_bytes()
    stats = (RECORDED / "system_stats.json").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self) -> tuple[History | None, str, dict[str, list[str]]]:
            parts = urlsplit(self.path)
            prefix, _, rest = parts.path[1:].partition("/")
            return states.get("/" + prefix), "/" + rest, parse_qs(parts.query)

        def do_GET(self) -> None:
            state, path, query = self._route()
            if state is None or not path.startswith("/api/"):
                return self._send(404, b'{"error": "not found"}')
            path = path[4:]
            with state.lock:
                if path == "/prompt":
                    return self._send(200, json.dumps({"exec_info": {"queue_remaining": state.remaining}}).encode())
                if path == "/queue":
                    return self._send(200, queue_idle)
                if path == "/history":
                    return self._send(200, json.dumps(state.page(query)).encode())
                if path == "/system_stats":
                    return self._send(200, stats)
            return self._send(404, b'{"error": "not found"}')

        def do_POST(self) -> None:
            state, path, _ = self._route()
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if state is None or path != "/finish":
                return self._send(404, b"{}")
            with state.lock:
                if state.remaining == 0:
                    state.remaining = 1
                else:
                    state.add()
                    state.remaining = 0
            self._send(200, b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    srv = serve([int(x) for x in sys.argv[1].split(",")], [int(x) for x in sys.argv[2].split(",")])
    print(srv.server_address[1], flush=True)
    sys.stdin.read()
    srv.shutdown()
