"""``movie-director-metrics jobs --queue`` (issue 17: ETA and VRAM in the
CLI and its ``--json``): the history file gives the processing
percentiles, the configured backends — here the project's simulated
ComfyUI on loopback, a real HTTP server with a moving queue — give the
jobs waiting and running now."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import movie_director_metrics as mdm
from movie_director_metrics.cli import main as cli_main
from movie_director_metrics.simulator import Simulator


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """A history file with 12 finished jobs of the simulated ComfyUI's
    service (4 of model sdxl never reported a start: reading the file back
    once failed on their wait series, which was never written)."""
    db = tmp_path / "history.sqlite3"
    with mdm.Monitor(storage=db) as m:
        for i in range(8):
            if i % 2:
                m.jobs.job("comfyui-demo", model="sdxl").finish()  # no start: a wait key, no wait series
            with m.jobs.job("comfyui-demo") as job:
                job.started()
        m.flush()
    return db


def test_jobs_queue_lists_the_backends_jobs_with_an_eta(history: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sim = Simulator(latency_ms=5.0, error_rate=0.0, queue=4, job_s=30.0, seed=2)
    try:
        config = tmp_path / "backends.toml"
        c = sim.configs()[0]
        config.write_text(f'[[backend]]\nname = "{c.name}"\nkind = "comfyui"\nurl = "{c.url}"\n')
        rc = cli_main(["jobs", "--queue", "--json", "--storage", str(history), "--config", str(config), "--window", "1h"])
        out = capsys.readouterr()
        assert rc == 0, out.err
        doc = json.loads(out.out)
        queue = doc["queue"]
        assert queue, "the simulated ComfyUI has a running prompt and a queue"
        states = [q["state"] for q in queue]
        assert states[0] == "running" and set(states[1:]) == {"queued"}
        assert [q["position"] for q in queue] == list(range(len(queue)))
        # 8 finished jobs of the service in the window (>= 5): an ETA for each,
        # the later ones further out, start and finish apart.
        assert all(q["finish_in_s"] is not None and q["eta_basis"] == "service" for q in queue)
        assert queue[0]["start_in_s"] == [0.0, 0.0]
        finishes = [q["finish_in_s"][0] for q in queue]
        assert finishes == sorted(finishes) and all(q["start_in_s"][0] <= q["finish_in_s"][0] for q in queue)
        assert doc["vram"] == []  # the jobs in the file had no VRAM reading

        rc = cli_main(["jobs", "--queue", "--storage", str(history), "--config", str(config), "--window", "1h"])
        text = capsys.readouterr().out
        assert rc == 0 and "Waiting and running now" in text and "running" in text and "done in" in text
    finally:
        sim.close()


def test_jobs_queue_refuses_a_bad_config(history: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "backends.toml"
    config.write_text('[[backend]]\nname = "x"\nkind = "nope"\nurl = "http://127.0.0.1:1"\n')
    assert cli_main(["jobs", "--queue", "--storage", str(history), "--config", str(config)]) == 2
    assert "kind = 'nope'" in capsys.readouterr().err
