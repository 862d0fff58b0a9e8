"""Compositing stage: the relit person over the chosen background, with one exposure and one
tone mapping shared by the person and an HDRI background.

Backgrounds: ``source`` (the input frame), ``source-blur`` (the input with the person removed
and blurred), ``hdri`` (the HDRI seen through the virtual camera), ``transparent`` (alpha
output), a ``#RRGGBB`` colour, or a user image/video (already scaled to cover the frame by the
decode stage). Everything is mixed in linear light.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from .. import envmap, kernels
from ..colour import srgb_to_linear, tonemap
from ..settings import parse_color


@dataclass
class Composite:
    """A finished frame. ``rgb`` is display-linear in [0, 1] (``scene_linear`` False) or
    scene-linear (True, for EXR). ``alpha`` is None unless the background is transparent; then
    ``rgb`` holds the un-premultiplied person colour."""

    rgb: Optional[np.ndarray]
    alpha: Optional[np.ndarray]
    scene_linear: bool
    rgb8: Optional[np.ndarray] = None  # the same already encoded to 8-bit sRGB (then ``rgb`` may be None)


def _blur_sigma(blur: float, width: int, height: int) -> float:
    """``--blur`` 0..1 -> Gaussian sigma in pixels (1 = 4% of the frame's longer side)."""
    return float(blur) * 0.04 * max(width, height)


# above this sigma (pixels) a Gaussian blur is done at a reduced resolution (see gaussian_blur)
_REDUCED_BLUR_SIGMA = 16.0


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """``cv2.GaussianBlur(img, (0, 0), sigma)``, for a wide blur (``sigma`` > 16 px) computed at a
    resolution reduced by an integer factor k ~ sigma / 8 (area-averaged down, blurred with the
    edges mirrored, bilinear up; the down and up steps' own spread, about k^2 / 4 in variance, is
    taken out of the blur), so its cost does not grow with sigma^2 x the frame's pixels: a
    background blur at 4K takes milliseconds instead of seconds, and differs from the full one by
    less than 1% of the image's range."""
    h, w = img.shape[:2]
    k = int(sigma // (_REDUCED_BLUR_SIGMA / 2)) if sigma > _REDUCED_BLUR_SIGMA else 1
    k = min(k, max(1, min(h, w) // 64))  # the reduced image keeps at least ~64 px a side
    if k <= 1:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    sh, sw = -(-h // k), -(-w // k)
    small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
    s = math.sqrt(max(sigma * sigma - 0.25 * k * k, 1.0)) / k
    small = cv2.GaussianBlur(small, (0, 0), s, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def blur_image(img: np.ndarray, blur: float) -> np.ndarray:
    if blur <= 0:
        return img
    h, w = img.shape[:2]
    return gaussian_blur(img, _blur_sigma(blur, w, h))


def normalized_blur(img: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``img`` counting only pixels where ``weight`` is high (normalised
    convolution): fills the holes left by removing the person. (:func:`gaussian_blur`: a wide
    one at a reduced resolution.)"""
    w = weight.astype(np.float32)
    num = gaussian_blur(img * w[..., None], sigma)
    den = gaussian_blur(w, sigma)[..., None]
    return num / np.maximum(den, 1e-4)


def edge_sigma(height: int, width: int) -> float:
    """Width (full-resolution pixels) of the neighbourhood the edge colours are taken from."""
    return max(2.0, 0.01 * max(height, width))


def edge_fields(image_small: np.ndarray, matte_small: np.ndarray, sigma: float) -> np.ndarray:
    """(h, w, 6) float32 at a small working resolution: the old background's colour near each
    pixel (3), from the confidently-background pixels, and the person's (3), from the
    confidently-person pixels (normalised blurs of width ``sigma`` working pixels). With numba,
    the element-wise steps around the four blurs are two compiled passes (the same values)."""
    if kernels.available():
        bg, wb, fg, wf = kernels.edge_weighted(image_small, matte_small, 0.05, 0.95)
        return kernels.edge_normalised(gaussian_blur(bg, sigma), gaussian_blur(wb, sigma), gaussian_blur(fg, sigma),
                                       gaussian_blur(wf, sigma), 1e-4)
    return np.concatenate([normalized_blur(image_small, matte_small < 0.05, sigma),
                           normalized_blur(image_small, matte_small > 0.95, sigma)], axis=-1).astype(np.float32)


def solve_edge_pixels(px: np.ndarray, a: np.ndarray, bg: np.ndarray, fg_smooth: np.ndarray) -> np.ndarray:
    """The person's own colour F of soft-edge pixels ``px`` (n, 3) with alpha ``a`` (n, 1), the
    nearby background ``bg`` and person colour ``fg_smooth`` (n, 3) (see :func:`decontaminate`).

    The exact per-channel solve F = (I - (1 - a) B) / a amplifies every error of B and of a by
    1 / a, and at a dark-hair / bright-wall edge that makes coloured fringes (a dark channel
    goes to 0). So F keeps the colour of the nearby person, F_smooth, and only its brightness
    is solved for: F = s F_smooth, s = <F_smooth, I - (1 - a) B> / (a |F_smooth|^2), within
    [1/4, 4]; the exact solve takes over only where the person nearly covers the pixel, and is
    kept above F_smooth / 4 too (where it would go to 0, a small error of a turned a dark strand
    black in one frame and not in the next: a dark line that flickered along the outline).

    Near the opaque end of the band (``EDGE_FADE`` .. ``EDGE_HI``) F fades back to the pixel
    itself, so F does not jump where the band ends. (There the composite with a new background
    B' changes with an error of a by (B' - g B) if F is solved, g being the relighting gain,
    and by (g I - B') if not: against a bright old background the first is several times
    larger, and the matte's small frame-to-frame errors at the inner edge showed as flicker.)
    (:mod:`relight.kernels` does the same per pixel.)"""
    rest = px - (1.0 - a) * bg
    ff = np.maximum(fg_smooth, 1e-6)
    scale = np.einsum("nc,nc->n", ff, rest)[:, None] / np.maximum(a * np.einsum("nc,nc->n", ff, ff)[:, None], 1e-12)
    shaped = ff * np.clip(scale, 0.25, 4.0)
    exact = np.maximum(rest / np.maximum(a, 0.05), 0.25 * ff)
    w_exact = np.clip((a - 0.7) / 0.25, 0.0, 1.0)
    solved = w_exact * exact + (1.0 - w_exact) * shaped
    strength = np.clip((EDGE_HI - a) / (EDGE_HI - EDGE_FADE), 0.0, 1.0)
    return strength * solved + (1.0 - strength) * px


# the soft band of the matte that is decontaminated: fully from EDGE_LO to EDGE_FADE, less and
# less from there to EDGE_HI (see solve_edge_pixels)
EDGE_LO, EDGE_FADE, EDGE_HI = 0.02, 0.9, 0.98


def decontaminate(image_linear: np.ndarray, matte: np.ndarray, work_size: int = 320,
                  fields: Optional[np.ndarray] = None) -> np.ndarray:
    """Estimate the person's own colour at soft matte edges (hair, motion blur), removing the
    old background that is mixed in there: solve I = a F + (1 - a) B for F, with B and a smooth F
    taken from nearby confident pixels (:func:`edge_fields`, at a ~``work_size`` px working
    resolution, or the ``fields`` given). Opaque and empty pixels are returned unchanged.

    Only the edge pixels are touched: they are gathered once, the two blurred fields are sampled
    at them (bilinear, from the working resolution) and the solved colours scattered back into a
    copy, so the cost follows the length of the outline rather than the frame's area."""
    h, w = matte.shape
    m32 = np.ascontiguousarray(matte, dtype=np.float32)
    edge = cv2.inRange(m32, EDGE_LO, EDGE_HI)  # uint8, 255 on the soft band (inclusive bounds: fine)
    idx = np.flatnonzero(edge.ravel())
    if idx.size == 0:
        return image_linear
    if fields is None:
        f = max(1.0, max(h, w) / float(work_size))
        sw, sh = max(1, int(round(w / f))), max(1, int(round(h / f)))
        small = cv2.resize(image_linear, (sw, sh), interpolation=cv2.INTER_AREA)
        small_matte = cv2.resize(m32, (sw, sh), interpolation=cv2.INTER_AREA)
        fields = edge_fields(small, small_matte, edge_sigma(h, w) / f)
    sh, sw = fields.shape[:2]
    rows, cols = np.divmod(idx, w)
    # the maps as a block of 1024 columns (remap wants fewer than 32767 rows)
    n = idx.size
    pad = (-n) % 1024
    mx = np.pad(((cols + 0.5) * (sw / float(w)) - 0.5).astype(np.float32), (0, pad)).reshape(-1, 1024)
    my = np.pad(((rows + 0.5) * (sh / float(h)) - 0.5).astype(np.float32), (0, pad)).reshape(-1, 1024)
    at = np.concatenate([cv2.remap(np.ascontiguousarray(fields[..., c:c + 3]), mx, my, cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE).reshape(-1, 3)[:n] for c in (0, 3)], axis=-1)
    flat = image_linear.reshape(-1, 3)
    out = image_linear.copy()
    out.reshape(-1, 3)[idx] = solve_edge_pixels(flat[idx], m32.ravel()[idx][:, None], at[:, :3], at[:, 3:])
    return out


class BackgroundMaker:
    """Builds the background for each frame in scene-linear units (exposure applied).

    ``media`` is an object with ``get(index) -> uint8 (H, W, 3)`` for IMAGE/VIDEO backgrounds."""

    def __init__(self, kind: str, width: int, height: int, *, vfov: float, bg_gain: float, blur: float,
                 hdri: Optional[np.ndarray] = None, media=None):
        self.kind = kind
        self.width, self.height = width, height
        self.vfov, self.bg_gain, self.blur = vfov, bg_gain, blur
        self.hdri = hdri
        self.media = media
        self.color = parse_color(kind) if kind not in ("source", "source-blur", "hdri", "transparent") else None
        self._hdri_cache: "tuple[float, float, np.ndarray] | None" = None  # (pan, exposure, image)
        self._display_cache: "tuple[float, float, np.ndarray] | None" = None  # the same, tone-mapped

    @property
    def transparent(self) -> bool:
        return self.kind == "transparent"

    @property
    def reads_input(self) -> bool:
        """Whether the background is made from the input frame (``make``'s ``input_linear``;
        the other kinds take None there)."""
        return self.kind in ("source", "source-blur")

    def make(self, index: int, input_linear: np.ndarray, matte: np.ndarray, pan: float, exposure: float
             ) -> Optional[np.ndarray]:
        """Background in linear light: scene-linear for ``hdri`` (exposure applied), else the
        display-linear pixels of the source / colour / media. None when transparent."""
        if self.kind == "transparent":
            return None
        if self.kind == "hdri":
            return self._hdri(pan, exposure)
        if self.kind == "source":
            return blur_image(input_linear, self.blur)
        if self.kind == "source-blur":
            sigma = _blur_sigma(max(self.blur, 0.5), self.width, self.height)
            return normalized_blur(input_linear, 1.0 - np.clip(matte * 1.5, 0.0, 1.0), sigma)
        if self.color is not None:
            rgb = srgb_to_linear(np.array(self.color, dtype=np.uint8))
            return np.broadcast_to(rgb, (self.height, self.width, 3))
        return blur_image(srgb_to_linear(self.media.get(index)), self.blur)

    def make_display(self, index: int, input_linear: np.ndarray, matte: np.ndarray, pan: float, exposure: float):
        """The background as display-linear values in [0, 1] (an HDRI background tone-mapped
        with the person's curve, cached while the pan stays put), a length-3 colour for a
        colour background, or None when transparent."""
        if self.kind == "hdri":
            cached = self._display_cache
            if cached is not None and cached[0] == pan and cached[1] == exposure:
                return cached[2]
            view = tonemap(self._hdri(pan, exposure))
            self._display_cache = (pan, exposure, view)
            return view
        if self.color is not None:
            return srgb_to_linear(np.array(self.color, dtype=np.uint8)).astype(np.float32)
        return self.make(index, input_linear, matte, pan, exposure)

    def _hdri(self, pan: float, exposure: float) -> np.ndarray:
        cached = self._hdri_cache
        if cached is not None and cached[0] == pan and cached[1] == exposure:
            return cached[2]
        view = envmap.reproject(self.hdri, self.width, self.height, self.vfov, pan)
        view = blur_image(view, self.blur) * np.float32(exposure * self.bg_gain)
        self._hdri_cache = (pan, exposure, view)
        return view


def composite(person: np.ndarray, input_linear: np.ndarray, matte: np.ndarray, background: Optional[np.ndarray],
              *, strength: float, scene_linear: bool, background_is_scene: bool) -> Composite:
    """Mix the relit person (scene-linear, exposure applied) over the background.

    ``strength`` blends the person between the input (0) and the relit result (1). For display
    outputs the relit person and a scene-linear (HDRI) background go through the same tone curve;
    for EXR (``scene_linear``) nothing is tone-mapped."""
    relit = person if scene_linear else tonemap(person)
    if strength < 1.0:
        relit = strength * relit + (1.0 - strength) * input_linear
    a = matte[..., None].astype(np.float32)
    if background is None:
        return Composite(rgb=relit, alpha=matte.astype(np.float32), scene_linear=scene_linear)
    bg = background if (scene_linear or not background_is_scene) else tonemap(background)
    out = a * relit + (1.0 - a) * bg
    return Composite(rgb=out.astype(np.float32, copy=False), alpha=None, scene_linear=scene_linear)

