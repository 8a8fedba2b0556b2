"""Resumable sampler, per-sample seeding, schedules and RNG capture: the conventions the engine relies on."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from speedpose.config import ScheduleConfig
from speedpose.errors import ConfigError
from speedpose.training import ResumableBatchSampler, SeededDataset, lr_factor, mix_seed
from speedpose.training.seeding import capture_rng, restore_rng


def flat(batches):
    return [i for b in batches for (_, i, _) in b]


def test_epoch_is_a_permutation_seeded_by_seed_and_epoch():
    s = ResumableBatchSampler(50, 8, seed=3)
    s.set_epoch(0)
    e0 = flat(list(s))
    assert len(e0) == 48 and len(set(e0)) == 48 and set(e0) <= set(range(50)) and len(s) == 6
    s.set_epoch(1)
    e1 = flat(list(s))
    assert e1 != e0
    s.set_epoch(0)
    assert flat(list(s)) == e0
    assert flat(list(ResumableBatchSampler(50, 8, seed=4))) != e0
    assert all(ep == 1 for b in (s.set_epoch(1), list(s))[1] for (ep, _, _) in b)


def test_resume_starts_at_the_exact_batch():
    s = ResumableBatchSampler(64, 16, seed=0)
    s.set_epoch(2)
    full = list(s)
    assert [{k[2] for k in b} for b in full] == [{8}, {9}, {10}, {11}]  # each key carries its global step
    s.set_epoch(2, start_step=3)
    assert list(s) == full[3:] and len(s) == 1
    s.set_epoch(2, start_step=4)
    assert list(s) == []
    with pytest.raises(ValueError):
        s.set_epoch(2, start_step=5)


def test_ranks_shard_each_global_batch():
    whole = ResumableBatchSampler(40, 8, seed=1)
    ranks = [ResumableBatchSampler(40, 8, seed=1, rank=r, world_size=2) for r in range(2)]
    for s in (whole, *ranks):
        s.set_epoch(5, start_step=1)
    for g, r0, r1 in zip(whole, *ranks):
        assert len(r0) == len(r1) == 4 and r0 + r1 == g  # disjoint halves of the same global batch
    with pytest.raises(ConfigError, match="divisible"):
        ResumableBatchSampler(40, 9, seed=1, rank=0, world_size=2)


class Noisy(Dataset):
    def __init__(self):
        self.reseeded = []

    def __len__(self):
        return 10

    def reseed(self, seed):
        self.reseeded.append(seed)

    def __getitem__(self, i):
        return (i, random.random(), float(np.random.rand()), float(torch.rand(())))


def test_seeded_dataset_is_a_function_of_seed_epoch_index_and_leaves_rngs_alone():
    ds = SeededDataset(Noisy(), seed=7)
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    a = ds[(1, 4)]
    b = ds[(1, 4)]
    assert a == b and ds[(2, 4)] != a and ds[(1, 5)] != a and SeededDataset(Noisy(), 8)[(1, 4)] != a
    assert torch.equal(torch.rand(3), before)  # the main process's torch RNG was not disturbed
    assert ds.dataset.reseeded[0] == ds.sample_seed(1, 4) == mix_seed(7, 1, 4)
    assert ds[4] == ds[(-1, 4)]  # plain indices (validation) use the fixed epoch -1


def test_mix_seed_is_fixed_and_spread():
    assert mix_seed(0, 0, 0) == mix_seed(0, 0, 0)
    seeds = {mix_seed(1, e, i) for e in range(10) for i in range(100)}
    assert len(seeds) == 1000 and all(0 <= s < 2 ** 32 for s in seeds)
    assert mix_seed(1, 2) != mix_seed(2, 1)


def test_rng_capture_restore_round_trip():
    state = capture_rng(torch.device("cpu"))
    x = (random.random(), np.random.rand(), torch.rand(()))
    restore_rng(state, torch.device("cpu"))
    assert (random.random(), np.random.rand(), torch.rand(())) == x


def test_lr_schedules():
    step = ScheduleConfig(name="step", step_size_epochs=2, gamma=0.1, warmup_steps=0)
    spe = 10
    assert lr_factor(0, step, spe, 100) == 1.0 and lr_factor(19, step, spe, 100) == 1.0
    assert lr_factor(20, step, spe, 100) == pytest.approx(0.1) and lr_factor(45, step, spe, 100) == pytest.approx(0.01)
    cos = ScheduleConfig(name="cosine", warmup_steps=0)
    assert lr_factor(0, cos, spe, 100) == 1.0 and lr_factor(50, cos, spe, 100) == pytest.approx(0.5)
    assert lr_factor(100, cos, spe, 100) == pytest.approx(0.0, abs=1e-12)
    warm = ScheduleConfig(name="constant", warmup_steps=4)
    assert [lr_factor(s, warm, spe, 100) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert math.isclose(lr_factor(1, ScheduleConfig(name="cosine", warmup_steps=4), spe, 100),
                        0.5 * 0.5 * (1 + math.cos(math.pi * 1 / 100)))


def test_seeded_dataset_passes_the_step_to_a_curriculum_hook():
    """``set_step`` receives the key's global step before the sample is built; the sample's seed ignores it."""

    class Curriculum(torch.utils.data.Dataset):
        step = None

        def __len__(self):
            return 4

        def set_step(self, step):
            self.step = step

        def __getitem__(self, i):
            return self.step, float(np.random.random())

    ds = SeededDataset(Curriculum(), seed=0)
    (s1, r1), (s2, r2) = ds[(1, 2, 7)], ds[(1, 2, 9)]
    assert (s1, s2) == (7, 9) and r1 == r2
    assert ds[(1, 2)][1] == r1


def test_cosine_fitted_to_a_time_budget():
    """schedule.fit_time_budget: the cosine's progress is the larger of the step fraction and the fraction of the
    training-time budget spent, so the rate reaches 0 when the budget ends even if the last step is far away."""
    cos = ScheduleConfig(name="cosine", fit_time_budget=True)
    assert lr_factor(10, cos, 10, 100, time_fraction=0.5) == pytest.approx(0.5)   # time ahead of steps
    assert lr_factor(50, cos, 10, 100, time_fraction=0.1) == pytest.approx(0.5)   # steps ahead of time
    assert lr_factor(10, cos, 10, 100, time_fraction=1.7) == pytest.approx(0.0, abs=1e-12)  # past the budget
    with pytest.raises(ValueError, match="fit_time_budget=true needs name=cosine"):
        ScheduleConfig(name="step", fit_time_budget=True)
