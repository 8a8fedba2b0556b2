"""speedpose: monocular spacecraft pose estimation on SPEED+ with Image2Sphere."""

__version__ = "0.1.0"
