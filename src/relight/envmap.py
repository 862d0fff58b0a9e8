"""The equirectangular convention and everything computed from an HDRI map.

This module is the one place that maps between camera-frame directions and HDRI pixels.

Camera frame: x right, y up, the camera looks along -z. Equirectangular map (2:1): column
coordinate u in [0, 1) left to right, row coordinate v in [0, 1) top to bottom; pixel (r, c)
of a W x H map has its centre at u = (c + 0.5) / W, v = (r + 0.5) / H. At pan P degrees,

    t = 2 pi (u - 0.5 - P / 360),  e = pi (0.5 - v),
    d = (sin t cos e, sin e, -cos t cos e)

so at pan 0 the camera looks at u = 0.5, u = 0.75 is camera right (+x), u = 0.25 camera left,
u = 0 is behind the camera (+z). A pan of P degrees turns the camera P degrees to the right.

Spherical harmonics: real, order 2 (9 coefficients), in the camera frame. ``project_sh`` gives
radiance coefficients L_lm; ``irradiance_sh`` convolves them with the clamped cosine
(Ramamoorthi & Hanrahan 2001) so that ``eval_sh(irradiance_sh(L), n)`` is the irradiance
E(n) = integral of L(w) max(0, n.w) dw.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .colour import luminance

SH_BAND = np.array([0, 1, 1, 1, 2, 2, 2, 2, 2])
# clamped-cosine convolution per band: pi, 2pi/3, pi/4
COSINE_LOBE = np.array([math.pi, 2 * math.pi / 3, math.pi / 4], dtype=np.float64)


# ----------------------------------------------------------------------------- directions
def uv_to_direction(u, v, pan_deg: float = 0.0) -> np.ndarray:
    """Map coordinates (arrays of the same shape) -> unit camera-frame directions (..., 3)."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    t = 2.0 * np.pi * (u - 0.5 - pan_deg / 360.0)
    e = np.pi * (0.5 - v)
    ce = np.cos(e)
    return np.stack([np.sin(t) * ce, np.sin(e), -np.cos(t) * ce], axis=-1)


def length(v: np.ndarray) -> np.ndarray:
    """Euclidean length along the last axis: ``np.linalg.norm(v, axis=-1)``, several times faster
    on images of vectors (normals, directions)."""
    v = np.asarray(v)
    return np.sqrt(np.einsum("...k,...k->...", v, v))


def direction_to_uv(d, pan_deg: float = 0.0):
    """Camera-frame directions (..., 3), not necessarily unit -> (u in [0, 1), v in [0, 1])."""
    d = np.asarray(d, dtype=np.float64)
    norm = length(d)
    norm = np.where(norm > 0, norm, 1.0)
    u = np.mod(0.5 + np.arctan2(d[..., 0], -d[..., 2]) / (2 * np.pi) + pan_deg / 360.0, 1.0)
    v = 0.5 - np.arcsin(np.clip(d[..., 1] / norm, -1.0, 1.0)) / np.pi
    return u, v


def pixel_grid(width: int, height: int):
    """Centres (u, v) of every pixel of a width x height equirect map, each (height, width)."""
    u = (np.arange(width) + 0.5) / width
    v = (np.arange(height) + 0.5) / height
    return np.meshgrid(u, v)


def solid_angles(width: int, height: int) -> np.ndarray:
    """Solid angle of each pixel row of an equirect map, (height, 1); sums to 4 pi over the map."""
    v = (np.arange(height) + 0.5) / height
    e = np.pi * (0.5 - v)
    return (2 * np.pi / width) * (np.pi / height) * np.cos(e)[:, None]


def camera_rays(width: int, height: int, vfov_deg: float) -> np.ndarray:
    """Unit camera-frame rays through the pixel centres of a pinhole image, (height, width, 3)."""
    tan_half = math.tan(math.radians(vfov_deg) / 2.0)
    x = (2.0 * (np.arange(width) + 0.5) / width - 1.0) * tan_half * width / height
    y = (1.0 - 2.0 * (np.arange(height) + 0.5) / height) * tan_half
    xx, yy = np.meshgrid(x, y)
    d = np.stack([xx, yy, -np.ones_like(xx)], axis=-1)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- sampling
def sample(hdri: np.ndarray, directions: np.ndarray, pan_deg: float = 0.0) -> np.ndarray:
    """Bilinear lookup of an equirect map along camera-frame directions (..., 3) -> (..., C).

    Wraps around horizontally and clamps at the poles."""
    h, w = hdri.shape[:2]
    u, v = direction_to_uv(directions, pan_deg)
    # pad one column each side (wrap) and one row top/bottom (edge) so remap never reads outside
    padded = np.concatenate([hdri[:, -1:], hdri, hdri[:, :1]], axis=1)
    padded = np.concatenate([padded[:1], padded, padded[-1:]], axis=0)
    mx = (u * w - 0.5 + 1.0).astype(np.float32)
    my = (np.clip(v * h - 0.5, -0.5, h - 0.5) + 1.0).astype(np.float32)
    shape = mx.shape
    out = cv2.remap(
        np.ascontiguousarray(padded, dtype=np.float32),
        mx.reshape(-1, 1) if mx.ndim != 2 else mx,
        my.reshape(-1, 1) if my.ndim != 2 else my,
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    channels = hdri.shape[2] if hdri.ndim == 3 else 1
    return out.reshape(shape + ((channels,) if hdri.ndim == 3 else ()))


def reproject(hdri: np.ndarray, width: int, height: int, vfov_deg: float, pan_deg: float = 0.0) -> np.ndarray:
    """The perspective view of an equirect map through a pinhole camera, (height, width, C).

    Exact per-pixel ray directions, bilinear sampling; the camera looks along -z, turned
    ``pan_deg`` degrees to the right."""
    return sample(hdri, camera_rays(width, height, vfov_deg), pan_deg)


def downsample(hdri: np.ndarray, width: int) -> np.ndarray:
    """Area-average an equirect map to ``width`` x ``width/2`` (no-op if already that small)."""
    h, w = hdri.shape[:2]
    if w <= width:
        return hdri.astype(np.float32, copy=False)
    return cv2.resize(hdri.astype(np.float32, copy=False), (width, width // 2), interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------- spherical harmonics
def sh_basis(d: np.ndarray) -> np.ndarray:
    """Real SH basis up to order 2 at unit directions (..., 3) -> (..., 9), float32."""
    d = np.asarray(d, dtype=np.float32)
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    return np.stack(
        [
            np.full_like(x, 0.282095),
            0.488603 * y,
            0.488603 * z,
            0.488603 * x,
            1.092548 * x * y,
            1.092548 * y * z,
            0.315392 * (3.0 * z * z - 1.0),
            1.092548 * x * z,
            0.546274 * (x * x - y * y),
        ],
        axis=-1,
    )


def project_sh(hdri: np.ndarray, pan_deg: float = 0.0, max_width: int = 256) -> np.ndarray:
    """Radiance SH coefficients (9, C) of an equirect map in the camera frame at ``pan_deg``."""
    small = downsample(hdri, max_width)
    h, w = small.shape[:2]
    u, v = pixel_grid(w, h)
    basis = sh_basis(uv_to_direction(u, v, pan_deg)).astype(np.float64)  # (h, w, 9)
    weighted = small.reshape(h, w, -1).astype(np.float64) * solid_angles(w, h)[:, :, None]
    return np.einsum("hwk,hwc->kc", basis, weighted)


def irradiance_sh(radiance_sh: np.ndarray) -> np.ndarray:
    """Convolve radiance SH (9, C) with the clamped cosine -> irradiance SH (9, C)."""
    return radiance_sh * COSINE_LOBE[SH_BAND][:, None]


def eval_sh(coeffs: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Evaluate SH coefficients (9, C) at unit directions (..., 3) -> (..., C), float32."""
    basis = sh_basis(normals)
    return basis @ coeffs.astype(np.float32)


# ----------------------------------------------------------------------------- light placement
def brightest_direction(hdri: np.ndarray, pan_deg: float = 0.0) -> np.ndarray:
    """The camera-frame unit direction of the brightest region of the map (blurred, so a sun
    or a softbox wins over a single hot pixel)."""
    small = downsample(hdri, 128)
    lum = luminance(small[..., :3]) if small.ndim == 3 else small
    # wrap around horizontally by padding (GaussianBlur itself does not support BORDER_WRAP)
    pad = 8  # >= the kernel radius for sigma 1.5 (6)
    lum = cv2.copyMakeBorder(lum.astype(np.float32), 0, 0, pad, pad, cv2.BORDER_WRAP)
    lum = cv2.GaussianBlur(lum, (0, 0), 1.5, borderType=cv2.BORDER_REPLICATE)[:, pad:-pad]
    r, c = np.unravel_index(int(np.argmax(lum)), lum.shape)
    h, w = lum.shape
    return uv_to_direction((c + 0.5) / w, (r + 0.5) / h, pan_deg)


# camera-frame azimuth t (see the module docstring) at which each side lies
_SIDE_AZIMUTH_U = {"front": 1.0, "right": 0.75, "back": 0.5, "left": 0.25}


def pan_for_light_from(hdri: np.ndarray, side: str) -> float:
    """The pan (degrees, in (-180, 180]) that puts the map's brightest direction on ``side`` of a
    subject facing the camera: front = from the camera (+z), left/right = image left/right (-x/+x),
    back = from behind the subject (-z)."""
    d = brightest_direction(hdri, 0.0)
    u_b, _ = direction_to_uv(d, 0.0)
    pan = 360.0 * (float(u_b) - _SIDE_AZIMUTH_U[side])
    pan = (pan + 180.0) % 360.0 - 180.0
    return 180.0 if pan == -180.0 else pan
