"""The SPEED+ pose pipeline: localisation, perspective-correct crops, I2S orientation and translation from geometry.

Modules: :mod:`~speedpose.pose.crops` (virtual-camera crops and the translation encoding),
:mod:`~speedpose.pose.augment` (photometric augmentation), :mod:`~speedpose.pose.config` (the experiment schema),
:mod:`~speedpose.pose.dataset` (training samples), :mod:`~speedpose.pose.localiser` and
:mod:`~speedpose.pose.model` (networks and inference), :mod:`~speedpose.pose.task` (the training task).
"""
