"""Closing the domain gap on unlabelled target images (``speedpose adapt``); the stage is ``pipelines/adapt.py``.

Public API (imported lazily, so that config discovery, which imports :mod:`speedpose.adapt.config`, stays light)::

    AdaptExperiment, RefineConfig, SelfTrainConfig, CheckConfig, METHODS, TARGET_DOMAINS   # the task: adapt schema
    unlabelled_view(split), pseudo_labelled_view(view, q_wxyz, r_cam_m)    # label-free and pseudo-labelled views
    SyntheticCheck                                                          # the held-out synthetic check
    refine(model, target, cfg, rcfg, check, ...) -> RefineOutcome           # BatchNorm refinement (entropy)
    refinable_keys(model, localiser=True)                                   # what refinement may change
    self_train(model, cfg, acfg, target, check, work_dir, ...) -> SelfTrainOutcome   # pseudo-label rounds
    make_pseudo_labels(model, split, cfg, st, device, seed) -> PseudoLabels  # confidence, box IoU, agreement
"""

from __future__ import annotations

from speedpose.lazy_exports import lazy_exports

_EXPORTS = {
    "AdaptExperiment": "config", "RefineConfig": "config", "SelfTrainConfig": "config", "CheckConfig": "config",
    "METHODS": "config", "TARGET_DOMAINS": "config",
    "unlabelled_view": "targets", "pseudo_labelled_view": "targets",
    "SyntheticCheck": "check",
    "refine": "norm_refine", "refinable_keys": "norm_refine", "RefineOutcome": "norm_refine",
    "self_train": "self_training", "SelfTrainOutcome": "self_training",
    "make_pseudo_labels": "pseudo_labels", "PseudoLabels": "pseudo_labels",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
