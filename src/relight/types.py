"""Small typed records passed between the pipeline stages.

decode -> perception -> geometry -> lighting estimate -> render -> composite -> encode

Images are numpy arrays shaped (H, W, C), row 0 at the top. Colour arrays are either
``uint8`` sRGB-encoded (display-referred) or ``float32`` scene-linear Rec.709; see
:mod:`relight.colour` for the one place where the transfer functions live.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

from . import kernels
from .colour import to_linear


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


class FrameViews:
    """One frame as the stages read it: its uint8 sRGB pixels, and the copies they derive from
    them (downscaled, grey, linear), each made once and shared.

    A stage asks for exactly the copy it would have made itself (same size, same
    interpolation), so the results do not depend on who made it or when. The pipeline makes the
    copies the stages will want ahead, in the decode thread (:meth:`relight.pipeline.Relighter.prepare`),
    while the previous frame is being analysed: the resizes release the GIL and run beside it,
    as do the perception models (:meth:`derived`).
    ``linear``: the frame's scene-linear pixels when the input was float (EXR)."""

    def __init__(self, rgb8: np.ndarray, linear: Optional[np.ndarray] = None):
        self.rgb8 = rgb8
        self._linear = linear
        self.is_linear = linear is not None  # a float (EXR) frame: its linear pixels are the original
        self._made: dict = {}

    def _memo(self, key, make):
        if key not in self._made:  # (a result may be None: no pose found, say)
            self._made[key] = make()
        return self._made[key]

    def derived(self, key, make):
        """``make()``, made once per ``key`` and shared: what a stage derives from this frame
        beyond its copies (a model's output on it, say)."""
        return self._memo(("derived", key), make)

    def has_derived(self, key) -> bool:
        """Whether :meth:`derived` made ``key`` already."""
        return ("derived", key) in self._made

    def linear(self) -> np.ndarray:
        """(H, W, 3) float32 linear (:func:`relight.colour.to_linear`)."""
        if self._linear is None:
            self._linear = to_linear(self.rgb8)
        return self._linear

    def grey(self) -> np.ndarray:
        """(H, W) uint8 luma (OpenCV's RGB2GRAY)."""
        return self._memo("grey", lambda: cv2.cvtColor(np.ascontiguousarray(self.rgb8[..., :3]), cv2.COLOR_RGB2GRAY))

    def resized(self, what: str, w: int, h: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        """``cv2.resize`` of the ``what`` copy ("rgb8", "grey" or "linear") to (w, h); the copy
        itself at its own size.

        An 8-bit copy shrunk 3x or more by area-averaging is made from the smallest of the
        frame's 1/2, 1/4, 1/8 ... copies that is still at least 1.5x its size, each of those
        made from the one before by an exact 2x2 average (OpenCV's fast path): at 1080p that is
        ~5x cheaper than averaging the full frame over fractional areas (4K, 256 px from the
        half-size copy: 6 ms, from the 1/8 copy: 0.7 ms), and differs from it by about half a
        level on average (the averaging windows do not line up exactly). The half-size luma is
        the luma of the half-size colour copy (no full-size luma is made), the smaller ones its
        2x2 averages. A linear copy of an 8-bit
        frame shrunk by area-averaging is made from the 8-bit pixels in one pass
        (:func:`relight.kernels.linear_area`): the full-size linear pixels are not made for it;
        shrunk 3x or more, from the half-size copy too (5x cheaper at 1080p), whose 2x2 averages
        are taken in sRGB, not in linear light: on real video the copy differs from the exact
        average by 0.4-0.7% on average, more where there is fine high-contrast detail (up to
        9 levels of sRGB on 1% of the pixels of a detailed portrait). It only steers the
        analysis (the lighting fit, materials, edge colours); the output is made from the
        frame's own pixels; the temporal sweep's 720p cells came out the same to 3 decimals."""
        full = {"rgb8": lambda: self.rgb8, "grey": self.grey, "linear": self.linear}[what]
        H, W = self.rgb8.shape[:2]
        if (h, w) == (H, W):
            return full()
        return self._memo((what, w, h, interpolation), lambda: self._shrink(what, full, w, h, interpolation))

    def _shrink(self, what: str, full, w: int, h: int, interpolation: int) -> np.ndarray:
        H, W = self.rgb8.shape[:2]
        area = interpolation == cv2.INTER_AREA
        level = self._pyramid_level(w, h) if area else 0  # made from the 1/2**level copy
        if (what == "linear" and not self.is_linear and area and w <= W and h <= H and kernels.available()):
            # (from the half-size copy at most: smaller ones are averaged in sRGB, not linear)
            return kernels.linear_area(self.resized("rgb8", W // 2, H // 2) if level else self.rgb8, w, h)
        if what != "linear" and area:
            k = self._pyramid_step(w, h)
            if k == 1 and what == "grey":
                return cv2.cvtColor(self.resized("rgb8", w, h), cv2.COLOR_RGB2GRAY)
            if k >= 1:  # a copy of the pyramid itself: the 2x2 average of the one above it
                return cv2.resize(self.resized(what, W >> (k - 1), H >> (k - 1)) if k > 1 else full(), (w, h),
                                  interpolation=interpolation)
            if level:
                return cv2.resize(self.resized(what, W >> level, H >> level), (w, h), interpolation=interpolation)
        return cv2.resize(full(), (w, h), interpolation=interpolation)

    def _pyramid_step(self, w: int, h: int) -> int:
        """k >= 1 when (w, h) is the frame's exact 1/2**k size, else 0."""
        H, W = self.rgb8.shape[:2]
        k = 1
        while (W >> k) >= w and (H >> k) >= h:
            if (W >> k, H >> k) == (w, h) and W % (1 << k) == 0 and H % (1 << k) == 0:
                return k
            k += 1
        return 0

    def _pyramid_level(self, w: int, h: int) -> int:
        """The smallest exact 1/2**k copy of the frame (k >= 1) that is at least 1.5x a (w, h)
        area shrink in each direction, or 0 (the full frame) when the shrink is under 3x."""
        H, W = self.rgb8.shape[:2]
        k = 0
        while (W % (2 << k) == 0 and H % (2 << k) == 0 and 2 * (W >> (k + 1)) >= 3 * w
               and 2 * (H >> (k + 1)) >= 3 * h):
            k += 1
        return k


@dataclass
class Perception:
    """What the perception stage found in a frame, at the frame's full resolution."""

    matte: np.ndarray  # (H, W) float32 in [0, 1]; 1 = person
    face_landmarks: list = field(default_factory=list)  # per face: (478, 3) float32, x/y in pixels, z in pixels (towards camera negative, mediapipe convention)
    pose_landmarks: Optional[np.ndarray] = None  # (33, 4) x, y in pixels, z, visibility; None if no pose found


@dataclass
class Geometry:
    """Surface normals in the camera frame (x right, y up, z toward the camera), computed at a
    small working resolution (the shading stages work there; only the final multiply-add runs
    per full-resolution pixel). The full-resolution fields are optional and derived on request
    by :meth:`full_normals` / :meth:`full_face_mask` (bilinear upsampling)."""

    normals: Optional[np.ndarray] = None  # (H, W, 3) float32 unit vectors, only when given; see full_normals()
    face_mask: Optional[np.ndarray] = None  # (H, W) float32 in [0, 1]: where the normals come from the face mesh; see full_face_mask()
    depth: Optional[np.ndarray] = None  # (H, W) float32, larger = nearer the camera, pixel units; optional
    work_normals: Optional[np.ndarray] = None  # (h, w, 3) the normals at the working resolution they were computed at
    work_depth: Optional[np.ndarray] = None  # (h, w) float32 depth at that working resolution, larger = nearer, working-pixel units (cast shadows), optional
    work_face: Optional[np.ndarray] = None  # (h, w) float32 face weight at the working resolution
    size: Optional[tuple] = None  # (H, W) of the frame

    def frame_size(self) -> tuple:
        """(H, W) of the frame the geometry belongs to."""
        if self.size is not None:
            return tuple(self.size)
        ref = self.normals if self.normals is not None else self.face_mask
        if ref is None:
            ref = self.work_normals
        return tuple(ref.shape[:2])

    def normals_at_work(self) -> np.ndarray:
        """(h, w, 3) unit normals at the working resolution."""
        if self.work_normals is not None:
            return self.work_normals
        return self.normals

    def face_at_work(self) -> np.ndarray:
        """(h, w) face weight at the working resolution of :meth:`normals_at_work`."""
        h, w = self.normals_at_work().shape[:2]
        f = self.work_face if self.work_face is not None else self.face_mask
        return _fit(np.asarray(f, np.float32), h, w, area=True)

    def full_normals(self) -> np.ndarray:
        """(H, W, 3) normals at the frame's resolution (upsampled from the working ones)."""
        if self.normals is not None:
            return self.normals
        H, W = self.frame_size()
        return _fit(self.work_normals, H, W)

    def full_face_mask(self) -> np.ndarray:
        """(H, W) face weight at the frame's resolution."""
        if self.face_mask is not None:
            return self.face_mask
        H, W = self.frame_size()
        return _fit(self.work_face, H, W)


def _fit(x: np.ndarray, h: int, w: int, area: bool = False) -> np.ndarray:
    if x.shape[:2] == (h, w):
        return x
    import cv2

    shrink = area and x.shape[0] > h
    return cv2.resize(np.asarray(x, np.float32), (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


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


@dataclass
class RenderResult:
    """The relit person before compositing: scene-linear RGB, same exposure as the background."""

    person: np.ndarray  # (H, W, 3) float32 scene-linear, exposure applied
    matte: np.ndarray  # (H, W) float32 in [0, 1]
    input_linear: np.ndarray  # (H, W, 3) float32: the input frame, linear, for --strength blending and backgrounds
