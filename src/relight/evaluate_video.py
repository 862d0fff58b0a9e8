"""Temporal stability of a relit video: ``relight eval-video INPUT [OUTPUT]``.

Compares a relit video (OUTPUT) with the video it was made from (INPUT), frame by frame, and
reports how steady the output is *relative to the input* (a relit video must be as steady as
its input: no lighting, exposure or colour pumping, no shimmering mattes, no shading swimming
across the face), and how much of the input's fine detail survived. Without OUTPUT, INPUT is
relit in memory (``--hdri``, ``--pan``, ``--autorotate``) and the frames are measured as they
leave the pipeline, before encoding: an 8-bit 4:2:0 encode on its own (even x264's lossless
mode) adds a few percent of warp error, and a lossy one (crf 18) costs detail SSIM and adds
pumping (re-encoding a clip's own frames at crf 18 scores about 1.05 / 0.77 / +25% pumping).

Everything is measured on the *input's* motion and the *input's* person:

* **person mask**: MediaPipe selfie segmentation of each input frame (the same
  :class:`~relight.stages.perception.Perceiver` as the pipeline, in video mode), matte > 0.5,
  eroded by ``erode`` pixels (2 up to 720p), so mixed background/person edge pixels do not
  count (they depend on the chosen background, not on stability).
* **motion**: DIS optical flow (OpenCV, preset ``medium``) between consecutive input frames, in
  both directions, on the luminance at a longest side of at most ``flow_size`` (640) pixels.
  Frame t-1 is warped onto frame t with the backward flow (bilinear). A pixel counts only where
  the forward-backward check passes (|b + f(x + b)|^2 <= 0.01 (|b|^2 + |f|^2) + 0.5 px^2 at
  the flow resolution: occlusions and unreliable flow are left out), its source lies inside the
  frame, and it is inside the person in frame t and in the warped frame t-1.

Metrics (colour values are the 8-bit sRGB codes / 255, i.e. what a viewer sees; "local level"
is the frame's mean-channel value blurred with a Gaussian of 1% of its longest side, at least
0.02):

1. **warp-error ratio** (the headline): the mean over the counted pixels of all frame pairs of
   ``|warp(V[t-1]) - V[t]| / local level`` (mean over the three channels), output divided by
   input. 1.0 = as steady as the input. Dividing each pixel by its local level makes the ratio
   measure *relative* (Weber) change, which is what flicker looks like: an output that is the
   input times any smooth, steady gain field (a perfect ratio-image relighting, brighter on one
   side and darker on the other) scores 1.0, while shading that swims or pumps scores more. The
   table also gives the ratio of the plain mean errors (``raw``) and of the errors divided by
   each video's mean level (``global``): those two also move when relighting merely brightens
   noisy shadows or darkens the person. ``flicker`` is the second-order version,
   ``|V[t] - (warp(V[t-1]) + warp(V[t+1])) / 2|``: a change that is linear in time (a light
   rotating at a steady rate under ``--autorotate``) cancels in it, flicker does not.
2. **exposure pumping** of a video: for each frame pair, the motion-compensated change of the
   person's colour, ``mean((V[t] - warp(V[t-1])) / local level)`` over the counted pixels (so
   motion, matte changes and noise cancel, and a global gain or colour change remains), per
   channel; the mean of its absolute value over channels and frame pairs, in percent per frame.
   ``jitter`` is the part that is not smooth in time: ``|d[t] - (d[t-1] + d[t+1]) / 2|``; the
   change of the plain mean colour (divided by the mean level) is reported too.
3. **detail SSIM**: the fine detail of the luminance, relative to its local level,
   ``D = Y / G(Y) - 1`` (Y linear Rec.709 luminance, G a Gaussian of sigma 1% of the face width,
   at least 1 px: pores, lashes, strands), for input and output; the division by the local
   level normalises the gain, so a smooth relighting keeps D unchanged, while blurred,
   re-synthesised or noisy detail does not. SSIM (Gaussian window sigma 1.5, K1 0.01, K2 0.03)
   between the two D images with a data range of 1 (D is a Weber contrast: the constants then
   stand for 1% and 3% contrast, about the threshold of visibility), averaged over the face: the
   face-mesh oval of the input (eroded by 2% of its width) or, in frames with no face found, the
   top quarter of the person mask's box. For scale: a Gaussian blur of 1.5 px or added noise of
   2 levels scores about 0.8; a smooth gain ramp 0.97-0.99.

Diagnostic: **fine-detail contrast**, the RMS of ``D`` (sigma 1.5 px) over the person, output
over input. The warp error of textured, moving regions (hair) grows with their contrast (the
flow never aligns strands exactly), so an output that sharpens or brightens texture (e.g. hair
sheen modulated by the strands) reads as less steady by about this factor without flickering.

Reference: DPR (Zhou et al. 2019) run frame by frame scores warp-error ratios of 1.1-2.3 (mean
1.63) and a detail SSIM of 0.42 (definitions of that measurement may differ from these).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .colour import SRGB8_TO_LINEAR, REC709_LUMA
from .errors import InputError, UsageError

FLOW_SIZE = 640
FB_ALPHA = 0.01  # forward-backward consistency: |b + f|^2 <= FB_ALPHA (|b|^2 + |f|^2) + FB_BETA
FB_BETA = 0.5
DETAIL_SIGMA = 0.01  # high-pass Gaussian, fraction of the face width
SSIM_SIGMA = 1.5
LEVEL_SIGMA = 0.01  # local level: Gaussian of 1% of the frame's longest side ...
LEVEL_FLOOR = 0.02  # ... and at least this (sRGB code / 255)
CONTRAST_SIGMA = 1.5  # px: the fine detail whose contrast (output / input) is reported as a diagnostic
DETAIL_RANGE = 1.0  # SSIM data range of the relative detail (Weber contrast): K1, K2 = 1%, 3% contrast


# ============================================================================= helpers
def dis_flow(preset: int = None):
    """A DIS optical-flow object (deterministic; OpenCV's DISOpticalFlow)."""
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM if preset is None else preset)


def gray8(rgb8: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb8[..., :3]), cv2.COLOR_RGB2GRAY)


def resize_longest(img: np.ndarray, longest: int) -> Tuple[np.ndarray, float]:
    h, w = img.shape[:2]
    s = min(1.0, longest / float(max(h, w)))
    if s >= 1.0:
        return img, 1.0
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA), size[0] / float(w)


def backward_warp_maps(flow_bwd: np.ndarray, flow_fwd: np.ndarray, out_hw: Tuple[int, int], scale: float):
    """Full-resolution remap maps that pull frame t-1 onto frame t, and the validity mask.

    ``flow_bwd``: flow t -> t-1 and ``flow_fwd``: flow t-1 -> t, both at the flow resolution
    (``scale`` = flow / full). Valid: forward-backward consistent and the source in the frame."""
    h, w = flow_bwd.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    sx, sy = gx + flow_bwd[..., 0], gy + flow_bwd[..., 1]
    f_at = cv2.remap(flow_fwd, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    d = flow_bwd + f_at
    err = (d * d).sum(-1)
    mag = (flow_bwd * flow_bwd).sum(-1) + (f_at * f_at).sum(-1)
    ok = (err <= FB_ALPHA * mag + FB_BETA) & (sx >= 0) & (sy >= 0) & (sx <= w - 1) & (sy <= h - 1)
    H, W = out_hw
    if (h, w) != (H, W):
        fb = cv2.resize(flow_bwd, (W, H), interpolation=cv2.INTER_LINEAR) / np.float32(scale)
        ok = cv2.resize(ok.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) > 0
    else:
        fb = flow_bwd
    GX, GY = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    mx, my = GX + fb[..., 0], GY + fb[..., 1]
    ok &= (mx >= 0) & (my >= 0) & (mx <= W - 1) & (my <= H - 1)
    return mx, my, ok


def _ssim_map(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def relative_detail(lum: np.ndarray, sigma: float) -> np.ndarray:
    """Y / G_sigma(Y) - 1 (float64): fine detail relative to the local level."""
    low = cv2.GaussianBlur(lum, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return lum / np.maximum(low, 1e-4) - 1.0


def face_region(faces: Sequence[np.ndarray], mask: np.ndarray) -> Tuple[np.ndarray, float]:
    """The face pixels (bool, (H, W)) and the face width in pixels: the face-mesh oval of every
    face (eroded by 2% of its width), or with no face the top quarter of the person's box."""
    H, W = mask.shape
    region = np.zeros((H, W), np.uint8)
    width = 0.0
    if faces:
        from .models.mediapipe_backend import face_mesh_regions

        path = face_mesh_regions()["oval_path"]
        for lm in faces:
            xy = np.asarray(lm)[path, :2]
            fw = float(np.ptp(xy[:, 0]))
            if fw < 8:
                continue
            one = np.zeros((H, W), np.uint8)
            cv2.fillPoly(one, [np.round(xy * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
            e = max(1, int(round(0.02 * fw)))
            one = cv2.erode(one, np.ones((2 * e + 1, 2 * e + 1), np.uint8))
            region |= one
            width = max(width, fw)
    if width == 0.0 and mask.any():
        ys, xs = np.nonzero(mask)
        y0, y1 = ys.min(), ys.max() + 1
        x0, x1 = xs.min(), xs.max() + 1
        top = y0 + max(1, (y1 - y0) // 4)
        region[y0:top] = mask[y0:top]
        width = float(min(x1 - x0, 0.6 * (y1 - y0)))  # a head is narrower than the shoulders
    return region > 0, width


# ============================================================================= the meter
@dataclass
class _Video:
    err_sum: float = 0.0  # sum over counted pixels of |warp(V[t-1]) - V[t]| (mean over channels)
    err_local_sum: float = 0.0  # the same, each pixel divided by its local level
    level_sum: float = 0.0  # sum over counted pixels of the mean channel value
    changes: List[np.ndarray] = field(default_factory=list)  # per pair: mean colour change / mean level (3,)
    changes_local: List[np.ndarray] = field(default_factory=list)  # per pair: mean of (colour change / local level)
    errors: List[float] = field(default_factory=list)  # per pair: mean local warp error
    flicker_sum: float = 0.0  # sum over counted pixels of |V[t] - (warp(V[t-1]) + warp(V[t+1])) / 2| / local level
    flicker_pixels: int = 0

    def add(self, prev_warped: np.ndarray, cur: np.ndarray, sel: np.ndarray, level_sigma: float) -> None:
        a, b = prev_warped[sel], cur[sel]
        local = cv2.GaussianBlur(cur.mean(axis=2), (0, 0), level_sigma)[sel]
        inv = 1.0 / np.maximum(local, LEVEL_FLOOR)[:, None]
        diff = b - a
        e = np.abs(diff).mean(axis=1)
        self.err_sum += float(e.sum(dtype=np.float64))
        el = e * inv[:, 0]
        self.err_local_sum += float(el.sum(dtype=np.float64))
        level = float(b.sum(dtype=np.float64)) / 3.0
        self.level_sum += level
        self.changes.append(diff.mean(axis=0, dtype=np.float64) / max(level / len(b), 1e-6))
        self.changes_local.append((diff * inv).mean(axis=0, dtype=np.float64))
        self.errors.append(float(el.mean()))

    def add_flicker(self, before: np.ndarray, cur: np.ndarray, after: np.ndarray, sel: np.ndarray,
                    level_sigma: float) -> None:
        local = cv2.GaussianBlur(cur.mean(axis=2), (0, 0), level_sigma)[sel]
        r = np.abs(cur[sel] - 0.5 * (before[sel] + after[sel])).mean(axis=1)
        self.flicker_sum += float((r / np.maximum(local, LEVEL_FLOOR)).sum(dtype=np.float64))
        self.flicker_pixels += int(r.size)


class StabilityMeter:
    """Streams (input frame, output frame) pairs and accumulates the stability metrics.

    >>> meter = StabilityMeter()
    >>> for a, b in zip(input_frames, output_frames):   # uint8 sRGB (H, W, 3)
    ...     meter.add(a, b)
    >>> meter.result()["warp_error_ratio"]
    """

    def __init__(self, flow_size: int = FLOW_SIZE, erode: Optional[int] = None, perceiver=None):
        self.flow_size = int(flow_size)
        self.erode = erode
        self._own_perceiver = perceiver is None
        if perceiver is None:
            from .stages.perception import Perceiver

            perceiver = Perceiver(video=True)
        self.perceiver = perceiver
        self.flow = dis_flow()
        self.frames = 0
        self.pairs = 0
        self.pixels = 0  # counted pixels over all pairs
        self.vin, self.vout = _Video(), _Video()
        self.ssim_sum = 0.0
        self.ssim_pixels = 0
        self.ssim_frames = 0
        self.face_frames = 0
        self._contrast = [0.0, 0.0]  # sum of squared relative detail inside the person: input, output
        self._prev = None  # (input, output, gray small, mask)

    def close(self) -> None:
        if self._own_perceiver:
            self.perceiver.close()

    def __enter__(self) -> "StabilityMeter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, inp: np.ndarray, out: np.ndarray) -> None:
        inp = np.ascontiguousarray(inp[..., :3])
        out = np.ascontiguousarray(out[..., :3])
        if inp.dtype != np.uint8 or out.dtype != np.uint8:
            raise ValueError("StabilityMeter.add expects uint8 sRGB frames")
        if inp.shape != out.shape:
            raise ValueError(f"input frame {inp.shape} and output frame {out.shape} differ in size")
        H, W = inp.shape[:2]
        perception = self.perceiver.process(inp)
        erode = self.erode if self.erode is not None else max(2, int(round(0.0015 * max(H, W))))
        mask = (perception.matte > 0.5).astype(np.uint8)
        if erode > 0:
            mask = cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8), borderType=cv2.BORDER_CONSTANT,
                             borderValue=0)
        mask = mask > 0
        small, scale = resize_longest(gray8(inp), self.flow_size)
        fi = inp.astype(np.float32) * np.float32(1.0 / 255.0)
        fo = out.astype(np.float32) * np.float32(1.0 / 255.0)
        sigma = max(2.0, LEVEL_SIGMA * max(H, W))
        step = None
        if self._prev is not None:
            p_in, p_out, p_small, p_mask, p_step = self._prev
            if p_small.shape == small.shape:
                fwd = self.flow.calc(p_small, small, None)
                bwd = self.flow.calc(small, p_small, None)
                mx, my, ok = backward_warp_maps(bwd, fwd, (H, W), scale)
                wm = cv2.remap(p_mask.astype(np.uint8), mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
                sel = ok & mask & (wm > 0)
                step = (mx, my, sel, p_in, p_out)  # frame t-1 pulled onto frame t
                n = int(sel.sum())
                if n > 0:
                    self.pairs += 1
                    self.pixels += n
                    for v, prev, cur in ((self.vin, p_in, fi), (self.vout, p_out, fo)):
                        warped = cv2.remap(prev, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                        v.add(warped, cur, sel, sigma)
                if p_step is not None:
                    # second order at the previous frame: (t-2 -> t-1) and (t -> t-1), symmetric
                    bx, by, bsel, pp_in, pp_out = p_step
                    ax, ay, aok = backward_warp_maps(fwd, bwd, (H, W), scale)  # frame t onto frame t-1
                    am = cv2.remap(mask.astype(np.uint8), ax, ay, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
                    fsel = bsel & aok & (am > 0)
                    if fsel.any():
                        for v, before, prev, cur in ((self.vin, pp_in, p_in, fi), (self.vout, pp_out, p_out, fo)):
                            wb = cv2.remap(before, bx, by, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                            wa = cv2.remap(cur, ax, ay, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                            v.add_flicker(wb, prev, wa, fsel, sigma)
        self._detail(inp, out, perception.face_landmarks, mask)
        if mask.any():
            luma = REC709_LUMA.astype(np.float32)
            for k, img in enumerate((inp, out)):
                d = relative_detail(SRGB8_TO_LINEAR[img] @ luma, CONTRAST_SIGMA)
                self._contrast[k] += float(np.square(d[mask]).sum(dtype=np.float64))
        self._prev = (fi, fo, small, mask, step)
        self.frames += 1

    def _detail(self, inp, out, faces, mask) -> None:
        region, width = face_region(faces, mask)
        if faces:
            self.face_frames += 1
        if width <= 0 or region.sum() < 16:
            return
        ys, xs = np.nonzero(region)
        pad = int(math.ceil(4 * max(1.0, DETAIL_SIGMA * width))) + 8
        y0, y1 = max(0, ys.min() - pad), min(region.shape[0], ys.max() + 1 + pad)
        x0, x1 = max(0, xs.min() - pad), min(region.shape[1], xs.max() + 1 + pad)
        sigma = max(1.0, DETAIL_SIGMA * width)
        luma = REC709_LUMA.astype(np.float64)
        d = []
        for img in (inp, out):
            lin = SRGB8_TO_LINEAR[img[y0:y1, x0:x1]].astype(np.float64)
            d.append(relative_detail(lin @ luma, sigma))
        r = region[y0:y1, x0:x1]
        s = _ssim_map(d[0], d[1], DETAIL_RANGE)[r]
        self.ssim_sum += float(s.sum())
        self.ssim_pixels += int(s.size)
        self.ssim_frames += 1

    def result(self) -> dict:
        """The metrics so far (see the module docstring); NaN where nothing could be measured."""
        nan = float("nan")

        def pumping(changes) -> Tuple[float, float]:
            if not changes:
                return nan, nan
            d = np.array(changes) * 100.0
            pump = float(np.abs(d).mean())
            jit = float(np.abs(d[1:-1] - 0.5 * (d[:-2] + d[2:])).mean()) if len(d) >= 3 else nan
            return pump, jit

        def video(v: _Video) -> dict:
            n = self.pixels
            we = v.err_sum / n if n else nan
            level = v.level_sum / n if n else nan
            pump, jit = pumping(v.changes_local)
            pump_g, jit_g = pumping(v.changes)
            return {"warp_error_local": v.err_local_sum / n if n else nan, "warp_error": we, "level": level,
                    "flicker": v.flicker_sum / v.flicker_pixels if v.flicker_pixels else nan,
                    "warp_error_rel": we / level if level > 0 else nan, "pumping_pct": pump, "jitter_pct": jit,
                    "pumping_global_pct": pump_g, "jitter_global_pct": jit_g}

        def ratio(key):
            a, b = vo[key], vi[key]
            return a / b if b > 0 else nan

        vi, vo = video(self.vin), video(self.vout)
        return {
            "frames": self.frames,
            "pairs": self.pairs,
            "face_frames": self.face_frames,
            "warp_error_ratio": ratio("warp_error_local"),
            "warp_error_ratio_global": ratio("warp_error_rel"),
            "warp_error_ratio_raw": ratio("warp_error"),
            "flicker_ratio": ratio("flicker"),
            "pumping_ratio": ratio("pumping_pct"),
            "input": vi,
            "output": vo,
            "detail_ssim": self.ssim_sum / self.ssim_pixels if self.ssim_pixels else nan,
            "detail_contrast": math.sqrt(self._contrast[1] / self._contrast[0]) if self._contrast[0] > 0 else nan,
            "detail_frames": self.ssim_frames,
        }


def evaluate_frames(pairs: Iterable[Tuple[np.ndarray, np.ndarray]], *, flow_size: int = FLOW_SIZE,
                    perceiver=None) -> dict:
    """The metrics of (input frame, output frame) pairs (uint8 sRGB), in order."""
    with StabilityMeter(flow_size=flow_size, perceiver=perceiver) as meter:
        for a, b in pairs:
            meter.add(a, b)
        return meter.result()


def evaluate_video(input_path: str, output_path: str, *, max_frames: Optional[int] = None, start: int = 0,
                   flow_size: int = FLOW_SIZE, show_progress: bool = False) -> dict:
    """The metrics of OUTPUT against INPUT (video files of the same size, frames paired in order;
    the first ``start`` frames are skipped, at most ``max_frames`` are compared)."""
    from .progress import Progress
    from .stages.decode import open_input

    with open_input(input_path) as src, open_input(output_path) as dst:
        a, b = src.info, dst.info
        if not a.is_video:
            raise InputError("is not a video", input_path)
        if not b.is_video:
            raise InputError("is not a video", output_path)
        if (a.width, a.height) != (b.width, b.height):
            raise InputError(f"is {b.width}x{b.height}, the input {input_path} is {a.width}x{a.height}", output_path)
        total = min(a.frame_count, b.frame_count) - start
        if max_frames is not None:
            total = min(total, max_frames)
        progress = Progress(max(total, 0), label="eval-video", enabled=show_progress)
        try:
            with StabilityMeter(flow_size=flow_size) as meter:
                it_b = iter(dst)
                for fa in src:
                    fb = next(it_b, None)
                    if fb is None:
                        break
                    if fa.index < start:
                        continue
                    if max_frames is not None and meter.frames >= max_frames:
                        break
                    ra = fa.rgb if fa.rgb.dtype == np.uint8 else _to8(fa.rgb)
                    rb = fb.rgb if fb.rgb.dtype == np.uint8 else _to8(fb.rgb)
                    meter.add(ra, rb)
                    progress.update()
                result = meter.result()
        finally:
            progress.close()
        if max_frames is None and start == 0 and a.frame_count != b.frame_count:
            warnings.warn(f"{output_path} has {b.frame_count} frames, the input {a.frame_count}; "
                          f"compared the first {result['frames']}")
    result.update({"input_path": str(input_path), "output_path": str(output_path), "width": a.width,
                   "height": a.height, "fps": a.fps})
    return result


def evaluate_relight(input_path: str, settings=None, *, max_frames: Optional[int] = None, start: int = 0,
                     flow_size: int = FLOW_SIZE, show_progress: bool = False, temporal=None) -> dict:
    """The metrics of relighting INPUT with ``settings`` (a
    :class:`~relight.settings.RelightSettings`), measured on the relit frames as they leave the
    :class:`~relight.pipeline.Relighter`, before any lossy encoding (an 8-bit 4:2:0 encode, even
    a lossless one, adds a few percent of warp error and costs detail on its own). Frames
    ``start`` .. ``start + max_frames`` are relit by a fresh Relighter (``temporal``: its
    ``temporal`` argument; ``False`` relights every frame on its own, for comparison)."""
    from time import perf_counter

    from .pipeline import Relighter
    from .progress import Progress
    from .settings import RelightSettings
    from .stages.decode import open_input

    settings = (settings or RelightSettings()).validated()
    seconds = 0.0
    with open_input(input_path) as src:
        a = src.info
        if not a.is_video:
            raise InputError("is not a video", input_path)
        total = a.frame_count - start
        if max_frames is not None:
            total = min(total, max_frames)
        progress = Progress(max(total, 0), label="eval-video", enabled=show_progress)
        try:
            with Relighter(settings, video=True, temporal=temporal) as relighter, \
                    StabilityMeter(flow_size=flow_size) as meter:
                for fa in src:
                    if fa.index < start:
                        continue
                    if max_frames is not None and meter.frames >= max_frames:
                        break
                    ra = fa.rgb if fa.rgb.dtype == np.uint8 else _to8(fa.rgb)
                    t0 = perf_counter()
                    out = relighter.process(ra, time=fa.time)
                    seconds += perf_counter() - t0
                    meter.add(ra, out[..., :3])
                    progress.update()
                result = meter.result()
        finally:
            progress.close()
    result.update({"input_path": str(input_path), "output_path": f"relit in memory ({settings.hdri}, "
                   f"autorotate {settings.autorotate:g})", "width": a.width, "height": a.height, "fps": a.fps,
                   "relight_fps": result["frames"] / seconds if seconds > 0 else float("nan")})
    return result


def _to8(rgb: np.ndarray) -> np.ndarray:
    from .colour import linear_to_srgb8

    return linear_to_srgb8(rgb[..., :3])


# ============================================================================= report
def _f(x: float, nd: int = 3) -> str:
    return "   n/a" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def format_table(result: dict) -> str:
    """The metrics of one (input, output) pair as a small text table."""
    vi, vo = result["input"], result["output"]
    nan = float("nan")

    def r(a, b):
        return a / b if b and b > 0 else nan

    rows = [
        ("metric", "input", "output", "output/input"),
        ("warp error, local (Weber)", _f(vi["warp_error_local"], 4), _f(vo["warp_error_local"], 4),
         _f(result["warp_error_ratio"])),
        ("  2nd order (flicker)", _f(vi["flicker"], 4), _f(vo["flicker"], 4), _f(result["flicker_ratio"])),
        ("warp error / mean level", _f(vi["warp_error_rel"], 4), _f(vo["warp_error_rel"], 4),
         _f(result["warp_error_ratio_global"])),
        ("warp error, raw (0..1)", _f(vi["warp_error"], 4), _f(vo["warp_error"], 4), _f(result["warp_error_ratio_raw"])),
        ("exposure pumping (%/frame)", _f(vi["pumping_pct"]), _f(vo["pumping_pct"]), _f(result["pumping_ratio"])),
        ("  jitter (%/frame)", _f(vi["jitter_pct"]), _f(vo["jitter_pct"]), _f(r(vo["jitter_pct"], vi["jitter_pct"]))),
        ("  of the mean colour (%/frame)", _f(vi["pumping_global_pct"]), _f(vo["pumping_global_pct"]),
         _f(r(vo["pumping_global_pct"], vi["pumping_global_pct"]))),
        ("detail SSIM (face)", "", _f(result["detail_ssim"]), ""),
        ("fine-detail contrast (person)", "", "", _f(result.get("detail_contrast", float("nan")))),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{result.get('output_path', 'output')} vs {result.get('input_path', 'input')}: "
             f"{result['frames']} frames, {result['pairs']} pairs measured, face found in {result['face_frames']}"]
    for k, row in enumerate(rows):
        lines.append(f"{row[0]:<{widths[0]}}  " + "  ".join(f"{c:>{widths[i + 1]}}" for i, c in enumerate(row[1:])))
        if k == 0:
            lines.append("-" * (sum(widths) + 6))
    ok = (result["warp_error_ratio"] <= 1.10, result["detail_ssim"] >= 0.80, vo["pumping_pct"] <= vi["pumping_pct"])
    lines.append("targets: warp-error ratio <= 1.10 %s, detail SSIM >= 0.80 %s, pumping <= the input's %s"
                 % tuple("ok" if x else "MISSED" for x in ok))
    return "\n".join(lines)


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ============================================================================= command
def add_eval_video_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT", help="the original video")
    p.add_argument("output", metavar="OUTPUT", nargs="?", default=None,
                   help="the relit video made from INPUT (same size and frames). Without OUTPUT, INPUT is relit in "
                        "memory with --hdri/--pan/--autorotate and the relit frames are measured before encoding")
    p.add_argument("--hdri", default=None, help="without OUTPUT: the HDRI (file or preset) to relight to. Default: studio")
    p.add_argument("--pan", type=float, default=0.0, metavar="DEG", help="without OUTPUT: --pan of `relight run`")
    p.add_argument("--autorotate", type=float, default=0.0, metavar="DEG_PER_S",
                   help="without OUTPUT: --autorotate of `relight run`")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="compare at most N frames")
    p.add_argument("--start", type=int, default=0, metavar="K", help="skip the first K frames. Default: 0")
    p.add_argument("--flow-size", type=int, default=FLOW_SIZE, metavar="PX",
                   help="longest side at which the optical flow is computed. Default: %(default)s")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show a full traceback on errors")


def add_eval_video_parser(subparsers, **kwargs) -> argparse.ArgumentParser:
    """Add ``eval-video`` to an argparse subparsers object; the handler is :func:`cmd_eval_video`."""
    p = subparsers.add_parser(
        "eval-video", help="measure the temporal stability of a relit video",
        description="Compare a relit video with its input: temporal warp-error ratio (1.0 = as steady as the "
                    "input), exposure pumping of the person's mean colour, and detail SSIM inside the face.",
        **kwargs)
    add_eval_video_arguments(p)
    p.set_defaults(handler=cmd_eval_video)
    return p


def cmd_eval_video(args: argparse.Namespace) -> int:
    """Run ``relight eval-video`` from parsed arguments; raises RelightError subclasses on failure."""
    if args.max_frames is not None and args.max_frames < 2:
        raise UsageError(f"--max-frames must be at least 2, got {args.max_frames}")
    if args.start < 0:
        raise UsageError(f"--start must not be negative, got {args.start}")
    if not 32 <= args.flow_size <= 4096:
        raise UsageError(f"--flow-size must be in 32..4096, got {args.flow_size}")
    progress = not (args.quiet or args.json)
    if args.output is None:
        from .settings import RelightSettings

        settings = RelightSettings(hdri=args.hdri or "studio", pan=args.pan, autorotate=args.autorotate)
        result = evaluate_relight(args.input, settings, max_frames=args.max_frames, start=args.start,
                                  flow_size=args.flow_size, show_progress=progress)
    else:
        if args.hdri is not None or args.pan or args.autorotate:
            raise UsageError("--hdri, --pan and --autorotate relight INPUT in memory: give them without OUTPUT")
        result = evaluate_video(args.input, args.output, max_frames=args.max_frames, start=args.start,
                                flow_size=args.flow_size, show_progress=progress)
    if args.json:
        print(json.dumps(_json_safe(result)))
    else:
        print(format_table(result))
    return 0


def main_eval_video(argv: Optional[Sequence[str]] = None) -> int:
    """``relight eval-video`` as a standalone entry point (``python -m relight.evaluate_video``):
    the same command, errors and exit codes as through ``relight``."""
    from .cli import main

    return main(["eval-video", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    from .cli import exit_process

    exit_process(main_eval_video())
