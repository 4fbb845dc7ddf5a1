"""Resources of this machine: RAM and CPU through ``psutil``, NVIDIA GPU
memory, utilisation, temperature and power through NVML (``pynvml``, from
the ``nvidia-ml-py`` package).

Both libraries are optional and found at run time.  A gauge whose source
is missing (library not installed, no driver, no GPU, a reading the card
does not support) is reported as not available with the reason, never as
a zero.

GPU memory comes from ``nvmlDeviceGetMemoryInfo`` **v2** where the driver
and binding have it.  Its ``used`` excludes the memory the driver reserves
(about 615 MiB on an H200), so an idle GPU reads 0 bytes used, and it is
the figure ``nvidia-smi`` prints.  v1's ``used`` includes the reserved
part.  Which one was used is named in :meth:`LocalResources.detect`'s
sources and in ``memory_api``.  One reading costs 6-8 µs (measured on an
H200), so reading every poll is cheap.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

from .._core import Service

#: The engine gauges this module can fill.
SYSTEM_GAUGES: tuple[str, ...] = ("ram_used_bytes", "ram_total_bytes", "cpu_pct")
GPU_GAUGES: tuple[str, ...] = ("vram_used_bytes", "vram_total_bytes", "gpu_util_pct", "gpu_temp_c", "gpu_power_w")

_MIB = 1024 * 1024


class LocalResources:
    """RAM/CPU (psutil) and NVIDIA GPU (NVML) gauges of this machine.

    ``pid``: report that process's RSS as ``ram_used_bytes`` and its CPU
    use as ``cpu_pct`` (scaled to the whole machine, 0-100) instead of the
    system's.  ``gpu_index``: the GPU to read; ``None`` reads every GPU
    (memory and power summed, utilisation averaged, the hottest
    temperature).  ``psutil_module``/``nvml_module`` replace the imported
    modules (tests feed recorded readings through them).

    Not thread-safe (CPU percentages are deltas since the previous read):
    one owner, e.g. one collector worker.  :meth:`close` shuts NVML down.
    """

    def __init__(
        self,
        *,
        pid: int | None = None,
        gpu_index: int | None = 0,
        psutil_module: Any = None,
        nvml_module: Any = None,
    ) -> None:
        self.pid = pid
        self.gpu_index = gpu_index
        self._psutil: Any = psutil_module
        self._nvml: Any = nvml_module
        self._process: Any = None
        self._handles: list[Any] = []
        self._nvml_ready = False
        self._cpu_primed = False
        self._detected = False
        self.available: dict[str, str] = {}
        self.missing: dict[str, str] = {}
        #: "v2" or "v1": the nvmlDeviceGetMemoryInfo version in use.
        self.memory_api: str | None = None
        #: The latest failure of a reading that had worked at detection.
        self.last_error: str | None = None

    def __enter__(self) -> LocalResources:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- detection -------------------------------------------------------------

    def detect(self) -> dict[str, dict[str, str]]:
        """Finds out which gauges this machine can report.

        Returns ``{"available": {gauge: source}, "missing": {gauge: why}}``
        over the engine's gauge names (the shape of
        :class:`~.base.Capabilities`).  Safe to call again (re-detects).
        """
        self.available, self.missing = {}, {}
        self._detect_psutil()
        self._detect_nvml()
        self._detected = True
        return {"available": dict(self.available), "missing": dict(self.missing)}

    def _detect_psutil(self) -> None:
        try:
            ps = self._psutil or importlib.import_module("psutil")
        except ImportError as e:
            self._lack(SYSTEM_GAUGES, f"psutil is not installed ({e})")
            return
        self._psutil = ps
        version = getattr(ps, "__version__", "?")
        if self.pid is not None:
            try:
                self._process = ps.Process(self.pid)
                self._process.memory_info()
                self._process.cpu_percent(None)  # primes the delta
            except ps.Error as e:
                self._lack(("ram_used_bytes", "cpu_pct"), f"psutil cannot read process {self.pid}: {e}")
            else:
                self.available["ram_used_bytes"] = f"psutil {version}: RSS of process {self.pid}"
                self.available["cpu_pct"] = f"psutil {version}: CPU of process {self.pid} / {ps.cpu_count()} logical CPUs"
        else:
            ps.cpu_percent(None)  # primes the delta
            self.available["ram_used_bytes"] = f"psutil {version}: virtual_memory total - available"
            self.available["cpu_pct"] = f"psutil {version}: cpu_percent, all CPUs"
        self._cpu_primed = True
        self.available["ram_total_bytes"] = f"psutil {version}: virtual_memory total"

    def _detect_nvml(self) -> None:
        try:
            nvml = self._nvml or importlib.import_module("pynvml")
        except ImportError as e:
            self._lack(GPU_GAUGES, f"NVML not available: nvidia-ml-py (pynvml) is not installed ({e})")
            return
        self._nvml = nvml
        error = _nvml_error(nvml)
        try:
            if not self._nvml_ready:
                nvml.nvmlInit()
                self._nvml_ready = True
            count = int(nvml.nvmlDeviceGetCount())
            if count == 0:
                self._lack(GPU_GAUGES, "NVML found no NVIDIA GPU")
                return
            if self.gpu_index is not None and not 0 <= self.gpu_index < count:
                self._lack(GPU_GAUGES, f"gpu_index {self.gpu_index} is out of range: NVML sees GPUs 0 to {count - 1}")
                return
            indices = range(count) if self.gpu_index is None else (self.gpu_index,)
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
            name = _text(nvml.nvmlDeviceGetName(self._handles[0]))
        except error as e:
            self._lack(GPU_GAUGES, f"NVML not available: {e}")
            return
        gpu = name if len(self._handles) == 1 else f"{len(self._handles)} GPUs"
        h = self._handles[0]

        v2 = getattr(nvml, "nvmlMemory_v2", None)
        why_v1 = "this nvidia-ml-py has no nvmlMemory_v2"
        if v2 is not None:
            try:
                info = nvml.nvmlDeviceGetMemoryInfo(h, version=v2)
                self.memory_api = "v2"
                reserved = getattr(info, "reserved", 0)
                self.available["vram_used_bytes"] = (
                    f"NVML nvmlDeviceGetMemoryInfo v2 on {gpu}: used, without the "
                    f"{reserved / _MIB:.0f} MiB the driver reserves (as nvidia-smi shows)"
                )
            except (error, TypeError) as e:
                why_v1 = f"v2 failed: {e}"
        if self.memory_api is None:
            try:
                nvml.nvmlDeviceGetMemoryInfo(h)
                self.memory_api = "v1"
                self.available["vram_used_bytes"] = (
                    f"NVML nvmlDeviceGetMemoryInfo v1 on {gpu} ({why_v1}): used includes the driver-reserved memory"
                )
            except error as e:
                self._lack(("vram_used_bytes", "vram_total_bytes"), f"NVML memory info: {e}")
        if self.memory_api is not None:
            self.available["vram_total_bytes"] = f"NVML nvmlDeviceGetMemoryInfo {self.memory_api} on {gpu}: total"

        for gauge, (call, read, _) in _GPU_READERS.items():
            try:
                read(nvml, h)
            except error as e:
                self.missing[gauge] = f"NVML {call.split(' ')[0].split('(')[0]} on {gpu}: {e}"
            else:
                self.available[gauge] = f"NVML {call} on {gpu}"

    def _lack(self, gauges: tuple[str, ...], reason: str) -> None:
        for g in gauges:
            self.missing[g] = reason
            self.available.pop(g, None)

    # ---- reading ---------------------------------------------------------------

    def read(self) -> dict[str, float]:
        """The current readings of every available gauge, by engine gauge
        name (bytes, %, °C, W).  Detects first if :meth:`detect` was not
        called.  A gauge that fails now is left out of this reading (the
        reason goes to ``last_error``), never reported as 0."""
        if not self._detected:
            self.detect()
        out: dict[str, float] = {}
        self._read_psutil(out)
        self._read_nvml(out)
        return out

    def record(self, service: Service) -> dict[str, float]:
        """Reads and records the readings with ``service.set_resource``;
        returns them (nothing is recorded when nothing is available)."""
        readings = self.read()
        if readings:
            service.set_resource(**readings)
        return readings

    def _read_psutil(self, out: dict[str, float]) -> None:
        ps = self._psutil
        if ps is None or "ram_total_bytes" not in self.available:
            return
        try:
            vm = ps.virtual_memory()
            out["ram_total_bytes"] = float(vm.total)
            if self._process is not None:
                if "ram_used_bytes" in self.available:
                    out["ram_used_bytes"] = float(self._process.memory_info().rss)
                if "cpu_pct" in self.available:
                    out["cpu_pct"] = self._process.cpu_percent(None) / (ps.cpu_count() or 1)
            else:
                if "ram_used_bytes" in self.available:
                    out["ram_used_bytes"] = float(vm.total - vm.available)
                if "cpu_pct" in self.available:
                    out["cpu_pct"] = float(ps.cpu_percent(None))
        except ps.Error as e:
            self.last_error = f"psutil: {e}"

    def _read_nvml(self, out: dict[str, float]) -> None:
        if not self._handles or not any(g in self.available for g in GPU_GAUGES):
            return
        nvml = self._nvml
        error = _nvml_error(nvml)
        if self.memory_api is not None:
            version = nvml.nvmlMemory_v2 if self.memory_api == "v2" else None

            def memory(h: Any) -> Any:
                return nvml.nvmlDeviceGetMemoryInfo(h, version=version) if version else nvml.nvmlDeviceGetMemoryInfo(h)

            try:
                infos = [memory(h) for h in self._handles]
                out["vram_used_bytes"] = float(sum(i.used for i in infos))
                out["vram_total_bytes"] = float(sum(i.total for i in infos))
            except error as e:
                self.last_error = f"NVML memory info: {e}"
        for gauge, (_, read, combine) in _GPU_READERS.items():
            if gauge not in self.available:
                continue
            try:
                value = combine([read(nvml, h) for h in self._handles])
            except error as e:
                self.last_error = f"NVML {gauge}: {e}"
                continue
            if math.isfinite(value):
                out[gauge] = value

    def close(self) -> None:
        """Shuts NVML down if this object started it (idempotent)."""
        if self._nvml_ready:
            try:
                self._nvml.nvmlShutdown()
            except _nvml_error(self._nvml):
                pass
            self._nvml_ready = False
            self._handles = []


def _nvml_error(nvml: Any) -> type[Exception]:
    err = getattr(nvml, "NVMLError", None)
    return err if isinstance(err, type) and issubclass(err, Exception) else OSError


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _max(values: list[float]) -> float:
    return max(values)


def _sum(values: list[float]) -> float:
    return float(sum(values))


def _gpu_util(nvml: Any, handle: Any) -> float:
    return float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)


def _gpu_temp(nvml: Any, handle: Any) -> float:
    return float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))


def _gpu_power(nvml: Any, handle: Any) -> float:
    return float(nvml.nvmlDeviceGetPowerUsage(handle)) / 1000.0  # milliwatts


#: gauge -> (the NVML call, its reader, how the readings of several GPUs combine).
_GPU_READERS: dict[str, tuple[str, Callable[[Any, Any], float], Callable[[list[float]], float]]] = {
    "gpu_util_pct": ("nvmlDeviceGetUtilizationRates().gpu", _gpu_util, _mean),
    "gpu_temp_c": ("nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU)", _gpu_temp, _max),
    "gpu_power_w": ("nvmlDeviceGetPowerUsage (mW / 1000)", _gpu_power, _sum),
}
