"""speedpose.devices.resolve_device: the one rule of every --device option and of train.device."""

from __future__ import annotations

import pytest
import torch

import pipelines.adapt
import pipelines.evaluate
import pipelines.evaluate_benchmark
import pipelines.predict
import pipelines.submit
import speedpose.training.distributed as distributed
from speedpose.devices import resolve_device
from speedpose.errors import InputError


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):  # torch.device("cuda", i) is a plain descriptor: no GPU is touched
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_cpu_is_always_the_cpu(two_gpus):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["auto", None])
def test_auto_without_cuda_is_the_cpu(no_cuda, spec):
    assert resolve_device(spec) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
@pytest.mark.parametrize("option", ["--device", "train.device"])
def test_cuda_without_cuda_is_an_error_naming_the_option(no_cuda, spec, option):
    with pytest.raises(InputError, match=f"^{option}={spec}: CUDA is not available"):
        resolve_device(spec, option=option)


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "mps", "cpu:0", ""])
def test_anything_else_is_an_error_listing_the_choices(two_gpus, spec):
    with pytest.raises(InputError, match=r"--device: expected auto, cpu, cuda or cuda:N"):
        resolve_device(spec)


def test_cuda_picks_this_process_gpu(two_gpus):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("auto", local_rank=3) == torch.device("cuda", 1)  # torchrun: one GPU per local rank
    assert resolve_device("cuda:1", local_rank=0) == torch.device("cuda", 1)
    with pytest.raises(InputError, match="2 CUDA device"):
        resolve_device("cuda:2")


def test_every_device_choice_goes_through_the_one_rule(no_cuda, monkeypatch):
    for module in (pipelines.predict, pipelines.evaluate, pipelines.submit, pipelines.adapt,
                   pipelines.evaluate_benchmark, distributed):
        assert module.resolve_device is resolve_device, module.__name__
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(InputError, match="^train.device=cuda: CUDA is not available"):
        distributed.setup_distributed("cuda")
    assert distributed.setup_distributed("auto").device == torch.device("cpu")
