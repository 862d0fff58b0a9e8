"""Render: de-light the person with the source estimate and shade them with the target HDRI.

    albedo   = min(albedo_scale * I / E_src(n), albedo_max) * (1 - sheen)     (full resolution)
    radiance = albedo / pi * E_tgt(n, p) + S_tgt(n, p)

**Target diffuse light** E_tgt: the HDRI is split into its dominant light sources (the sun, a
window, a softbox: found by :func:`extract_lights`, each a direction, an RGB power and an angular
size) and the rest of the map (order-2 SH irradiance of the residual). Each light is shaded
sharply, with a clamped-cosine terminator softened by its size, and *shadowed*: a screen-space
ray is marched from every pixel towards the light over the geometry's depth map (nose, chin,
hair and jaw cast shadows that move with ``--pan``). Skin gets a soft subsurface look: the
cosine is wrapped a little around the terminator and the shadow edges are blurred, more in red
than in blue, and the SH part's higher bands are damped the same way. Without lights (an
overcast map) the whole map is SH, as before.

**Target specular** S_tgt = F(n.v) * (glossy residual map at the reflection vector + each light's
highlight * its visibility), by material: skin (glossy lobe, skin Fresnel), lips (glossier,
stronger), hair (broad sheen), everything else (rough, weak); ``--specular`` scales it all.
The eyes get mirror-like catchlights of the HDRI's dominant lights on a corneal bulge, inside
the eye opening only (after the input's own catchlights are removed), at full resolution.

**Materials** come from the face mesh (skin = face, lips, eyes) and a head prior around it: hair
is what lies in the head region outside the face and does not look like the face's skin. Dark
glossy hair's brightness in the input is mostly reflection of the *source* light (sheen), not
albedo: in the hair, what the de-lit albedo has above a local dark floor is taken as sheen and
removed, and the target's own sheen is rendered instead.

E_src is the order-2 SH irradiance of :mod:`.lighting`. Everything that depends only on normals,
depth and materials is smooth, so it is computed at the geometry's working resolution and
upsampled; only the final multiply-add runs per full-resolution pixel, so the image's own fine
detail (pores, hair strands, stubble) is kept exactly: that is the ratio-image approach.

The output is scene-linear radiance in the HDRI's units; :meth:`TargetHDRI.exposure` gives the
scale that the compositor applies to both the person and the HDRI background.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional, Tuple

import cv2
import numpy as np

from .. import kernels
from ..colour import REC709_LUMA, luminance, to_linear
from ..envmap import (COSINE_LOBE, SH_BAND, direction_to_uv, downsample, eval_sh, irradiance_sh, pixel_grid,
                      project_sh, sample, solid_angles, uv_to_direction)
from ..settings import default_of
from ..types import Geometry, Perception, SourceLighting, TargetLighting

SH_MAP_WIDTH = 128  # the HDRI is area-averaged to 128 x 64 for the SH projection
SPEC_MAP_WIDTH = 64  # prefiltered glossy maps: 64 x 32 (the lobes are >= ~10 degrees wide)
LIGHT_MAP_WIDTH = 64  # lights are found on a 64 x 32 map
EXPOSURE_MAX_SWING = 2.5  # auto exposure at a pan stays within 2.5x (1.3 stops) of the rotation-invariant one
# auto exposure: a frontal face of albedo 0.4 gets this mean linear level (sRGB ~0.58), about where video
# exposes faces (skin at 60-70% of white where it faces the light). At 0.2 (sRGB ~0.48) the relit person
# came out darker than the camera had exposed them on every test clip (0.6-1.0 of the input's level),
# which also makes their 8-bit steps and the input's noise a larger share of what is left
EXPOSURE_TARGET = 0.3
GLOSSY_EXPONENT = 16.0  # Phong-equivalent exponent of the legacy ``specular_map`` (kept for API users)
SKIN_EXPONENT = 24.0  # skin's glossy lobe (Beckmann m ~0.3-0.35, Weyrich et al. 2006)
ROUGH_EXPONENT = 6.0  # hair sheen / cloth: broad
LIPS_EXPONENT = 48.0
Y00 = 0.282095


@dataclass
class RenderOptions:
    # Fresnel reflectance at normal incidence and its cap at grazing angles (rough surfaces never
    # reach mirror Fresnel) per material
    f0_skin: float = 0.028  # skin, n = 1.4
    f0_hair: float = 0.046  # hair cuticle, n = 1.55
    f0_other: float = 0.03
    fresnel_max: float = 0.12
    fresnel_max_other: float = 0.06  # cloth, long hair: rough and self-shadowing, little grazing gain
    # specular weight per material, relative to a physically plain reflection of the map; skin's
    # is below 1 because the input's own sheen stays in the de-lit albedo (remove_source_specular
    # is off): a full reflection on top veils the face's fine detail (pores, lashes) in a bright sky
    # (its measured cost in `relight eval`: see ``fill``)
    skin_weight: float = 0.7
    lips_weight: float = 1.6
    hair_weight: float = 1.0
    other_weight: float = 0.35  # clothes, neck, arms, long hair: rough (their own sheen is in the input already)
    albedo_max: float = 1.0
    source_floor: float = 0.2  # min source irradiance, fraction of its sphere average (bounds the de-lighting gain)
    work_size: int = 320  # used only when the geometry has no work_normals
    remove_source_specular: bool = False  # subtract the source's glossy reflection (SH estimate) before de-lighting
    # lights and shadows
    shadows: bool = True
    shadow_size: int = 160  # longest side of the shadow march
    shadow_reach: float = 0.6  # how far rays are marched, x the face width (or x 0.25 of the person's height)
    shadow_bias: float = 1.0  # working pixels of depth tolerance
    normal_sigma: float = 0.12  # uncertainty of the estimated normals (radians): softens terminators and highlights
    # subsurface look of skin: cosine wrap and shadow-edge blur per channel (R, G, B)
    sss_wrap: Tuple[float, float, float] = (0.12, 0.06, 0.04)
    sss_blur: Tuple[float, float, float] = (1.2, 0.8, 0.7)  # working pixels
    sss_sh_damp: Tuple[float, float, float] = (0.85, 0.93, 0.95)  # band-2 factor of the skin's SH shading
    # hair
    hair_sheen_floor: float = 2.5  # in the hair, albedo above this x the local dark floor is sheen
    hair_head_scale: float = 0.85  # head region around the face (x face size)
    # eyes
    catchlights: bool = True
    cornea_f0: float = 0.025
    # fill: the target's diffuse irradiance is kept above this fraction of what a frontal face
    # receives on average (a soft floor, sqrt(E^2 + floor^2)), as a cinematographer's fill light
    # keeps the shadow side of a hard key readable. Without it a hard key (the studio preset)
    # crushes half the face to a few 8-bit codes: its detail is lost and what is left is
    # mostly quantisation that flickers as the face moves. Its default is the user setting's
    # (``--fill``, RelightSettings.fill), which the pipeline passes here.
    # Measured trade-off (keep it in mind before changing either): with skin_weight, it costs
    # `relight eval`'s light-dir 0.6 degrees (17.0 -> 17.6 when both came in, si-RMSE 0.461 ->
    # 0.458; later, undoing either alone gave back 0.2, both 0.5). Its sqrt knee also lifts
    # half-tones (twice the floor: +12%), and that part helps video: a fourth-power knee,
    # (E^4 + floor^4)^(1/4), acting only near the floor, gave back 0.2 degrees but lowered the
    # temporal sweep's detail SSIM by 0.005-0.007 and raised its warp-error ratio by
    # 0.002-0.005 on s18 and d6 under forest.
    fill: float = default_of("fill")


# ----------------------------------------------------------------------------- lights
@dataclass
class Light:
    """A dominant light source of an HDRI, in map coordinates (pan independent)."""

    u: float
    v: float
    power: np.ndarray  # (3,) RGB irradiance on a surface facing it (integral of its radiance over its solid angle)
    radius: float  # angular radius in radians (the spread of its power)

    def direction(self, pan_deg: float = 0.0) -> np.ndarray:
        return uv_to_direction(self.u, self.v, pan_deg).astype(np.float64)


def extract_lights(env: np.ndarray, max_lights: int = 3, min_fraction: float = 0.03, contrast: float = 3.0,
                   max_radius_deg: float = 20.0) -> Tuple[List[Light], np.ndarray]:
    """The dominant light sources of an equirect map (median-cut in spirit: the brightest compact
    regions, greedily), and the map with them taken out.

    A light is the set of pixels, within ``max_radius_deg`` of the brightest remaining region
    (power density blurred, so a sun or a window wins over a hot pixel), that are ``contrast``
    times brighter than their surroundings (the median of an annulus around it); its power is
    what they have above the surroundings, summed over solid angle, and it is kept if that is at
    least ``min_fraction`` of the whole map's power (so an overcast sky has none). The residual
    has the surroundings' level in their place, so residual + lights = the map."""
    env = np.maximum(np.nan_to_num(np.asarray(env, np.float32)[..., :3]), 0.0)
    h, w = env.shape[:2]
    u, v = pixel_grid(w, h)
    dirs = uv_to_direction(u, v).astype(np.float32)
    omega = np.broadcast_to(solid_angles(w, h), (h, w)).astype(np.float32)
    res = env.copy()
    total = float((luminance(env) * omega).sum())
    lights: List[Light] = []
    if total <= 0:
        return lights, res
    cos_in = math.cos(math.radians(max_radius_deg))
    cos_out = math.cos(math.radians(2.0 * max_radius_deg))
    pad = 4
    for _ in range(max_lights):
        lum = luminance(res)
        dens = cv2.copyMakeBorder((lum * omega).astype(np.float32), 0, 0, pad, pad, cv2.BORDER_WRAP)
        dens = cv2.GaussianBlur(dens, (0, 0), 1.0, borderType=cv2.BORDER_REPLICATE)[:, pad:-pad]
        r0, c0 = np.unravel_index(int(np.argmax(dens)), dens.shape)
        cosang = dirs @ dirs[r0, c0]
        near = cosang > cos_in
        ring = (cosang > cos_out) & ~near
        if not ring.any():
            break
        surround = float(np.median(lum[ring]))
        sel = near & (lum > contrast * max(surround, 1e-9))
        if not sel.any():
            break
        # what the light adds above the surroundings, keeping each pixel's colour
        excess = res[sel] * np.maximum(1.0 - surround / np.maximum(lum[sel], 1e-12), 0.0)[:, None]
        wgt = luminance(excess) * omega[sel]
        power = (excess * omega[sel, None]).sum(axis=0)
        if float(luminance(power)) < min_fraction * total:
            break
        d = (dirs[sel] * wgt[:, None]).sum(axis=0)
        d /= max(float(np.linalg.norm(d)), 1e-12)
        spread = float(np.sqrt(max((wgt * np.arccos(np.clip(dirs[sel] @ d, -1, 1)) ** 2).sum() / wgt.sum(), 0.0)))
        res[sel] -= excess
        lu, lv = direction_to_uv(d)
        lights.append(Light(u=float(lu), v=float(lv), power=power.astype(np.float64),
                            radius=max(spread, math.radians(1.0))))
    return lights, res


# ----------------------------------------------------------------------------- target
class TargetHDRI:
    """The target HDRI prepared once for rendering: what does not depend on the pan (the small
    map for the SH projection, the dominant lights and the residual map, the glossy prefiltered
    maps), plus a small cache of per-pan SH.

    Owned by whoever renders (the :class:`~relight.pipeline.Relighter`); no module-level state."""

    def __init__(self, hdri: np.ndarray, max_lights: int = 3):
        rgb = np.asarray(hdri, dtype=np.float32)
        rgb = rgb[..., :3] if rgb.ndim == 3 else np.repeat(rgb[..., None], 3, axis=2)
        rgb = np.nan_to_num(np.maximum(rgb, 0.0), nan=0.0, posinf=65504.0)
        self.small = downsample(rgb, SH_MAP_WIDTH)
        spec_small = downsample(self.small, SPEC_MAP_WIDTH)
        self.specular_map = prefilter_glossy(spec_small, GLOSSY_EXPONENT)
        self.lights, residual = extract_lights(downsample(self.small, LIGHT_MAP_WIDTH), max_lights=max_lights)
        if self.lights:
            self.residual = residual
            spec_residual = downsample(residual, SPEC_MAP_WIDTH)
        else:
            self.residual = None
            spec_residual = spec_small
        self.glossy_maps = {e: prefilter_glossy(spec_residual, e) for e in (ROUGH_EXPONENT, SKIN_EXPONENT)}
        self._sh_cache: "OrderedDict[float, tuple]" = OrderedDict()
        azimuth_mean = np.ascontiguousarray(np.broadcast_to(self.small.mean(axis=1, keepdims=True), self.small.shape))
        self.azimuth_average_sh = irradiance_sh(project_sh(azimuth_mean, 0.0, max_width=SH_MAP_WIDTH)).astype(np.float32)

    def _both_sh(self, pan_deg: float):
        key = round(float(pan_deg) % 360.0, 4)
        both = self._sh_cache.get(key)
        if both is None:
            full = irradiance_sh(project_sh(self.small, key, max_width=SH_MAP_WIDTH)).astype(np.float32)
            resid = None
            if self.residual is not None:
                resid = irradiance_sh(project_sh(self.residual, key, max_width=LIGHT_MAP_WIDTH)).astype(np.float32)
            both = self._sh_cache[key] = (full, resid)
            if len(self._sh_cache) > 64:  # autorotate: a new pan every frame
                self._sh_cache.popitem(last=False)
        return both

    def irradiance(self, pan_deg: float) -> np.ndarray:
        """Camera-frame irradiance SH (9, 3) of the whole map at ``pan_deg``."""
        return self._both_sh(pan_deg)[0]

    def target(self, pan_deg: float) -> TargetLighting:
        """The lighting at one pan: irradiance SH, the lights in the camera frame, the residual's
        SH and the glossy maps (pan applied at lookup)."""
        full, resid = self._both_sh(pan_deg)
        lights = [(lt.direction(pan_deg), lt.power, lt.radius) for lt in self.lights]
        return TargetLighting(sh=full, specular_map=self.specular_map, pan_deg=float(pan_deg), lights=lights,
                              residual_sh=resid, glossy_maps=self.glossy_maps)

    def exposure(self, pan_deg: Optional[float] = None, albedo: float = 0.4, target: float = EXPOSURE_TARGET,
                 max_swing: float = EXPOSURE_MAX_SWING) -> float:
        """Scale k such that a frontal face of albedo ``albedo`` lit by the HDRI has a mean linear
        level of ``target`` after k. The face is modelled as the visible half of a sphere (normals
        weighted by their projected area). With ``pan_deg=None`` the map is azimuth-averaged
        first, so k does not depend on the rotation. At a given pan, k stays
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
                  target: float = EXPOSURE_TARGET) -> float:
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


# ----------------------------------------------------------------------------- materials
@dataclass
class Materials:
    """Soft material weights at the working resolution, each (h, w) float32 in [0, 1]."""

    skin: np.ndarray
    lips: np.ndarray
    hair: np.ndarray

    @staticmethod
    def none(h: int, w: int) -> "Materials":
        z = np.zeros((h, w), np.float32)
        return Materials(skin=z, lips=z, hair=z)


def material_weights(perception: Perception, face: np.ndarray, matte: np.ndarray, albedo: Optional[np.ndarray],
                     full_hw: Tuple[int, int], opts: Optional[RenderOptions] = None) -> Materials:
    """Skin, lips and hair weights at the working resolution of ``face`` (h, w).

    Skin is the face mesh's area (its feathered weight) without the lips; lips are the mesh's
    lip polygon. Hair: inside the person, within a head region around each face (an ellipse
    reaching above the forehead), outside the face mesh, where the de-lit ``albedo`` (h, w, 3)
    does not look like the face's own skin (chromaticity and level): ears, a bald scalp or the
    neck stay skin-like."""
    opts = opts or RenderOptions()
    h, w = face.shape
    if not perception.face_landmarks:
        return Materials.none(h, w)
    from ..models.mediapipe_backend import NUM_MESH_LANDMARKS, face_mesh_regions

    H, W = full_hw
    sx, sy = w / float(W), h / float(H)
    regions = face_mesh_regions()
    lips = np.zeros((h, w), np.uint8)
    head = np.zeros((h, w), np.float32)
    for lm in perception.face_landmarks:
        xy = np.asarray(lm, np.float64)[:NUM_MESH_LANDMARKS, :2] * (sx, sy)
        hull = cv2.convexHull(np.round(xy[regions["lips"]] * 16).astype(np.int32))
        cv2.fillConvexPoly(lips, hull, 1, lineType=cv2.LINE_AA, shift=4)
        fw, fh = float(np.ptp(xy[:, 0])), float(np.ptp(xy[:, 1]))
        if fw < 2 or fh < 2:
            continue
        cx, cy = float(xy[:, 0].mean()), float(xy[:, 1].mean()) - 0.25 * fh
        ax, ay = opts.hair_head_scale * fw, opts.hair_head_scale * 1.05 * fh
        # the scalp's hair: full weight down to the nose tip, none from the mouth down (neck and
        # jaw are skin; long hair hanging beside the jaw is left to the generic material)
        y_nose, y_mouth = float(xy[1, 1]), float(xy[13, 1])
        x0, x1 = max(0, int(cx - 1.15 * ax)), min(w, int(cx + 1.15 * ax) + 2)
        y0, y1 = max(0, int(cy - 1.15 * ay)), min(h, int(y_mouth) + 2)
        if x1 <= x0 or y1 <= y0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + np.float32(0.5)
        r = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
        fade = np.clip((y_mouth - yy) / max(y_mouth - y_nose, 1.0), 0.0, 1.0)
        np.maximum(head[y0:y1, x0:x1], np.clip((1.15 - r) / 0.3, 0.0, 1.0) * fade, out=head[y0:y1, x0:x1])
    lips_w = cv2.GaussianBlur(lips.astype(np.float32), (0, 0), 0.7)
    skin = np.clip(face - lips_w, 0.0, 1.0)
    hair = head * (1.0 - face) * np.clip((matte - 0.5) * 4.0, 0.0, 1.0)
    cand = hair > 0.01
    if albedo is not None and cand.any():
        sel = (face > 0.8) & (lips_w < 0.1)
        if sel.sum() >= 10:
            def chroma_level(a):
                a = np.maximum(a.astype(np.float32), 1e-4)
                la = luminance(a)
                return np.log(a / la[..., None]), la  # log chromaticity (luminance 1), level
            cs, ls = chroma_level(albedo[sel])
            mu = np.median(cs, axis=0)
            spread = np.maximum(np.percentile(np.abs(cs - mu), 75, axis=0), 0.08)
            ch, lh = chroma_level(albedo[cand])
            dc = np.sqrt((((ch - mu) / spread) ** 2).sum(axis=-1) / 3.0)
            dl = np.abs(np.log(lh / float(np.median(ls)))) / 0.5
            hair[cand] *= 1.0 - np.exp(-0.5 * (dc * dc + dl * dl))  # 1 - skin-likeness
    return Materials(skin=skin.astype(np.float32), lips=(lips_w * face).astype(np.float32), hair=hair.astype(np.float32))


def hair_sheen(albedo_lum: np.ndarray, hair: np.ndarray, face_px: float, floor: float) -> np.ndarray:
    """The fraction of the de-lit albedo that is the source's sheen, in the hair (h, w): what
    lies above ``floor`` x the hair's local dark level (a grey erosion over ~10% of the face,
    blurred)."""
    if not (hair > 0.05).any():
        return np.zeros_like(hair)
    k = max(3, int(round(0.1 * face_px)) | 1)
    inside = (hair > 0.05).astype(np.float32)
    big = np.where(inside > 0, albedo_lum, np.float32(10.0)).astype(np.float32)
    low = cv2.erode(big, np.ones((k, k), np.uint8), borderType=cv2.BORDER_REPLICATE)
    # smoothed within the hair only (normalised convolution)
    num = cv2.GaussianBlur(np.minimum(low, 1.0) * inside, (0, 0), float(k))
    low = num / np.maximum(cv2.GaussianBlur(inside, (0, 0), float(k)), 1e-3)
    sheen = np.clip(1.0 - floor * low / np.maximum(albedo_lum, 1e-6), 0.0, 1.0)
    return (sheen * hair).astype(np.float32)


# ----------------------------------------------------------------------------- shadows
def shadow_map(depth: np.ndarray, direction: np.ndarray, radius: float, reach: float, bias: float = 1.0,
               size: int = 160, inside: Optional[np.ndarray] = None) -> np.ndarray:
    """Visibility (h, w) in [0, 1] of a distant light along camera-frame ``direction`` over a
    depth map (working pixels, larger = nearer): a screen-space ray from every pixel towards
    the light, marched one pixel at a time up to ``reach`` pixels; a pixel is in shadow when the
    depth map rises above the ray. Soft: the penumbra widens with the distance to the occluder
    by the light's angular ``radius``; 1 where the light is (nearly) along the view axis.
    ``inside`` (h, w) bool: where the depth is the person's (elsewhere nothing occludes: a ray
    that leaves the person passes behind or beside them, not into a wall)."""
    h, w = depth.shape
    lx, ly, lz = (float(c) for c in direction)
    lateral = math.hypot(lx, ly)
    if lateral < 0.05 or reach < 1.0:
        return np.ones((h, w), np.float32)
    f = min(1.0, size / float(max(h, w)))
    far = np.float32(-1e6)
    occ = depth.astype(np.float32)
    if inside is not None:
        occ = np.where(inside, occ, far)
    if f < 1.0:
        sh, sw = max(1, round(h * f)), max(1, round(w * f))
        d = cv2.resize(depth.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA) * np.float32(f)
        occ = cv2.resize(occ, (sw, sh), interpolation=cv2.INTER_NEAREST)
        occ = np.where(occ > far / 2, d, far).astype(np.float32)
    else:
        sh, sw, d = h, w, depth.astype(np.float32)
    step = 1.0 / lateral  # 3-D distance per one-pixel lateral step
    dx, dy, dz = lx * step, -ly * step, lz * step  # image rows go down
    n_steps = int(min(max(2, reach * f), 64))
    b = float(bias * f)
    tan_r = max(math.tan(radius), 0.02)
    if kernels.available():  # the same march compiled (one call instead of ~5 per step)
        occl = kernels.shadow_march(occ, d, dx, dy, dz, n_steps, b, tan_r, step, float(far))
    else:
        occl = _march(occ, d, dx, dy, dz, n_steps, b, tan_r, step, far)
    np.clip(occl, 0.0, 1.0, out=occl)
    vis = 1.0 - occl
    vis = cv2.GaussianBlur(vis, (0, 0), 1.0)
    if f < 1.0:
        vis = cv2.resize(vis, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(vis, 0.0, 1.0).astype(np.float32)


def _march(occ, d, dx, dy, dz, n_steps, b, tan_r, step, far) -> np.ndarray:
    """:func:`relight.kernels.shadow_march` in OpenCV calls (without numba)."""
    sh, sw = d.shape
    occl = np.zeros((sh, sw), np.float32)
    shift = np.zeros((2, 3), np.float32)
    shift[0, 0] = shift[1, 1] = 1.0
    for k in range(1, n_steps + 1):
        # the depth map seen k steps towards the light: out(x) = occ(x + k d); bilinear (smooth
        # shadow edges); next to the person's outline it blends with the far value and reads as
        # no occluder, which only trims occluders by a fraction of a pixel
        shift[0, 2], shift[1, 2] = k * dx, k * dy
        s = cv2.warpAffine(occ, shift, (sw, sh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=float(far))
        soft = 0.5 + tan_r * k * step  # penumbra half-width grows with distance
        rise = cv2.subtract(s, d)
        rise = cv2.addWeighted(rise, 1.0 / soft, rise, 0.0, -(k * dz + b) / soft)
        np.maximum(occl, rise, out=occl)
    return occl


# ----------------------------------------------------------------------------- rendering
@dataclass
class PersonFields:
    """The relit person's smooth per-pixel factors, at the geometry's working resolution:
    ``fields`` (h, w, 12) float32 = albedo_scale / E_src(n) (3), E_tgt / pi (3), target specular
    radiance (3), source specular radiance to remove (3). Applied per full-resolution pixel:

        albedo = min(max(I - S_src, I / 2) * inv_src, albedo_max)
        person = albedo * diffuse + spec            (+ the eyes' catchlights, full resolution)
    """

    fields: np.ndarray
    size: Tuple[int, int]  # (H, W) of the frame
    albedo_max: float
    catchlights: bool  # whether the eyes get the HDRI's catchlights (see eye_boxes)


def person_fields(input_linear: np.ndarray, perception: Perception, geometry: Geometry, source: SourceLighting,
                  target: TargetLighting, specular: float = 1.0, options: Optional[RenderOptions] = None,
                  work_image: Optional[np.ndarray] = None) -> PersonFields:
    """Everything of the render that depends on normals, depth, materials and lights, at the
    working resolution. ``input_linear``: the frame, float32 linear (or uint8 sRGB);
    ``work_image``: the input already area-averaged to that resolution, linear."""
    opts = options or RenderOptions()
    H, W = np.shape(input_linear)[:2]
    if geometry.work_normals is not None:
        n = geometry.work_normals.astype(np.float32, copy=False)
    else:
        s = min(1.0, opts.work_size / max(H, W))
        n = cv2.resize(geometry.full_normals(), (max(1, round(W * s)), max(1, round(H * s))),
                       interpolation=cv2.INTER_AREA)
        n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
    h, w = n.shape[:2]
    face = _at(geometry.face_at_work(), h, w, cv2.INTER_LINEAR)
    depth = geometry.work_depth if geometry.work_depth is not None and geometry.work_depth.shape == (h, w) else None
    if work_image is not None and work_image.shape[:2] == (h, w):
        small = np.asarray(work_image, np.float32)[..., :3]
    else:  # materials and hair sheen only: coarse is fine
        small = _at(to_linear(np.asarray(input_linear))[..., :3], h, w, cv2.INTER_LINEAR)
    matte = _at(perception.matte, h, w, cv2.INTER_LINEAR)

    inv_src, spec_src = source_fields(n, face, source, opts)
    face_px = _face_size(perception, w / float(W))
    mats = material_weights(perception, face, matte, small * inv_src, (H, W), opts)
    has_hair = bool(mats.hair.max() > 0)
    if has_hair:
        sheen = hair_sheen(luminance(small * inv_src), mats.hair, face_px, opts.hair_sheen_floor)
        inv_src *= (1.0 - sheen)[..., None]
    diffuse, spec, spec_hair = target_fields(n, depth, mats, target, specular, face_px, opts, matte > 0.5,
                                             split_hair=True)
    if spec_hair is not None:
        # hair's sheen follows its strands: instead of a smooth layer on top (a grey helmet),
        # it goes through the albedo, divided by the hair's local mean albedo (per channel): the
        # same mean and colour, modulated by the strands' own light and dark detail
        hair_rgb = small * inv_src * mats.hair[..., None]
        k = max(1.0, 0.1 * face_px) if face_px > 0 else 2.0
        mean = cv2.GaussianBlur(hair_rgb, (0, 0), k) / np.maximum(cv2.GaussianBlur(mats.hair, (0, 0), k), 1e-3)[..., None]
        diffuse += spec_hair / np.maximum(mean, 0.01)
    zero = np.zeros((h, w, 3), np.float32)
    fields = np.concatenate([inv_src, diffuse, zero if spec is None else spec, zero if spec_src is None else spec_src],
                            axis=-1).astype(np.float32)
    return PersonFields(fields=fields, size=(H, W), albedo_max=float(opts.albedo_max),
                        catchlights=catchlights_on(perception, target, specular, opts))


def deflickered(fields: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """:class:`PersonFields`' ``fields`` for the input multiplied by ``gain``, (h, w, 3) at the
    fields' resolution or (3,) per channel (the video's de-flicker,
    :meth:`~relight.stages.temporal.TemporalStabilizer.deflicker`):
    ``max(g I - S_src, g I / 2) * inv_src = max(I - S_src / g, I / 2) * (g inv_src)``, a new array."""
    g = np.asarray(gain, np.float32)
    out = np.array(fields, np.float32, copy=True)
    out[..., 0:3] *= g
    out[..., 9:12] /= g
    return out


def catchlights_on(perception: Perception, target: TargetLighting, specular: float = 1.0,
                   options: Optional[RenderOptions] = None) -> bool:
    """Whether the eyes get the HDRI's catchlights (see :func:`eye_boxes`)."""
    opts = options or RenderOptions()
    return bool(opts.catchlights and specular > 0 and perception.face_landmarks and target.lights)


def upsample_fields(fields: np.ndarray, H: int, W: int, box: Optional[Tuple[int, int, int, int]] = None) -> np.ndarray:
    """Working-resolution fields -> (H, W, C) bilinear (``cv2.resize``'s convention), or only the
    full-resolution box (y0, y1, x0, x1)."""
    h, w, C = fields.shape
    if box is None or box == (0, H, 0, W):
        # 3-channel contiguous resizes are much faster than one many-channel one
        parts = [cv2.resize(np.ascontiguousarray(fields[..., c:c + 3]), (W, H), interpolation=cv2.INTER_LINEAR)
                 for c in range(0, C, 3)]
        return np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
    y0, y1, x0, x1 = box
    mx = np.clip((np.arange(x0, x1, dtype=np.float32) + 0.5) * (w / float(W)) - 0.5, 0, w - 1)
    my = np.clip((np.arange(y0, y1, dtype=np.float32) + 0.5) * (h / float(H)) - 0.5, 0, h - 1)
    # only the working pixels under the box (the taps of its first to last sample)
    fx0, fy0 = int(mx[0]), int(my[0])
    part = fields[fy0:min(h, int(my[-1]) + 2), fx0:min(w, int(mx[-1]) + 2)]
    gx, gy = np.meshgrid(mx - np.float32(fx0), my - np.float32(fy0))
    parts = [cv2.remap(np.ascontiguousarray(part[..., c:c + 3]), gx, gy, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE) for c in range(0, C, 3)]
    return np.concatenate(parts, axis=-1)


def apply_fields(img: np.ndarray, pf: PersonFields, perception: Perception, geometry: Geometry,
                 target: TargetLighting, specular: float = 1.0, options: Optional[RenderOptions] = None,
                 box: Optional[Tuple[int, int, int, int]] = None) -> np.ndarray:
    """The relit person at full resolution (the numpy reference of the per-pixel step), over the
    whole frame or only ``box`` (y0, y1, x0, x1; ``img`` is then that box of the frame)."""
    opts = options or RenderOptions()
    H, W = pf.size
    f = upsample_fields(pf.fields, H, W, box)
    inv_src, diffuse, spec, spec_src = (np.ascontiguousarray(f[..., c:c + 3]) for c in (0, 3, 6, 9))
    img = np.ascontiguousarray(np.asarray(img, np.float32)[..., :3])
    # the source's own sheen is not albedo: remove it (keeping at least half the pixel)
    img = np.maximum(cv2.subtract(img, spec_src), img * np.float32(0.5))
    # OpenCV's element-wise ops are several times faster than numpy's at this size
    out = cv2.multiply(img, inv_src)
    amax = float(pf.albedo_max)
    cv2.min(out, (amax, amax, amax, amax), dst=out)  # albedo (a bare float would only clip channel 0)
    origin = (0, 0) if box is None else (box[0], box[2])
    if pf.catchlights:
        openings = {}  # each eye's opening, made once for both steps
        _remove_catchlights(out, perception, origin, (H, W), openings)
    cv2.multiply(out, diffuse, dst=out)
    cv2.add(out, spec, dst=out)
    if pf.catchlights:
        _add_catchlights(out, perception, geometry, target, specular, opts, origin, (H, W), openings)
    return out


def eye_boxes(perception: Perception, size: Tuple[int, int]) -> List[Tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) around each iris: the only full-resolution pixels the catchlights touch."""
    return [(y0, y1, x0, x1) for _, _, _, (x0, x1, y0, y1) in _irises(perception, *size)]


def render_person(input_linear: np.ndarray, perception: Perception, geometry: Geometry, source: SourceLighting,
                  target: TargetLighting, specular: float = 1.0, options: Optional[RenderOptions] = None,
                  work_image: Optional[np.ndarray] = None) -> np.ndarray:
    """The relit person, (H, W, 3) float32 scene-linear radiance in the HDRI's units (no
    exposure). Pixels outside the matte are finite but meaningless."""
    pf = person_fields(input_linear, perception, geometry, source, target, specular, options, work_image)
    return apply_fields(input_linear, pf, perception, geometry, target, specular, options)


def _at(x: np.ndarray, h: int, w: int, interpolation=cv2.INTER_AREA) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.shape[:2] == (h, w):
        return x
    return cv2.resize(x, (w, h), interpolation=interpolation)


def _face_size(perception: Perception, scale: float) -> float:
    """The widest face's width in working pixels (or 1/4 of the working image's width)."""
    if perception.face_landmarks:
        return max(float(np.ptp(np.asarray(f)[:, 0])) for f in perception.face_landmarks) * scale
    return 0.0


def source_fields(n: np.ndarray, face: np.ndarray, source: SourceLighting, opts: RenderOptions):
    """(albedo_scale / E_src(n), the source's specular radiance or None) at the working resolution."""
    src_sh = np.asarray(source.sh, np.float32)
    e_src = eval_sh(src_sh, n)
    avg = np.maximum(Y00 * src_sh[0], 1e-8)  # sphere-average irradiance per channel
    np.maximum(e_src, opts.source_floor * avg, out=e_src)
    inv_src = np.ascontiguousarray(np.float32(source.albedo_scale) / e_src, dtype=np.float32)
    spec_src = None
    if opts.remove_source_specular:
        # E_true = E * pi / albedo_scale (input units); radiance SH = irradiance SH / cosine lobe
        refl, nz = _reflect(n)
        rad = src_sh / COSINE_LOBE[SH_BAND][:, None].astype(np.float32)
        l_src = np.maximum(eval_sh(rad, refl), 0.0) * np.float32(math.pi / max(source.albedo_scale, 1e-8))
        fres = _fresnel(nz, opts.f0_skin, opts.fresnel_max) * (opts.other_weight + (1.0 - opts.other_weight) * face)
        spec_src = np.ascontiguousarray(l_src * fres[..., None], dtype=np.float32)
    return inv_src, spec_src


def _reflect(n: np.ndarray):
    """Mirror direction of the view vector (0, 0, 1) about the normals, and n.v."""
    nz = np.clip(n[..., 2], 0.0, 1.0)
    refl = np.empty_like(n)
    refl[..., 0] = 2.0 * nz * n[..., 0]
    refl[..., 1] = 2.0 * nz * n[..., 1]
    refl[..., 2] = 2.0 * nz * n[..., 2] - 1.0
    return refl, nz


def _fresnel(nz: np.ndarray, f0, fmax) -> np.ndarray:
    return np.minimum(f0 + (1.0 - f0) * (1.0 - nz) ** 5, fmax).astype(np.float32)


def _skin_sh(sh: np.ndarray, damp) -> np.ndarray:
    """SH irradiance with the band-2 (and, by the square root, band-1) coefficients damped per
    channel: a blurrier, redder light transport, the look of subsurface scattering."""
    out = np.array(sh, np.float32, copy=True)
    d = np.asarray(damp, np.float32)
    out[1:4] *= np.sqrt(d)[None, :]
    out[4:9] *= d[None, :]
    return out


def target_fields(n: np.ndarray, depth: Optional[np.ndarray], mats: Materials, target: TargetLighting,
                  specular: float, face_px: float, opts: RenderOptions, inside: Optional[np.ndarray] = None,
                  split_hair: bool = False):
    """(E_tgt / pi (h, w, 3), specular radiance (h, w, 3) or None) at the working resolution;
    with ``split_hair`` a third field: the hair's part of the specular (taken out of the second)."""
    h, w = n.shape[:2]
    skin = mats.skin[..., None]
    lights = list(target.lights or [])
    base_sh = target.residual_sh if (lights and target.residual_sh is not None) else target.sh
    base_sh = np.asarray(base_sh, np.float32)
    e = eval_sh(base_sh, n)
    sbox = _bbox(mats.skin > 0.01)
    if sbox is not None:
        ys, xs = sbox
        e[ys, xs] += skin[ys, xs] * (eval_sh(_skin_sh(base_sh, opts.sss_sh_damp), n[ys, xs]) - e[ys, xs])
    np.maximum(e, 0.0, out=e)

    refl, nz = _reflect(n)
    want_spec = specular > 0
    spec = hair_part = fres = None
    if want_spec:
        rough = (1.0 - mats.hair - mats.skin - mats.lips).clip(0.0, 1.0)  # cloth etc.: broad lobe; hair: skin's
        glossy_maps = target.glossy_maps or {}
        g_skin = glossy_maps.get(SKIN_EXPONENT)
        g_rough = glossy_maps.get(ROUGH_EXPONENT)
        if g_skin is None or g_rough is None:  # a TargetLighting made by hand: the legacy map
            g_skin = g_rough = target.specular_map
        if g_skin is g_rough:
            lookup = lookup_rough = sample(g_rough, refl, target.pan_deg)
        else:  # one lookup of both maps (6 channels)
            both = sample(np.concatenate([g_skin, g_rough], axis=-1), refl, target.pan_deg)
            lookup, lookup_rough = both[..., :3], both[..., 3:]
        glossy = lookup + rough[..., None] * (lookup_rough - lookup)
        weight, f0 = _spec_weights(mats, opts)
        # grazing Fresnel gain: full on skin and hair, little on cloth
        other = (1.0 - mats.hair - mats.skin - mats.lips).clip(0.0, 1.0)
        fmax = opts.fresnel_max + other * (opts.fresnel_max_other - opts.fresnel_max)
        fres = (_fresnel(nz, f0, fmax) * weight).astype(np.float32)
        spec = glossy * fres[..., None]
        hair_part = None
        if float(mats.hair.max()) > 0:
            # the hair's share of the specular weight, returned apart (see render_person)
            hair_part = (opts.hair_weight * mats.hair / np.maximum(weight, 1e-6)).astype(np.float32)
    if lights:
        reach = opts.shadow_reach * (face_px if face_px > 0 else 0.25 * max(h, w))
        box = _bbox(mats.skin > 0.01)
        box_ints = None if box is None else (box[0].start, box[0].stop, box[1].start, box[1].stop)
        wrap = np.asarray(opts.sss_wrap, np.float32)
        blur = np.asarray(opts.sss_blur, np.float32)
        rough = (1.0 - mats.hair - mats.skin - mats.lips).clip(0.0, 1.0)
        strongest = max(float(np.asarray(pw, np.float64) @ REC709_LUMA) for _, pw, _ in lights)
        for direction, power, radius in lights:
            l = np.asarray(direction, np.float32)
            pw = np.asarray(power, np.float32)
            # terminator softened by the light's size, wrapped (per channel) on skin
            # (a sphere light of angular radius r sinking below the horizon: c above sin r,
            # (c + sin r)^2 / (4 sin r) across it, 0 below); the estimated normals are only known
            # to about normal_sigma, so the terminator is as soft as that at least (the expected
            # shading, not a sharp line that flips with every small normal error)
            soft = max(math.hypot(math.sin(radius), opts.normal_sigma), 0.02)
            vis = skin_vis = None
            if opts.shadows and depth is not None and float(pw @ REC709_LUMA) >= 0.1 * strongest:
                vis = shadow_map(depth, l, radius, reach, opts.shadow_bias, opts.shadow_size, inside)
                if box is not None:  # skin's shadow edge is blurred, per channel
                    skin_vis = np.stack([cv2.GaussianBlur(vis, (0, 0), float(blur[c])) if blur[c] > 0 else vis
                                         for c in range(3)])
            lobes = []
            if want_spec:
                # the light's highlight: a normalised Phong lobe about the mirror direction,
                # widened by the light's angular size and the normals' uncertainty; skin's lobe
                # for skin, lips and hair, the rough one for the rest
                widen = 0.25 * radius * radius + opts.normal_sigma ** 2
                lobes = [(1.0 / (1.0 / e0 + widen), wgt) for e0, wgt in ((SKIN_EXPONENT, 1.0 - rough),
                                                                          (ROUGH_EXPONENT, rough))
                         if float(wgt.max()) > 0]
            add = kernels.add_light if kernels.available() else _add_light
            add(e, spec, n, refl, l, pw, soft, vis, mats.skin, box_ints, wrap, skin_vis, lobes, fres)
    if opts.fill > 0:  # a soft floor under the diffuse irradiance (see RenderOptions.fill)
        ref = np.maximum(eval_sh(np.asarray(target.sh, np.float32), front_normals()), 0.0).mean(axis=0)
        floor = np.square(np.float32(opts.fill) * ref.astype(np.float32))
        e = np.sqrt(e * e + floor[None, None, :])
    diffuse = np.ascontiguousarray(e * np.float32(1.0 / math.pi), dtype=np.float32)
    spec_hair = None
    if spec is not None:
        spec *= np.float32(specular)
        if split_hair and hair_part is not None:
            spec_hair = np.ascontiguousarray(spec * hair_part[..., None], dtype=np.float32)
            spec -= spec_hair
        spec = np.ascontiguousarray(spec, dtype=np.float32)
    if split_hair:
        return diffuse, spec, spec_hair
    return diffuse, spec


def _add_light(e: np.ndarray, spec: Optional[np.ndarray], n: np.ndarray, refl: np.ndarray, l: np.ndarray,
               pw: np.ndarray, soft: float, vis: Optional[np.ndarray], skin: np.ndarray, box, wrap,
               skin_vis: Optional[np.ndarray], lobes, fres: np.ndarray) -> None:
    """One light's terms of :func:`target_fields`, added to ``e`` and ``spec`` in place: the
    numpy form of :func:`relight.kernels.add_light` (see there), used without numba."""
    cos = n @ l
    lam = _soft_cosine(cos, soft)
    if vis is not None:
        lam = lam * vis
    e += lam[..., None] * pw[None, None, :]
    if box is not None:
        # skin (within its bounding box): per channel, the wrapped cosine and the blurred
        # shadow edge replace the plain ones
        ys, xs = slice(box[0], box[1]), slice(box[2], box[3])
        sk, cs = skin[ys, xs], cos[ys, xs]
        for c in range(3):
            lam_c = _soft_cosine(cs + wrap[c], soft) / (1.0 + wrap[c]) if wrap[c] > 0 else _soft_cosine(cs, soft)
            if vis is not None:
                lam_c = lam_c * skin_vis[c][ys, xs]
            e[ys, xs, c] += sk * (lam_c - lam[ys, xs]) * pw[c]
    if spec is not None and lobes:
        rl = np.clip(refl @ l, 0.0, 1.0)
        lobe = None
        for ex, wgt in lobes:
            part = np.float32((ex + 1.0) / (2.0 * math.pi)) * np.power(rl, np.float32(ex)) * wgt
            lobe = part if lobe is None else lobe + part
        lobe *= fres
        if vis is not None:
            lobe *= vis
        spec += lobe[..., None] * pw[None, None, :]


def _bbox(mask: np.ndarray):
    """(row slice, column slice) of the True pixels of ``mask``, or None."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _soft_cosine(c: np.ndarray, soft: float) -> np.ndarray:
    """max(0, c) with its kink rounded over +-``soft``: c above soft, (c + soft)^2 / (4 soft)
    across, 0 below (a spherical light of angular radius asin(soft) sinking below the horizon)."""
    cc = np.clip(c + np.float32(soft), 0.0, 2.0 * soft)
    return np.where(c >= soft, c, cc * cc * np.float32(0.25 / soft)).astype(np.float32)


def _spec_weights(mats: Materials, opts: RenderOptions):
    """Per-pixel specular weight and F0 from the material weights."""
    other = (1.0 - mats.skin - mats.lips - mats.hair).clip(0.0, 1.0)
    weight = (opts.skin_weight * mats.skin + opts.lips_weight * mats.lips + opts.hair_weight * mats.hair
              + opts.other_weight * other)
    f0 = (opts.f0_skin * (mats.skin + mats.lips) + opts.f0_hair * mats.hair + opts.f0_other * other)
    return weight.astype(np.float32), f0.astype(np.float32)


def shading_fields(n: np.ndarray, face: np.ndarray, source: SourceLighting, target: TargetLighting,
                   specular: float = 1.0, options: Optional[RenderOptions] = None):
    """The smooth per-normal factors without materials, shadows or catchlights, each (h, w, 3)
    float32 contiguous or None: (albedo_scale / E_src(n), E_tgt(n) / pi, target specular
    radiance or None when ``specular`` is 0, source specular radiance or None unless
    ``remove_source_specular``). The face weight ``face`` counts as skin."""
    opts = options or RenderOptions()
    n = np.asarray(n, np.float32)
    face = np.asarray(face, np.float32)
    inv_src, spec_src = source_fields(n, face, source, opts)
    z = np.zeros_like(face)
    diffuse, spec = target_fields(n, None, Materials(skin=face, lips=z, hair=z), target, specular, 0.0, opts)
    return inv_src, diffuse, spec, spec_src


# ----------------------------------------------------------------------------- eyes
def _iris_circles(perception: Perception):
    """(cx, cy, r) in full-resolution pixels of each iris the face mesh found (refined
    landmarks 468-477: a centre and four points on the iris edge per eye)."""
    out = []
    for lm in perception.face_landmarks:
        if len(lm) < 478:
            continue
        # (ten points, in plain Python: this runs several times a frame, and numpy's per-call
        # overhead was most of its cost)
        iris = np.asarray(lm)[468:478, :2].tolist()
        for c in (0, 5):
            cx, cy = iris[c]
            r = sum(math.hypot(x - cx, y - cy) for x, y in iris[c + 1:c + 5]) / 4.0
            if r >= 1.0:
                out.append((float(cx), float(cy), r))
    return out


def _eye_box(cx, cy, r, H, W):
    x0, x1 = max(0, int(math.floor(cx - r)) - 1), min(W, int(math.ceil(cx + r)) + 2)
    y0, y1 = max(0, int(math.floor(cy - r)) - 1), min(H, int(math.ceil(cy + r)) + 2)
    return x0, x1, y0, y1


def _irises(perception: Perception, H: int, W: int):
    """(cx, cy, r, box (x0, x1, y0, y1)) of each iris whose box in the H x W frame is at least
    2 x 2 pixels."""
    for cx, cy, r in _iris_circles(perception):
        box = _eye_box(cx, cy, r, H, W)
        if box[1] - box[0] >= 2 and box[3] - box[2] >= 2:
            yield cx, cy, r, box


def _irises_in_patch(perception: Perception, origin, shape, size):
    """The irises of :func:`_irises` that lie wholly inside a patch at ``origin`` (row, col) of
    ``shape`` of a ``size`` (H, W) frame, in the patch's coordinates: (cx, cy, r, box, (frame cx,
    frame cy))."""
    oy, ox = origin
    for cx, cy, r, (x0, x1, y0, y1) in _irises(perception, *size):
        x0, x1, y0, y1 = x0 - ox, x1 - ox, y0 - oy, y1 - oy
        if x0 < 0 or y0 < 0 or x1 > shape[1] or y1 > shape[0]:
            continue
        yield cx - ox, cy - oy, r, (x0, x1, y0, y1), (cx, cy)


def _eye_openings(perception: Perception, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    """Coverage (0..1, anti-aliased) of the open eyes over the frame box x0:x1, y0:y1: the convex
    hulls of the face mesh's eye contours. The iris circle reaches under the eyelids; only what
    lies inside the opening is cornea that can be seen."""
    from ..models.mediapipe_backend import face_mesh_regions

    regions = face_mesh_regions()
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for lm in perception.face_landmarks:
        lm = np.asarray(lm)
        for key in ("left_eye", "right_eye"):
            xy = lm[regions[key], :2].astype(np.float64) - (x0, y0)  # (the contour's rows only)
            hull = cv2.convexHull(np.round(xy * 16).astype(np.int32))
            cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / np.float32(255.0)


def _openings_of(perception: Perception, box, memo: Optional[dict]) -> np.ndarray:
    """:func:`_eye_openings` over the frame box (x0, x1, y0, y1), kept in ``memo`` if given."""
    if memo is None:
        return _eye_openings(perception, *box)
    if box not in memo:
        memo[box] = _eye_openings(perception, *box)
    return memo[box]


def _remove_catchlights(albedo: np.ndarray, perception: Perception, origin=(0, 0), size=None,
                        openings: Optional[dict] = None) -> None:
    """The input's own catchlights (reflections of the source lights in the cornea) are not
    albedo: in the visible part of each iris, pixels brighter than the iris' typical level are
    brought down to it. Only the inner 70% of the landmark circle is searched: its rim often
    lies on the white of the eye (the circle is a few pixels off), which must stay white.
    ``albedo`` is the frame (``size`` (H, W)) or a patch of it whose top-left is ``origin``;
    ``openings``: a dict that keeps each eye's opening for :func:`_add_catchlights`."""
    oy, ox = origin
    for cx, cy, r, (x0, x1, y0, y1), _ in _irises_in_patch(perception, origin, albedo.shape,
                                                            size or albedo.shape[:2]):
        patch = albedo[y0:y1, x0:x1]
        yy, xx = np.mgrid[y0:y1, x0:x1]
        inside = ((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= (0.7 * r) ** 2) & (
            _openings_of(perception, (x0 + ox, x1 + ox, y0 + oy, y1 + oy), openings) > 0.5)
        if inside.sum() < 3:
            continue
        lum = luminance(patch)
        ref = float(np.median(lum[inside]))
        cap = 1.5 * ref
        over = inside & (lum > cap)
        if over.any():
            patch[over] *= (cap / np.maximum(lum[over], 1e-6))[:, None]


def _add_catchlights(out: np.ndarray, perception: Perception, geometry: Geometry, target: TargetLighting,
                     specular: float, opts: RenderOptions, origin=(0, 0), size=None,
                     openings: Optional[dict] = None) -> None:
    """Mirror reflections of the target's dominant lights in each cornea: the iris is taken as a
    spherical cap (radius of curvature ~1.3 x the iris radius) on the eye's normal from the
    geometry, seen only inside the eye opening (:func:`_eye_openings`). Each light is a Gaussian
    lobe as wide as the light and one pixel's footprint on the cap together (so a small light
    does not blink on and off as the eye moves across the pixel grid).

    Only the lights are mirrored, not the whole map: the faint reflection of the surroundings
    was already in the input's iris (of the source room, about as bright), and adding the
    target's on top would veil the iris in a grey disc whose edge shows wherever the landmark
    circle and the real iris disagree.
    ``out`` is the frame (``size`` (H, W)) or a patch of it whose top-left is ``origin``;
    ``openings``: as :func:`_remove_catchlights`'."""
    H, W = size or out.shape[:2]
    oy, ox = origin
    nw = geometry.normals_at_work()
    h, w = nw.shape[:2]
    for cx, cy, r, (x0, x1, y0, y1), (fx, fy) in _irises_in_patch(perception, origin, out.shape, (H, W)):
        axis = np.asarray(nw[min(h - 1, int(fy * h / H)), min(w - 1, int(fx * w / W))], np.float32)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = (xx + 0.5 - cx) / (1.3 * r), -(yy + 0.5 - cy) / (1.3 * r)
        rr = dx * dx + dy * dy
        edge = np.clip((r - np.sqrt((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2)) / 1.0, 0.0, 1.0)
        edge *= _openings_of(perception, (x0 + ox, x1 + ox, y0 + oy, y1 + oy), openings)
        if not (edge > 0).any():
            continue
        axis = axis / max(float(np.linalg.norm(axis)), 1e-6)
        nrm = np.stack([dx, dy, np.sqrt(np.maximum(1.0 - rr, 0.0))], axis=-1)
        # tilt the cap by the eye's normal (a rotation taking +z to axis, small-angle form)
        nrm = nrm + np.float32(0.8) * np.array([axis[0], axis[1], 0.0], np.float32)
        nrm /= np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-6)
        refl, nz = _reflect(nrm)
        footprint2 = (2.0 / (1.3 * r)) ** 2  # squared change of the reflected direction per pixel (radians)
        rad = np.zeros(refl.shape, np.float32)
        for direction, power, radius in target.lights:
            width2 = np.float32(radius * radius + footprint2)
            th2 = 2.0 * (1.0 - np.clip(refl @ np.asarray(direction, np.float32), -1.0, 1.0))  # ~ angle^2
            # power is the light's irradiance at normal incidence: the lobe integrates to it
            rad += (np.exp(-th2 / width2) / (np.float32(math.pi) * width2))[..., None] * np.asarray(power, np.float32)
        fres = _fresnel(nz, opts.cornea_f0, 1.0)
        out[y0:y1, x0:x1] += (rad * (fres * edge * np.float32(specular))[..., None]).astype(np.float32)
