"""The stand-in renderer: a procedural Tango, rendered through the real SPEED+ camera in the three domains' styles.

Public API::

    build_tango_mesh()                      the model (body frame, metres); every keypoint lies on it
    distortion_warp(camera)                 per-pixel inverse distortion of a camera (cached per process)
    render_spacecraft(warp, R, r, lighting) the spacecraft layer: radiance, coverage, keypoints and their visibility
    render_frame(warp, q, r, domain, rng)   one finished 8-bit image and its 0/255 mask in a domain's style
    sample_poses(n, rng, domain)            poses with the statistics of the released SPEED+ labels
"""

from speedpose.render.distortion import DistortionWarp, distortion_warp
from speedpose.render.domains import DOMAIN_NAMES, Frame, render_frame
from speedpose.render.mesh import PARTS, Mesh, build_tango_mesh
from speedpose.render.poses import sample_poses
from speedpose.render.spacecraft import Lighting, SpacecraftLayer, render_spacecraft

__all__ = ["DOMAIN_NAMES", "DistortionWarp", "Frame", "Lighting", "Mesh", "PARTS", "SpacecraftLayer",
           "build_tango_mesh", "distortion_warp", "render_frame", "render_spacecraft", "sample_poses"]
