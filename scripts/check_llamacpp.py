"""Our OpenAI-compatible collector and LLM usage against a real llama.cpp
``llama-server`` (issue 17, item 6).

Needs the server and models that ``../shared/tools/llamacpp/build.sh
target/llamacpp`` builds (``--build DIR``); not part of ``make test`` (CI has
no llama-server: ``tests/test_llamacpp.py`` replays what ``--record`` saves
here).  Every server this script starts is stopped before it exits.

1. **Loading** (the 1.9 GB ``big.gguf``, written once with the tool's
   ``make_tiny.py``; ~1.4 s to load): every endpoint answers 503 "Loading
   model"; ``check_once`` during that time gives cause ``model_loading``
   with a hint naming llama.cpp, and the recorded error type.  Started
   without ``--metrics``: once up, ``/metrics`` answers 501.
2. **Ready, a chat, a queue** (``small.gguf``, ``--metrics --slots -np 2``):
   detection (flavour, version, models); a chat completion with ``usage``
   and ``timings`` (``predicted_per_second`` against ``(n-1)/predicted_ms``
   and ``n/predicted_ms``; the generation time the LLM tracker keeps); the
   counters' deltas over that one request against its ``timings``; a second
   ``/metrics`` right after the first (the rate gauges reset to 0); two
   streams (with and without ``stream_options.include_usage``); four
   concurrent requests on two slots (``requests_processing`` 2,
   ``requests_deferred`` 2, and our collector's queue); how often a worker
   cycling every 1 s scrapes ``/metrics`` in 12 s.
3. **Sleeping** (``--sleep-idle-seconds 2``): once ``/props`` says
   ``is_sleeping``, our real collectors (``Collectors``, 0.5 s interval,
   8 s) and ``check_once`` run against it; it must still be asleep after
   (``/props`` and the server's log), with ``detail["sleeping"]`` and no
   models in the status; then one ``GET /slots`` wakes it (what we never
   send).

Prints one JSON document (``--out`` also writes it; the reference run is
``benchmarks/reference/llamacpp-2026-12-07.json``), ``--record DIR`` writes
the replies as fixtures (``tests/fixtures/llamacpp``), exits 1 when a check
failed.

    .venv/bin/python scripts/check_llamacpp.py [--build target/llamacpp] [--port 8090] [--record DIR] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(os.environ.get("LLAMACPP_TOOLS", ROOT.parent / "shared" / "tools" / "llamacpp"))
sys.path.insert(0, str(ROOT / "python"))

from movie_director_metrics import Monitor  # noqa: E402
from movie_director_metrics._core import Monitor as CoreMonitor  # noqa: E402
from movie_director_metrics.collectors import BackendConfig  # noqa: E402
from movie_director_metrics.collectors.base import Backend  # noqa: E402
from movie_director_metrics.collectors.openai import OpenAICompatible, parse_prometheus  # noqa: E402
from movie_director_metrics.collectors.scheduler import Collectors, _Worker, check_once  # noqa: E402
from movie_director_metrics.llm.usage import normalize_usage, usage_from_stream  # noqa: E402


class Report:
    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"checks": {}, "measured": {}}

    def check(self, name: str, ok: Any, detail: Any) -> bool:
        self.doc["checks"][name] = {"ok": bool(ok), "detail": detail}
        print(f"[{'ok' if ok else 'FAIL'}] {name}: {json.dumps(detail, default=str)[:300]}", file=sys.stderr, flush=True)
        return bool(ok)

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.doc["checks"].values())


class Recorder:
    def __init__(self, root: Path | None) -> None:
        self.root = root

    def save(self, rel: str, body: bytes) -> None:
        if self.root is None:
            return
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def http(method: str, url: str, body: Any = None, timeout: float = 60.0) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Server:
    """One llama-server process; its log goes to a temporary file."""

    def __init__(self, binary: Path, model: Path, port: int, *extra: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile("w+b", prefix="llama-server-", suffix=".log", delete=False)
        argv = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-t", "2", "--no-webui", *extra]
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if http("GET", self.url + "/health", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited: {self.log_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("llama-server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)


def config(url: str, **kw: Any) -> BackendConfig:
    return BackendConfig("llama", "openai", url, connect_timeout_s=1.0, read_timeout_s=5.0, **kw)


def spy_paths(b: Backend) -> list[str]:
    """The paths ``b`` requests from now on (the requests still go to the
    real server: this only notes them)."""
    seen: list[str] = []
    real = b.client.request

    def request(method: str, path: str, *a: Any, **kw: Any) -> Any:
        seen.append(f"{method} {path}")
        return real(method, path, *a, **kw)

    b.client.request = request  # type: ignore[method-assign]
    return seen


CHAT = {"messages": [{"role": "user", "content": "Tell me a story about a robot."}], "max_tokens": 48,
        "temperature": 0, "seed": 1}


# ---- 1. loading --------------------------------------------------------------------------


def phase_loading(r: Report, rec: Recorder, binary: Path, build: Path, port: int) -> None:
    big = build / "model" / "big.gguf"
    if not big.exists():
        env = dict(os.environ, PYTHONPATH=str(build / "llama.cpp" / "gguf-py"))
        subprocess.run([str(build / "venv" / "bin" / "python"), str(TOOLS / "make_tiny.py"),
                        str(build / "llama.cpp" / "models" / "ggml-vocab-llama-spm.gguf"), str(big),
                        "1024", "24", "16", "16", "4096", "2048"], check=True, env=env)
    srv = Server(binary, big, port, "-c", "512")
    try:
        seen: dict[str, tuple[int, bytes]] = {}
        statuses: list[Any] = []
        t0 = time.monotonic()
        loading_s = None
        while time.monotonic() - t0 < 120:
            try:
                code, body = http("GET", srv.url + "/health", timeout=2)
            except OSError:
                time.sleep(0.01)
                continue
            if code == 200:
                loading_s = time.monotonic() - t0
                break
            for path in ("/v1/models", "/props", "/metrics", "/slots"):
                if path not in seen:
                    seen[path] = http("GET", srv.url + path, timeout=2)
            seen.setdefault("/health", (code, body))
            if not statuses:
                statuses.append(check_once([config(srv.url)])[0])
        r.doc["measured"]["loading_503_seen_for_s"] = loading_s
        every_503 = {p: c for p, (c, _) in seen.items()}
        r.check("loading: every endpoint answers 503 'Loading model'", seen and all(
            c == 503 and b"Loading model" in b for c, b in seen.values()), {p: (c, b.decode()[:120]) for p, (c, b) in seen.items()})
        for path, (code, body) in seen.items():
            rec.save(f"loading/{path.strip('/').replace('/', '_')}_{code}.json", body)
        if statuses:
            s = statuses[0]
            r.check("loading: check_once gives cause model_loading naming llama.cpp",
                    s.cause == "model_loading" and s.hint and "llama.cpp" in s.hint,
                    {"state": s.state, "cause": s.cause, "hint": s.hint, "last_error_type": s.last_error_type,
                     "last_error": s.last_error})
        else:
            r.check("loading: check_once gives cause model_loading naming llama.cpp", False, "loading ended first")
        r.doc["measured"]["loading_statuses"] = every_503
        srv.wait_ready()
        code, body = http("GET", srv.url + "/metrics")
        rec.save("no_metrics/metrics_501.json", body)
        b = OpenAICompatible(config(srv.url), CoreMonitor().service("x"))
        b.probe()
        caps = b.detect()
        r.check("without --metrics: /metrics 501 and the queue n/a with the flag to add", code == 501 and
                "--metrics" in caps.missing.get("queue", ""), {"status": code, "missing": caps.missing.get("queue")})
    finally:
        srv.stop()


# ---- 2. ready, chat, queue ------------------------------------------------------------


def phase_ready(r: Report, rec: Recorder, binary: Path, build: Path, port: int) -> None:
    srv = Server(binary, build / "model" / "small.gguf", port, "--metrics", "--slots", "-c", "512", "-np", "2")
    try:
        srv.wait_ready()
        for path, name in (("/health", "health.json"), ("/props", "props.json"), ("/v1/models", "v1_models.json"),
                           ("/metrics", "metrics.txt")):
            rec.save(f"ready/{name}", http("GET", srv.url + path)[1])
        mon = CoreMonitor()
        b = OpenAICompatible(config(srv.url), mon.service("llama"))
        b.probe()
        caps = b.detect()
        r.check("ready: detected as llama.cpp with version, served model and a queue", b.flavor == "llama.cpp"
                and b.version and b.models and caps.has("queue") and caps.has("models"),
                {"flavor": b.flavor, "version": b.version, "models": b.models, "capabilities": caps.as_dict()})

        # One chat between two scrapes: the counters' deltas are that request's timings.
        before = http("GET", srv.url + "/metrics")[1]
        code, body = http("POST", srv.url + "/v1/chat/completions", CHAT)
        after = http("GET", srv.url + "/metrics")[1]
        again = http("GET", srv.url + "/metrics")[1]
        rec.save("chat/completion.json", body)
        rec.save("chat/metrics_before.txt", before)
        rec.save("chat/metrics_after.txt", after)
        rec.save("chat/metrics_rescraped.txt", again)
        resp = json.loads(body)
        t = resp["timings"]
        n, ms, pps = t["predicted_n"], t["predicted_ms"], t["predicted_per_second"]
        r.doc["measured"]["chat_timings"] = t
        r.doc["measured"]["chat_usage"] = resp["usage"]
        r.check("chat: predicted_per_second is (n-1)/predicted_ms, not n/predicted_ms",
                abs(pps - (n - 1) / ms * 1e3) < 1e-6 * pps and n >= 2,
                {"predicted_n": n, "predicted_ms": ms, "predicted_per_second": pps,
                 "(n-1)/ms": (n - 1) / ms * 1e3, "n/ms": n / ms * 1e3})
        u = normalize_usage(resp)
        monitor = Monitor(manual_clock=True, start_time=1_800_000_000.0)
        monitor.llm.record("llama.cpp", resp["model"], resp, 1000.0)
        (llm_st,) = monitor.llm.stats("5m")
        gen_s_now = u.output / u.output_tokens_per_s if u.output_tokens_per_s else None
        gen_s_old = u.output / pps
        r.doc["measured"]["generation_time"] = {
            "predicted_ms": ms, "tracker_now_ms": gen_s_now * 1e3 if gen_s_now else None,
            "from_predicted_per_second_ms": gen_s_old * 1e3, "overstated_by": gen_s_old * 1e3 / ms,
            "n/(n-1)": n / (n - 1), "tracker_tokens_per_s": llm_st.output_tokens_per_s}
        r.check("chat: the tracker's generation time is predicted_ms (was n/(n-1) too long)",
                gen_s_now is not None and abs(gen_s_now * 1e3 - ms) < 1e-6 * ms
                and abs(gen_s_old * 1e3 / ms - n / (n - 1)) < 1e-3,
                r.doc["measured"]["generation_time"])
        monitor.close()
        p0, p1, p2 = (parse_prometheus(x.decode()) for x in (before, after, again))
        d_tok = p1["llamacpp:tokens_predicted_total"][0] - p0["llamacpp:tokens_predicted_total"][0]
        d_s = p1["llamacpp:tokens_predicted_seconds_total"][0] - p0["llamacpp:tokens_predicted_seconds_total"][0]
        r.check("metrics: the counters moved by exactly this request's timings", d_tok == n and abs(d_s * 1e3 - ms) < 1.0,
                {"d_tokens_predicted_total": d_tok, "d_tokens_predicted_seconds_total": d_s, "predicted_ms": ms})
        gauge = "llamacpp:predicted_tokens_seconds"
        r.check("metrics: a second scrape finds the rate gauge reset", p1.get(gauge, [0])[0] > 0 and p2.get(gauge, [0])[0] == 0,
                {"first": p1.get(gauge), "second, right after": p2.get(gauge)})

        # Streams: with include_usage the last data chunk is choices: [] with usage and timings.
        for name, extra in (("stream_include_usage", {"stream_options": {"include_usage": True}}), ("stream_plain", {})):
            code, body = http("POST", srv.url + "/v1/chat/completions", {**CHAT, "stream": True, **extra})
            rec.save(f"chat/{name}.sse", body)
            chunks = [json.loads(line[6:]) for line in body.decode().splitlines()
                      if line.startswith("data: ") and line != "data: [DONE]"]
            last = chunks[-1]
            su = usage_from_stream(chunks)
            r.check(f"{name}: last chunk carries timings; usage from the stream",
                    "timings" in last and su.known and su.output == last["timings"]["predicted_n"],
                    {"last_keys": sorted(last), "choices": last.get("choices"), "usage": last.get("usage"),
                     "output": su.output, "tokens_per_s": su.output_tokens_per_s})

        # A queue: four requests on two slots.
        long = {**CHAT, "max_tokens": 150}
        threads = [threading.Thread(target=http, args=("POST", srv.url + "/v1/chat/completions", long)) for _ in range(4)]
        for th in threads:
            th.start()
        time.sleep(1.0)
        busy = http("GET", srv.url + "/metrics")[1]
        b.metrics_every_s = 0.0
        b.collect()
        for th in threads:
            th.join()
        rec.save("busy/metrics.txt", busy)
        pb = parse_prometheus(busy.decode())
        st = mon.stats("llama", "5m")
        r.check("busy: 2 processing and 2 deferred; our collector's queue likewise",
                (pb["llamacpp:requests_processing"][0], pb["llamacpp:requests_deferred"][0]) == (2, 2)
                and (st.queue_running, st.queue_pending) == (2, 2),
                {"processing": pb["llamacpp:requests_processing"], "deferred": pb["llamacpp:requests_deferred"],
                 "collector": (st.queue_running, st.queue_pending)})
        b.collect()
        r.check("busy: the collector's token rates come from the counters", "generation_tokens_per_s" in b.detail,
                {k: v for k, v in b.detail.items() if "per_s" in k})

        # How often a worker cycling every second scrapes /metrics.
        w = _Worker(config(srv.url, interval_s=1.0), mon.service("cycle"), allow_remote=False, resources=False)
        assert w.backend is not None
        paths = spy_paths(w.backend)
        stop = threading.Event()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 12.0:
            started = time.monotonic()
            w.cycle(stop)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        scrapes = sum(1 for p in paths if p == "GET /metrics")
        r.doc["measured"]["metrics_scrapes_in_12_s_at_1_s"] = scrapes
        r.doc["measured"]["requests_in_12_s_at_1_s"] = {p: paths.count(p) for p in sorted(set(paths))}
        r.check("scrape rate: /metrics at most every 5 s from a 1 s worker (detection + 2)", scrapes <= 3,
                r.doc["measured"]["requests_in_12_s_at_1_s"])
        w.close()
        mon.close()
    finally:
        srv.stop()


# ---- 3. sleeping ---------------------------------------------------------------------------


def phase_sleeping(r: Report, rec: Recorder, binary: Path, build: Path, port: int) -> None:
    srv = Server(binary, build / "model" / "small.gguf", port, "--metrics", "--slots", "-c", "512", "-np", "2",
                 "--sleep-idle-seconds", "2")
    try:
        srv.wait_ready()
        http("POST", srv.url + "/v1/chat/completions", {**CHAT, "max_tokens": 4})
        deadline = time.monotonic() + 30
        while not json.loads(http("GET", srv.url + "/props")[1]).get("is_sleeping"):
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not fall asleep")
            time.sleep(0.2)
        for path, name in (("/props", "props.json"), ("/health", "health.json"), ("/v1/models", "v1_models.json"),
                           ("/metrics", "metrics.txt")):
            rec.save(f"sleeping/{name}", http("GET", srv.url + path)[1])
        woke_before = srv.log_text().count("exiting sleeping state")

        monitor = Monitor()
        collectors = Collectors(monitor, [config(srv.url, interval_s=0.5)])
        worker = collectors._workers[0]
        assert worker.backend is not None
        paths = spy_paths(worker.backend)
        collectors.start()
        time.sleep(8.0)
        status = collectors.status()["llama"]
        collectors.stop()
        (checked,) = check_once([config(srv.url)])
        monitor.close()
        props = json.loads(http("GET", srv.url + "/props")[1])
        woke_after = srv.log_text().count("exiting sleeping state")
        asked = {p: paths.count(p) for p in sorted(set(paths))}
        r.doc["measured"]["sleeping_requests_in_8_s"] = asked
        r.check("sleeping: 8 s of our collectors and a check leave it asleep, never asking /slots",
                props.get("is_sleeping") is True and woke_after == woke_before and not any("/slots" in p for p in paths),
                {"is_sleeping": props.get("is_sleeping"), "wakes_in_log": woke_after - woke_before, "requests": asked})
        r.check("sleeping: the status shows it, with no model loaded",
                status.state == "up" and "sleeping" in status.detail and status.models == ()
                and "sleeping" in checked.detail,
                {"state": status.state, "detail": status.detail, "models": status.models, "check_detail": checked.detail})
        code, _ = http("GET", srv.url + "/slots")
        time.sleep(1.0)
        props = json.loads(http("GET", srv.url + "/props")[1])
        rec.save("sleeping/props_after_slots.json", json.dumps(props).encode())
        r.check("sleeping: one GET /slots wakes it (why we never send it)",
                srv.log_text().count("exiting sleeping state") > woke_after,
                {"slots_status": code, "is_sleeping_after": props.get("is_sleeping")})
    finally:
        srv.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, default=ROOT / "target" / "llamacpp")
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--record", type=Path, default=None, help="write the replies as fixtures under this folder")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    binary = args.build / "llama.cpp" / "build" / "bin" / "llama-server"
    r = Report()
    rec = Recorder(args.record)
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    r.doc["server"] = (version.stdout + version.stderr).strip().splitlines()[-2:]
    r.doc["date"] = datetime.date.today().isoformat()
    for phase in (phase_loading, phase_ready, phase_sleeping):
        try:
            phase(r, rec, binary, args.build, args.port)
        except Exception as e:
            r.check(f"{phase.__name__} ran", False, f"{type(e).__name__}: {e}")
    r.doc["ok"] = r.ok
    text = json.dumps(r.doc, indent=2, default=str)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0 if r.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
