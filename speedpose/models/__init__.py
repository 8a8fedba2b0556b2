"""Models: image encoders and the Image2Sphere head (``speedpose.models.i2s``).  Models do no file I/O except
:func:`build_encoder` reading an explicitly requested weights file at construction."""

from speedpose.models.encoders import build_encoder, encoder_output_shape, encoder_weights_path, list_encoders

__all__ = ["build_encoder", "encoder_output_shape", "encoder_weights_path", "list_encoders"]
