"""Image2Sphere (Klee et al., ICLR 2023) in speedpose: head, loss, and SO(3) inference.

Public API:
    I2SHead, I2SHeadSpec          feature map (B, C, H, W) -> SO(3) Fourier coefficients (B, 455 for lmax 6)
    SO3GridSignal                 a HEALPix SO(3) grid with its Wigner matrix (buffers)
    so3_cross_entropy             training loss on a grid (level 3 as the reference; sampled variant)
    so3_log_likelihood            log-density of the true rotation (benchmark metric)
    predict_mode                  coarse-to-fine mode search (level >= 5) + Newton refinement + confidence
    so3_distribution              probabilities on a chosen grid level (for plots)
    dense_argmax                  exact chunked argmax on a level (reference for the mode search)
    rotate_coeffs                 the coefficients of the same distribution in another frame
"""

from speedpose.models.i2s.grid_signal import SO3GridSignal
from speedpose.models.i2s.head import I2SHead, I2SHeadSpec
from speedpose.models.i2s.inference import (
    coarse_to_fine_mode,
    default_grid,
    dense_argmax,
    mode_confidence,
    predict_mode,
    refine_mode,
    rotate_coeffs,
    so3_distribution,
)
from speedpose.models.i2s.loss import so3_cross_entropy, so3_log_likelihood

__all__ = [
    "I2SHead",
    "I2SHeadSpec",
    "SO3GridSignal",
    "coarse_to_fine_mode",
    "default_grid",
    "dense_argmax",
    "mode_confidence",
    "predict_mode",
    "refine_mode",
    "rotate_coeffs",
    "so3_cross_entropy",
    "so3_distribution",
    "so3_log_likelihood",
]
