"""Self-training on pseudo-labelled target images, in rounds.

Each round: pseudo-label every target image with the current model (:mod:`speedpose.adapt.pseudo_labels`; or
with a copy of it refined on the target first, ``self_train.labeller: refined``), then fine-tune on synthetic/train
mixed with the selected target images (their pseudo pose replaces the label; their box is the reprojection of that
pose; ``self_train.networks: localiser`` fine-tunes the localiser alone), with the training engine
(:func:`speedpose.training.fit`: the same loss, augmentation, determinism and step-exact resumption as
``speedpose train``).  A round is one engine epoch of exactly ``train.max_steps`` batches, drawn from the mixture in
seeded shuffled passes, with its own seed (:func:`round_seed`: another sample order and augmentation each round).
The synthetic check follows every round: a round that makes it worse than the tolerance is discarded, the previous
model kept and the rounds stop.

Work folder layout (``work_dir``)::

    state.json                      baseline check score, finished rounds, the kept round, why it stopped
    pseudo_labels/round_<r>.csv     every target image: pseudo pose, confidence, box IoU, augmentation angle, selected
    rounds/round_<r>/               the round's training run (config.yaml, last.pt, metrics.csv, summary.json)

Re-running with the same arguments continues where it stopped (the labels of an interrupted round are read back,
its training resumes at the exact step).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import ConcatDataset, Dataset

from speedpose.adapt.check import SyntheticCheck
from speedpose.adapt.config import AdaptExperiment, SelfTrainConfig
from speedpose.adapt.norm_refine import refine
from speedpose.adapt.pseudo_labels import PseudoLabels, make_pseudo_labels
from speedpose.adapt.targets import pseudo_labelled_view
from speedpose.config import config_to_dict
from speedpose.data.loader import PreprocessedSplit
from speedpose.io_utils import atomic_write_json, read_json
from speedpose.pose.config import SpeedplusExperiment
from speedpose.pose.kinds import model_kind
from speedpose.pose.kinds.base import ModelKind
from speedpose.pose.model import PoseModel
from speedpose.pose.task import SpeedplusTask, train_subset
from speedpose.resumable import ChunkFiles
from speedpose.training import LAST_NAME, fit, load_checkpoint
from speedpose.training.seeding import mix_seed

STATE_NAME = "state.json"


class _Passes(Dataset):
    """``length`` items of ``dataset`` in seeded shuffled passes (each item once per pass): a fixed-size epoch."""

    def __init__(self, dataset: Dataset, length: int, seed: int):
        self.dataset, self.length, self.seed = dataset, int(length), int(seed)
        self.n = len(dataset)  # type: ignore[arg-type]
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> Any:
        p, j = divmod(int(k), self.n)
        if self._perm is None or self._perm[0] != p:
            self._perm = (p, np.random.default_rng(mix_seed(self.seed, 13, p)).permutation(self.n))
        return self.dataset[int(self._perm[1][j])]


class _Repeat(Dataset):
    """``times`` back-to-back copies of a dataset."""

    def __init__(self, dataset: Dataset, times: int):
        self.dataset, self.times = dataset, int(times)

    def __len__(self) -> int:
        return len(self.dataset) * self.times  # type: ignore[arg-type]

    def __getitem__(self, k: int) -> Any:
        return self.dataset[k % len(self.dataset)]  # type: ignore[arg-type]


def target_repeat(n_synthetic: int, n_target: int, share: float) -> int:
    """Copies of the ``n_target`` pseudo-labelled samples so that they make about ``share`` of the mixture."""
    return max(1, int(round(share / (1.0 - share) * n_synthetic / max(n_target, 1))))


class SelfTrainTask(SpeedplusTask):
    """The SPEED+ task of one self-training round: the model starts from ``init_state``; an epoch is ``samples``
    samples of the mixture of synthetic/train (or a seeded subset of ``synthetic_images``) and the pseudo-labelled
    records ``target_indices`` of ``target``; no validation (the caller runs the synthetic check);
    ``localiser_only``: the crop network is frozen.

    ``cfg.train.seed`` (the round's seed) drives the sample order and augmentation; the synthetic subset comes from
    ``subset_seed`` (the adaptation's seed), so that every round draws from the same synthetic images."""

    def __init__(self, cfg: SpeedplusExperiment, init_state: dict[str, torch.Tensor], target: PreprocessedSplit,
                 target_indices: np.ndarray, target_share: float, samples: int, synthetic_images: int | None = None,
                 subset_seed: int | None = None, localiser_only: bool = False):
        super().__init__(cfg)
        self.localiser_only = bool(localiser_only)
        subset_seed = cfg.train.seed if subset_seed is None else int(subset_seed)
        self.train_indices = train_subset(len(self.train_split), cfg.data.split, subset_seed)
        self.samples = int(samples)
        self.init_state = init_state
        self.target = target
        self.target_indices = np.asarray(target_indices, dtype=np.int64)
        if synthetic_images is not None and synthetic_images < len(self.train_indices):
            rng = np.random.default_rng(mix_seed(subset_seed, 11))
            self.train_indices = np.sort(rng.choice(self.train_indices, synthetic_images, replace=False))
        self.repeat = target_repeat(len(self.train_indices), len(self.target_indices), target_share)

    def build_model(self) -> PoseModel:
        model = self.kind.build_model()
        model.load_state_dict(self.init_state)
        if self.localiser_only:  # no gradient reaches the crop network (its statistics are restored by the caller)
            model.net.requires_grad_(False)
        return model

    def train_dataset(self) -> Dataset:
        synth = self.kind.samples(self.train_split, self.train_indices, train=True)
        tgt = self.kind.samples(self.target, self.target_indices, train=True)
        return _Passes(ConcatDataset([synth, _Repeat(tgt, self.repeat)]), self.samples, self.cfg.train.seed)

    def val_dataset(self) -> None:
        return None


def round_seed(seed: int, r: int) -> int:
    """The training seed of round ``r`` (sample order and augmentation differ between rounds; tag 17 keeps it apart
    from the pseudo-labels' ``mix_seed(seed, r)``)."""
    return mix_seed(seed, 17, r)


def round_config(source: SpeedplusExperiment, acfg: AdaptExperiment, root: Path, prep_dir: Path | None,
                 description: str = "", seed: int | None = None) -> SpeedplusExperiment:
    """The source run's config with the adaptation's ``optim``/``schedule``/``train`` sections (one epoch, no step
    limit: the round's epoch has exactly ``train.max_steps`` batches; ``train.seed`` = ``seed`` when given), the
    given data location and no ImageNet initialisation (the weights come from the source); every sample trains the
    localiser when ``self_train.networks`` is ``localiser``."""
    data = config_to_dict(source)
    data["optim"] = config_to_dict(acfg.optim)
    data["schedule"] = config_to_dict(acfg.schedule)
    data["train"] = {**config_to_dict(acfg.train), "epochs": 1, "max_steps": None}
    if seed is not None:
        data["train"]["seed"] = int(seed)
    data["data"]["root"] = str(Path(root).resolve())
    data["data"]["prep_dir"] = str(Path(prep_dir).resolve()) if prep_dir is not None else None
    data["model"]["pretrained"] = False
    if acfg.self_train.networks == "localiser":
        data["data"]["loc_fraction"] = 1.0  # every sample trains the localiser
    data["description"] = description or source.description
    return type(source).model_validate(data)


@dataclass
class SelfTrainOutcome:
    """What :func:`self_train` did.

    Attributes:
        rounds: per round ``{"round", "selected", "pseudo_labels", "steps", "check_score", "passed"}`` (or
            ``"skipped"`` with a reason).
        kept_round: the round whose model is kept (None: the source model).
        stopped: ``completed``, ``check_failed`` or ``too_few_pseudo_labels``.
        baseline: the synthetic check score of the source model (None without a check).
        metrics_before, metrics_after: synthetic-check metrics of the source and of the kept model.
    """

    rounds: list[dict[str, Any]] = field(default_factory=list)
    kept_round: int | None = None
    stopped: str = "completed"
    baseline: float | None = None
    metrics_before: dict[str, float] | None = None
    metrics_after: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _round_dir(work_dir: Path, r: int) -> Path:
    return work_dir / "rounds" / f"round_{r}"


def _round_weights(work_dir: Path, r: int, source_state: dict[str, torch.Tensor],
                   st: SelfTrainConfig) -> dict[str, torch.Tensor]:
    """The weights of round ``r``'s model: its training checkpoint, with the source's crop network when only the
    localiser is fine-tuned (the checkpoint holds the crop network as training left it, statistics included)."""
    weights = load_checkpoint(_round_dir(work_dir, r) / LAST_NAME)["model"]
    if st.networks == "localiser":
        weights.update((k, v) for k, v in source_state.items() if not k.startswith("localiser."))
    return weights


def _label_files(work_dir: Path) -> ChunkFiles:
    """The rounds' pseudo-label tables, one chunk file per round (the inputs' key is the adaptation's)."""
    return ChunkFiles(work_dir, pattern="pseudo_labels/round_{k}.csv")


def _finetune(model: PoseModel, cfg: SpeedplusExperiment, acfg: AdaptExperiment, target: PreprocessedSplit,
              labels: PseudoLabels, run_dir: Path, root: Path, prep_dir: Path | None, r: int, progress: bool) -> int:
    """Fine-tune from ``model``'s weights (left unchanged) on synthetic + the selected pseudo labels, into
    ``run_dir`` (:func:`_round_weights` reads the result); returns the steps done."""
    st = acfg.self_train
    steps = int(acfg.train.max_steps)
    last = run_dir / LAST_NAME
    if last.is_file():
        done = int(load_checkpoint(last).get("global_step", 0))
        if done >= steps:  # finished before an interruption: never step again
            return done
    q = np.full((len(target), 4), np.nan)
    t = np.full((len(target), 3), np.nan)
    sel = labels.indices
    q[sel], t[sel] = labels.q_wxyz[sel], labels.r_cam_m[sel]
    view = pseudo_labelled_view(target, q, t)
    cfg_r = round_config(cfg, acfg, root, prep_dir, f"self-training round {r} on {target.domain}",
                         seed=round_seed(acfg.train.seed, r))
    task = SelfTrainTask(cfg_r, model.state_dict(), view, sel, st.target_share, steps * acfg.train.batch_size,
                         st.synthetic_images, subset_seed=acfg.train.seed, localiser_only=st.networks == "localiser")
    return int(fit(task, cfg_r, run_dir, resume=last.is_file(), progress=progress).global_step)


def _labeller(model: PoseModel, target: PreprocessedSplit, kind: ModelKind, acfg: AdaptExperiment,
              device: torch.device, r: int, progress: bool) -> PoseModel:
    """The model that pseudo-labels round ``r``: ``model`` itself, or (``self_train.labeller: refined``) a copy of
    it refined on the target images with the ``refine:`` settings and no synthetic check."""
    if acfg.self_train.labeller == "model":
        return model
    labeller = copy.deepcopy(model).to(device)
    no_check = SyntheticCheck(None, np.empty(0, dtype=np.int64), kind, 0.0, device)
    refine(labeller, target, kind, acfg.refine, no_check, acfg.refine.steps, device, mix_seed(acfg.train.seed, 19, r),
           progress=progress)
    return labeller


def self_train(model: PoseModel, cfg: SpeedplusExperiment, acfg: AdaptExperiment, target: PreprocessedSplit,
               check: SyntheticCheck, work_dir: str | Path, root: Path, prep_dir: Path | None, device: torch.device,
               progress: bool = True) -> SelfTrainOutcome:
    """Self-train ``model`` (in place) on the unlabelled ``target`` split (see the module docstring).

    Args:
        model: the source model, on CPU (training runs on ``acfg.train.device``).
        cfg: the source run's config.
        acfg: the adaptation settings (``self_train``, ``train``, ``optim``, ``schedule``).
        target: :func:`speedpose.adapt.targets.unlabelled_view` of the target split.
        check: the synthetic check.
        work_dir: the resumable work folder.
        root, prep_dir: the SPEED+ root and preprocessed folder (for synthetic/train).
        device: where pseudo-labelling and the check run.
    Returns:
        A :class:`SelfTrainOutcome`; the model holds the kept weights, in eval mode.
    """
    st = acfg.self_train
    kind = model_kind(cfg)
    work_dir = Path(work_dir)
    state_path = work_dir / STATE_NAME
    label_files = _label_files(work_dir)
    source_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if state_path.is_file():
        state = read_json(state_path)
        check.baseline = state["baseline"]
        if state["kept_round"] is not None:
            model.load_state_dict(_round_weights(work_dir, state["kept_round"], source_state, st))
    else:
        before = check.set_baseline(model) if check.enabled else None
        state = {"baseline": check.baseline, "metrics_before": before, "metrics_kept": before, "rounds": [],
                 "kept_round": None, "stopped": None}
        atomic_write_json(state_path, state)
    model.to(device)
    for r in range(len(state["rounds"]), st.rounds):
        if state["stopped"] is not None:
            break
        path = label_files.path(r)
        if label_files.is_done(r):
            labels = PseudoLabels.from_frame(pd.read_csv(path, float_precision="round_trip"))
        else:
            labels = make_pseudo_labels(_labeller(model, target, kind, acfg, device, r, progress), target, kind,
                                        st, device, mix_seed(acfg.train.seed, r), acfg.train.batch_size, progress)
            with label_files.writing(r) as tmp:
                labels.to_frame(target.filenames).to_csv(tmp, index=False)
        rec: dict[str, Any] = {"round": r, "selected": int(labels.selected.sum()),
                               "pseudo_labels": str(path.relative_to(work_dir))}
        if rec["selected"] < st.min_selected:
            rec["skipped"] = f"{rec['selected']} image(s) passed the pseudo-label filters, fewer than " \
                             f"self_train.min_selected={st.min_selected}"
            state["stopped"] = "too_few_pseudo_labels"
        else:
            rec["steps"] = _finetune(model.cpu(), cfg, acfg, target, labels, _round_dir(work_dir, r), root,
                                     prep_dir, r, progress)
            model.load_state_dict(_round_weights(work_dir, r, source_state, st))
            model.to(device)
            metrics = check.metrics(model) if check.enabled else None
            passed = metrics is None or check.passes(metrics["score"])
            rec["check_score"] = None if metrics is None else metrics["score"]
            rec["passed"] = passed
            if passed:
                state["kept_round"], state["metrics_kept"] = r, metrics
            else:
                prev = state["kept_round"]
                model.load_state_dict(source_state if prev is None else _round_weights(work_dir, prev, source_state,
                                                                                     st))
                state["stopped"] = "check_failed"
        state["rounds"].append(rec)
        atomic_write_json(state_path, state)
    model.eval()
    return SelfTrainOutcome(rounds=list(state["rounds"]), kept_round=state["kept_round"],
                            stopped=state["stopped"] or "completed", baseline=state["baseline"],
                            metrics_before=state["metrics_before"], metrics_after=state["metrics_kept"])
