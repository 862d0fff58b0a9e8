"""Accuracy evaluation on a light-stage set: ``relight eval DIR``.

A light-stage set (see ``manifest.json`` and the README of the dev set) holds renders of one
subject in several poses under known HDRIs and pans, with the ground truth of each render:
``img.png`` (8-bit sRGB frame), ``linear.exr`` (scene-linear frame), ``alpha.png`` (coverage),
``normal.exr`` (camera-frame normals) and ``albedo.png`` (sRGB base colour). For pairs of renders
of the same pose, each method relights the first render (input: ``img.png`` with ``alpha.png``
as the matte) to the second render's HDRI and pan, and the result is compared with the second
render's ``linear.exr``.

Definitions (all measured on the *scored pixels*: fully covered, alpha > 0.99, with that mask
eroded by 2 px (a 5x5 square) so that no anti-aliased or mixed-normal edge pixel counts):

* **si-RMSE (luminance)**, the headline: Rec.709 luminance ``o`` of the output and ``g`` of the
  ground truth; ``s = <o, g> / <o, o>`` (the least-squares scale of the output onto the ground
  truth); ``si-RMSE = sqrt(mean((s o - g)^2)) / sqrt(mean(g^2))``, i.e. the RMSE relative to the
  RMS of the ground truth (0 = exact up to exposure; an output of 0 scores 1).
* **si-RMSE (RGB)**: the same with one least-squares scale per channel, RMSE over all three
  channels divided by the RMS of all ground-truth channel values.
* **SSIM (luminance)**: Wang et al. SSIM (Gaussian window sigma 1.5, 11 x 11, K1 0.01,
  K2 0.03, data range 1) between the *sRGB-encoded* luminances (IEC 61966-2-1 curve, clipped to
  [0, 1]) of ``s o`` and ``g``, both set to 0 outside the scored pixels, averaged over the
  scored pixels. (The gamma-encoded domain reproduces the reference identity SSIM; linear
  luminance gives about 0.09 less.)
* **light-direction error**: a 4-coefficient (order-1) spherical-harmonic fit
  ``lum / albedo_lum ~ c0 + c1 x + c2 y + c3 z`` over the scored pixels with
  ``albedo_lum > 0.02`` (albedo.png linearised, luminance), against the ground-truth normals
  (x, y, z); the dominant direction is ``(c1, c2, c3) / |(c1, c2, c3)|``; the error is the angle
  in degrees between the output's and the ground truth's direction. (Order 1 over the visible
  hemisphere of normals: for a distant light the fitted direction is pulled toward -z by the
  order-2 part of the irradiance, e.g. a sun at +x fits as about (0.8, 0, -0.6) on a sphere. The
  pull is the same for an output and a ground truth with the same lighting, so a correct relight
  scores 0, but two suns 180 degrees apart read as about 107 degrees apart. A 9-coefficient fit
  has no such pull but is unstable on a face: identity scores 86 degrees with it.)

Pair rule (deterministic, no random numbers): HDRI names sorted, pans sorted, poses sorted.
For pose number q and slot k = 0 .. P-1 (P = 20 pairs per pose), g = q P + k:
source = (HDRI[g mod nH], pan[g mod nP]) and target = (HDRI[(g mod nH + 1 + g mod (nH - 1))
mod nH], pan[(g div nP) mod nP]). The target HDRI is always a different one (with one HDRI
only, the pan must differ instead), the target offset runs through every other HDRI, and with
two pans the four (source pan, target pan) combinations come up equally often. Slots whose
renders are missing from the set, and repeats, are skipped. On the dev set (3 poses x 13 HDRIs
x 2 pans) this gives 60 pairs. Pairs are listed round-robin over poses, so ``max_pairs``
keeps every pose.

Methods: ``identity`` (the input, linearised), ``gain`` (the input times one per-channel gain
that moves its mean colour to the colour of the target HDRI's irradiance on a normal facing
the camera, luminance kept), ``relight`` (this package's pipeline with the ground-truth
matte), and ``oracle`` (ideal diffuse: the ground-truth albedo times the target's order-2 SH
irradiance at the ground-truth normals; a reference that no method given only the image can
beat on the diffuse part).

Normals check (with ``relight``): the mean angle between this package's estimated normals
(:class:`~relight.stages.perception.Perceiver` +
:func:`~relight.stages.geometry.estimate_geometry`, ground-truth matte) and ``normal.exr`` over
the scored pixels, and over the scored pixels where the geometry's ``face_mask > 0.5``.

Video contact sheet (``relight eval --video-sheet CLIP... --out DIR``, or :func:`video_sheet`):
frames of real footage relit by the whole pipeline to ``--sheet-hdris`` at ``--sheet-pans`` over
the HDRI background, with the input and its matte outline, in ``DIR/video_sheet.png``: for
looking at the light's side, the shadows moving with the pan, skin colour and matte edges.

Outputs in ``out_dir``: ``eval.json`` (every per-pair figure, means, per-HDRI means, timings),
``table.txt`` (the printed table) and ``contact_sheet.png`` (rows of input | output | ground
truth | error for a few pairs and every method; input and output are scaled by their
least-squares luminance scale onto the ground truth and all three sRGB-encoded; the error map is
|s o - g| / RMS(g) on the scored pixels, 0 black .. >= 1 white, inferno colour map).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .colour import REC709_LUMA, linear_to_srgb8, linear_to_srgb_float, luminance, srgb_to_linear
from .errors import InputError, OutputError, RelightError, UsageError
from .settings import RANGES, RelightSettings, default_of

METHODS = ("identity", "gain", "relight", "oracle")
DEFAULT_METHODS = ("identity", "gain", "relight")
COVERED_ALPHA = 0.99  # scored pixels: alpha above this ...
ERODE_PX = 2  # ... eroded by this many pixels
ALBEDO_FLOOR = 0.02  # linear albedo luminance below which a pixel is left out of the light fit
PAIRS_PER_POSE = 20
SHEET_PAIRS = 4
REQUIRED_FILES = ("img", "linear", "alpha", "normal", "albedo")
METRICS = ("si_rmse", "si_rmse_rgb", "ssim", "light_dir_err")
METRIC_LABELS = {"si_rmse": "si-RMSE(lum)", "si_rmse_rgb": "si-RMSE(rgb)", "ssim": "SSIM(lum)",
                 "light_dir_err": "light-dir(deg)"}


# ============================================================================= metrics
def coverage_mask(alpha: np.ndarray, threshold: float = COVERED_ALPHA, erode: int = ERODE_PX) -> np.ndarray:
    """Scored pixels: ``alpha > threshold`` (alpha in [0, 1]), eroded by ``erode`` pixels."""
    m = (np.asarray(alpha, dtype=np.float32) > threshold).astype(np.uint8)
    if erode > 0:
        m = cv2.erode(m, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8), borderType=cv2.BORDER_CONSTANT,
                      borderValue=0)
    return m > 0


def si_scale(out: np.ndarray, gt: np.ndarray) -> float:
    """Least-squares scale s minimising |s out - gt|^2 (1-D arrays)."""
    oo = float(np.dot(out.astype(np.float64), out.astype(np.float64)))
    return float(np.dot(out.astype(np.float64), gt.astype(np.float64)) / oo) if oo > 0 else 0.0


def si_rmse(out: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """Scale-invariant RMSE relative to the RMS of the ground truth, over ``mask``.

    (H, W) images: one least-squares scale. (H, W, C) images: one scale per channel, RMSE and
    RMS over all channel values."""
    o = np.asarray(out, dtype=np.float64)[mask]
    g = np.asarray(gt, dtype=np.float64)[mask]
    if o.size == 0:
        return float("nan")
    if o.ndim == 1:
        o, g = o[:, None], g[:, None]
    err = 0.0
    for c in range(o.shape[1]):
        err += float(np.sum((si_scale(o[:, c], g[:, c]) * o[:, c] - g[:, c]) ** 2))
    rms_g = math.sqrt(float(np.mean(g ** 2)))
    return math.sqrt(err / g.size) / rms_g if rms_g > 0 else float("nan")


def _ssim_map(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    x = x.astype(np.float64)
    y = y.astype(np.float64)

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim_luminance(out_lum: np.ndarray, gt_lum: np.ndarray, mask: np.ndarray) -> float:
    """SSIM of the sRGB-encoded luminances after the least-squares scale, over ``mask``."""
    if not mask.any():
        return float("nan")
    s = si_scale(out_lum[mask], gt_lum[mask])
    m = mask.astype(np.float32)
    a = linear_to_srgb_float(out_lum * np.float32(s)) * m
    b = linear_to_srgb_float(gt_lum) * m
    return float(np.mean(_ssim_map(a, b)[mask]))


def light_direction(lum: np.ndarray, albedo_lum: np.ndarray, normals: np.ndarray,
                    mask: np.ndarray) -> Optional[np.ndarray]:
    """Dominant light direction (unit, camera frame) of an order-1 SH fit of lum / albedo
    against ``normals`` over ``mask``; None when there is nothing to fit or no direction."""
    ok = mask & (albedo_lum > ALBEDO_FLOOR) & np.isfinite(lum)
    if int(ok.sum()) < 8:
        return None
    shading = lum[ok].astype(np.float64) / albedo_lum[ok].astype(np.float64)
    n = normals[ok].astype(np.float64)
    a = np.concatenate([np.ones((n.shape[0], 1)), n], axis=1)
    coef, *_ = np.linalg.lstsq(a, shading, rcond=None)
    d = coef[1:4]
    norm = float(np.linalg.norm(d))
    if not np.isfinite(norm) or norm <= 1e-9 * max(abs(float(coef[0])), 1e-30):
        return None
    return d / norm


def angle_deg(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> float:
    """Angle in degrees between two unit vectors (NaN if either is None)."""
    if a is None or b is None:
        return float("nan")
    return math.degrees(math.acos(max(-1.0, min(1.0, float(np.dot(a, b))))))


def normals_angle_error(est: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """Mean angle (degrees) between two normal maps (normalised first) over ``mask``."""
    if not mask.any():
        return float("nan")
    e = est[mask].astype(np.float64)
    g = gt[mask].astype(np.float64)
    e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    return float(np.degrees(np.arccos(np.clip(np.sum(e * g, axis=1), -1.0, 1.0))).mean())


@dataclass
class Truth:
    """What a method's output is compared with (one target render, as seen in the source pose)."""

    linear: np.ndarray  # (H, W, 3) ground-truth scene-linear frame
    mask: np.ndarray  # (H, W) bool scored pixels
    normals: np.ndarray  # (H, W, 3) ground-truth normals
    albedo_lum: np.ndarray  # (H, W) linear albedo luminance
    lum: np.ndarray = field(init=False)
    direction: Optional[np.ndarray] = field(init=False)

    def __post_init__(self):
        self.lum = luminance(self.linear)
        self.direction = light_direction(self.lum, self.albedo_lum, self.normals, self.mask)


def score(out_linear: np.ndarray, truth: Truth) -> dict:
    """Every metric of one output against its ground truth."""
    out = np.nan_to_num(np.asarray(out_linear, dtype=np.float32)[..., :3], nan=0.0, posinf=0.0, neginf=0.0)
    lum = luminance(out)
    d = light_direction(lum, truth.albedo_lum, truth.normals, truth.mask)
    return {
        "si_rmse": si_rmse(lum, truth.lum, truth.mask),
        "si_rmse_rgb": si_rmse(out, truth.linear, truth.mask),
        "ssim": ssim_luminance(lum, truth.lum, truth.mask),
        "light_dir_err": angle_deg(d, truth.direction),
        "scale": si_scale(lum[truth.mask], truth.lum[truth.mask]) if truth.mask.any() else float("nan"),
        "light_dir": None if d is None else [round(float(v), 4) for v in d],
    }


# ============================================================================= the data set
@dataclass
class Render:
    index: int
    dir: str
    hdri: str
    hdri_path: str  # absolute
    pan: float
    pose: float
    files: Dict[str, str]  # absolute paths, keys REQUIRED_FILES


class LightStage:
    """A light-stage set read from ``DIR/manifest.json``; images are read on demand."""

    def __init__(self, root):
        self.root = os.path.abspath(str(root))
        if not os.path.isdir(self.root):
            raise InputError("not a directory (a light-stage set with a manifest.json was expected)", root)
        manifest = os.path.join(self.root, "manifest.json")
        if not os.path.isfile(manifest):
            raise InputError("no manifest.json: not a light-stage set", root)
        try:
            with open(manifest, "r", encoding="utf-8") as f:
                self.manifest = json.load(f)
        except (OSError, ValueError) as exc:
            raise InputError(f"unreadable manifest ({str(exc).splitlines()[0][:120]})", manifest) from None
        entries = self.manifest.get("renders") if isinstance(self.manifest, dict) else None
        if not isinstance(entries, list) or not entries:
            raise InputError("manifest has no 'renders' list", manifest)
        self.renders: List[Render] = []
        for i, e in enumerate(entries):
            try:
                files = e["files"]
                paths = {k: os.path.join(self.root, files[k]) for k in REQUIRED_FILES}
                render = Render(index=i, dir=str(e.get("dir", os.path.dirname(files["img"]))), hdri=str(e["hdri"]),
                                hdri_path=os.path.normpath(os.path.join(self.root, e["hdri_path"])),
                                pan=float(e.get("pan_deg", 0.0)), pose=float(e.get("pose_yaw_deg", 0.0)),
                                files=paths)
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"render {i} of the manifest lacks {exc} (needs files "
                                 f"{'/'.join(REQUIRED_FILES)}, hdri, hdri_path)", manifest) from None
            for p in list(paths.values()) + [render.hdri_path]:
                if not os.path.isfile(p):
                    raise InputError("missing file listed in the manifest", p)
            self.renders.append(render)
        self._cache: "OrderedDict[tuple, np.ndarray]" = OrderedDict()

    # -- readers (pose files are shared by many renders: cached)
    def _cached(self, key, make):
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = make()
            while len(self._cache) > 48:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return v

    def image(self, r: Render) -> np.ndarray:
        """img.png as (H, W, 3) uint8 sRGB."""
        img = _read_png(r.files["img"])
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        if img.dtype != np.uint8:
            img = np.clip(img.astype(np.float32) / 257.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(img[..., :3])

    def linear(self, r: Render) -> np.ndarray:
        from .io.exr import read_exr

        x = read_exr(r.files["linear"])
        if x.shape[2] == 1:
            x = np.repeat(x, 3, axis=2)
        return np.ascontiguousarray(x[..., :3], dtype=np.float32)

    def alpha(self, r: Render) -> np.ndarray:
        """alpha.png as (H, W) float32 in [0, 1]."""
        def make():
            a = _read_png(r.files["alpha"])
            if a.ndim == 3:
                a = a[..., 3] if a.shape[2] == 4 else a[..., 0]
            scale = 255.0 if a.dtype == np.uint8 else 65535.0
            return a.astype(np.float32) / scale
        return self._cached(("alpha", r.files["alpha"]), make)

    def normals(self, r: Render) -> np.ndarray:
        from .io.exr import read_exr

        def make():
            n = read_exr(r.files["normal"])
            if n.shape[2] < 3:
                raise InputError("normal map needs 3 channels", r.files["normal"])
            n = n[..., :3].astype(np.float32)
            length = np.linalg.norm(n, axis=-1, keepdims=True)
            return np.where(length > 1e-6, n / np.maximum(length, 1e-6), 0.0).astype(np.float32)
        return self._cached(("normal", r.files["normal"]), make)

    def albedo_linear(self, r: Render) -> np.ndarray:
        def make():
            a = _read_png(r.files["albedo"])
            if a.ndim == 2:
                a = np.repeat(a[..., None], 3, axis=2)
            if a.dtype != np.uint8:
                return srgb_to_linear(a[..., :3].astype(np.float32) / 65535.0)
            return srgb_to_linear(np.ascontiguousarray(a[..., :3]))
        return self._cached(("albedo", r.files["albedo"]), make)

    def mask(self, r: Render) -> np.ndarray:
        return self._cached(("mask", r.files["alpha"]), lambda: coverage_mask(self.alpha(r)))

    def truth(self, source: Render, target: Render) -> Truth:
        """The target's ground truth with the pose data (matte, normals, albedo) of the source
        (the same pose)."""
        lin = self.linear(target)
        mask = self.mask(source)
        if lin.shape[:2] != mask.shape:
            raise InputError(f"linear.exr is {lin.shape[1]}x{lin.shape[0]} but alpha.png is "
                             f"{mask.shape[1]}x{mask.shape[0]}", target.files["linear"])
        return Truth(linear=lin, mask=mask, normals=self.normals(source),
                     albedo_lum=luminance(self.albedo_linear(source)))


def _read_png(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError("not a readable image", path)
    if img.ndim == 3 and img.shape[2] >= 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return img


# ============================================================================= pairs
def select_pairs(renders: Sequence[Render], pairs_per_pose: int = PAIRS_PER_POSE) -> List[Tuple[Render, Render]]:
    """The deterministic pair rule of the module docstring: (source, target) render pairs of the
    same pose, listed round-robin over poses."""
    poses = sorted({r.pose for r in renders})
    hdris = sorted({r.hdri for r in renders})
    pans = sorted({r.pan for r in renders})
    look = {(r.pose, r.hdri, r.pan): r for r in renders}
    nh, npan = len(hdris), len(pans)
    per_pose: List[List[Tuple[Render, Render]]] = []
    for q, pose in enumerate(poses):
        chosen, seen = [], set()
        for k in range(pairs_per_pose):
            g = q * pairs_per_pose + k
            sh = g % nh
            dh = (sh + 1 + g % (nh - 1)) % nh if nh > 1 else sh
            src = look.get((pose, hdris[sh], pans[g % npan]))
            dst = look.get((pose, hdris[dh], pans[(g // npan) % npan]))
            if src is None or dst is None or src is dst or (src.index, dst.index) in seen:
                continue
            seen.add((src.index, dst.index))
            chosen.append((src, dst))
        per_pose.append(chosen)
    out = []
    for k in range(max((len(c) for c in per_pose), default=0)):
        out.extend(c[k] for c in per_pose if k < len(c))
    return out


# ============================================================================= methods
class _HdriSH:
    """Target irradiance SH per (HDRI file, pan), loaded once."""

    def __init__(self):
        self._pixels: Dict[str, np.ndarray] = {}
        self._sh: Dict[tuple, np.ndarray] = {}

    def irradiance(self, path: str, pan: float) -> np.ndarray:
        from . import envmap
        from .hdri import load_hdri

        key = (path, round(float(pan), 4))
        sh = self._sh.get(key)
        if sh is None:
            px = self._pixels.get(path)
            if px is None:
                px = self._pixels[path] = envmap.downsample(load_hdri(path).pixels, 256)
            sh = self._sh[key] = envmap.irradiance_sh(envmap.project_sh(px, float(pan))).astype(np.float32)
        return sh


class Method:
    name = ""

    def __call__(self, data: LightStage, source: Render, target: Render) -> np.ndarray:
        """The relit source as a (H, W, 3) float32 scene-linear image."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class Identity(Method):
    name = "identity"

    def __call__(self, data, source, target):
        return srgb_to_linear(data.image(source))


class Gain(Method):
    """Input x one per-channel gain: the input's mean colour (over the matte) becomes the colour
    of the target's irradiance at the camera-facing normal (0, 0, 1); luminance is kept."""

    name = "gain"

    def __init__(self, sh: Optional[_HdriSH] = None):
        self.sh = sh or _HdriSH()

    def __call__(self, data, source, target):
        from . import envmap

        lin = srgb_to_linear(data.image(source))
        e = envmap.eval_sh(self.sh.irradiance(target.hdri_path, target.pan), np.array([0.0, 0.0, 1.0], np.float32))
        e = np.maximum(np.asarray(e, np.float64).reshape(3), 1e-6)
        target_colour = e / float(e @ REC709_LUMA)
        m = data.alpha(source) > 0.5
        mean = lin[m].mean(axis=0).astype(np.float64) if m.any() else lin.reshape(-1, 3).mean(axis=0)
        mean = np.maximum(mean, 1e-6)
        gain = target_colour / (mean / float(mean @ REC709_LUMA))
        return (lin * gain.astype(np.float32)).astype(np.float32)


class Oracle(Method):
    """Ideal diffuse: ground-truth albedo x target order-2 SH irradiance at ground-truth normals."""

    name = "oracle"

    def __init__(self, sh: Optional[_HdriSH] = None):
        self.sh = sh or _HdriSH()

    def __call__(self, data, source, target):
        from . import envmap

        e = envmap.eval_sh(self.sh.irradiance(target.hdri_path, target.pan), data.normals(source))
        return (data.albedo_linear(source) * np.maximum(e, 0.0)).astype(np.float32)


class Relight(Method):
    """This package's pipeline: ``Relighter(hdri=target HDRI, pan=target pan, background black)``
    on img.png with alpha.png as the external matte; the scene-linear composite.

    One Relighter per target lighting (consecutive pairs with the same target share it); they all
    use one :class:`~relight.stages.perception.Perceiver`, so the models load once."""

    name = "relight"

    def __init__(self, **settings):
        self._settings = settings  # other RelightSettings fields (fill ...)
        self._key = None
        self._relighter = None
        self._perceiver = None

    def __call__(self, data, source, target):
        from .pipeline import Relighter
        from .settings import RelightSettings
        from .stages.perception import Perceiver

        key = (target.hdri_path, target.pan)
        if self._key != key:
            self._drop()
            if self._perceiver is None:
                self._perceiver = Perceiver(video=False, use_segmentation=False)
            self._relighter = Relighter(RelightSettings(hdri=target.hdri_path, pan=target.pan, background="#000000",
                                                        **self._settings),
                                        video=False, perceiver=self._perceiver)
            self._key = key
        comp = self._relighter.process_composite(data.image(source), matte=data.alpha(source), scene_linear=True)
        return np.asarray(comp.rgb, dtype=np.float32)[..., :3]

    def _drop(self):
        if self._relighter is not None:
            self._relighter.close()  # leaves the shared perceiver open
        self._relighter = None
        self._key = None

    def close(self):
        self._drop()
        if self._perceiver is not None:
            self._perceiver.close()
        self._perceiver = None


def make_method(name: str, sh: Optional[_HdriSH] = None, **settings) -> Method:
    """The method called ``name``; ``settings``: RelightSettings fields for ``relight``."""
    if name == "identity":
        return Identity()
    if name == "gain":
        return Gain(sh)
    if name == "oracle":
        return Oracle(sh)
    if name == "relight":
        return Relight(**settings)
    raise UsageError(f"unknown evaluation method {name!r} (choose from {', '.join(METHODS)})")


def parse_methods(methods) -> Tuple[str, ...]:
    if isinstance(methods, str):
        methods = [m for m in methods.replace(" ", ",").split(",") if m]
    out = []
    for m in methods:
        m = str(m).strip().lower()
        if m not in METHODS:
            raise UsageError(f"unknown evaluation method {m!r} (choose from {', '.join(METHODS)})")
        if m not in out:
            out.append(m)
    if not out:
        raise UsageError("no evaluation method given")
    return tuple(out)


# ============================================================================= normals check
def normals_check(data: LightStage, renders: Sequence[Render], progress: Optional[Callable[[], None]] = None) -> dict:
    """Mean angle error of this package's normals (ground-truth matte) against normal.exr."""
    from .stages.geometry import estimate_geometry
    from .stages.perception import Perceiver

    rows = []
    with Perceiver(video=False, use_segmentation=False) as perceiver:
        for r in renders:
            img = data.image(r)
            h, w = img.shape[:2]
            perception = perceiver.process(img, external_matte=data.alpha(r))
            geometry = estimate_geometry(perception, h, w)
            mask = data.mask(r)
            face = mask & (np.asarray(geometry.full_face_mask()) > 0.5)
            normals = geometry.full_normals()
            gt = data.normals(r)
            rows.append({
                "render": r.dir, "pose": r.pose,
                "mean_angle_deg": normals_angle_error(normals, gt, mask),
                "face_mean_angle_deg": normals_angle_error(normals, gt, face) if face.any() else None,
                "face_pixels": int(face.sum()), "pixels": int(mask.sum()),
                "faces_found": len(perception.face_landmarks),
            })
            if progress:
                progress()
    overall = _nanmean([x["mean_angle_deg"] for x in rows])
    face_rows = [x for x in rows if x["face_mean_angle_deg"] is not None]
    return {
        "renders": len(rows),
        "mean_angle_deg": overall,
        "face_mean_angle_deg": _nanmean([x["face_mean_angle_deg"] for x in face_rows]) if face_rows else None,
        "renders_with_face": len(face_rows),
        "per_render": rows,
    }


# ============================================================================= the run
class _Progress:
    def __init__(self, total: int, enabled: bool, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total = max(1, total)
        self.count = 0
        self.start = time.perf_counter()
        self._last = 0.0
        self._step = max(1, self.total // 10)

    def update(self, what: str = "") -> None:
        self.count += 1
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = now - self.start
        left = elapsed / self.count * (self.total - self.count)
        text = f"eval [{self.count}/{self.total}] {what}  {elapsed:5.1f} s, ~{left:4.0f} s left"
        if self.tty:
            if now - self._last > 0.1 or self.count == self.total:
                self._last = now
                self.stream.write("\r" + text + "\x1b[K")
                self.stream.flush()
        elif self.count % self._step == 0 or self.count == self.total:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _nanmean(values) -> Optional[float]:
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def _clean(x):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return round(x, 6) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def evaluate(dataset_dir, out_dir="eval-out", methods=DEFAULT_METHODS, max_pairs: Optional[int] = None,
             pairs_per_pose: int = PAIRS_PER_POSE, normals: bool = True, sheet_pairs: int = SHEET_PAIRS,
             show_progress: bool = True, **settings) -> dict:
    """Evaluate ``methods`` on the light-stage set in ``dataset_dir``; write ``eval.json``,
    ``table.txt`` and ``contact_sheet.png`` into ``out_dir`` (created if needed; None writes
    nothing) and return the summary (the JSON's content plus ``table``, the printed text).

    ``normals``: also run the normals check (only when ``relight`` is among the methods).
    ``settings``: other :class:`~relight.settings.RelightSettings` fields the ``relight``
    method runs with (``fill=0.0`` ...), recorded in the summary.
    Raises :class:`InputError` for a bad set, :class:`UsageError` for bad options."""
    methods = parse_methods(methods)
    if max_pairs is not None and int(max_pairs) < 1:
        raise UsageError(f"--max-pairs must be at least 1, got {max_pairs}")
    if int(pairs_per_pose) < 1:
        raise UsageError(f"--pairs-per-pose must be at least 1, got {pairs_per_pose}")
    try:
        RelightSettings(**settings).validated()
    except TypeError as exc:
        raise UsageError(f"unknown relight setting: {exc}") from None
    data = LightStage(dataset_dir)
    pairs = select_pairs(data.renders, int(pairs_per_pose))
    if max_pairs is not None:
        pairs = pairs[: int(max_pairs)]
    if not pairs:
        raise InputError("no pair of renders of the same pose under different lighting", dataset_dir)
    if out_dir is not None:
        out_dir = str(out_dir)
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise OutputError("exists and is not a directory", out_dir)
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the output directory ({exc.strerror})", out_dir) from None

    do_normals = normals and "relight" in methods
    sources = list(OrderedDict((s.index, s) for s, _ in pairs).values())
    progress = _Progress(len(pairs) * len(methods) + (len(sources) if do_normals else 0), show_progress)
    sheet_idx = sorted(set(np.round(np.linspace(0, len(pairs) - 1, min(sheet_pairs, len(pairs)))).astype(int).tolist())) \
        if sheet_pairs > 0 else []
    sheet_rows: List[Tuple[int, str, list]] = []

    sh = _HdriSH()
    runners = {m: make_method(m, sh, **settings) for m in methods}
    seconds = defaultdict(float)
    per_pair: Dict[str, list] = {m: [] for m in methods}
    start = time.perf_counter()
    try:
        for i, (src, dst) in enumerate(pairs):
            truth = data.truth(src, dst)
            for m in methods:
                t = time.perf_counter()
                out = runners[m](data, src, dst)
                if out.shape[:2] != truth.mask.shape:
                    raise RelightError(f"method {m} returned a {out.shape[1]}x{out.shape[0]} image for a "
                                       f"{truth.mask.shape[1]}x{truth.mask.shape[0]} input")
                row = score(out, truth)
                seconds[m] += time.perf_counter() - t
                per_pair[m].append(dict(pair=i, **row))
                if i in sheet_idx:
                    sheet_rows.append((i, m, _sheet_tiles(data, src, dst, out, truth, m, row)))
                progress.update(f"{m} {src.dir} -> {dst.hdri}@{dst.pan:g}")
        normals_result = None
        if do_normals:
            t = time.perf_counter()
            normals_result = normals_check(data, sources, lambda: progress.update("normals"))
            normals_result["seconds"] = time.perf_counter() - t
    finally:
        progress.close()
        for r in runners.values():
            r.close()
    total = time.perf_counter() - start

    pair_info = [{"pair": i, "pose": s.pose, "source": s.dir, "target": d.dir, "source_hdri": s.hdri,
                  "source_pan": s.pan, "target_hdri": d.hdri, "target_pan": d.pan} for i, (s, d) in enumerate(pairs)]
    results = {}
    for m in methods:
        rows = per_pair[m]
        by_hdri = defaultdict(list)
        for row, (_, d) in zip(rows, pairs):
            by_hdri[d.hdri].append(row)
        results[m] = {
            "mean": {k: _nanmean(r[k] for r in rows) for k in METRICS},
            "per_target_hdri": {h: dict(pairs=len(rs), **{k: _nanmean(r[k] for r in rs) for k in METRICS})
                                for h, rs in sorted(by_hdri.items())},
            "seconds": seconds[m],
            "seconds_per_pair": seconds[m] / len(rows),
            "pairs": rows,
        }
    summary = {
        "dataset": data.root,
        "dataset_name": data.manifest.get("name"),
        "pairs_evaluated": len(pairs),
        "poses": sorted({s.pose for s, _ in pairs}),
        "methods": list(methods),
        "settings": dict(settings),
        "definitions": {
            "scored_pixels": f"alpha > {COVERED_ALPHA}, eroded by {ERODE_PX} px (5x5 square)",
            "si_rmse": "luminance; least-squares scale of output onto ground truth; RMSE / RMS(ground truth)",
            "si_rmse_rgb": "per-channel least-squares scales; RMSE over channels / RMS(ground truth channels)",
            "ssim": "SSIM (gauss 1.5, 11x11, K1 .01, K2 .03, range 1) of sRGB-encoded luminance after the "
                    "least-squares scale, 0 outside the scored pixels, mean over the scored pixels",
            "light_dir_err": f"degrees between the (L1x, L1y, L1z) directions of order-1 SH fits of "
                             f"luminance / albedo luminance (albedo > {ALBEDO_FLOOR}) to ground-truth normals",
            "pair_rule": f"g = q*{pairs_per_pose} + k (pose q, slot k); source (HDRI[g mod nH], pan[g mod nP]), "
                         "target (HDRI[(g mod nH + 1 + g mod (nH-1)) mod nH], pan[(g div nP) mod nP]); "
                         "names and pans sorted; round-robin over poses",
        },
        "pairs": pair_info,
        "results": results,
        "normals": normals_result,
        "seconds": total,
    }
    summary = _clean(summary)
    summary["table"] = format_table(summary)
    if out_dir is not None:
        files = {"json": os.path.join(out_dir, "eval.json"), "table": os.path.join(out_dir, "table.txt")}
        if sheet_rows:
            files["contact_sheet"] = os.path.join(out_dir, "contact_sheet.png")
        summary["files"] = files
        try:
            with open(files["json"], "w", encoding="utf-8") as f:
                json.dump({k: v for k, v in summary.items() if k != "table"}, f, indent=1)
            with open(files["table"], "w", encoding="utf-8") as f:
                f.write(summary["table"] + "\n")
            if sheet_rows:
                _write_sheet(files["contact_sheet"], sheet_rows, methods)
        except OSError as exc:
            raise OutputError(f"cannot write the evaluation results ({exc.strerror})", out_dir) from None
    return summary


# ============================================================================= reporting
def _fmt(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def format_table(summary: dict) -> str:
    methods = summary["methods"]
    res = summary["results"]
    lines = [f"relight eval: {summary['pairs_evaluated']} pairs, poses {', '.join(f'{p:g}' for p in summary['poses'])}"
             f" ({summary['dataset']})"
             + "".join(f"; --{k.replace('_', '-')} {v:g}" for k, v in (summary.get("settings") or {}).items()), ""]
    lines.append(f"{'method':<10} {'si-RMSE(lum)':>12} {'si-RMSE(rgb)':>12} {'SSIM(lum)':>10} "
                 f"{'light-dir':>10} {'s/pair':>7}")
    for m in methods:
        mean = res[m]["mean"]
        lines.append(f"{m:<10} {_fmt(mean['si_rmse'], '12.3f')} {_fmt(mean['si_rmse_rgb'], '12.3f')} "
                     f"{_fmt(mean['ssim'], '10.3f')} {_fmt(mean['light_dir_err'], '9.1f')}° "
                     f"{_fmt(res[m]['seconds_per_pair'], '8.2f')}")
    lines += ["", "per target HDRI: si-RMSE(lum) / SSIM(lum) / light-dir(deg)"]
    hdris = sorted({h for m in methods for h in res[m]["per_target_hdri"]})
    width = max([len(h) for h in hdris] + [4])
    lines.append(f"{'hdri':<{width}} {'n':>3}  " + "  ".join(f"{m:<21}" for m in methods))
    for h in hdris:
        cells, n = [], 0
        for m in methods:
            r = res[m]["per_target_hdri"].get(h)
            if r is None:
                cells.append(f"{'-':<21}")
                continue
            n = r["pairs"]
            cells.append(f"{_fmt(r['si_rmse'], '.3f')} / {_fmt(r['ssim'], '.3f')} / {_fmt(r['light_dir_err'], '4.1f')}"
                         .ljust(21))
        lines.append(f"{h:<{width}} {n:>3}  " + "  ".join(cells))
    nr = summary.get("normals")
    if nr:
        face = nr.get("face_mean_angle_deg")
        lines += ["", f"normals vs normal.exr ({nr['renders']} renders): {_fmt(nr['mean_angle_deg'], '.1f')}° mean "
                      f"over the matte, " + (f"{face:.1f}° on the face ({nr['renders_with_face']} renders with a face)"
                                             if face is not None else "no face found")]
    lines.append(f"total {summary['seconds']:.1f} s")
    return "\n".join(lines)


TILE = 192


def _crop_box(alpha: np.ndarray) -> Tuple[int, int, int, int]:
    h, w = alpha.shape
    ys, xs = np.nonzero(alpha > 0.5)
    if ys.size == 0:
        return 0, 0, w, h
    cx, cy = (xs.min() + xs.max()) / 2.0, (ys.min() + ys.max()) / 2.0
    half = max(xs.max() - xs.min(), ys.max() - ys.min()) * 0.55 + 2
    half = min(half, max(w, h) / 2.0)
    x0 = int(round(min(max(cx - half, 0), max(w - 2 * half, 0))))
    y0 = int(round(min(max(cy - half, 0), max(h - 2 * half, 0))))
    return x0, y0, min(w, int(x0 + 2 * half)), min(h, int(y0 + 2 * half))


def _tile(img: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    crop = img[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if max(crop.shape[:2]) > TILE else cv2.INTER_LINEAR
    return cv2.resize(crop, (TILE, TILE), interpolation=interp)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    tile = tile.copy()
    cv2.rectangle(tile, (0, 0), (TILE - 1, 15), (0, 0, 0), -1)
    cv2.putText(tile, text[:30], (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def _sheet_tiles(data: LightStage, src: Render, dst: Render, out: np.ndarray, truth: Truth, method: str,
                 row: dict) -> list:
    box = _crop_box(data.alpha(src))
    m = truth.mask
    inp = srgb_to_linear(data.image(src))
    s_in = si_scale(luminance(inp)[m], truth.lum[m]) if m.any() else 1.0
    s_out = row["scale"] if row["scale"] is not None and np.isfinite(row["scale"]) else 1.0
    err = np.zeros(m.shape, np.float32)
    rms = float(np.sqrt(np.mean(truth.lum[m] ** 2))) if m.any() else 1.0
    err[m] = np.abs(s_out * luminance(out)[m] - truth.lum[m]) / max(rms, 1e-12)
    heat = cv2.applyColorMap(np.clip(err * 255.0, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    heat = np.where(m[..., None], heat, (heat * 0.25).astype(np.uint8))
    return [
        _label(_tile(linear_to_srgb8(inp * np.float32(s_in)), box), f"input {src.hdri}@{src.pan:g}"),
        _label(_tile(linear_to_srgb8(out * np.float32(s_out)), box), f"{method} si {_fmt(row['si_rmse'], '.3f')}"),
        _label(_tile(linear_to_srgb8(truth.linear), box), f"truth {dst.hdri}@{dst.pan:g}"),
        _label(_tile(np.ascontiguousarray(heat), box), f"|err|/rms  ssim {_fmt(row['ssim'], '.2f')}"),
    ]


def _write_sheet(path: str, rows: list, methods: Sequence[str]) -> None:
    order = {m: k for k, m in enumerate(methods)}
    rows = sorted(rows, key=lambda r: (r[0], order[r[1]]))
    lines = [np.concatenate(tiles, axis=1) for _, _, tiles in rows]
    sheet = np.concatenate(lines, axis=0)
    header = np.zeros((18, sheet.shape[1], 3), np.uint8)
    for k, name in enumerate(("input (si-scaled)", "output (si-scaled)", "ground truth", "error (0..1 x RMS)")):
        cv2.putText(header, name, (k * TILE + 4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    sheet = np.concatenate([header, sheet], axis=0)
    if not cv2.imwrite(path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OutputError("cannot write the contact sheet", path)


# ============================================================================= video contact sheet
VIDEO_SHEET_HDRIS = ("sunset", "studio", "city")
VIDEO_SHEET_PANS = (0.0, 120.0, 240.0)
VIDEO_SHEET_FRAMES = 2
VIDEO_TILE_H = 180


def _read_frames(path: str, indices: Optional[Sequence[int]], count: int):
    """(frames as uint8 RGB, their indices, the clip's frame count) of a video or an image."""
    from .stages.decode import open_input, probe

    info = probe(path)
    total = max(1, int(info.frame_count)) if info.is_video else 1
    if indices is None:
        n = max(1, int(count))
        want = sorted({int(round((k + 1) * (total - 1) / (n + 1))) for k in range(n)}) if total > 1 else [0]
    else:
        want = sorted({int(i) for i in indices if 0 <= int(i) < total} or {0})
    got, idx = [], []
    with open_input(path) as source:
        for frame in source:
            if frame.index in want:
                rgb = frame.rgb if frame.rgb.dtype == np.uint8 else linear_to_srgb8(frame.rgb)
                got.append(np.ascontiguousarray(rgb[..., :3]))
                idx.append(frame.index)
            if frame.index >= want[-1]:
                break
    return got, idx, total


def _sheet_label(tile: np.ndarray, text: str) -> np.ndarray:
    tile = tile.copy()
    cv2.rectangle(tile, (0, 0), (tile.shape[1] - 1, 14), (0, 0, 0), -1)
    cv2.putText(tile, text[: max(8, tile.shape[1] // 6)], (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (255, 255, 255), 1,
                cv2.LINE_AA)
    return tile


def video_sheet(clips: Sequence[str], out_path: str, hdris: Sequence[str] = VIDEO_SHEET_HDRIS,
                pans: Sequence[float] = VIDEO_SHEET_PANS, frames: Optional[Sequence[int]] = None,
                frames_per_clip: int = VIDEO_SHEET_FRAMES, tile_height: int = VIDEO_TILE_H,
                background: str = "hdri", show_progress: bool = True, **settings) -> dict:
    """A contact sheet of real footage relit to several HDRIs and pans: one row per (clip,
    frame), the input first, then one tile per (HDRI, pan), each relit by the full pipeline
    (:class:`~relight.pipeline.Relighter`, one frame at a time, ``background`` default the HDRI
    seen through the virtual camera, so the light's side can be checked against the
    background). The first column of each HDRI group also shows the person's matte outline in
    green on the input (matte quality: blobs, halos).

    ``frames``: frame indices to show (default ``frames_per_clip`` evenly spread);
    ``settings``: any other :class:`~relight.settings.RelightSettings` field (``specular``,
    ``vfov`` ...). Writes ``out_path`` (PNG) and returns ``{"sheet", "rows", "tiles", "seconds"}``."""
    from .pipeline import Relighter
    from .settings import RelightSettings
    from .stages.perception import Perceiver

    if not clips:
        raise UsageError("--video-sheet needs at least one clip")
    hdris = [h for h in hdris if str(h).strip()]
    pans = [float(p) for p in pans]
    if not hdris or not pans:
        raise UsageError("the video sheet needs at least one HDRI and one pan")
    start = time.perf_counter()
    rows: List[np.ndarray] = []
    combos = [(h, p) for h in hdris for p in pans]
    progress = _Progress(len(clips) * max(1, frames_per_clip if frames is None else len(frames)) * len(combos),
                         show_progress)
    with Perceiver(video=False) as perceiver:
        relighters = {}
        try:
            for h, p in combos:
                relighters[(h, p)] = Relighter(RelightSettings(hdri=h, pan=p, background=background, **settings),
                                               video=False, perceiver=perceiver)
            for clip in clips:
                imgs, idxs, total = _read_frames(str(clip), frames, frames_per_clip)
                name = os.path.splitext(os.path.basename(str(clip)))[0]
                for img, fi in zip(imgs, idxs):
                    H, W = img.shape[:2]
                    tw = max(16, int(round(W * tile_height / float(H))))
                    size = (tw, tile_height)
                    per = perceiver.process(img)
                    edge = cv2.morphologyEx((per.matte > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT,
                                            np.ones((3, 3), np.uint8)) > 0
                    outlined = img.copy()
                    outlined[cv2.dilate(edge.astype(np.uint8), np.ones((max(1, W // 400),) * 2, np.uint8)) > 0] = (0, 255, 0)
                    tiles = [_sheet_label(cv2.resize(img, size, interpolation=cv2.INTER_AREA), f"{name} #{fi}"),
                             _sheet_label(cv2.resize(outlined, size, interpolation=cv2.INTER_AREA), "matte")]
                    for (h, p) in combos:
                        out = relighters[(h, p)].process(img)
                        tiles.append(_sheet_label(cv2.resize(out[..., :3], size, interpolation=cv2.INTER_AREA),
                                                  f"{os.path.splitext(os.path.basename(h))[0]} pan {p:g}"))
                        progress.update(f"{name} #{fi} {h}@{p:g}")
                    rows.append(np.concatenate(tiles, axis=1))
        finally:
            progress.close()
            for r in relighters.values():
                r.close()
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    sheet = np.concatenate(rows, axis=0)
    out_path = str(out_path)
    parent = os.path.dirname(os.path.abspath(out_path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output directory ({exc.strerror})", parent) from None
    if not cv2.imwrite(out_path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OutputError("cannot write the video contact sheet", out_path)
    return {"sheet": out_path, "rows": len(rows), "tiles": len(rows) * (len(combos) + 2),
            "seconds": time.perf_counter() - start}


# ============================================================================= command line
def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``relight eval`` (positional DIR included)."""
    p.add_argument("dataset", metavar="DIR", nargs="?", default=None,
                   help="light-stage set: a directory with manifest.json (optional with --video-sheet)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), metavar="LIST",
                   help=f"comma-separated methods among {', '.join(METHODS)}. Default: %(default)s")
    p.add_argument("--max-pairs", type=int, default=None, metavar="N",
                   help="evaluate only the first N pairs (round-robin over poses), for quick runs. Default: all")
    p.add_argument("--pairs-per-pose", type=int, default=PAIRS_PER_POSE, metavar="N",
                   help="pairs per pose of the pair rule. Default: %(default)s")
    p.add_argument("--out", default="eval-out", metavar="DIR",
                   help="where to write eval.json, table.txt and contact_sheet.png. Default: %(default)s")
    p.add_argument("--sheet-pairs", type=int, default=SHEET_PAIRS, metavar="N",
                   help="pairs shown in the contact sheet (each with every method). Default: %(default)s")
    p.add_argument("--no-normals", action="store_true", help="skip the normals check (run with relight)")
    lo, hi, text = RANGES["fill"]
    p.add_argument("--fill", type=float, default=None, metavar="X",
                   help=f"the relight method's (and the video sheet's) --fill: {text}. Range {lo:g}..{hi:g}, "
                        f"default {default_of('fill'):g}")
    p.add_argument("--video-sheet", nargs="+", default=None, metavar="CLIP",
                   help="also (or, without DIR, only) write OUT/video_sheet.png: frames of these videos or images "
                        "relit to --sheet-hdris at --sheet-pans over the HDRI background, for looking at")
    p.add_argument("--sheet-hdris", default=",".join(VIDEO_SHEET_HDRIS), metavar="LIST",
                   help="comma-separated HDRIs (presets or files) of the video sheet. Default: %(default)s")
    p.add_argument("--sheet-pans", default=",".join(f"{p:g}" for p in VIDEO_SHEET_PANS), metavar="LIST",
                   help="comma-separated pans (degrees) of the video sheet. Default: %(default)s")
    p.add_argument("--sheet-frames", default=None, metavar="LIST",
                   help=f"comma-separated frame indices of the video sheet. Default: {VIDEO_SHEET_FRAMES} per clip, "
                        "evenly spread")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress and no table (files are still written)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout instead of the table")
    p.add_argument("--debug", action="store_true", help="show a full traceback on errors")


def add_eval_parser(subparsers, **kwargs) -> argparse.ArgumentParser:
    """Add ``eval`` to an argparse subparsers object; the handler is :func:`cmd_eval`."""
    p = subparsers.add_parser(
        "eval", help="measure relighting accuracy on a light-stage set",
        description="Relight renders of a light-stage set (img.png + alpha.png) to the lighting of other renders "
                    "of the same pose and score them against the ground truth (linear.exr): scale-invariant "
                    "RMSE, SSIM and light-direction error; writes eval.json, table.txt and contact_sheet.png.",
        **kwargs)
    add_eval_arguments(p)
    p.set_defaults(handler=cmd_eval)
    return p


def cmd_eval(args: argparse.Namespace) -> int:
    """Run ``relight eval`` from parsed arguments; raises RelightError subclasses on failure."""
    clips = getattr(args, "video_sheet", None)
    settings = {} if getattr(args, "fill", None) is None else {"fill": float(args.fill)}
    if args.dataset is None and not clips:
        raise UsageError("relight eval needs a light-stage set DIR, or --video-sheet CLIP...")
    sheet = None
    if clips:
        try:
            hdris = [h.strip() for h in str(args.sheet_hdris).split(",") if h.strip()]
            pans = [float(x) for x in str(args.sheet_pans).split(",") if x.strip()]
            frames = [int(x) for x in str(args.sheet_frames).split(",") if x.strip()] if args.sheet_frames else None
        except ValueError:
            raise UsageError("--sheet-pans and --sheet-frames take comma-separated numbers") from None
        sheet = video_sheet(clips, os.path.join(args.out, "video_sheet.png"), hdris=hdris, pans=pans, frames=frames,
                            show_progress=not args.quiet, **settings)
        if args.dataset is None:
            if args.json:
                print(json.dumps(_clean(sheet)))
            elif not args.quiet:
                print(f"wrote {sheet['sheet']} ({sheet['rows']} rows, {sheet['seconds']:.1f} s)")
            return 0
    summary = evaluate(args.dataset, out_dir=args.out, methods=args.methods, max_pairs=args.max_pairs,
                       pairs_per_pose=args.pairs_per_pose, normals=not args.no_normals,
                       sheet_pairs=args.sheet_pairs, show_progress=not args.quiet, **settings)
    if sheet is not None:
        summary.setdefault("files", {})["video_sheet"] = sheet["sheet"]
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "table"}))
    elif not args.quiet:
        print(summary["table"])
        print("wrote " + ", ".join(summary.get("files", {}).values()))
    return 0


def main_eval(argv: Optional[Sequence[str]] = None) -> int:
    """``relight eval`` as a standalone entry point (``python -m relight.evaluate``): the same
    command, errors and exit codes as through ``relight``."""
    from .cli import main

    return main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    from .cli import exit_process

    exit_process(main_eval())
