"""GPU inventory through NVML (``pynvml`` from nvidia-ml-py).

:func:`read_inventory` never raises for a missing driver: it returns an inventory without GPUs
and a one-line explanation, and the agent then offers CPU slots only.
"""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass

from tunefleet.v1 import node_pb2

__all__ = ["read_inventory", "InventoryResult", "default_cpu_slots"]

GIB = 1024**3


@dataclass
class InventoryResult:
    inventory: node_pb2.Inventory
    note: str  # one line for the provider: what was found, or why no GPU is offered


def default_cpu_slots(gpu_count: int) -> int:
    """CPU slots offered when ``--slots`` is not given: none beside GPUs, else one per 2 cores."""
    if gpu_count:
        return 0
    return max(1, (os.cpu_count() or 1) // 2)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_inventory(cpu_slots: int | None = None) -> InventoryResult:
    """Describe this machine's GPUs (name, UUID, memory, compute capability, versions)."""
    inventory = node_pb2.Inventory(hostname=socket.gethostname(), platform=platform.platform())
    note: str
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no library, no driver, no device: all mean "no GPU here"
        note = f"no NVIDIA driver found ({type(exc).__name__}: {exc}); offering CPU slots only"
        pynvml = None
    if pynvml is not None:
        try:
            inventory.driver_version = _text(pynvml.nvmlSystemGetDriverVersion())
            cuda = pynvml.nvmlSystemGetCudaDriverVersion()
            inventory.cuda_version = f"{cuda // 1000}.{(cuda % 1000) // 10}"
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                inventory.gpus.add(
                    index=index,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_total_gb=memory.total / GIB,
                    memory_free_gb=memory.free / GIB,
                    compute_capability=f"{major}.{minor}",
                )
            note = (
                f"{len(inventory.gpus)} GPU(s), driver {inventory.driver_version}, "
                f"CUDA {inventory.cuda_version}"
            )
        finally:
            pynvml.nvmlShutdown()
    inventory.cpu_slots = (
        default_cpu_slots(len(inventory.gpus)) if cpu_slots is None else cpu_slots
    )
    return InventoryResult(inventory, note)
