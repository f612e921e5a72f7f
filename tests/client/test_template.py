"""The template's training code: where it trains (the rest runs in the end-to-end tests)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from client.templates.digits import train


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return monkeypatch


def test_a_trial_given_a_gpu_that_torch_cannot_see_fails_instead_of_using_the_cpu(
    no_cuda: pytest.MonkeyPatch,
) -> None:
    no_cuda.setattr(train, "trial", SimpleNamespace(attached=True))
    no_cuda.setenv("CUDA_VISIBLE_DEVICES", "GPU-756e1708")
    with pytest.raises(RuntimeError, match="given GPU GPU-756e1708.*sees no CUDA device"):
        train.pick_device()


@pytest.mark.parametrize(("attached", "visible"), [(True, ""), (False, "0")])
def test_a_cpu_slot_or_a_run_outside_an_agent_trains_on_the_cpu(
    no_cuda: pytest.MonkeyPatch, attached: bool, visible: str,
) -> None:
    no_cuda.setattr(train, "trial", SimpleNamespace(attached=attached))
    no_cuda.setenv("CUDA_VISIBLE_DEVICES", visible)  # "0": the user's own shell, tunefleet try
    assert train.pick_device() == torch.device("cpu")


def test_the_template_reads_whether_an_agent_runs_it_from_the_real_trial_api(
    no_cuda: pytest.MonkeyPatch,
) -> None:
    no_cuda.setenv("CUDA_VISIBLE_DEVICES", "GPU-756e1708")  # no agent here: not attached
    assert train.pick_device() == torch.device("cpu")
