"""Why a backend is not up, and what to do about it.

Every state other than "up" carries a **cause** from :data:`CAUSES` (a
fixed set, documented in docs/troubleshooting.md with how each is detected
and the test that proves it) and a one-line **hint** naming the concrete
thing to do.  :func:`diagnose` derives them from the failed request (its
error type, HTTP status, the server's own reply) and the backend's kind;
:func:`sniff_kind` tells which kind of server answers on a port that does
not answer as configured (the ``wrong_kind`` cause).

Nothing here sends a request except :func:`sniff_kind`, which the worker
calls once per streak of failures that says "something else answers here"
(a 404 or an unparseable reply), never while the backend is up.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .http import ProbeError

__all__ = ["CAUSES", "KIND_NAMES", "USUAL_PORTS", "Diagnosis", "diagnose", "signature_of", "sniff_kind"]

#: cause -> what it means (the one home of the set; docs/troubleshooting.md
#: has a row for each, tests/test_diagnosis.py proves each).
CAUSES: dict[str, str] = {
    "refused": "nothing listens at the host and port",
    "dns": "the host name does not resolve",
    "tls": "the TLS handshake or the server's certificate failed",
    "proxy": "a proxy between us and the backend refused or could not reach it",
    "timeout": "the connection or the reply took longer than its limit",
    "reset": "the server closed the connection in the middle of a request",
    "unreachable": "the network has no route to the host",
    "auth": "the backend wants credentials, or refused the ones given",
    "api_disabled": "the web UI answers but its API is switched off",
    "wrong_kind": "the port answers, but as another kind of server",
    "not_found": "the server answers, but not at the path this kind uses",
    "model_loading": "the backend is up and still loading its model",
    "saturated": "the backend is up but refuses work: busy or rate-limited",
    "server_error": "the backend failed the request (a 5xx with its own message)",
    "oom": "the backend ran out of GPU or system memory",
    "bad_reply": "the reply is not what this kind of backend sends",
    "blocked": "a remote backend while Online Access / allow_remote is off",
    "disabled": "switched off in the configuration",
    "collector_error": "our collector failed (a bug: please report it)",
}

#: Display names of the kinds, for hints.
KIND_NAMES: dict[str, str] = {
    "comfyui": "ComfyUI",
    "a1111": "AUTOMATIC1111/Forge",
    "ollama": "Ollama",
    "openai": "an OpenAI-compatible server",
    "http": "an HTTP endpoint",
}

#: The ports each kind usually listens on (for "refused" hints).
USUAL_PORTS: dict[str, str] = {
    "comfyui": "8188",
    "a1111": "7860",
    "ollama": "11434",
    "openai": "1234 (LM Studio), 8000 (vLLM), 8080 (llama.cpp)",
}

#: How each kind is started so that other machines can reach it.
_LISTEN_FLAG: dict[str, str] = {
    "comfyui": "python main.py --listen",
    "a1111": "webui with --listen --api",
    "ollama": "OLLAMA_HOST=0.0.0.0 ollama serve",
    "openai": "the server bound to 0.0.0.0 (e.g. llama-server --host 0.0.0.0)",
}

#: Words in a 503 body that mean "still loading a model".
_LOADING_WORDS = ("loading model", "model is loading", "loading the model", "currently loading")
#: A reply that means "out of memory" ("oom" as a word: not in "boom").
_OOM = re.compile(r"out of memory|outofmemory|\boom\b", re.IGNORECASE)
#: Longest server message quoted in a hint.
_QUOTE_CHARS = 160


@dataclass(frozen=True)
class Diagnosis:
    """A cause from :data:`CAUSES` and a hint naming what to do."""

    cause: str
    hint: str

    def __post_init__(self) -> None:
        if self.cause not in CAUSES:
            raise ValueError(f"cause={self.cause!r}: expected one of {', '.join(CAUSES)}")


def _server_message(body: bytes | None) -> str | None:
    """The server's own error text from a reply body: a JSON ``error`` /
    ``detail`` / ``message`` (nested once), else the text itself; cut."""
    if not body:
        return None
    text = body.decode("utf-8", "replace").strip()
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("error", "detail", "message"):
            v = data.get(key)
            if isinstance(v, dict):
                v = v.get("message") or v.get("type")
            if isinstance(v, str) and v.strip():
                text = v.strip()
                break
    if text.lstrip().startswith("<"):
        return None  # an HTML page says nothing a hint can quote
    text = " ".join(text.split())
    return text[:_QUOTE_CHARS] + ("…" if len(text) > _QUOTE_CHARS else "")


def _is_llamacpp_loading(body: bytes | None) -> bool:
    """llama-server's answer to every request while it loads (recorded:
    ``{"error": {"message": "Loading model", "type": "unavailable_error",
    "code": 503}}``), so the hint names it even before detection."""
    try:
        err = json.loads(body or b"").get("error")
    except (ValueError, AttributeError, RecursionError):
        return False
    return isinstance(err, dict) and err.get("type") == "unavailable_error" and err.get("message") == "Loading model"


def _kind(kind: str) -> str:
    return KIND_NAMES.get(kind, kind)


def diagnose(
    kind: str,
    host: str,
    port: int | None,
    error: ProbeError,
    *,
    key_source: str | None = None,
    key_problem: str | None = None,
    found: str | None = None,
    redact: Callable[[str], str] = lambda s: s,
) -> Diagnosis:
    """The cause and hint of a failed request to a ``kind`` backend at
    ``host:port``.  ``found``: the kind :func:`sniff_kind` recognised on the
    port (None: nothing recognisable, or not sniffed).  ``redact`` removes
    credentials from any server text quoted.  ``key_source``: where the
    key comes from (``BackendConfig.key_source``: ``$VAR`` or ``key file
    PATH``), ``key_problem``: why a configured key was not sent
    (``BackendConfig.key_problem``), for the ``auth`` hint."""
    where = f"{host}:{port}" if port is not None else host
    t, status = error.error_type, error.status
    said = _server_message(error.body)
    quoted = f' (the server says "{redact(said)}")' if said else ""
    if t == "connection_refused":
        usual = USUAL_PORTS.get(kind)
        listen = _LISTEN_FLAG.get(kind)
        return Diagnosis(
            "refused",
            f"nothing listens at {where}: is {_kind(kind)} running"
            + (f" (usually on port {usual})" if usual else "")
            + (f", started with `{listen}` when it is on another machine?" if listen else "?"),
        )
    if t == "dns":
        return Diagnosis("dns", f"the host name {host!r} does not resolve: check its spelling, or use the IP address")
    if t == "tls":
        text = str(error).lower()
        if "certificate" in text or "verify" in text:
            return Diagnosis(
                "tls",
                f"{where}'s certificate is not trusted: install its CA, or use the name the certificate was issued for",
            )
        return Diagnosis(
            "tls",
            f"TLS failed at {where}: if the server speaks plain HTTP, use http:// instead of https://",
        )
    if t == "timeout":
        phase = getattr(error, "phase", None)
        if phase == "connect":
            return Diagnosis(
                "timeout",
                f"no answer to the connection within the connect timeout: is {where} reachable "
                "(firewall, VPN, the right address)? raise connect_timeout_s for a slow link",
            )
        return Diagnosis(
            "timeout",
            f"{where} accepted the connection but did not reply within the read timeout: the server may be "
            "busy or stuck (a long job in a single-threaded server); raise read_timeout_s if it is just slow",
        )
    if t == "connection_reset":
        return Diagnosis("reset", f"{where} closed the connection mid-request: it may be restarting or crashing")
    if t == "unreachable":
        return Diagnosis("unreachable", f"{where} cannot be reached: check the address and the network route")
    if t == "oom":
        return Diagnosis("oom", f"{_kind(kind)} ran out of memory{quoted}: use a smaller model, batch or resolution")
    if status == 407 or (status in (502, 504) and error.body is not None and error.body.lstrip()[:1] == b"<"):
        return Diagnosis(
            "proxy",
            f"a proxy in front of {where} answered HTTP {status}: check that it forwards to the backend "
            "(and its credentials), or reach the backend directly",
        )
    if status in (401, 403):
        if key_problem:
            key = f"no key: {key_problem}"
        elif key_source:
            key = f"the key from {key_source}"
        else:
            key = "no key (set api_key_env to the variable holding it, or api_key_file)"
        return Diagnosis(
            "auth",
            f"HTTP {status}: {_kind(kind)} refused the request; we sent {key}"
            + ("" if status == 401 or key_problem else ", which may lack the permission or the model"),
        )
    if status == 503 and said and any(w in said.lower() for w in _LOADING_WORDS):
        who = "llama.cpp" if _is_llamacpp_loading(error.body) else _kind(kind)
        return Diagnosis(
            "model_loading",
            f"{who} is up and loading its model{quoted}: wait, it comes up by itself "
            "(a large model from a slow disk can take minutes)",
        )
    if t == "server_busy":
        return Diagnosis(
            "saturated",
            f"HTTP {status}: {_kind(kind)} is up but refuses work{quoted}: wait for the queue to drain, "
            "or raise its parallelism (Ollama OLLAMA_NUM_PARALLEL, llama.cpp --parallel)",
        )
    if said and _OOM.search(said):
        return Diagnosis("oom", f"{_kind(kind)} ran out of memory{quoted}: use a smaller model, batch or resolution")
    if t == "http_5xx":
        return Diagnosis("server_error", f"HTTP {status}: {_kind(kind)} failed the request{quoted}: see its console log")
    if found is not None and found != kind:
        return Diagnosis(
            "wrong_kind",
            f"{where} answers, but this looks like {_kind(found)}, not {_kind(kind)}: fix the URL's port "
            f"or set kind = \"{found}\"",
        )
    if kind == "a1111" and status == 404 and (said == "Not Found" or "/sdapi/" in str(error)):
        return Diagnosis("api_disabled", "the web UI runs but its API is off: start it with `--api`")
    if t in ("http_4xx", "unexpected_status"):
        return Diagnosis(
            "not_found" if status in (404, 405) else "bad_reply",
            f"HTTP {status} from {where}{quoted}: is this the {_kind(kind)} server, on the right port and path?",
        )
    if t == "bad_json":
        return Diagnosis(
            "bad_reply",
            f"{where} answered with something {_kind(kind)} does not send: is another program on this port?",
        )
    return Diagnosis("collector_error", f"{error}: please report this")


def signature_of(path: str, status: int, body: bytes) -> str | None:
    """The kind a reply of ``path`` belongs to, or None.  Signatures, from
    the servers' own sources: ComfyUI's ``/system_stats`` (``system`` with
    ``comfyui_version`` and ``devices``), Ollama's ``/api/tags``
    (``{"models": [...]}``) and ``/`` ("Ollama is running"), A1111's
    ``/internal/ping`` (``{}``) and its Gradio page, an OpenAI-compatible
    ``/v1/models`` (``{"object": "list", "data": [...]}``)."""
    if status != 200:
        return None
    text = body[:65536].decode("utf-8", "replace")
    if path == "/":
        if "Ollama is running" in text:
            return "ollama"
        if "<title>ComfyUI" in text:
            return "comfyui"
        if "gradio" in text.lower() and "stable diffusion" in text.lower():
            return "a1111"
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if path == "/system_stats" and isinstance(data, dict):
        system = data.get("system")
        if isinstance(system, dict) and "comfyui_version" in system or "devices" in data and "system" in data:
            return "comfyui"
    if path == "/api/tags" and isinstance(data, dict) and isinstance(data.get("models"), list):
        return "ollama"
    if path == "/internal/ping" and data == {}:
        return "a1111"
    if path == "/v1/models" and isinstance(data, dict) and data.get("object") == "list":
        return "openai"
    return None


#: What :func:`sniff_kind` asks, in order (each the cheapest route that
#: tells one kind apart; Ollama before OpenAI: it serves /v1/models too).
SNIFF_PATHS: tuple[str, ...] = ("/api/tags", "/system_stats", "/internal/ping", "/v1/models", "/")


def sniff_kind(get: Callable[[str], tuple[int, bytes]]) -> str | None:
    """The kind of server answering, from a few GETs (``get(path) ->
    (status, body)``, raising ``ProbeError`` when nothing answers): the
    first recognised signature, or None."""
    for path in SNIFF_PATHS:
        try:
            status, body = get(path)
        except ProbeError:
            return None  # it stopped answering: nothing more to learn
        found = signature_of(path, status, body)
        if found is not None:
            return found
    return None
