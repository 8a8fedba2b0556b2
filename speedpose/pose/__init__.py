"""The SPEED+ pose pipeline: localisation, perspective-correct crops, I2S orientation and translation from geometry.

Modules: :mod:`~speedpose.pose.config` (the experiment schema), :mod:`~speedpose.pose.kinds` (the model kinds,
``model.kind``: each builds its networks, makes its training samples, computes its loss and predicts a batch),
:mod:`~speedpose.pose.model` (the networks), :mod:`~speedpose.pose.localiser`, :mod:`~speedpose.pose.keypoints`,
:mod:`~speedpose.pose.crops` (virtual-camera crops and the translation encoding), :mod:`~speedpose.pose.augment`
(photometric augmentation), :mod:`~speedpose.pose.dataset` (training samples of crops),
:mod:`~speedpose.pose.inference` (poses of a split), :mod:`~speedpose.pose.metrics`, :mod:`~speedpose.pose.task`
(the training task); a trained run is opened for inference by :mod:`speedpose.runs`.
"""
