"""NVML inventory parsing, with a stand-in for the pynvml module (no GPU on CI machines)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from node_agent.inventory import GIB, read_inventory


class Memory:
    def __init__(self, total: int, free: int) -> None:
        self.total, self.free = total, free


def fake_pynvml(gpus: list[dict[str, object]]) -> types.ModuleType:
    module = types.ModuleType("pynvml")
    calls: list[str] = []
    module.nvmlInit = lambda: calls.append("init")  # type: ignore[attr-defined]
    module.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    module.nvmlSystemGetDriverVersion = lambda: b"550.54.15"  # type: ignore[attr-defined]
    module.nvmlSystemGetCudaDriverVersion = lambda: 12040  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = lambda i: gpus[i]  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = lambda h: Memory(h["total"], h["free"])  # type: ignore[attr-defined]
    module.nvmlDeviceGetCudaComputeCapability = lambda h: h["cc"]  # type: ignore[attr-defined]
    module.nvmlDeviceGetUUID = lambda h: h["uuid"]  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = lambda h: h["name"]  # type: ignore[attr-defined]
    module.calls = calls  # type: ignore[attr-defined]
    return module


def test_gpus_are_described_fully(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_pynvml([
        {"uuid": "GPU-aaa", "name": b"NVIDIA H100 80GB HBM3", "total": 80 * GIB,
         "free": 79 * GIB, "cc": (9, 0)},
        {"uuid": "GPU-bbb", "name": "NVIDIA A10", "total": 24 * GIB, "free": 3 * GIB,
         "cc": (8, 6)},
    ])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    result = read_inventory()
    inv = result.inventory
    assert [(g.index, g.uuid, g.name, g.compute_capability) for g in inv.gpus] == [
        (0, "GPU-aaa", "NVIDIA H100 80GB HBM3", "9.0"), (1, "GPU-bbb", "NVIDIA A10", "8.6")]
    assert inv.gpus[0].memory_total_gb == 80.0 and inv.gpus[1].memory_free_gb == 3.0
    assert inv.driver_version == "550.54.15" and inv.cuda_version == "12.4"
    assert inv.cpu_slots == 0  # GPU machines offer no CPU slots unless asked
    assert "2 GPU(s)" in result.note and nvml.calls == ["init", "shutdown"]


def test_a_failing_driver_means_cpu_slots_and_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_pynvml([])

    def broken() -> None:
        raise RuntimeError("Driver Not Loaded")

    nvml.nvmlInit = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    result = read_inventory(cpu_slots=2)
    assert not result.inventory.gpus and result.inventory.cpu_slots == 2
    assert "Driver Not Loaded" in result.note and "\n" not in result.note


def test_the_child_sees_only_its_pinned_gpus(tmp_path: Path) -> None:
    import asyncio

    from node_agent.runner import Child, ChildSpec

    work = tmp_path / "w"
    work.mkdir()
    (work / "train.py").write_text(
        "import os\nfrom tunefleet import trial\n"
        "trial.report(1, n=float(len(os.environ['CUDA_VISIBLE_DEVICES'].split(','))))\n"
        "print(os.environ['CUDA_VISIBLE_DEVICES'])\n")

    async def go() -> float:
        child = await Child.start(ChildSpec(work, "train.py", {"params": {}},
                                            gpu_uuids=("GPU-aaa", "GPU-bbb")))
        [r] = [r async for r in child.reports()]
        await child.wait()
        return r.metrics["n"]

    assert asyncio.run(go()) == 2.0
    assert (work / "stdout.log").read_text().strip() == "GPU-aaa,GPU-bbb"
