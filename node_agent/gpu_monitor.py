"""How hard each trial used its GPUs: NVML sampled on a thread of the agent.

The agent offers one trial per GPU, so what NVML reports for a GPU while a trial holds it is the
trial's own use (plus whatever the provider runs on that GPU beside tunefleet). A
:class:`GpuMonitor` samples every offered GPU's utilization (the share of time a kernel ran)
and used memory every ``interval`` seconds; a :class:`Watch` opened when a trial starts gives,
when it ends, the mean utilization and the peak memory over its GPUs (:class:`GpuUsage`). The
figures ride on the attempt's end (``AttemptFinished``) to the coordinator, which shows them
with the trial: a trial that keeps its GPU at 5% is waiting on its input, not on the GPU.

Without NVML, or without GPUs, :meth:`GpuMonitor.start` returns ``None`` and trials carry no
figures. A GPU whose sampling fails is logged once and left out from then on.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GpuMonitor", "GpuUsage", "Watch"]

log = logging.getLogger(__name__)

GIB = 1024**3


@dataclass(frozen=True)
class GpuUsage:
    utilization: float  # mean over the samples and the trial's GPUs, in percent
    memory_peak_gb: float  # the most memory in use on any one of its GPUs, in GiB
    samples: int


@dataclass
class Watch:
    """The samples of one trial's GPUs since it started; :meth:`summary` once it has ended."""

    uuids: tuple[str, ...]
    _total: float = 0.0
    _count: int = 0
    _peak: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, utilization: float, memory_bytes: float) -> None:
        with self._lock:
            self._total += utilization
            self._count += 1
            self._peak = max(self._peak, memory_bytes / GIB)

    def summary(self) -> GpuUsage | None:
        """The figures so far, or ``None`` when no sample was taken (a trial shorter than the
        interval, or GPUs NVML could not read)."""
        with self._lock:
            if not self._count:
                return None
            return GpuUsage(self._total / self._count, self._peak, self._count)


class GpuMonitor:
    """Samples the given GPUs on a daemon thread until :meth:`close`."""

    def __init__(self, nvml: Any, uuids: list[str], interval: float = 1.0) -> None:
        """Use :meth:`start`; ``nvml`` is the initialized ``pynvml`` module (or a stand-in)."""
        self._nvml = nvml
        self._handles = {uuid: nvml.nvmlDeviceGetHandleByUUID(uuid) for uuid in uuids}
        self.interval = interval
        self._by_id: dict[int, Watch] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-monitor", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, uuids: list[str], interval: float = 1.0) -> GpuMonitor | None:
        """A monitor of ``uuids``, or ``None`` without GPUs or when NVML cannot start."""
        if not uuids:
            return None
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # no library, no driver
            log.warning("GPU use will not be measured: %s: %s", type(exc).__name__, exc)
            return None
        try:
            return cls(pynvml, uuids, interval)
        except Exception as exc:  # a GPU gone since the inventory was read
            log.warning("GPU use will not be measured: %s: %s", type(exc).__name__, exc)
            pynvml.nvmlShutdown()
            return None

    def watch(self, uuids: tuple[str, ...]) -> Watch:
        """Start collecting the samples of ``uuids`` into a new :class:`Watch`."""
        watch = Watch(tuple(u for u in uuids if u in self._handles))
        with self._lock:
            self._by_id[id(watch)] = watch
        return watch

    def unwatch(self, watch: Watch) -> GpuUsage | None:
        """Stop collecting into ``watch``; return its :meth:`Watch.summary`."""
        with self._lock:
            self._by_id.pop(id(watch), None)
        return watch.summary()

    def sample_once(self) -> None:
        """One round: each watched GPU read once, each watch given its GPUs' values."""
        with self._lock:
            watches = list(self._by_id.values())
        wanted = {u for w in watches for u in w.uuids}
        read: dict[str, tuple[float, float]] = {}
        for uuid in wanted:
            handle = self._handles.get(uuid)
            if handle is None:
                continue
            try:
                rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:
                log.warning("GPU %s cannot be read (%s); its use is no longer measured",
                            uuid, exc)
                self._handles.pop(uuid, None)
                continue
            read[uuid] = (float(rates.gpu), float(memory.used))
        for watch in watches:
            for uuid in watch.uuids:
                if uuid in read:
                    watch.add(*read[uuid])

    def _run(self) -> None:
        while not self._closed.wait(self.interval):
            self.sample_once()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        try:
            self._nvml.nvmlShutdown()
        except Exception as exc:  # nothing left to do about it
            log.debug("nvmlShutdown: %s", exc)
