"""Estimate the input's lighting: order-2 SH irradiance per RGB channel.

Model: over the skin (or, with no face, the whole person) the observed linear radiance is
Lambertian with one mean albedo, I_c(p) = rho_c / pi * E_c(n_p), and E_c is an order-2 SH
function of the normal. A robust, ridge-regularised least-squares fit gives a_c = rho_c / pi *
E_c (the product only: albedo and light colour are ambiguous). The ambiguity is resolved with
two priors:

* level: the mean skin albedo has luminance ``skin_albedo`` (0.36); the input's exposure is
  unknown anyway, so this just picks a plausible absolute scale;
* colour: skin chromaticities are close to a known locus, so the deviation of the observed skin
  colour from :data:`SKIN_CHROMA` is attributed (partly, ``tint_strength``) to the light, the
  rest to the albedo. With no face the person's colour is all albedo (light taken as neutral).

The fit itself is regularised towards what natural lighting is like: the directional terms are
shrunk (a face covers a narrow cone of normals, and its albedo is not uniform: brows, stubble,
make-up would otherwise read as light), and the vertical term is shrunk towards light from
above rather than towards none (real-world illumination is brighter from above: sky, ceilings,
sun; in HDRI collections the band-1 "up" coefficient averages about 0.3-0.4 of the constant
one, ``prior_up``).

A face is close to left-right symmetric, so the brightness ratio of two mirror-image points (a
pair of face-mesh landmarks on the skin) is the ratio of their irradiances, whatever their albedo:
those ratios are added to the fit as constraints (``symmetry``), which hold the left-right part
of the light (the side a window is on) against a face's albedo variations.

Where the input clips (8-bit video at its white: a face overexposed by a hard light), the lit
side still counts: a clipped red (skin clips in red first) or blue channel is rebuilt from the
pixel's green, and where green clips too the pixel only says that the radiance is at least the
clip, so it is fitted as a lower bound (censored) and does not pull the fit down to the clip.

The irradiance is then regularised so it never goes near zero over the visible hemisphere of
normals (no division blow-ups in the de-lighting).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from ..colour import REC709_LUMA, luminance
from ..envmap import sh_basis
from ..types import Geometry, Perception, SourceLighting

# mean linear-RGB chromaticity of skin under white light, normalised to luminance 1 (from
# white-balanced footage and a scanned face albedo; light and dark skin differ mostly in level)
SKIN_CHROMA = np.array([1.60, 0.86, 0.58], dtype=np.float64)
SKIN_CHROMA = SKIN_CHROMA / float(SKIN_CHROMA @ REC709_LUMA)
Y00 = 0.282095


@dataclass
class LightingOptions:
    work_size: int = 192  # longest side of the image the fit uses
    max_samples: int = 6000
    skin_albedo: float = 0.36  # assumed luminance of the mean skin albedo
    person_albedo: float = 0.30  # assumed mean albedo luminance of a person with no face found
    tint_strength: float = 0.75  # 0: observed skin colour is all albedo; 1: deviation from SKIN_CHROMA is all light
    ridge_band1: float = 0.1  # ridge on the band-1 coefficients, relative to the data energy
    ridge_band2: float = 0.5
    prior_up: float = 0.3  # the band-1 "up" coefficient is shrunk towards this x the constant one (light from above)
    # weight of the mirror-pair constraints (a face's albedo is close to left-right symmetric: the
    # ratio of two mirror landmarks' brightness is the ratio of their shading), relative to the
    # data's; 0 = off
    symmetry: float = 0.3
    ridge_colour: float = 10.0  # ridge pulling each channel's shape towards the luminance shape (colour that changes with direction needs strong evidence: no coloured rims)
    floor: float = 0.2  # min irradiance over the visible hemisphere, fraction of its mean
    dark_level: float = 0.003  # ignore pixels darker than this (linear luminance) ...
    dark_fraction: float = 0.04  # ... or darker than this fraction of the 90th percentile
    # a channel at/above this in display-referred input (8-bit clips at 1) is clipped: a red or
    # blue one is rebuilt from green, a clipped green makes the pixel a lower bound (censored)
    clip_level: float = 0.97
    robust_iters: int = 3
    robust_scale: float = 0.15  # relative luminance residual at which a sample's weight halves
    min_nz: float = 0.0  # ignore normals more grazing than this (specular sheen, worst normals)
    min_pixels: int = 50


def neutral_source(level: float = 0.18, albedo: float = 0.36) -> SourceLighting:
    """Uniform white light under which a surface of luminance albedo ``albedo`` has radiance
    ``level``."""
    radiance = level / albedo  # uniform environment radiance L: E(n) = pi L everywhere
    sh = np.zeros((9, 3), np.float64)
    sh[0, :] = math.pi * radiance / Y00
    return SourceLighting(sh=sh.astype(np.float32), albedo_scale=math.pi)


def estimate_source_lighting(input_linear: np.ndarray, perception: Perception, geometry: Geometry,
                             options: Optional[LightingOptions] = None, work_image: Optional[np.ndarray] = None,
                             work_matte: Optional[np.ndarray] = None) -> SourceLighting:
    """Order-2 SH irradiance (9, 3) of the input's lighting, in the input's linear units, and the
    scale for ``albedo = albedo_scale * input / eval_sh(sh, n)`` (about pi).
    ``work_image`` / ``work_matte``: the input and matte already at the geometry's working
    resolution (area-averaged), to save full-resolution resizes."""
    opts = options or LightingOptions()
    img, normals, matte, face = _work_images(input_linear, perception, geometry, opts.work_size, work_image,
                                             work_matte)
    h, w = matte.shape
    has_face = bool(perception.face_landmarks) and float(face.max()) > 0.5
    if has_face:
        H, W = perception.matte.shape
        weight = (face > 0.5) & (matte > 0.5)
        weight &= ~_feature_mask(perception.face_landmarks, h, w, w / W)
        albedo_lum = opts.skin_albedo
    else:
        weight = matte > 0.9
        albedo_lum = opts.person_albedo

    lum = luminance(img)
    valid = weight & np.isfinite(lum) & (normals[..., 2] >= opts.min_nz)
    if valid.sum() < opts.min_pixels:
        return _fallback(img, matte, opts)
    p90 = float(np.percentile(lum[valid], 90))
    valid &= lum > max(opts.dark_level, opts.dark_fraction * p90)
    if valid.sum() < opts.min_pixels:
        return _fallback(img, matte, opts)

    idx = np.flatnonzero(valid)
    if idx.size > opts.max_samples:  # deterministic subsample
        idx = idx[np.linspace(0, idx.size - 1, opts.max_samples).astype(np.int64)]
    N = normals.reshape(-1, 3)[idx].astype(np.float64)
    I = img.reshape(-1, 3)[idx].astype(np.float64)
    pw = np.clip(face.reshape(-1)[idx] if has_face else matte.reshape(-1)[idx], 0.05, 1.0).astype(np.float64)
    # display-referred input: a clipped channel says only that the radiance is at least that much.
    # Left out, the brightest, directly lit side of a face under a hard light would be missing
    # from the fit, which then reads the light as weaker and more frontal than it is; so clipped
    # red / blue is rebuilt from green, and a pixel with green clipped is a lower bound
    censored = None
    if float(img.max()) <= 1.0001:
        I, censored = _unclip(I, opts.clip_level)

    mirror = None
    if has_face and opts.symmetry > 0:
        usable = valid & (img.max(axis=-1) < opts.clip_level)
        mirror = _mirror_rows(lum, normals, usable, perception.face_landmarks, w / W)
    a, w_fit = _robust_fit(N, I, pw, opts, censored, mirror)
    a = _regularise_positive(a, opts.floor)
    if censored is not None and (~censored).sum() >= opts.min_pixels:
        # a pixel with green clipped says too little of the surface's colour and level: the
        # colour split and the scale below use the others (a rebuilt red has the skin's ratio)
        N, I, w_fit = N[~censored], I[~censored], w_fit[~censored]

    # -- albedo / light-colour split
    mean_rgb = np.maximum((w_fit[:, None] * I).sum(0) / max(float(w_fit.sum()), 1e-12), 1e-8)
    obs = mean_rgb / max(float(mean_rgb @ REC709_LUMA), 1e-8)  # observed skin colour, luminance 1
    if has_face:
        tint = (obs / SKIN_CHROMA) ** opts.tint_strength
    else:
        tint = np.ones(3)
    tint = tint / float(tint @ REC709_LUMA)
    albedo_rgb = albedo_lum * obs / tint  # mean albedo of the fitted region, per channel
    E = a * (math.pi / albedo_rgb)[None, :]  # irradiance SH in input units

    # -- absolute scale: the median albedo luminance over the fitted pixels lands on albedo_lum
    shade = np.maximum(sh_basis(N).astype(np.float64) @ E, 1e-8)
    rho = math.pi * I / shade
    med = float(np.median(rho @ REC709_LUMA.astype(np.float64)))
    scale = math.pi * albedo_lum / med if med > 1e-8 else math.pi
    return SourceLighting(sh=E.astype(np.float32), albedo_scale=float(scale))


def smooth_source(prev: Optional[SourceLighting], new: SourceLighting, keep: float = 0.8) -> SourceLighting:
    """Exponential smoothing over video frames (``keep`` = weight of the previous estimate)."""
    if prev is None:
        return new
    sh = keep * prev.sh + (1.0 - keep) * new.sh
    scale = math.exp(keep * math.log(prev.albedo_scale) + (1.0 - keep) * math.log(new.albedo_scale))
    return SourceLighting(sh=sh.astype(np.float32), albedo_scale=float(scale))


def dominant_direction(sh: np.ndarray) -> np.ndarray:
    """Unit direction of the linear (band-1) part of an SH irradiance (luminance)."""
    c = np.asarray(sh, dtype=np.float64) @ REC709_LUMA.astype(np.float64)
    d = np.array([c[3], c[1], c[2]])  # basis order: y, z, x
    n = np.linalg.norm(d)
    return d / n if n > 0 else np.array([0.0, 0.0, 1.0])


# ----------------------------------------------------------------------------- internals
def _work_images(input_linear, perception, geometry, work_size, work_image=None, work_matte=None):
    """Input, normals, matte and face mask at a common small resolution."""
    if geometry.work_normals is not None:
        normals = geometry.work_normals
        h, w = normals.shape[:2]
    else:
        H, W = geometry.frame_size()
        s = min(1.0, work_size / max(H, W))
        h, w = max(1, round(H * s)), max(1, round(W * s))
        normals = _resize(geometry.full_normals(), h, w)
        normals = normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-6)
    if work_image is not None and work_image.shape[:2] == (h, w):
        img = work_image[..., :3]
    else:
        img = _resize(np.asarray(input_linear, dtype=np.float32)[..., :3], h, w)
    if work_matte is not None and work_matte.shape == (h, w):
        matte = work_matte
    else:
        matte = _resize(perception.matte.astype(np.float32), h, w)
    face = _resize(geometry.face_at_work().astype(np.float32), h, w)
    return img, normals.astype(np.float32), matte, face


def _resize(x, h, w):
    if x.shape[:2] == (h, w):
        return x
    return cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA)


def _feature_mask(faces, h, w, scale) -> np.ndarray:
    """Eyes, eyebrows and lips (albedo unlike skin), as convex hulls, slightly dilated."""
    from ..models.mediapipe_backend import face_mesh_regions

    regions = face_mesh_regions()
    mask = np.zeros((h, w), np.uint8)
    for lm in faces:
        xy = np.asarray(lm)[:, :2] * scale
        for key in ("left_eye", "right_eye", "left_eyebrow", "right_eyebrow", "lips"):
            pts = xy[regions[key]]
            hull = cv2.convexHull(np.round(pts * 16).astype(np.int32))
            cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    return mask.astype(bool)


def _unclip(I, level):
    """Clipped samples of display-referred input -> (I with clipped channels rebuilt where green
    is not clipped, censored (n,) bool: green clipped, the sample only a lower bound).

    Skin clips in red first, then green, then blue: a clipped red or blue channel is rebuilt
    from the sample's green by the median ratio of the unclipped samples (and never below what
    was recorded), as raw converters reconstruct highlights; where green is clipped too, the
    sample says only that the radiance is at least that."""
    clipped = I >= level
    if not clipped.any():
        return I, None
    whole = ~clipped.any(axis=1) & (I[:, 1] > 1e-6)
    if whole.sum() >= 10:
        ratio = np.median(I[whole] / I[whole, 1:2], axis=0)
    else:
        ratio = np.ones(3)
    censored = clipped[:, 1]
    rebuilt = np.maximum(I, I[:, 1:2] * ratio[None, :])
    I = np.where(clipped & ~censored[:, None], rebuilt, I)
    return I, censored


def _mirror_rows(lum, normals, usable, faces, scale) -> Optional[np.ndarray]:
    """Constraint rows (P, 9) of the luminance fit, one per mirror pair of face-mesh landmarks
    (i, j) on usable skin: L_i Y(n_j) - L_j Y(n_i) (divided by the pairs' mean level), which is
    0 for the true irradiance when the two points have the same albedo. None for fewer than 10."""
    from ..models.mediapipe_backend import face_mesh_mirror_pairs

    pairs = face_mesh_mirror_pairs()
    h, w = usable.shape
    smooth = cv2.GaussianBlur(np.asarray(lum, np.float32), (0, 0), 1.0)  # (landmarks are a pixel or so off)
    rows = []
    for lm in faces:
        xy = np.asarray(lm, np.float64)[:, :2] * scale
        col = np.clip(np.round(xy[:, 0]).astype(np.int64), 0, w - 1)
        row = np.clip(np.round(xy[:, 1]).astype(np.int64), 0, h - 1)
        i, j = pairs[:, 0], pairs[:, 1]
        ok = usable[row[i], col[i]] & usable[row[j], col[j]]
        i, j = i[ok], j[ok]
        if i.size == 0:
            continue
        Li = smooth[row[i], col[i]].astype(np.float64)
        Lj = smooth[row[j], col[j]].astype(np.float64)
        Yi = sh_basis(normals[row[i], col[i]]).astype(np.float64)
        Yj = sh_basis(normals[row[j], col[j]]).astype(np.float64)
        level = max(float(np.mean(Li + Lj)) * 0.5, 1e-8)
        rows.append((Li[:, None] * Yj - Lj[:, None] * Yi) / level)
    if not rows or sum(len(r) for r in rows) < 10:
        return None
    return np.concatenate(rows)


def _robust_fit(N, I, prior_w, opts: LightingOptions, censored=None, mirror=None):
    """Ridge-regularised IRLS fit of I (n, 3) ~ Y(N) a -> (a (9, 3), final sample weights).

    The luminance is fitted with a ridge towards the prior (the shape of the lighting: no
    direction but light from above, ``opts.prior_up``); each channel is then fitted with a ridge
    towards that shape scaled to the channel's level, so colour differences between directions
    need stronger evidence than the shape itself. ``censored`` (n,) bool: samples whose value is
    a lower bound (green clipped: :func:`_unclip`); the first iteration leaves them all out, each later one
    those that the last fit already predicts at least as bright (the constraint holds), and fits
    the rest at their value, so a clipped, directly lit side pulls the fit up to the clip and no
    further (an active-set form of censored regression). ``mirror``: rows R (P, 9) with R a = 0
    for the true luminance shape (:func:`_mirror_rows`), weighted ``opts.symmetry`` against
    the data and, like the samples, down-weighted where they disagree with the fit."""
    if censored is not None and not censored.any():
        censored = None
    Y = sh_basis(N).astype(np.float64)
    luma = REC709_LUMA.astype(np.float64)
    band = np.array([0, 1, 1, 1, 2, 2, 2, 2, 2])
    shape_ridge = np.where(band == 0, 0.0, np.where(band == 1, opts.ridge_band1, opts.ridge_band2))
    colour_ridge = np.where(band == 0, 0.0, opts.ridge_colour)
    lum = I @ luma
    w = prior_w.copy()
    a = np.zeros((9, 3))
    a_l = None
    if mirror is not None:
        mirror_w = np.ones(len(mirror))
        mirror_scale = opts.symmetry / max(float(np.trace(mirror.T @ mirror)) / 9.0, 1e-12)
    for it in range(max(1, opts.robust_iters)):
        if censored is not None:  # (the first fit without them, as a start)
            w = np.where(censored & (pred @ luma >= lum) if it > 0 else censored, 0.0, w)
        Yw = Y * w[:, None]
        A = Y.T @ Yw
        energy = np.trace(A) / 9.0
        D = np.diag(shape_ridge * energy)
        S = 0.0
        if mirror is not None:
            S = (mirror * mirror_w[:, None]).T @ mirror * (mirror_scale * energy)
        if a_l is None:  # the level of the prior comes from a first, plain fit
            a_l = np.linalg.solve(A + D + S, Yw.T @ lum)
        mean = np.zeros(9)
        mean[1] = opts.prior_up * max(float(a_l[0]), 0.0)  # basis 1 is 0.4886 y: light from above
        a_l = np.linalg.solve(A + D + S, Yw.T @ lum + D @ mean)
        if mirror is not None:
            # gross mismatches of the two sides' shading down-weighted (a cast shadow or a
            # strand of hair on one side, a landmark off), on a scale 4x the samples': a pair
            # is there to pull the fit, so one that merely disagrees with it must count
            e = (mirror @ a_l) / max(float(np.mean(Y @ a_l)), 1e-12)
            mirror_w = 1.0 / (1.0 + (e / (4.0 * opts.robust_scale)) ** 2)
        # per channel: ridge towards a_l scaled by the channel / luminance level
        level = (Yw.T @ I)[0] / max(float((Yw.T @ lum)[0]), 1e-12)  # ratio of weighted means
        prior = a_l[:, None] * level[None, :]
        Rc = np.diag(colour_ridge * energy)
        a = np.linalg.solve(A + Rc, Yw.T @ I + Rc @ prior)
        pred = np.maximum(Y @ a, 1e-6)
        # relative residual in luminance; Cauchy-like down-weighting of outliers (shadows,
        # highlights, hair over the face, landmarks slightly off)
        r = ((I - pred) @ luma) / np.maximum(pred @ luma, 1e-6)
        w = prior_w / (1.0 + (r / opts.robust_scale) ** 2)
    return a, w


_HEMI = None


def _hemisphere_dirs() -> np.ndarray:
    """Directions covering the normals a visible surface can have (n_z >= -0.2)."""
    global _HEMI
    if _HEMI is None:
        g = np.linspace(-1, 1, 25)
        x, y = np.meshgrid(g, g)
        r2 = x * x + y * y
        ok = r2 <= 1.0
        z = np.sqrt(np.maximum(1.0 - r2, 0.0))
        d = np.stack([x[ok], y[ok], z[ok]], -1)
        rim = np.stack([np.cos(t := np.linspace(0, 2 * np.pi, 48, endpoint=False)), np.sin(t), np.full(48, -0.2)], -1)
        rim /= np.linalg.norm(rim, axis=1, keepdims=True)
        _HEMI = sh_basis(np.concatenate([d, rim])).astype(np.float64)
    return _HEMI


def _regularise_positive(a: np.ndarray, floor: float) -> np.ndarray:
    """Raise the constant term per channel until min >= floor * mean over the visible normals."""
    a = a.copy()
    B = _hemisphere_dirs()
    for c in range(a.shape[1]):
        v = B @ a[:, c]
        mean = max(float(v.mean()), 1e-8)
        if float(v.mean()) <= 0:  # degenerate fit: fall back to the mean level as ambient
            a[:, c] = 0.0
            a[0, c] = 1e-6 / Y00
            continue
        lo = float(v.min())
        if lo < floor * mean:
            add = (floor * mean - lo) / (1.0 - floor)
            a[0, c] += add / Y00
    return a


def _fallback(img, matte, opts: LightingOptions) -> SourceLighting:
    lum = luminance(img)
    sel = matte > 0.5
    vals = lum[sel] if sel.sum() >= opts.min_pixels else lum.reshape(-1)
    vals = vals[np.isfinite(vals)]
    level = float(np.median(vals)) if vals.size else 0.18
    if not level > 1e-4:
        level = 0.18
    return neutral_source(level, opts.person_albedo)
