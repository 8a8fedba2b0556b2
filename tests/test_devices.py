"""speedpose.devices: resolve_device, the one rule of every --device option and of train.device; place_model, the
channels-last layout of train.channels_last in training and in the runs loaded for inference."""

from __future__ import annotations

import copy

import pytest
import torch

import pipelines.adapt
import pipelines.evaluate
import pipelines.evaluate_benchmark
import pipelines.predict
import pipelines.submit
import speedpose.training.distributed as distributed
from speedpose.devices import place_model, resolve_device
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


# ---- place_model: the channels-last layout (train.channels_last) ----

def _conv3x3_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    """The 4-D weights whose layout is observable (a 1x1 kernel or one input channel is both NCHW and NHWC)."""
    return [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1]


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def test_place_model_lays_out_weights_and_keeps_the_arithmetic():
    from speedpose.config import load_config, resolve_config
    from speedpose.pose.model import build_pose_net

    cfg = load_config(resolve_config("smoke", "speedplus"), [("model.keypoints.enabled", "true")])
    torch.manual_seed(0)
    nchw = place_model(build_pose_net(cfg.model, 64), torch.device("cpu"), channels_last=False).train()
    nhwc = place_model(copy.deepcopy(nchw), torch.device("cpu"), channels_last=True).train()
    assert _conv3x3_weights(nchw) and not any(_is_channels_last(p) for p in _conv3x3_weights(nchw))
    assert all(_is_channels_last(p) for p in _conv3x3_weights(nhwc))
    x = torch.randint(0, 256, (4, 1, 64, 64), dtype=torch.uint8)
    torch.manual_seed(1)  # the I2S head subsamples its projection points in training mode
    out_a = nchw(x)
    torch.manual_seed(1)
    out_b = nhwc(x)
    assert set(out_a) == set(out_b)
    for key in out_a:
        torch.testing.assert_close(out_b[key], out_a[key], rtol=1e-4, atol=1e-4)
    sum(v.float().square().mean() for v in out_a.values()).backward()
    sum(v.float().square().mean() for v in out_b.values()).backward()
    # the gradients agree up to float32 summation order, which a deep backward through BatchNorm at batch 4 amplifies
    # unevenly across machines (an AVX2 EPYC: up to 2.4e-3 of a tensor's norm, elements of the stem's 0.46-large
    # gradient off by 1e-4); a layout error (a permuted weight or gradient) is off by the order of the norm itself
    for (name, pa), pb in zip(nchw.named_parameters(), nhwc.parameters()):
        if pa.grad is not None:
            err = float((pb.grad - pa.grad).norm() / pa.grad.norm().clamp_min(1e-12))
            assert err < 1e-2, f"{name}: gradient differs by {err:.2e} of its norm between the layouts"


def test_training_and_loading_follow_train_channels_last(smoke_run):
    from speedpose.runs import load_run, read_run_config, run_checkpoint
    from speedpose.training import load_checkpoint

    saved = load_checkpoint(run_checkpoint(smoke_run, "last"))["model"]  # the engine trained channels-last
    conv = [v for v in saved.values() if v.dim() == 4 and v.shape[1] > 1 and v.shape[2] > 1]
    assert conv and all(_is_channels_last(v) for v in conv)
    assert all(_is_channels_last(p) for p in _conv3x3_weights(load_run(smoke_run, "last").model))
    off = read_run_config(smoke_run, [("train.channels_last", "false")])
    assert not any(_is_channels_last(p) for p in _conv3x3_weights(load_run(smoke_run, "last", cfg=off).model))


def test_a_run_resumes_in_the_other_layout_with_its_moments_relaid(tiny_prepared, tmp_path, monkeypatch):
    """train.channels_last may change on a resume (the same arithmetic); Adam's moments follow the new layout."""
    from pipelines import train as train_stage
    from speedpose.training import loop

    root, prep = tiny_prepared
    common = ["data.val_limit=2", "train.batch_size=2", "train.workers=0", "train.device=cpu", f"data.prep_dir={prep}"]
    train_stage.run(root, "smoke", [*common, "train.max_steps=1", "train.channels_last=false"], out=tmp_path,
                    name="run", progress=False)
    seen = {}
    original = loop._match_state_layout

    def spy(optimizer):
        original(optimizer)
        seen["moments"] = [v for p in optimizer.state for k, v in optimizer.state[p].items()
                           if torch.is_tensor(v) and v.dim() == 4 and v.shape[1] > 1 and v.shape[2] > 1]

    monkeypatch.setattr(loop, "_match_state_layout", spy)
    train_stage.run(root, "smoke", [*common, "train.max_steps=2", "train.channels_last=true"], out=tmp_path,
                    name="run", resume=True, progress=False)
    assert seen["moments"] and all(_is_channels_last(v) for v in seen["moments"])
