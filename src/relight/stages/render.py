"""Render: de-light the person with the source estimate and shade them with the target HDRI.

    albedo   = min(albedo_scale * I / E_src(n), albedo_max)        (per pixel, full resolution)
    radiance = albedo / pi * E_tgt(n) + specular * F(n.v) * L_glossy(reflect(v, n))

E_src and E_tgt are order-2 SH irradiances; L_glossy is the target HDRI prefiltered with a
glossy lobe. Everything that depends only on the normals (1 / E_src, E_tgt / pi, the specular
term) is smooth, so it is computed at the geometry's working resolution and upsampled; only the
final multiply-add runs per full-resolution pixel, so the image's own fine detail (pores,
hair strands, stubble) is kept exactly: that is the ratio-image approach.

The output is scene-linear radiance in the HDRI's units; :func:`auto_exposure` gives the scale
that the compositor applies to both the person and the HDRI background.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import cv2
import numpy as np

from ..colour import REC709_LUMA
from ..envmap import COSINE_LOBE, SH_BAND, downsample, eval_sh, irradiance_sh, pixel_grid, project_sh, sample, solid_angles, uv_to_direction
from ..types import Geometry, Perception, SourceLighting, TargetLighting

SH_MAP_WIDTH = 128  # the HDRI is area-averaged to 128 x 64 for the SH projection
SPEC_MAP_WIDTH = 64  # prefiltered glossy map: 64 x 32 (the lobe is ~20 degrees wide)
EXPOSURE_MAX_SWING = 2.5  # auto exposure at a pan stays within 2.5x (1.3 stops) of the rotation-invariant one
GLOSSY_EXPONENT = 16.0  # Phong-equivalent exponent of skin's glossy lobe (Beckmann m ~0.35, Weyrich et al. 2006)


@dataclass
class RenderOptions:
    f0_skin: float = 0.028  # Fresnel reflectance at normal incidence of skin (n = 1.4)
    fresnel_max: float = 0.12  # rough surfaces never reach mirror Fresnel at grazing angles
    other_weight: float = 0.35  # specular outside the face (hair, clothes: rougher, anisotropic), relative
    albedo_max: float = 1.0
    source_floor: float = 0.2  # min source irradiance, fraction of its sphere average (bounds the de-lighting gain)
    work_size: int = 320  # used only when the geometry has no work_normals
    remove_source_specular: bool = False  # subtract the source's glossy reflection (SH estimate) before de-lighting


# ----------------------------------------------------------------------------- target
class TargetHDRI:
    """The target HDRI prepared once for rendering: what does not depend on the pan (the small
    map for the SH projection, the glossy prefiltered map), plus a small cache of per-pan SH.

    Owned by whoever renders (the :class:`~relight.pipeline.Relighter`); no module-level state."""

    def __init__(self, hdri: np.ndarray):
        rgb = np.asarray(hdri, dtype=np.float32)
        rgb = rgb[..., :3] if rgb.ndim == 3 else np.repeat(rgb[..., None], 3, axis=2)
        rgb = np.nan_to_num(np.maximum(rgb, 0.0), nan=0.0, posinf=65504.0)
        self.small = downsample(rgb, SH_MAP_WIDTH)
        self.specular_map = prefilter_glossy(downsample(self.small, SPEC_MAP_WIDTH), GLOSSY_EXPONENT)
        self._sh_cache: "OrderedDict[float, np.ndarray]" = OrderedDict()
        azimuth_mean = np.ascontiguousarray(np.broadcast_to(self.small.mean(axis=1, keepdims=True), self.small.shape))
        self.azimuth_average_sh = irradiance_sh(project_sh(azimuth_mean, 0.0, max_width=SH_MAP_WIDTH)).astype(np.float32)

    def irradiance(self, pan_deg: float) -> np.ndarray:
        """Camera-frame irradiance SH (9, 3) at ``pan_deg``."""
        key = round(float(pan_deg) % 360.0, 4)
        sh = self._sh_cache.get(key)
        if sh is None:
            sh = irradiance_sh(project_sh(self.small, key, max_width=SH_MAP_WIDTH)).astype(np.float32)
            self._sh_cache[key] = sh
            if len(self._sh_cache) > 64:  # autorotate: a new pan every frame
                self._sh_cache.popitem(last=False)
        return sh

    def target(self, pan_deg: float) -> TargetLighting:
        """The lighting at one pan: irradiance SH and the glossy map (pan applied at lookup)."""
        return TargetLighting(sh=self.irradiance(pan_deg), specular_map=self.specular_map, pan_deg=float(pan_deg))

    def exposure(self, pan_deg: Optional[float] = None, albedo: float = 0.4, target: float = 0.2,
                 max_swing: float = EXPOSURE_MAX_SWING) -> float:
        """Scale k such that a frontal face of albedo ``albedo`` lit by the HDRI has a mean linear
        level of ``target`` after k. The face is modelled as the visible half of a sphere (normals
        weighted by their projected area). With ``pan_deg=None`` (autorotate) the map is
        azimuth-averaged first, so k does not depend on the rotation. At a given pan, k stays
        within ``max_swing`` times that rotation-invariant value, so a back-lit subject is
        exposed up a little (as a camera would) without amplifying a nearly unlit face into noise."""
        k_avg = _exposure_for(self.azimuth_average_sh, albedo, target)
        if pan_deg is None:
            return k_avg
        k = _exposure_for(self.irradiance(pan_deg), albedo, target)
        return float(np.clip(k, k_avg / max_swing, k_avg * max_swing))


def _exposure_for(sh: np.ndarray, albedo: float, target: float) -> float:
    E = np.maximum(eval_sh(np.asarray(sh, np.float32), front_normals()), 0.0) @ REC709_LUMA
    level = albedo / math.pi * float(E.mean())
    return float(target / level) if level > 1e-12 else 1.0


def prepare_target(hdri_pixels: np.ndarray, pan_deg: float = 0.0) -> TargetLighting:
    """One-off :meth:`TargetHDRI.target` (prepares the HDRI each call; keep a :class:`TargetHDRI`
    to render many frames)."""
    return TargetHDRI(hdri_pixels).target(pan_deg)


def auto_exposure(hdri_pixels: np.ndarray, pan_deg: Optional[float] = None, albedo: float = 0.4,
                  target: float = 0.2) -> float:
    """One-off :meth:`TargetHDRI.exposure`."""
    return TargetHDRI(hdri_pixels).exposure(pan_deg, albedo, target)


def prefilter_glossy(env: np.ndarray, exponent: float) -> np.ndarray:
    """Convolve an equirect map with a normalised Phong lobe max(0, r.d)^exponent, on the sphere."""
    h, w = env.shape[:2]
    u, v = pixel_grid(w, h)
    d = uv_to_direction(u, v).reshape(-1, 3).astype(np.float32)
    omega = np.broadcast_to(solid_angles(w, h), (h, w)).reshape(-1).astype(np.float32)
    cosang = np.clip(d @ d.T, 0.0, 1.0)  # (h*w, h*w)
    wts = np.power(cosang, np.float32(exponent)) * omega[None, :]
    wts /= wts.sum(axis=1, keepdims=True)
    out = wts @ env.reshape(-1, env.shape[2]).astype(np.float32)
    return out.reshape(h, w, -1).astype(np.float32)


@lru_cache(maxsize=1)
def front_normals() -> np.ndarray:
    """Normals of the visible half of a sphere sampled uniformly in the image (projected area)."""
    g = (np.arange(32) + 0.5) / 16.0 - 1.0
    x, y = np.meshgrid(g, -g)
    r2 = x * x + y * y
    ok = r2 < 1.0
    return np.stack([x[ok], y[ok], np.sqrt(1.0 - r2[ok])], -1).astype(np.float32)


# ----------------------------------------------------------------------------- rendering
def render_person(input_linear: np.ndarray, perception: Perception, geometry: Geometry, source: SourceLighting,
                  target: TargetLighting, specular: float = 1.0, options: Optional[RenderOptions] = None) -> np.ndarray:
    """The relit person, (H, W, 3) float32 scene-linear radiance in the HDRI's units (no
    exposure). Pixels outside the matte are finite but meaningless."""
    opts = options or RenderOptions()
    img = np.asarray(input_linear, dtype=np.float32)[..., :3]
    H, W = img.shape[:2]
    if geometry.work_normals is not None:
        n = geometry.work_normals.astype(np.float32, copy=False)
    else:
        s = min(1.0, opts.work_size / max(H, W))
        n = cv2.resize(geometry.normals, (max(1, round(W * s)), max(1, round(H * s))), interpolation=cv2.INTER_AREA)
        n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
    h, w = n.shape[:2]
    face = geometry.face_mask
    if face.shape != (h, w):
        face = cv2.resize(face.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)

    inv_src, diffuse, spec, spec_src = shading_fields(n, face, source, target, specular, opts)
    if (h, w) != (H, W):  # 3-channel contiguous resizes are much faster than one 9-channel one
        up = lambda x: None if x is None else cv2.resize(x, (W, H), interpolation=cv2.INTER_LINEAR)
        inv_src, diffuse, spec, spec_src = up(inv_src), up(diffuse), up(spec), up(spec_src)
    img = np.ascontiguousarray(img)
    if spec_src is not None:
        # the source's own sheen is not albedo: remove it (keeping at least half the pixel)
        img = np.maximum(cv2.subtract(img, spec_src), img * np.float32(0.5))
    # OpenCV's element-wise ops are several times faster than numpy's at this size
    out = cv2.multiply(img, inv_src)
    amax = float(opts.albedo_max)
    cv2.min(out, (amax, amax, amax, amax), dst=out)  # albedo (a bare float would only clip channel 0)
    cv2.multiply(out, diffuse, dst=out)
    if spec is not None:
        cv2.add(out, spec, dst=out)
    return out


def shading_fields(n: np.ndarray, face: np.ndarray, source: SourceLighting, target: TargetLighting,
                   specular: float = 1.0, options: Optional[RenderOptions] = None):
    """The smooth per-normal factors, each (h, w, 3) float32 contiguous or None:
    (albedo_scale / E_src(n), E_tgt(n) / pi, target specular radiance or None when
    ``specular`` is 0, source specular radiance or None unless ``remove_source_specular``)."""
    opts = options or RenderOptions()
    n = np.asarray(n, np.float32)
    src_sh = np.asarray(source.sh, np.float32)
    e_src = eval_sh(src_sh, n)
    avg = np.maximum(0.282095 * src_sh[0], 1e-8)  # sphere-average irradiance per channel
    np.maximum(e_src, opts.source_floor * avg, out=e_src)
    inv_src = np.float32(source.albedo_scale) / e_src
    diffuse = np.maximum(eval_sh(np.asarray(target.sh, np.float32), n), 0.0) * np.float32(1.0 / math.pi)
    spec = spec_src = None
    if specular > 0 or opts.remove_source_specular:
        nz = np.clip(n[..., 2], 0.0, 1.0)
        refl = np.empty_like(n)
        refl[..., 0] = 2.0 * nz * n[..., 0]
        refl[..., 1] = 2.0 * nz * n[..., 1]
        refl[..., 2] = 2.0 * nz * n[..., 2] - 1.0
        f0 = np.float32(opts.f0_skin)
        fres = np.minimum(f0 + (1.0 - f0) * (1.0 - nz) ** 5, opts.fresnel_max)
        fres *= opts.other_weight + (1.0 - opts.other_weight) * np.asarray(face, np.float32)
        fres = fres.astype(np.float32)
        if specular > 0:
            glossy = sample(target.specular_map, refl, target.pan_deg)
            spec = np.ascontiguousarray(glossy * (np.float32(specular) * fres)[..., None], dtype=np.float32)
        if opts.remove_source_specular:
            # source radiance SH = irradiance SH / clamped-cosine lobe (the glossy lobe is much
            # sharper than order 2, so the order-2 radiance stands in for its prefiltered version)
            rad = src_sh / COSINE_LOBE[SH_BAND][:, None].astype(np.float32)
            l_src = np.maximum(eval_sh(rad, refl), 0.0) * np.float32(source.albedo_scale / math.pi)
            spec_src = np.ascontiguousarray(l_src * fres[..., None], dtype=np.float32)
    return (np.ascontiguousarray(inv_src, dtype=np.float32), np.ascontiguousarray(diffuse, dtype=np.float32),
            spec, spec_src)
