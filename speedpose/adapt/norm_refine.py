"""Test-time refinement of the normalisation layers on unlabelled target images (SPNv2's online domain
refinement, TENT/EATA-style).

Only the BatchNorm layers of the pose network's encoder (and, for crop models, of the localiser) change: their
weights and biases by gradient descent, their running statistics by the forward passes in training mode.  Every
other tensor of the model is left bit-identical (the other parameters have ``requires_grad`` off and no optimiser
sees them; the rest of the network stays in eval mode, so the I2S projector uses all its points).

Objective per batch of B target images (every term in [0, 1], normalised by the entropy of the uniform
distribution)::

    L = w_rot * sum_b m_b H(softmax(f_b on the head's training grid)) / log N / B
      + w_loc * sum_b n_b H(softmax over the cells of the localiser heatmap_b) / log(h w) / B
      + w_kp  * sum_b k_b [sum_j v_bj H(softmax over the cells of keypoint heatmap_bj) / sum_j v_bj] / log(h' w') / B

(the last term for crop networks with the keypoint head: ``v_bj`` is the predicted visibility probability of
keypoint j, detached, so that off-frame keypoints do not pull), with ``m_b`` / ``n_b`` / ``k_b`` = 1 only for
confident images: entropy at or below the ``confident_quantile`` of the entropies measured before refinement (on
``calibration_images`` target images, as refinement sees them) and at or below ``max_entropy``
(``confident_quantile = 1`` and ``max_entropy = 1`` each mean no threshold).
BatchNorm statistics come from every image of a batch; the refined layers then normalise with the running
statistics of the target (``stats_mix = 1``) or with their mixture with the source's (alpha-BN,
:func:`mixed_statistics`: the synthetic check and the kept model see the mixture).  A fixed number of steps, a
small learning rate and the synthetic check every ``check.every_steps`` steps guard against collapse: a state that
fails the check is discarded, the last state that passed is kept and refinement stops.  With several shares
(``stats_mix`` a list), each check tries them from the largest down and the state keeps the first that passes: as
much of the target's statistics as the synthetic domain tolerates, chosen without a target label.

Deterministic for a seed on CPU (the batch order is the only random choice); resumable from the state dict that
``on_checkpoint`` receives.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm.auto import tqdm

from speedpose.adapt.check import SyntheticCheck
from speedpose.adapt.config import RefineConfig
from speedpose.data.loader import PreprocessedSplit
from speedpose.data.subsets import evenly_spaced
from speedpose.pose.kinds.base import ModelKind
from speedpose.pose.model import PoseModel
from speedpose.training.seeding import mix_seed

_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


# ------------------------------------------------------------------------------------------- what may change
def norm_layers(model: PoseModel, localiser: bool = True, encoder: bool = True) -> list[tuple[str, _BatchNorm]]:
    """The BatchNorm layers refinement may change, with their ``state_dict`` prefixes: those of the pose network's
    encoder (``net.encoder``) when ``encoder``, and those of the localiser when ``localiser`` and the model has
    one."""
    roots: list[tuple[str, nn.Module]] = [("net.encoder", model.net.encoder)] if encoder else []
    if localiser and model.localiser is not None:
        roots.append(("localiser", model.localiser))
    return [(f"{prefix}.{name}", m) for prefix, root in roots for name, m in root.named_modules()
            if isinstance(m, _BatchNorm)]


def refinable_keys(model: PoseModel, localiser: bool = True, encoder: bool = True) -> list[str]:
    """``state_dict`` keys refinement may change (BatchNorm weight, bias and statistics); all others stay
    bit-identical."""
    sd = model.state_dict()
    return [f"{name}.{k}" for name, _ in norm_layers(model, localiser, encoder) for k in _BN_KEYS
            if f"{name}.{k}" in sd]


def norm_state(model: PoseModel, localiser: bool = True, encoder: bool = True) -> dict[str, torch.Tensor]:
    """A copy of the refinable tensors."""
    sd = model.state_dict()
    return {k: sd[k].detach().clone() for k in refinable_keys(model, localiser, encoder)}


def mixed_statistics(target: dict[str, torch.Tensor], source: dict[str, torch.Tensor],
                     alpha: float) -> dict[str, torch.Tensor]:
    """The refinable tensors of ``target`` with each BatchNorm layer's running statistics replaced by those of the
    mixture ``alpha`` x target + (1 - alpha) x source (as alpha-BN, with the variance of the mixture): per channel
    ``mean = a m_t + (1 - a) m_s`` and ``var = a v_t + (1 - a) v_s + a (1 - a) (m_t - m_s)^2``.  Weights, biases
    and counters stay the target's; ``alpha = 1`` returns ``target`` itself."""
    if alpha >= 1.0:
        return target
    out = dict(target)
    for key, m_t in target.items():
        if not key.endswith(".running_mean"):
            continue
        var_key = key[: -len("mean")] + "var"
        m_s, v_t, v_s = source[key], target[var_key], source[var_key]
        out[key] = alpha * m_t + (1 - alpha) * m_s
        out[var_key] = alpha * v_t + (1 - alpha) * v_s + alpha * (1 - alpha) * (m_t - m_s) ** 2
    return out


def _norm_parameters(model: PoseModel, localiser: bool, encoder: bool) -> list[nn.Parameter]:
    return [p for _, m in norm_layers(model, localiser, encoder) for p in (m.weight, m.bias) if p is not None]


def _enter_refine_mode(model: PoseModel, layers: list[tuple[str, _BatchNorm]], momentum: float | None) -> None:
    """Eval mode everywhere except the refined BatchNorm layers (batch statistics, running-stat updates)."""
    model.eval()
    for _, m in layers:
        m.train()
        if momentum is not None:
            m.momentum = momentum


# ---------------------------------------------------------------------------------------------- objective
def rotation_entropy(model: PoseModel, coeffs: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax of the head's logits on its training grid, divided by log N: (B, n) -> (B,)."""
    logits = model.net.head.grid.logits(coeffs).float()
    logp = torch.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1) / math.log(logits.shape[1])


def heatmap_entropy(heatmap_logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the cells of the heatmap, divided by log(h w): (B, 1, h, w) -> (B,)."""
    flat = heatmap_logits.float().flatten(1)
    logp = torch.log_softmax(flat, dim=1)
    return -(logp.exp() * logp).sum(dim=1) / math.log(flat.shape[1])


def keypoint_entropy(kp_logits: torch.Tensor, kp_vis_logits: torch.Tensor) -> torch.Tensor:
    """Visibility-weighted mean over the keypoints of the entropy of each heatmap's softmax over its cells,
    divided by log(h w): (B, K, h, w), (B, K) -> (B,).  The visibility probabilities are detached weights."""
    flat = kp_logits.float().flatten(2)
    logp = torch.log_softmax(flat, dim=2)
    h = -(logp.exp() * logp).sum(dim=2) / math.log(flat.shape[2])
    v = torch.sigmoid(kp_vis_logits.detach().float())
    return (h * v).sum(dim=1) / v.sum(dim=1).clamp_min(1e-6)


def forward_target(model: PoseModel, split: PreprocessedSplit, indices: np.ndarray, kind: ModelKind,
                   device: torch.device) -> dict[str, torch.Tensor]:
    """The inference chain on target images, differentiable in the networks' outputs: the kind's network inputs
    (:meth:`~speedpose.pose.kinds.base.ModelKind.network_inputs`: for crop models the localiser and crops from its
    detached boxes, for fullimage models the resized frames), then ``model.net``.

    Returns:
        The normalised entropies (B,) of the terms this model has: ``rotation``; ``localisation`` (models with a
        localiser); ``keypoints`` (networks with the keypoint head).
    """
    inp = kind.network_inputs(model, split, indices, device)
    out = model.net_outputs(inp.images_u8, device)
    h = {"rotation": rotation_entropy(model, out["coeffs"])}
    if inp.loc_out is not None:
        h["localisation"] = heatmap_entropy(inp.loc_out["heatmap_logits"])
    if "kp_logits" in out:
        h["keypoints"] = keypoint_entropy(out["kp_logits"], out["kp_vis_logits"])
    return h


def term_weights(model: PoseModel, rcfg: RefineConfig) -> dict[str, float]:
    """The objective's terms for this model and settings, with their weights (a zero weight drops a term; the
    rotation and keypoint terms need ``rcfg.encoder``, the localisation term ``rcfg.localiser``)."""
    w = {}
    if rcfg.encoder:  # the crop network's terms move only its encoder's layers
        w["rotation"] = rcfg.rotation_weight
        if getattr(model.net, "kp_head", None) is not None:
            w["keypoints"] = rcfg.keypoint_weight
    if model.localiser is not None and rcfg.localiser:
        w["localisation"] = rcfg.localisation_weight
    return {t: v for t, v in w.items() if v > 0}


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Batch ``step`` (0-based) of the endless sequence of seeded permutations of ``range(n)``; a batch may
    straddle two permutations (and repeat an image when ``n < batch_size``)."""
    out: list[int] = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        perm = np.random.default_rng(mix_seed(seed, 7, epoch)).permutation(n)
        take = perm[offset:offset + batch_size - len(out)]
        out.extend(int(t) for t in take)
        pos += len(take)
    return np.asarray(out, dtype=np.int64)


@torch.no_grad()
def entropy_thresholds(model: PoseModel, split: PreprocessedSplit, indices: np.ndarray, kind: ModelKind,
                       rcfg: RefineConfig, device: torch.device, batch_size: int) -> dict[str, float | None]:
    """Confidence thresholds from the entropies before refinement: per term of :func:`term_weights`, the
    ``confident_quantile`` of the normalised entropies, capped at ``max_entropy``;
    None = no threshold (``confident_quantile = 1`` and ``max_entropy = 1``: every image counts, whatever its
    entropy).

    Measured as refinement will see them: refined BatchNorm layers on batch statistics, batches of exactly
    ``batch_size`` (the last one filled up with the first calibration images, whose entropies count once); the
    running statistics are restored afterwards, so the model is unchanged.
    """
    terms = list(term_weights(model, rcfg))
    cap = rcfg.max_entropy if rcfg.max_entropy < 1.0 else None
    if rcfg.confident_quantile >= 1.0:
        return {t: cap for t in terms}  # no quantile: nothing to measure
    indices = np.asarray(indices, dtype=np.int64)
    padded = np.resize(indices, -(-len(indices) // batch_size) * batch_size)  # cyclic fill-up
    layers = norm_layers(model, rcfg.localiser, rcfg.encoder)
    saved = norm_state(model, rcfg.localiser, rcfg.encoder)
    _enter_refine_mode(model, layers, None)
    h: dict[str, list[np.ndarray]] = {t: [] for t in terms}
    try:
        for start in range(0, len(padded), batch_size):
            ent = forward_target(model, split, padded[start:start + batch_size], kind, device)
            for t in terms:
                h[t].append(ent[t].cpu().numpy())
    finally:
        model.load_state_dict(saved, strict=False)
        model.eval()
    out: dict[str, float | None] = {}
    for t in terms:
        q = float(np.quantile(np.concatenate(h[t])[:len(indices)], rcfg.confident_quantile))
        out[t] = q if cap is None else min(q, cap)
    return out


def confident(entropy: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """(B,) float mask of the images whose entropy is at or below ``threshold`` (all of them for None)."""
    if threshold is None:
        return torch.ones_like(entropy)
    return (entropy.detach() <= threshold).to(entropy.dtype)


# -------------------------------------------------------------------------------------------------- loop
@dataclass
class RefineOutcome:
    """What :func:`refine` did.

    Attributes:
        steps_done: optimiser-step slots run (a slot without a confident image makes no step).
        kept_step: the step whose state the model holds at the end (0 = the source model).
        stopped: ``completed`` or ``check_failed`` (the last state that passed was restored).
        thresholds: normalised-entropy thresholds of the confidence filter per term (``rotation``,
            ``localisation``, ``keypoints``; None = no threshold).
        checks: ``{"step", "score", "passed", "stats_mix"}`` per synthetic check (step 0 = before refinement;
            the share of the target's statistics whose score this is: the one kept, or the smallest tried).
        stats_mix: the share of the target's statistics the kept state deploys (0 when the source is kept).
        used: images that contributed to the gradient, summed over steps, per term.
        images_seen: target images forwarded (with repeats).
        parameters: refined scalars (BatchNorm weights and biases).
        metrics_before, metrics_after: synthetic-check metrics of the source and of the kept state (None
            without a check).
    """

    steps_done: int
    kept_step: int
    stopped: str
    thresholds: dict[str, float | None]
    checks: list[dict[str, Any]] = field(default_factory=list)
    used: dict[str, int] = field(default_factory=dict)
    images_seen: int = 0
    parameters: int = 0
    metrics_before: dict[str, float] | None = None
    metrics_after: dict[str, float] | None = None
    stats_mix: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def refine(model: PoseModel, target: PreprocessedSplit, kind: ModelKind, rcfg: RefineConfig,
           check: SyntheticCheck, check_every: int, device: torch.device, seed: int, state: dict | None = None,
           on_checkpoint: Callable[[dict], None] | None = None,
           on_step: Callable[[int, dict[str, float]], None] | None = None, progress: bool = True) -> RefineOutcome:
    """Refine ``model`` (in place, on ``device``) on every image of the unlabelled ``target`` split.

    Args:
        model: the source model, also when resuming (its weights are changed in place; see the module docstring for
            which; its BatchNorm statistics are the source's of ``refine.stats_mix``).
        target: the unlabelled target split (:func:`speedpose.adapt.targets.unlabelled_view`).
        kind: the run's model kind (its network inputs).
        rcfg: the ``refine:`` settings.
        check: the synthetic check (its baseline is measured here unless ``state`` has one).
        check_every: steps between checks (and resumable states).
        seed: seed of the batch order.
        state: a state given earlier to ``on_checkpoint``, to resume from.
        on_checkpoint: called with a resumable state (tensors and plain values) after every check.
        on_step: called with ``(step, scalars)`` after every step (logging).
    Returns:
        A :class:`RefineOutcome`; the model holds the kept state with the statistics it deploys (the mixture at the
        share :attr:`RefineOutcome.stats_mix` chose from ``refine.stats_mix``; the source's own when the source is
        kept), in eval mode.
    """
    n = len(target)
    mixes = rcfg.stats_mixes()
    source = norm_state(model, rcfg.localiser, rcfg.encoder)  # the source model's (also when resuming)
    layers = norm_layers(model, rcfg.localiser, rcfg.encoder)
    params = _norm_parameters(model, rcfg.localiser, rcfg.encoder)
    if rcfg.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=rcfg.lr)
    else:
        opt = torch.optim.SGD(params, lr=rcfg.lr, momentum=0.9)
    if state is None:
        calib = evenly_spaced(n, rcfg.calibration_images)
        thresholds = entropy_thresholds(model, target, calib, kind, rcfg, device, rcfg.batch_size)
        checks = []
        before = check.set_baseline(model) if check.enabled else None
        if before is not None:
            checks.append({"step": 0, "score": before["score"], "passed": True, "stats_mix": None})
        state = {"step": 0, "norm": norm_state(model, rcfg.localiser, rcfg.encoder), "optimizer": opt.state_dict(),
                 "good": norm_state(model, rcfg.localiser, rcfg.encoder), "good_step": 0, "good_mix": 0.0,
                 "thresholds": thresholds,
                 "checks": checks, "used": {t: 0 for t in thresholds}, "images_seen": 0,
                 "baseline": check.baseline, "metrics_before": before, "metrics_good": before, "stopped": None}
    else:
        state = dict(state)  # updated below: the caller's copy stays as it was
        # a state saved before shares could be a list: its good state deploys the one share (step 0: the source)
        state.setdefault("good_mix", mixes[0] if state["good_step"] else 0.0)
        model.load_state_dict(state["norm"], strict=False)
        opt.load_state_dict(state["optimizer"])
        check.baseline = state["baseline"]
    thresholds = state["thresholds"]
    weights = term_weights(model, rcfg)
    used = dict(state["used"])
    seen = int(state["images_seen"])
    checks = list(state["checks"])
    step = int(state["step"])
    stopped = state["stopped"]
    trainable = {id(p) for p in params}
    saved_flags = [(p, p.requires_grad) for p in model.parameters()]
    saved_momenta = [(m, m.momentum) for _, m in layers]  # stats_momentum holds during refinement only
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    bar = tqdm(total=rcfg.steps, initial=step, desc="refine", unit="step", disable=not progress, leave=False)
    try:
        while stopped is None and step < rcfg.steps:
            _enter_refine_mode(model, layers, rcfg.stats_momentum)
            idx = batch_indices(n, rcfg.batch_size, step, seed)
            ent = forward_target(model, target, idx, kind, device)
            loss = torch.zeros((), device=device)
            scalars: dict[str, float] = {}
            n_used = 0
            for t, w in weights.items():
                m = confident(ent[t], thresholds[t])
                loss = loss + w * (ent[t] * m).sum() / len(idx)
                scalars.update({f"{t}_entropy": float(ent[t].detach().mean()), f"used_{t}": float(m.sum())})
                used[t] = used.get(t, 0) + int(m.sum())
                n_used += int(m.sum())
            seen += len(idx)
            opt.zero_grad(set_to_none=True)
            if n_used > 0 and loss.requires_grad:  # no confident image: statistics only, no (momentum) step
                loss.backward()
                opt.step()
            step += 1
            scalars["loss"] = float(loss.detach())
            if on_step is not None:
                on_step(step, scalars)
            bar.update(1)
            bar.set_postfix(loss=f"{scalars['loss']:.4g}", used=int(scalars.get("used_rotation", 0)), refresh=False)
            if step % check_every == 0 or step == rcfg.steps:
                raw = norm_state(model, rcfg.localiser, rcfg.encoder)
                alpha, metrics, passed = _largest_passing_mix(model, raw, source, mixes, check)
                if metrics is not None:
                    checks.append({"step": step, "score": metrics["score"], "passed": passed, "stats_mix": alpha})
                if passed:
                    state["good"], state["good_step"], state["good_mix"] = raw, step, alpha
                    state["metrics_good"] = metrics
                else:
                    model.load_state_dict(state["good"], strict=False)
                    stopped = "check_failed"
                state.update(step=step, norm=norm_state(model, rcfg.localiser, rcfg.encoder),
                             optimizer=opt.state_dict(), checks=list(checks), used=dict(used), images_seen=seen,
                             stopped=stopped)
                if on_checkpoint is not None:
                    on_checkpoint(state)
    finally:
        bar.close()
        for p, flag in saved_flags:
            p.requires_grad_(flag)
        for m, momentum in saved_momenta:
            m.momentum = momentum
        model.eval()
    # the kept state (the last one, or the last that passed the check) with the statistics it deploys
    model.load_state_dict(mixed_statistics(state["good"], source, state["good_mix"]), strict=False)
    return RefineOutcome(steps_done=step, kept_step=int(state["good_step"]), stopped=stopped or "completed",
                         thresholds=dict(thresholds), checks=checks, used=used, images_seen=seen,
                         parameters=int(sum(p.numel() for p in params)), metrics_before=state["metrics_before"],
                         metrics_after=state["metrics_good"], stats_mix=float(state["good_mix"]))


def _largest_passing_mix(model: PoseModel, raw: dict[str, torch.Tensor], source: dict[str, torch.Tensor],
                         mixes: tuple[float, ...], check: SyntheticCheck
                         ) -> tuple[float, dict[str, float] | None, bool]:
    """(share, its check metrics, passed) of the largest share of ``mixes`` (largest first) whose statistics pass
    the synthetic check, or of the smallest when none does; the smallest, unchecked, without a check (nothing says
    the synthetic domain tolerates more).  The model leaves with the refinement's own statistics ``raw``."""
    if not check.enabled:
        return mixes[-1], None, True
    try:
        for alpha in mixes:
            model.load_state_dict(mixed_statistics(raw, source, alpha), strict=False)
            metrics = check.metrics(model)  # the statistics it would deploy
            if check.passes(metrics["score"]):
                return alpha, metrics, True
        return alpha, metrics, False
    finally:
        model.load_state_dict(raw, strict=False)
