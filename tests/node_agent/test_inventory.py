"""NVML inventory parsing, with a stand-in for the pynvml module (no GPU on CI machines)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from client.local import LocalCluster, share_gpus
from node_agent.inventory import ENV_VISIBLE, GIB, read_inventory
from tunefleet.errors import InvalidInputError


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


FOUR = [{"uuid": f"GPU-{c * 3}-{i}", "name": "NVIDIA A10", "total": 24 * GIB, "free": 20 * GIB,
         "cc": (8, 6)} for i, c in enumerate("abcd")]


@pytest.fixture
def four_gpus(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(FOUR))
    monkeypatch.delenv(ENV_VISIBLE, raising=False)
    return monkeypatch


@pytest.mark.parametrize(("selection", "offered"), [
    ("1,3", [1, 3]), ("3, 1", [1, 3]), ("GPU-ccc-2", [2]), ("GPU-d", [3]), ("0,GPU-aaa-0", [0]),
    ("none", []), ("", []),
])
def test_the_provider_chooses_the_gpus_offered(four_gpus: pytest.MonkeyPatch, selection: str,
                                               offered: list[int]) -> None:
    result = read_inventory(gpus=selection)
    assert [g.index for g in result.inventory.gpus] == offered
    assert [g.uuid for g in result.inventory.gpus] == [FOUR[i]["uuid"] for i in offered]
    assert f"{len(offered)} of 4 offered: --gpus {selection}" in result.note


def test_cuda_visible_devices_chooses_them_when_no_flag_does(four_gpus: pytest.MonkeyPatch
                                                             ) -> None:
    four_gpus.setenv(ENV_VISIBLE, "GPU-bbb-1,2")
    assert [g.index for g in read_inventory().inventory.gpus] == [1, 2]
    assert [g.index for g in read_inventory(gpus="0").inventory.gpus] == [0]  # the flag wins
    four_gpus.setenv(ENV_VISIBLE, "")  # CUDA's meaning: no device visible
    result = read_inventory()
    assert not result.inventory.gpus and result.inventory.cpu_slots >= 1


@pytest.mark.parametrize("selection", ["4", "-1", "GPU-zzz", "GPU-", "1,abc", "all", "MIG-1",
                                       "\u00b2", "\u0661"])  # superscript two, Arabic-Indic one
def test_a_gpu_this_machine_does_not_have_is_refused(four_gpus: pytest.MonkeyPatch,
                                                     selection: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        read_inventory(gpus=selection)
    assert caught.value.field == "--gpus" and caught.value.value == selection
    assert "indices 0-3" in str(caught.value) and "GPU-aaa-0" in str(caught.value)


@pytest.mark.parametrize(("visible", "offered", "cut"), [
    ("-1", [], "stops at '-1'"),  # the usual way to hide every GPU
    ("NoDevFiles", [], "stops at 'NoDevFiles'"),
    ("2,-1,0", [2], "stops at '-1,0'"),  # CUDA sees the GPUs before the first bad name only
    ("3,9", [3], "stops at '9'"),
    ("MIG-4f2c", [], "(MIG instances are not offered)"),
    ("1, GPU-aaa", [0, 1], ""),
    ("", [], ""),
])
def test_cuda_visible_devices_is_read_as_cuda_reads_it(
    four_gpus: pytest.MonkeyPatch, visible: str, offered: list[int], cut: str
) -> None:
    four_gpus.setenv(ENV_VISIBLE, visible)
    result = read_inventory()  # never refused: the variable is CUDA's, not ours
    assert [g.index for g in result.inventory.gpus] == offered
    assert (cut in result.note) and (("stops at" in result.note) == bool(cut))


def test_naming_a_gpu_where_nvml_finds_none_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_pynvml([])
    nvml.nvmlInit = lambda: (_ for _ in ()).throw(RuntimeError("Driver Not Loaded"))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with pytest.raises(InvalidInputError, match="--gpus: got '0'; names GPUs, but this machine"):
        read_inventory(gpus="0")
    assert not read_inventory(gpus="none").inventory.gpus
    monkeypatch.setenv(ENV_VISIBLE, "0")  # set in a shell without a driver: no GPU, no error
    assert not read_inventory().inventory.gpus


def test_local_agents_never_share_a_gpu(four_gpus: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert share_gpus([0, 1, 2, 3], 3) == ["0,3", "1", "2"]
    assert share_gpus([5], 2) == ["5", "none"]
    # trials of two GPUs each: a trial's GPUs stay on one agent
    assert share_gpus([0, 1, 2, 3], 2, block=2) == ["0,1", "2,3"]
    assert share_gpus([0, 1, 2], 2, block=2) == ["0,1", "2"]
    assert share_gpus([0, 1, 2, 3], 3, block=2) == ["0,1", "2,3", "none"]
    assert share_gpus([0, 1], 2, block=0) == ["0", "1"]  # a block is at least one GPU
    pairs = LocalCluster(2, state_dir=tmp_path, gpus_per_trial=2)
    assert [pairs._gpu_args(i) for i in range(2)] == [["--gpus", "0,1"], ["--gpus", "2,3"]]
    cluster = LocalCluster(3, state_dir=tmp_path)
    assert [cluster._gpu_args(i) for i in range(4)] == [
        ["--gpus", "0,3"], ["--gpus", "1"], ["--gpus", "2"], ["--gpus", "none"]]
    chosen = LocalCluster(2, state_dir=tmp_path, agent_args=["--gpus", "1"])
    assert chosen._gpu_args(0) == []  # the caller's choice stands


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
