"""Small typed records passed between the pipeline stages.

decode -> perception -> geometry -> lighting estimate -> render -> composite -> encode

Images are numpy arrays shaped (H, W, C), row 0 at the top. Colour arrays are either
``uint8`` sRGB-encoded (display-referred) or ``float32`` scene-linear Rec.709; see
:mod:`relight.colour` for the one place where the transfer functions live.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class MediaInfo:
    """What the decoder knows about an input before reading frames."""

    path: str
    width: int  # displayed width (after applying rotation metadata)
    height: int
    is_video: bool
    fps: float = 0.0  # average frame rate; 0 for a still image
    frame_count: int = 1  # best estimate (from the container); 1 for a still image
    duration: float = 0.0  # seconds; 0 for a still image
    rotation: int = 0  # degrees clockwise that were applied to the coded frames for display
    has_audio: bool = False
    bit_depth: int = 8
    linear: bool = False  # True when frames are scene-linear float (EXR input)


@dataclass
class Frame:
    """One decoded frame. ``rgb`` is (H, W, 3): uint8 sRGB, or float32 linear for EXR input."""

    rgb: np.ndarray
    index: int = 0
    time: float = 0.0  # presentation time in seconds


@dataclass
class Perception:
    """What the perception stage found in a frame, at the frame's full resolution."""

    matte: np.ndarray  # (H, W) float32 in [0, 1]; 1 = person
    face_landmarks: list = field(default_factory=list)  # per face: (478, 3) float32, x/y in pixels, z in pixels (towards camera negative, mediapipe convention)
    pose_landmarks: Optional[np.ndarray] = None  # (33, 4) x, y in pixels, z, visibility; None if no pose found


@dataclass
class Geometry:
    """Per-pixel surface normals in the camera frame (x right, y up, z toward the camera)."""

    normals: np.ndarray  # (H, W, 3) float32 unit vectors; (0, 0, 1) where unknown
    face_mask: np.ndarray  # (H, W) float32 in [0, 1]: where the normals come from the face mesh
    depth: Optional[np.ndarray] = None  # (H, W) float32, larger = nearer the camera, pixel units; optional
    work_normals: Optional[np.ndarray] = None  # (h, w, 3) the same normals at the small working resolution they were computed at; the shading stages use these (fast), optional
    work_depth: Optional[np.ndarray] = None  # (h, w) float32 depth at that working resolution, larger = nearer, working-pixel units (cast shadows), optional


@dataclass
class SourceLighting:
    """Estimated lighting of the input: order-2 spherical-harmonic irradiance, linear RGB."""

    sh: np.ndarray  # (9, 3) irradiance SH coefficients (already convolved with the clamped cosine)
    albedo_scale: float = 1.0  # scale that maps input / shading to a plausible absolute albedo


@dataclass
class TargetLighting:
    """The target HDRI prepared for rendering at one pan angle (cached per pan)."""

    sh: np.ndarray  # (9, 3) irradiance SH coefficients in the camera frame
    specular_map: np.ndarray  # (h, w, 3) float32 blurred equirect map for glossy reflection, camera-frame pan applied by lookup
    pan_deg: float = 0.0
    lights: list = field(default_factory=list)  # dominant light sources taken out of the map: (direction (3,) camera frame, rgb power (3,), angular radius rad)
    residual_sh: Optional[np.ndarray] = None  # (9, 3) irradiance SH of the map without those lights (None: no lights, use sh)
    glossy_maps: dict = field(default_factory=dict)  # lobe exponent -> (h, w, 3) prefiltered residual map (equirect, pan applied by lookup)
    sharp_map: Optional[np.ndarray] = None  # (h, w, 3) the map itself, small, for mirror-like reflections (eyes)


@dataclass
class RenderResult:
    """The relit person before compositing: scene-linear RGB, same exposure as the background."""

    person: np.ndarray  # (H, W, 3) float32 scene-linear, exposure applied
    matte: np.ndarray  # (H, W) float32 in [0, 1]
    input_linear: np.ndarray  # (H, W, 3) float32: the input frame, linear, for --strength blending and backgrounds
