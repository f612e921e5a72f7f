"""GPU inventory through NVML (``pynvml`` from nvidia-ml-py).

:func:`read_inventory` never raises for a missing driver: it returns an inventory without GPUs
and a one-line explanation, and the agent then offers CPU slots only. Which GPUs are offered is
the provider's choice (:func:`select_gpus`: ``--gpus``, else ``CUDA_VISIBLE_DEVICES``, else all),
so that a GPU kept for other work, or given to another agent on the machine, is never leased.
"""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass

from tunefleet.errors import InvalidInputError
from tunefleet.v1 import node_pb2

__all__ = [
    "read_inventory", "InventoryResult", "default_cpu_slots", "select_gpus", "visible_gpus",
    "ENV_VISIBLE",
]

ENV_VISIBLE = "CUDA_VISIBLE_DEVICES"

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


def _named(uuids: list[str], token: str) -> int | None:
    """The index of the GPU ``token`` names (an index or a unique UUID prefix), or ``None``."""
    if token.isascii() and token.isdigit():
        return int(token) if int(token) < len(uuids) else None
    matches = [i for i, uuid in enumerate(uuids) if token.startswith("GPU-")
               and uuid.startswith(token)]
    return matches[0] if len(matches) == 1 else None


def select_gpus(uuids: list[str], selection: str, field: str) -> list[int]:
    """The indices (into ``uuids``, NVML's order) that ``selection`` names, in NVML's order.

    ``selection`` is a comma-separated list of NVML indices (as ``nvidia-smi`` numbers them:
    PCI bus order) or UUIDs (``GPU-...``, or a prefix of one that names exactly one GPU, as CUDA
    accepts), or ``none`` (or nothing) for no GPU. Raises :class:`InvalidInputError` naming
    ``field`` for anything that is not a GPU of this machine.
    """
    allowed = (f"must name GPUs of this machine, comma-separated: indices 0-{len(uuids) - 1} "
               f"or UUIDs ({', '.join(uuids)}), or none") if uuids else (
               "names GPUs, but this machine has none that NVML reports")
    tokens = [t.strip() for t in selection.split(",") if t.strip()]
    if [t.lower() for t in tokens] in ([], ["none"]):
        return []
    chosen: set[int] = set()
    for token in tokens:
        index = _named(uuids, token)
        if index is None:
            raise InvalidInputError(field, selection, allowed)
        chosen.add(index)
    return sorted(chosen)


def visible_gpus(uuids: list[str], visible: str) -> tuple[list[int], str]:
    """The GPUs a ``CUDA_VISIBLE_DEVICES`` value leaves visible, read as CUDA reads it: names
    up to the first that is no whole GPU of this machine (``-1``, ``NoDevFiles``, a MIG
    instance, an index too high), none after it. Returns the indices and, when something was
    cut off, a note that says what. Indices are taken in nvidia-smi's order (PCI bus), which is
    CUDA's only under ``CUDA_DEVICE_ORDER=PCI_BUS_ID``: UUIDs say the same on every machine."""
    chosen: list[int] = []
    tokens = [t.strip() for t in visible.split(",")]
    for n, token in enumerate(tokens):
        index = _named(uuids, token) if token else None
        if index is None:
            rest = ",".join(tokens[n:])
            why = " (MIG instances are not offered)" if token.startswith("MIG-") else ""
            return sorted(set(chosen)), (f"{ENV_VISIBLE} stops at {rest!r}{why}; use --gpus to "
                                         "choose whole GPUs" if token else "")
        chosen.append(index)
    return sorted(set(chosen)), ""


def read_inventory(cpu_slots: int | None = None, gpus: str | None = None) -> InventoryResult:
    """Describe the GPUs this machine offers (name, UUID, memory, compute capability,
    versions).

    ``gpus`` selects them (see :func:`select_gpus`; field ``--gpus``). Without it,
    ``CUDA_VISIBLE_DEVICES`` selects them when the environment sets it, read as CUDA reads it
    (:func:`visible_gpus`), else every GPU is offered. Raises :class:`InvalidInputError` for a
    ``gpus`` naming a GPU this machine does not have, or naming any GPU when NVML finds none;
    an unusable driver alone never raises.
    """
    inventory = node_pb2.Inventory(hostname=socket.gethostname(), platform=platform.platform())
    note: str
    field, selection = ("--gpus", gpus) if gpus is not None else (ENV_VISIBLE,
                                                                   os.environ.get(ENV_VISIBLE))
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no library, no driver, no device: all mean "no GPU here"
        note = f"no NVIDIA driver found ({type(exc).__name__}: {exc}); offering CPU slots only"
        pynvml = None
        if gpus is not None:
            select_gpus([], gpus, field)  # naming a GPU where there is none is an error
    if pynvml is not None:
        try:
            inventory.driver_version = _text(pynvml.nvmlSystemGetDriverVersion())
            cuda = pynvml.nvmlSystemGetCudaDriverVersion()
            inventory.cuda_version = f"{cuda // 1000}.{(cuda % 1000) // 10}"
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                       for i in range(pynvml.nvmlDeviceGetCount())]
            uuids = [_text(pynvml.nvmlDeviceGetUUID(h)) for h in handles]
            cut = ""
            if selection is None:
                offered: list[int] = list(range(len(handles)))
            elif gpus is None:  # the environment's CUDA_VISIBLE_DEVICES, read as CUDA does
                offered, cut = visible_gpus(uuids, selection)
            else:
                offered = select_gpus(uuids, selection, field)
            for index in offered:
                handle = handles[index]
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                inventory.gpus.add(
                    index=index,
                    uuid=uuids[index],
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_total_gb=memory.total / GIB,
                    memory_free_gb=memory.free / GIB,
                    compute_capability=f"{major}.{minor}",
                )
            chosen = "" if selection is None else (
                f" ({len(inventory.gpus)} of {len(handles)} offered: {field} {selection})")
            if cut:
                chosen += f" ({cut})"
            note = (
                f"{len(inventory.gpus)} GPU(s){chosen}, driver {inventory.driver_version}, "
                f"CUDA {inventory.cuda_version}"
            )
        finally:
            pynvml.nvmlShutdown()
    inventory.cpu_slots = (
        default_cpu_slots(len(inventory.gpus)) if cpu_slots is None else cpu_slots
    )
    return InventoryResult(inventory, note)
