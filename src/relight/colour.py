"""Colour conventions: the sRGB transfer functions, luminance, exposure and tone mapping.

Video and PNG/JPEG are sRGB-encoded (display-referred); all lighting maths is in scene-linear
Rec.709. This module is the only place that converts between the two.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Tuple

import cv2
import numpy as np

REC709_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)

# uint8 sRGB -> linear lookup table (exact IEC 61966-2-1 curve)
_c = np.arange(256, dtype=np.float64) / 255.0
SRGB8_TO_LINEAR = np.where(_c <= 0.04045, _c / 12.92, ((_c + 0.055) / 1.055) ** 2.4).astype(np.float32)
del _c

# linear -> uint8 sRGB through a fine lookup table on [0, 1] (4096 steps is below 8-bit precision)
_LUT_N = 4096
_x = np.linspace(0.0, 1.0, _LUT_N + 1, dtype=np.float64)
# (4097,) float64: the sRGB code (0..255, not rounded) at index round(clip(v, 0, 1) * 4096)
LINEAR_TO_SRGB_CODES = 255.0 * np.where(_x <= 0.0031308, 12.92 * _x, 1.055 * np.power(_x, 1 / 2.4) - 0.055)
_LINEAR_TO_SRGB8 = np.clip(np.round(LINEAR_TO_SRGB_CODES), 0, 255).astype(np.uint8)
del _x
LINEAR_TO_SRGB8_LUT = _LINEAR_TO_SRGB8  # (4097,) uint8: index round(clip(v, 0, 1) * 4096)


def _lut8(img: np.ndarray) -> np.ndarray:
    """uint8 sRGB -> float32 linear through the table (cv2.LUT is ~10x faster than indexing)."""
    if img.ndim >= 2 and img.size and img.flags.c_contiguous and (img.ndim == 2 or img.shape[-1] <= 4):
        return cv2.LUT(img, SRGB8_TO_LINEAR)
    return SRGB8_TO_LINEAR[img]


def srgb_to_linear(img: np.ndarray) -> np.ndarray:
    """sRGB-encoded image (uint8, or float in [0, 1]) -> float32 linear. Float32 linear input
    must not be passed here; use :func:`to_linear` when the encoding depends on the dtype."""
    if img.dtype == np.uint8:
        return _lut8(img)
    x = np.clip(img.astype(np.float32, copy=False), 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb_float(img: np.ndarray) -> np.ndarray:
    """Linear float (clipped to [0, 1]) -> sRGB-encoded float in [0, 1]."""
    x = np.clip(img.astype(np.float32, copy=False), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


@lru_cache(maxsize=8)
def hold_bounds(hold: float) -> Tuple[np.ndarray, np.ndarray]:
    """For each 8-bit code k, the range lo[k]..hi[k] (int32, inclusive) of the indices of
    :data:`LINEAR_TO_SRGB8_LUT` whose exact code lies within 0.5 + ``hold`` of k: the values that
    keep a held code k (see :func:`linear_to_srgb8`)."""
    k = np.arange(256, dtype=np.float64)
    limit = 0.5 + float(hold)
    lo = np.searchsorted(LINEAR_TO_SRGB_CODES, k - limit, side="right").astype(np.int32)
    hi = (np.searchsorted(LINEAR_TO_SRGB_CODES, k + limit, side="left") - 1).astype(np.int32)
    return lo, hi


def linear_to_srgb8(img: np.ndarray, held: Optional[np.ndarray] = None, hold: float = 0.0,
                    where: Optional[np.ndarray] = None) -> np.ndarray:
    """Linear float -> uint8 sRGB (values outside [0, 1] are clipped).

    With ``held`` (uint8, the same shape: the previous frame's codes) and ``hold`` > 0, the
    encoding has hysteresis: a value whose exact code (:data:`LINEAR_TO_SRGB_CODES`) is within
    0.5 + ``hold`` of the held code keeps that code instead of its rounding, so a value that
    wavers by less than a level around a rounding boundary does not flip between two codes
    from frame to frame (the error stays below 0.5 + ``hold`` levels). ``where`` (bool, the
    image's shape without channels): only there."""
    idx = (np.clip(img, 0.0, 1.0) * _LUT_N + 0.5).astype(np.int32)
    out = _LINEAR_TO_SRGB8[idx]
    if held is None or hold <= 0:
        return out
    lo, hi = hold_bounds(hold)
    keep = (idx >= lo[held]) & (idx <= hi[held])
    if where is not None:
        keep &= where[..., None]
    return np.where(keep, held, out)


def to_linear(rgb: np.ndarray) -> np.ndarray:
    """A decoded frame -> float32 linear: uint8 is taken as sRGB, float as already linear."""
    if rgb.dtype == np.uint8:
        return _lut8(rgb)
    return rgb.astype(np.float32, copy=False)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec.709 luminance of a linear RGB image (..., 3) -> (...)."""
    return rgb.astype(np.float32, copy=False) @ REC709_LUMA


# Tone mapping: identity below the knee, then an exponential shoulder that reaches 1 asymptotically.
# Skin tones (well below the knee) keep their exact colour; suns and windows roll off smoothly.
TONE_KNEE = 0.8


def tonemap(linear: np.ndarray, knee: float = TONE_KNEE) -> np.ndarray:
    """Scene-linear (exposure applied) -> display-linear in [0, 1], per channel."""
    x = np.maximum(linear.astype(np.float32, copy=False), 0.0)
    span = 1.0 - knee
    over = x > knee
    if not over.any():
        return x
    out = x.copy()
    out[over] = knee + span * (1.0 - np.exp(-(x[over] - knee) / span))
    return out
