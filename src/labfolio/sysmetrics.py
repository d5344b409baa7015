"""Background sampling of CPU, RAM and GPU use while a run trains.

The sampler is a daemon thread that wakes every ``interval`` seconds, reads the machine's counters
and hands one flat ``{key: float}`` dict to a callback (the run's ``log``). It must never disturb
training: a counter that cannot be read is left out of the sample, a whole failing sample is
skipped, and each kind of failure is reported once with a warning rather than on every tick.

Memory figures are in GiB (2**30 bytes), the unit ``nvidia-smi`` and ``free -g`` users read.
GPU indices are NVML's, i.e. the physical order ``nvidia-smi`` shows, not the order inside
``CUDA_VISIBLE_DEVICES``.
"""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import threading
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType

__all__ = ["SystemMetricsSampler", "describe_gpus", "load_nvml", "parse_nvidia_smi_csv"]

_GIB = float(1 << 30)


def load_nvml() -> ModuleType | None:
    """The initialised NVML bindings (``pynvml`` from nvidia-ml-py), or None when unusable.

    None covers: the bindings are not installed, no NVIDIA driver, or no GPU. The caller owns the
    matching ``nvmlShutdown()``.
    """
    try:
        with warnings.catch_warnings():
            # The old ``pynvml`` wrapper package warns on import that it is deprecated in favour
            # of nvidia-ml-py; both expose the same module, so the warning is noise here.
            warnings.simplefilter("ignore")
            pynvml = importlib.import_module("pynvml")
        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


class SystemMetricsSampler:
    """Calls ``callback(sample)`` every ``interval`` seconds from a daemon thread.

    Keys of a sample: ``sys/cpu_percent``, ``sys/ram_used_gb``, ``sys/ram_percent``,
    ``sys/proc_rss_gb``, ``sys/proc_cpu_percent`` and, per GPU i when NVML is available,
    ``sys/gpu{i}/util``, ``sys/gpu{i}/mem_used_gb``, ``sys/gpu{i}/mem_percent``,
    ``sys/gpu{i}/temp_c``, ``sys/gpu{i}/power_w`` (a GPU that does not report a counter, e.g. a
    MIG slice's utilisation, just lacks that key).

    Use ``start()``/``stop()`` or ``with SystemMetricsSampler(run.log):``. The first sample is
    taken one interval after ``start()`` so that CPU percentages cover a full interval.
    """

    def __init__(
        self,
        callback: Callable[[dict[str, float]], object],
        interval: float = 10.0,
        *,
        gpu_indices: Sequence[int] | None = None,
        pid: int | None = None,
    ) -> None:
        if not callable(callback):
            raise TypeError(
                f"SystemMetricsSampler needs a callable that receives each sample dict, "
                f"e.g. run.log; got {type(callback).__name__}."
            )
        if not isinstance(interval, (int, float)) or not interval > 0:
            raise ValueError(
                f"SystemMetricsSampler interval must be a positive number of seconds, "
                f"got {interval!r}."
            )
        self.callback = callback
        self.interval = float(interval)
        self.gpu_indices = None if gpu_indices is None else tuple(int(i) for i in gpu_indices)
        self.pid = os.getpid() if pid is None else int(pid)
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()
        self._psutil: ModuleType | None = None
        self._process = None
        self._nvml: ModuleType | None = None
        self._gpu_handles: list[tuple[int, object]] = []
        self._lock = threading.Lock()  # sample() may be called from the caller while running

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> SystemMetricsSampler:
        """Start sampling in the background; a second call while running does nothing."""
        if self.running:
            return self
        self._stop_event = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="labfolio-sysmetrics", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sampling and wait (at most ``timeout`` s) for the thread; safe to call twice."""
        self._stop_event.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    def __enter__(self) -> SystemMetricsSampler:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- sampling --------------------------------------------------------------------------

    def sample(self) -> dict[str, float]:
        """One sample now. Counters that cannot be read are left out; this never raises."""
        with self._lock:
            self._ensure_sources()
            out: dict[str, float] = {}
            self._sample_host(out)
            self._sample_gpus(out)
            return out

    def _loop(self) -> None:
        try:
            with self._lock:
                self._ensure_sources()
                self._prime_cpu_counters()
            while not self._stop_event.wait(self.interval):
                values = self.sample()
                if not values or self._stop_event.is_set():
                    continue
                try:
                    self.callback(values)
                except Exception as exc:
                    self._warn_once("callback", f"the callback raised {exc!r}; sample skipped")
        except Exception as exc:  # a sampler bug must end the sampler, never the run
            self._warn_once("loop", f"stopped after an unexpected error: {exc!r}")
        finally:
            self._shutdown_nvml()

    def _warn_once(self, kind: str, message: str) -> None:
        if kind in self._warned:
            return
        self._warned.add(kind)
        warnings.warn(
            f"labfolio system metrics: {message} (further such failures are silent)",
            RuntimeWarning,
            stacklevel=2,
        )

    def _ensure_sources(self) -> None:
        if self._psutil is None and "psutil" not in self._warned:
            try:
                self._psutil = importlib.import_module("psutil")
                self._process = self._psutil.Process(self.pid)
            except ImportError:
                self._warn_once(
                    "psutil", "CPU and RAM are not recorded because psutil is not installed; "
                    "run `pip install psutil`"
                )
            except Exception as exc:
                self._warn_once("psutil", f"cannot read process {self.pid}: {exc!r}")
        if self._nvml is None and "nvml" not in self._warned:
            self._nvml = load_nvml()
            if self._nvml is None:
                # No NVML is the normal state of a CPU machine: note it without a warning.
                self._warned.add("nvml")
            else:
                self._gpu_handles = self._open_gpu_handles(self._nvml)

    def _open_gpu_handles(self, nvml: ModuleType) -> list[tuple[int, object]]:
        try:
            count = nvml.nvmlDeviceGetCount()
            wanted = range(count) if self.gpu_indices is None else self.gpu_indices
            return [(i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in wanted if 0 <= i < count]
        except Exception as exc:
            self._warn_once("gpu", f"cannot enumerate GPUs through NVML: {exc!r}")
            return []

    def _prime_cpu_counters(self) -> None:
        # psutil's cpu_percent(None) reports use since the previous call; the first call only sets
        # the reference point, so it is made here and the first real sample covers an interval.
        if self._psutil is None:
            return
        try:
            self._psutil.cpu_percent(None)
            if self._process is not None:
                self._process.cpu_percent(None)
        except Exception:
            pass

    def _sample_host(self, out: dict[str, float]) -> None:
        ps = self._psutil
        if ps is None:
            return
        try:
            out["sys/cpu_percent"] = float(ps.cpu_percent(None))
            vm = ps.virtual_memory()
            # total - available is the memory programs cannot get back; psutil's `used`
            # means different things on different platforms.
            out["sys/ram_used_gb"] = (vm.total - vm.available) / _GIB
            out["sys/ram_percent"] = float(vm.percent)
        except Exception as exc:
            self._warn_once("host", f"cannot read CPU/RAM counters: {exc!r}")
        if self._process is None:
            return
        try:
            with self._process.oneshot():
                out["sys/proc_rss_gb"] = self._process.memory_info().rss / _GIB
                out["sys/proc_cpu_percent"] = float(self._process.cpu_percent(None))
        except Exception as exc:
            self._warn_once("process", f"cannot read process {self.pid} counters: {exc!r}")

    def _sample_gpus(self, out: dict[str, float]) -> None:
        nvml = self._nvml
        if nvml is None:
            return
        for index, handle in self._gpu_handles:
            prefix = f"sys/gpu{index}/"
            try:
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                out[prefix + "mem_used_gb"] = mem.used / _GIB
                out[prefix + "mem_percent"] = 100.0 * mem.used / mem.total if mem.total else 0.0
            except Exception as exc:
                self._warn_once("gpu", f"cannot read GPU {index} memory: {exc!r}")
                continue
            # Each of these is unsupported on some devices (MIG slices, some consumer cards);
            # a missing counter is expected there, so it is skipped without a warning.
            try:
                out[prefix + "util"] = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except Exception:
                pass
            try:
                temperature = nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
                out[prefix + "temp_c"] = float(temperature)
            except Exception:
                pass
            try:
                out[prefix + "power_w"] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except Exception:
                pass

    def _shutdown_nvml(self) -> None:
        with self._lock:
            nvml, self._nvml = self._nvml, None
            self._gpu_handles = []
            self._warned.discard("nvml")  # a restarted sampler may initialise NVML again
            if nvml is not None:
                try:
                    nvml.nvmlShutdown()
                except Exception:
                    pass


def describe_gpus() -> tuple[list[dict], str | None, str | None]:
    """Static facts about this machine's GPUs: (gpus, driver version, source).

    Each GPU is ``{"index", "name", "memory_total_gb", "uuid"}``. The source is "nvml" when the
    NVML bindings work, else "nvidia-smi" when it is on PATH, else None with no GPUs. Raises when
    nvidia-smi exists but fails, so that the caller can record why GPUs are missing.
    """
    nvml = load_nvml()
    if nvml is not None:
        try:
            gpus = []
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                gpu = {
                    "index": index,
                    "name": _as_text(nvml.nvmlDeviceGetName(handle)),
                    "memory_total_gb": round(nvml.nvmlDeviceGetMemoryInfo(handle).total / _GIB, 2),
                }
                try:
                    gpu["uuid"] = _as_text(nvml.nvmlDeviceGetUUID(handle))
                except Exception:
                    pass
                gpus.append(gpu)
            try:
                driver = _as_text(nvml.nvmlSystemGetDriverVersion())
            except Exception:
                driver = None
            return gpus, driver, "nvml"
        finally:
            try:
                nvml.nvmlShutdown()
            except Exception:
                pass
    if shutil.which("nvidia-smi") is None:
        return [], None, None
    done = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,name,memory.total,uuid,driver_version",
         "--format=csv,noheader,nounits"],
        capture_output=True, text=True, timeout=3.0, stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"nvidia-smi exited with status {done.returncode}: "
                           f"{done.stderr.strip()[:300] or done.stdout.strip()[:300]}")
    gpus, driver = parse_nvidia_smi_csv(done.stdout)
    return gpus, driver, "nvidia-smi"


def parse_nvidia_smi_csv(text: str) -> tuple[list[dict], str | None]:
    """Parse ``--query-gpu=index,name,memory.total,uuid,driver_version`` CSV (MiB, no header)."""
    gpus, driver = [], None
    for line in text.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 5 or not fields[0].isdigit():
            continue
        # Only the name may contain a comma; the other fields are counted from the ends.
        index, name, memory_mib, uuid, driver = (
            fields[0], ", ".join(fields[1:-3]), fields[-3], fields[-2], fields[-1]
        )
        try:
            memory_gb = round(float(memory_mib) * (1 << 20) / _GIB, 2)
        except ValueError:
            memory_gb = None  # "[N/A]" on some devices
        gpus.append({"index": int(index), "name": name, "memory_total_gb": memory_gb,
                     "uuid": uuid})
    return gpus, driver


def _as_text(value: object) -> str:
    # Older NVML bindings return bytes, newer ones str.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
