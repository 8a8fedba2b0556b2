"""Closing the domain gap on unlabelled target images (``speedpose adapt``).

Modules: :mod:`~speedpose.adapt.config` (the ``task: adapt`` schema), :mod:`~speedpose.adapt.targets` (label-free
and pseudo-labelled views of a preprocessed split), :mod:`~speedpose.adapt.check` (the held-out synthetic check),
:mod:`~speedpose.adapt.norm_refine` (test-time refinement of the normalisation layers by entropy minimisation),
:mod:`~speedpose.adapt.pseudo_labels` (confidence, box/reprojection consistency and augmentation agreement) and
:mod:`~speedpose.adapt.self_training` (fine-tuning rounds on synthetic + pseudo-labelled target images).
The stage that composes them is ``pipelines/adapt.py``.
"""
