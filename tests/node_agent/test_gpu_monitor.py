"""Per-trial GPU use from NVML samples, with a stand-in for pynvml (no GPU on CI machines)."""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

import pytest

from node_agent.gpu_monitor import GIB, GpuMonitor


class Readings:
    """A stand-in pynvml whose GPUs report the next values of given sequences."""

    def __init__(self, series: dict[str, list[tuple[float, float]]]) -> None:
        self.series = {uuid: list(values) for uuid, values in series.items()}
        self.broken: set[str] = set()
        self.shut = False

    def module(self) -> Any:
        nvml = types.SimpleNamespace()
        nvml.nvmlInit = lambda: None
        nvml.nvmlShutdown = lambda: setattr(self, "shut", True)
        nvml.nvmlDeviceGetHandleByUUID = lambda uuid: uuid
        nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(
            gpu=self._next(h)[0])
        nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=self._peek(h)[1])
        return nvml

    def _next(self, uuid: str) -> tuple[float, float]:
        if uuid in self.broken:
            raise RuntimeError("GPU is lost")
        self._current = self.series[uuid].pop(0)
        return self._current

    def _peek(self, uuid: str) -> tuple[float, float]:
        return self._current


def test_a_watch_gives_the_mean_utilization_and_the_peak_memory_of_its_gpus() -> None:
    readings = Readings({"GPU-a": [(90, 2 * GIB), (70, 6 * GIB), (80, 4 * GIB)],
                         "GPU-b": [(10, 1 * GIB), (30, 1 * GIB), (20, 1 * GIB)]})
    monitor = GpuMonitor(readings.module(), ["GPU-a", "GPU-b"], interval=3600)
    both = monitor.watch(("GPU-a", "GPU-b"))
    only_b = monitor.watch(("GPU-b", "GPU-unknown"))  # a GPU not monitored is ignored
    for _ in range(3):
        monitor.sample_once()
    usage = monitor.unwatch(both)
    assert usage is not None and usage.samples == 6
    assert usage.utilization == pytest.approx((90 + 70 + 80 + 10 + 30 + 20) / 6)
    assert usage.memory_peak_gb == pytest.approx(6.0)
    b = monitor.unwatch(only_b)
    assert b is not None and (b.utilization, b.memory_peak_gb, b.samples) == (20.0, 1.0, 3)
    monitor.close()
    assert readings.shut


def test_samples_after_a_watch_ends_are_not_counted_and_no_sample_means_no_figures() -> None:
    readings = Readings({"GPU-a": [(50, GIB), (100, 9 * GIB)]})
    monitor = GpuMonitor(readings.module(), ["GPU-a"], interval=3600)
    early = monitor.watch(("GPU-a",))
    monitor.sample_once()
    assert monitor.unwatch(early) == monitor.unwatch(early)  # ending twice changes nothing
    short = monitor.watch(("GPU-a",))
    assert monitor.unwatch(short) is None  # ended before any sample
    monitor.sample_once()  # nobody watches: nothing read
    assert readings.series["GPU-a"] == [(100, 9 * GIB)]
    monitor.close()


def test_a_gpu_that_cannot_be_read_is_left_out_once_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    readings = Readings({"GPU-a": [(40, GIB)] * 3, "GPU-b": [(60, GIB)] * 3})
    monitor = GpuMonitor(readings.module(), ["GPU-a", "GPU-b"], interval=3600)
    watch = monitor.watch(("GPU-a", "GPU-b"))
    readings.broken.add("GPU-b")
    with caplog.at_level(logging.WARNING, logger="node_agent.gpu_monitor"):
        monitor.sample_once()
        monitor.sample_once()
    usage = monitor.unwatch(watch)
    assert usage is not None and (usage.utilization, usage.samples) == (40.0, 2)
    assert [r.getMessage() for r in caplog.records].count(
        "GPU GPU-b cannot be read (GPU is lost); its use is no longer measured") == 1
    monitor.close()


def test_no_monitor_without_gpus_or_without_a_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GpuMonitor.start([]) is None
    broken = types.ModuleType("pynvml")
    broken.nvmlInit = lambda: (_ for _ in ()).throw(RuntimeError("Driver Not Loaded"))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    assert GpuMonitor.start(["GPU-a"]) is None


def test_a_gpu_gone_since_the_inventory_means_no_monitor_and_nvml_is_shut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readings = Readings({"GPU-a": []})
    nvml = readings.module()
    nvml.nvmlDeviceGetHandleByUUID = lambda uuid: (_ for _ in ()).throw(RuntimeError("Not Found"))
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert GpuMonitor.start(["GPU-a"]) is None
    assert readings.shut


def test_the_thread_samples_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = Readings({"GPU-a": [(75, GIB)] * 1000})
    monkeypatch.setitem(sys.modules, "pynvml", readings.module())
    monitor = GpuMonitor.start(["GPU-a"], interval=0.01)
    assert monitor is not None
    watch = monitor.watch(("GPU-a",))
    import time

    deadline = time.monotonic() + 5
    while watch.summary() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    monitor.close()
    usage = monitor.unwatch(watch)
    assert usage is not None and usage.utilization == 75.0
