"""LocalResources: psutil for RAM/CPU, NVML for the GPU, both optional.

There is no NVIDIA GPU or driver on the machine these tests run on, so the
NVML path is fed through :class:`RecordedNvml`, a STAND-IN object with
pynvml's function names that returns the REAL readings recorded with
nvidia-ml-py on an H200 (``shared/fixtures/nvml/``).  Its exceptions are
pynvml's own classes, so error messages are the real ones.  The real
pynvml is exercised too: without a driver, ``detect()`` must report NVML
unavailable with the error pynvml really raises.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from movie_director_metrics._core import Monitor
from movie_director_metrics.collectors.resources import GPU_GAUGES, SYSTEM_GAUGES, LocalResources

pynvml = pytest.importorskip("pynvml")
psutil = pytest.importorskip("psutil")

NVML_DIR = Path(__file__).resolve().parent / "fixtures" / "recorded" / "nvml"
READINGS: dict[str, Any] = json.loads((NVML_DIR / "nvml_readings.json").read_text())["calls"]
MIB = 1024 * 1024
T0 = 1_700_000_000.0


class RecordedNvml:
    """Stand-in for ``pynvml`` (no GPU/driver exists on this machine).

    ``states``: one recorded state ("idle" or "load") per simulated GPU.
    ``v2=False`` mimics a binding without ``nvmlMemory_v2``;
    ``v2_error``/``unsupported``/``fail_later`` raise real pynvml errors.
    """

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(
        self,
        states: tuple[str, ...] = ("load",),
        *,
        v2: bool = True,
        v2_error: type[Exception] | None = None,
        unsupported: tuple[str, ...] = (),
    ) -> None:
        self.states = states
        if v2:
            self.nvmlMemory_v2 = pynvml.nvmlMemory_v2
        self.v2_error = v2_error
        self.unsupported = unsupported
        self.fail_later: set[str] = set()
        self.calls: list[str] = []

    def _r(self, handle: int, key: str) -> Any:
        return READINGS[f"{self.states[handle]}.{key}"]

    def _check(self, name: str) -> None:
        self.calls.append(name)
        if name in self.unsupported or name in self.fail_later:
            raise pynvml.NVMLError_NotSupported()

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")

    def nvmlShutdown(self) -> None:
        self.calls.append("nvmlShutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.states)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> str:
        return str(self._r(h, "name"))

    def nvmlDeviceGetMemoryInfo(self, h: int, version: int | None = None) -> SimpleNamespace:
        self._check("memory")
        if version:
            assert version == pynvml.nvmlMemory_v2
            if self.v2_error is not None:
                raise self.v2_error()
            return SimpleNamespace(version=version, **self._r(h, "memory_v2"))
        return SimpleNamespace(**self._r(h, "memory"))

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        self._check("utilization")
        return SimpleNamespace(**self._r(h, "utilization"))

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        self._check("temperature")
        return int(self._r(h, "temperature"))

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        self._check("power")
        return int(self._r(h, "power_mw"))


def smi_row() -> dict[str, str]:
    with (NVML_DIR / "nvidia_smi_query.csv").open() as f:
        row = next(csv.DictReader(f, skipinitialspace=True))
    return {k.strip(): v.strip() for k, v in row.items()}


# ---- NVML through the recorded readings ----------------------------------------


def test_nvml_v2_under_load_matches_nvidia_smi() -> None:
    nvml = RecordedNvml(("load",))
    res = LocalResources(nvml_module=nvml, psutil_module=psutil)
    caps = res.detect()
    assert res.memory_api == "v2"
    assert set(GPU_GAUGES) <= set(caps["available"])
    assert "v2" in caps["available"]["vram_used_bytes"] and "615 MiB" in caps["available"]["vram_used_bytes"]
    assert "NVIDIA H200" in caps["available"]["gpu_power_w"]
    r = res.read()
    assert r["vram_used_bytes"] == 21_559_574_528  # v2 used: the reserved 615 MiB left out
    assert r["vram_total_bytes"] == 150_754_820_096
    assert r["gpu_util_pct"] == 100
    assert r["gpu_temp_c"] == 59
    assert r["gpu_power_w"] == pytest.approx(677.845)
    # The same moment as nvidia-smi printed it (MiB, W): v2 is what it shows.
    smi = smi_row()
    assert round(r["vram_used_bytes"] / MIB) == int(smi["memory.used [MiB]"].split()[0]) == 20561
    assert round(r["vram_total_bytes"] / MIB) == int(smi["memory.total [MiB]"].split()[0]) == 143771
    assert abs(r["gpu_power_w"] - float(smi["power.draw [W]"].split()[0])) < 0.01  # smi prints 677.84
    assert r["gpu_temp_c"] == float(smi["temperature.gpu"])
    # The process list agrees: the one PyTorch process holds what v2 calls used (within 9 MiB).
    assert abs(r["vram_used_bytes"] - READINGS["load.procs"][0]["usedGpuMemory"]) < 10 * MIB


def test_nvml_v2_idle_reads_zero_used_because_reserved_is_excluded() -> None:
    res = LocalResources(nvml_module=RecordedNvml(("idle",)), psutil_module=psutil)
    r = res.read()
    assert r["vram_used_bytes"] == 0.0
    assert r["gpu_util_pct"] == 0 and r["gpu_temp_c"] == 35
    assert r["gpu_power_w"] == pytest.approx(88.531)


def test_nvml_v1_used_includes_the_reserved_memory() -> None:
    res = LocalResources(nvml_module=RecordedNvml(("load",), v2=False), psutil_module=psutil)
    caps = res.detect()
    assert res.memory_api == "v1"
    assert "v1" in caps["available"]["vram_used_bytes"]
    assert "no nvmlMemory_v2" in caps["available"]["vram_used_bytes"]
    r = res.read()
    assert r["vram_used_bytes"] == 22_204_514_304
    assert r["vram_used_bytes"] - 21_559_574_528 == READINGS["load.memory_v2"]["reserved"] == 644_939_776
    idle = LocalResources(nvml_module=RecordedNvml(("idle",), v2=False), psutil_module=psutil).read()
    assert idle["vram_used_bytes"] == 644_939_776  # v1: an idle H200 "uses" 615 MiB


def test_nvml_v2_failure_falls_back_to_v1_and_says_why() -> None:
    nvml = RecordedNvml(("load",), v2_error=pynvml.NVMLError_FunctionNotFound)
    res = LocalResources(nvml_module=nvml, psutil_module=psutil)
    caps = res.detect()
    assert res.memory_api == "v1"
    assert "v2 failed: Function Not Found" in caps["available"]["vram_used_bytes"]
    assert res.read()["vram_used_bytes"] == 22_204_514_304


def test_unsupported_gauge_is_missing_with_reason_not_zero() -> None:
    nvml = RecordedNvml(("load",), unsupported=("power",))
    res = LocalResources(nvml_module=nvml, psutil_module=psutil)
    caps = res.detect()
    assert caps["missing"]["gpu_power_w"] == "NVML nvmlDeviceGetPowerUsage on NVIDIA H200: Not Supported"
    r = res.read()
    assert "gpu_power_w" not in r
    assert r["gpu_temp_c"] == 59


def test_a_reading_that_fails_later_is_left_out_with_last_error() -> None:
    nvml = RecordedNvml(("load",))
    res = LocalResources(nvml_module=nvml, psutil_module=psutil)
    res.detect()
    nvml.fail_later = {"temperature", "memory"}
    r = res.read()
    assert "gpu_temp_c" not in r and "vram_used_bytes" not in r and "vram_total_bytes" not in r
    assert r["gpu_util_pct"] == 100
    assert res.last_error == "NVML gpu_temp_c: Not Supported"


def test_every_gpu_aggregated() -> None:
    res = LocalResources(nvml_module=RecordedNvml(("idle", "load")), gpu_index=None, psutil_module=psutil)
    caps = res.detect()
    assert "2 GPUs" in caps["available"]["gpu_util_pct"]
    r = res.read()
    assert r["vram_used_bytes"] == 0 + 21_559_574_528
    assert r["vram_total_bytes"] == 2 * 150_754_820_096
    assert r["gpu_util_pct"] == 50.0  # mean
    assert r["gpu_temp_c"] == 59  # hottest
    assert r["gpu_power_w"] == pytest.approx(88.531 + 677.845)  # sum


def test_gpu_index_out_of_range_is_reported() -> None:
    res = LocalResources(nvml_module=RecordedNvml(("load",)), gpu_index=3, psutil_module=psutil)
    caps = res.detect()
    assert caps["missing"]["vram_used_bytes"] == "gpu_index 3 is out of range: NVML sees GPUs 0 to 0"


def test_close_shuts_nvml_down_once() -> None:
    nvml = RecordedNvml(("load",))
    with LocalResources(nvml_module=nvml, psutil_module=psutil) as res:
        res.detect()
        res.detect()  # re-detect does not initialise twice
    res.close()
    assert nvml.calls.count("nvmlInit") == 1
    assert nvml.calls.count("nvmlShutdown") == 1


def test_record_puts_readings_on_the_service() -> None:
    mon = Monitor(manual_clock=True, start_time=T0)
    svc = mon.service("this-machine")
    res = LocalResources(nvml_module=RecordedNvml(("load",)), psutil_module=psutil)
    readings = res.record(svc)
    st = mon.stats("this-machine", "5m")
    for gauge, value in readings.items():
        assert st.resources[gauge].last == pytest.approx(value, rel=1e-9), gauge
    assert st.resources["vram_used_bytes"].last == 21_559_574_528
    assert st.resources["gpu_power_w"].last == pytest.approx(677.845)


# ---- the real pynvml, on a machine without a GPU -----------------------------------


def real_nvml_error() -> str | None:
    """The error the real pynvml raises here, or None if NVML works."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return str(e)
    pynvml.nvmlShutdown()
    return None


def test_without_gpu_or_driver_nvml_is_unavailable_with_the_real_error() -> None:
    err = real_nvml_error()
    if err is None:
        pytest.skip("this machine has a working NVIDIA driver")
    res = LocalResources()  # imports the real pynvml and psutil
    caps = res.detect()
    for gauge in GPU_GAUGES:
        assert caps["missing"][gauge] == f"NVML not available: {err}"
        assert gauge not in caps["available"]
    assert err == "NVML Shared Library Not Found" or "Driver" in err
    r = res.read()
    assert not set(GPU_GAUGES) & set(r)  # absent, not zeros
    assert set(SYSTEM_GAUGES) <= set(r) or "cpu_pct" not in caps["available"]


def test_pynvml_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    caps = LocalResources(psutil_module=psutil).detect()
    assert caps["missing"]["gpu_temp_c"].startswith("NVML not available: nvidia-ml-py (pynvml) is not installed")


# ---- psutil ----------------------------------------------------------------------------


def test_system_ram_and_cpu_from_psutil() -> None:
    res = LocalResources(nvml_module=RecordedNvml(("idle",)))
    caps = res.detect()
    assert caps["available"]["ram_used_bytes"].startswith(f"psutil {psutil.__version__}: virtual_memory")
    r = res.read()
    vm = psutil.virtual_memory()
    assert r["ram_total_bytes"] == vm.total
    assert 0 < r["ram_used_bytes"] <= vm.total
    assert abs(r["ram_used_bytes"] - (vm.total - vm.available)) < 0.05 * vm.total
    assert 0.0 <= r["cpu_pct"] <= 100.0


def test_process_ram_and_cpu() -> None:
    import os

    res = LocalResources(pid=os.getpid(), nvml_module=RecordedNvml(("idle",)))
    caps = res.detect()
    assert f"RSS of process {os.getpid()}" in caps["available"]["ram_used_bytes"]
    sum(i * i for i in range(200_000))  # some CPU time between the two readings
    r = res.read()
    rss = psutil.Process().memory_info().rss
    assert abs(r["ram_used_bytes"] - rss) < 0.2 * rss
    assert 0.0 <= r["cpu_pct"] <= 100.0


def test_process_that_does_not_exist() -> None:
    res = LocalResources(pid=2**22 + 12345, nvml_module=RecordedNvml(("idle",)))
    caps = res.detect()
    assert "psutil cannot read process" in caps["missing"]["ram_used_bytes"]
    assert "cpu_pct" in caps["missing"]
    r = res.read()
    assert "ram_used_bytes" not in r and "cpu_pct" not in r
    assert r["ram_total_bytes"] == psutil.virtual_memory().total


def test_psutil_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)
    res = LocalResources(nvml_module=RecordedNvml(("load",)))
    caps = res.detect()
    for gauge in SYSTEM_GAUGES:
        assert caps["missing"][gauge].startswith("psutil is not installed")
    r = res.read()
    assert not set(SYSTEM_GAUGES) & set(r)
    assert r["gpu_temp_c"] == 59
