"""Temporal stability: the per-frame estimates of a video, made steady over time.

Every other stage looks at one frame. Run independently on each frame of a video, their
estimates jitter (face-mesh landmarks move by a pixel or two, the segmentation breathes at the
hair, the fitted source lighting and its absolute level wander), and the relit video flickers:
shading swims across the face, the exposure pumps, the matte shimmers. This stage sits between
them and keeps one shot's state (see :class:`TemporalStabilizer`):

* **motion**: DIS optical flow (OpenCV) from each frame back to the previous one, on the
  luminance at a longest side of at most 320 px (2-3 ms), with a per-pixel confidence from
  the photometric error of the warp (occlusions and failures get none). Everything that is
  carried from frame to frame is carried *along this flow*, so the smoothing follows the person
  instead of lagging behind fast motion.
* **landmarks**: a One-Euro filter (Casiez et al. 2012) per face-mesh landmark, between
  perception and geometry: strong smoothing when the face is still, little when it moves (the
  cutoff rises with the speed, measured in face widths per second). Faces are matched from frame
  to frame by position; a face the tracker loses for a moment is held (moved with the flow) for
  ``face_hold`` seconds instead of popping the shading to the no-face model and back.
* **matte**: the previous (stabilised) matte, warped by the flow, is blended with the new one
  where the flow is reliable and the two agree (a motion-compensated recursive filter, at the
  flow's resolution; the correction is upsampled and added to the full-resolution matte, so its
  edges keep following the current frame's edges; where the mattes disagree by much, e.g. at an
  edge the flow did not follow exactly, the new one wins, so nothing lags).
* **shading**: the same motion-compensated blend for the geometry's working-resolution normals
  and depth (all the shading and the cast shadows are functions of them and of the lighting),
  so the shading moves with the person and is re-estimated only gradually; a large change of a
  normal (a head turning) passes quickly.
* **shading fields**: the render's working-resolution factors (the gain the person is
  multiplied by, its highlights) get the same motion-compensated blend (``fields_tau``,
  ``fields_tol`` on the log gain), which also steadies what the normals do not decide: the
  materials, the hair sheen, the cast shadows and the source fit's spatial shape. That state
  belongs to the render (:class:`FieldSmoother`), which may run a frame behind in its own thread.
* **shading on alternate frames**: the shading (the geometry, the source fit and the render's
  fields) is estimated on every ``shading_every``-th frame of a shot only; in between, the
  carried normals, depth and fields are moved along the flow without a blend
  (:meth:`TemporalStabilizer.carry_geometry`, :meth:`FieldSmoother.carry`), and the next blend
  counts the time they were carried, so the time constants stay the same. The caller decides
  (:meth:`relight.pipeline.Relighter.analyse`: not with ``--autorotate``, where the lighting moves
  every frame).
* **source lighting**: the fitted SH irradiance and its albedo scale averaged over a sliding
  time window (triangular weights, ``source_window`` seconds; the scale geometrically), so the
  exposure of the de-lit person does not pump (a finite window: its state is the same in a
  video processed in chunks as in one pass once a window has gone by).
* **de-flicker**: the input's colour at the working resolution (on the person) gets the same
  motion-compensated recursive filter (``deflicker_tau``, ``deflicker_tol`` on the log colour)
  before it is de-lit: its frame-to-frame flicker (camera auto-exposure, compression, a
  flickering lamp, which the relit person's light, the target's, must not show) is held back,
  while the fine detail (full resolution) and every larger change pass
  (:meth:`TemporalStabilizer.deflicker`; the render multiplies its de-lighting by the factor).
* **8-bit hold**: the relit person's steady but not constant values (the smoothed fields still
  move by a fraction of a level from frame to frame) would flip between two 8-bit codes wherever
  they lie near a rounding boundary: a one-level shimmer over flat regions (a plain shirt) that
  the input, whose codec repeats static blocks exactly, does not have. The output is encoded with
  hysteresis instead: a pixel keeps the previous frame's code while its value stays within
  0.5 + ``output_hold`` levels of it (:class:`OutputHold`; the error stays under 0.7 levels).
* **presence**: the fraction of the frame covered by the matte, with hysteresis, decides
  whether a person is there; the effect (the matte the compositor uses) fades in and out over
  ``fade_time`` seconds instead of popping. With no person the frame passes through untouched
  (the relighting work is skipped).
* **scene cuts**: a colour-histogram change that the flow does not explain resets the state
  (the next frames are processed as by a fresh pipeline; only the fade carries over).
* **repeated frames**: a frame identical to the previous one reuses the previous estimates, so a
  still image fed as a video gives identical frames.

All filters are frame-rate aware (time constants in seconds, applied with the frames'
presentation times; a missing or non-increasing time counts as 1 / ``default_fps``) and
deterministic. The recursive ones forget exponentially (0.25 to 0.6 s), so a video processed in
chunks matches one pass to well under one 8-bit level after about half a second of warm-up (the
8-bit hold can keep a pixel one level apart while its value stays near a rounding boundary: on
the tests' clip it adds 0.1-0.2% of pixels to the ~9% that the face tracker's own history leaves
one level or more apart).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Deque, List, Optional, Tuple

import cv2
import numpy as np

from .. import kernels
from ..envmap import length
from ..types import FrameViews, Geometry, SourceLighting


@dataclass
class TemporalOptions:
    flow_size: int = 320  # longest side of the images the optical flow runs on
    flow_preset: int = cv2.DISOPTICAL_FLOW_PRESET_FAST
    flow_finest_scale: int = 1  # DIS pyramid level the flow is refined down to (0 = full flow resolution)
    # DIS variational refinement iterations per level: the preset's 5 cost 4.4 ms a frame, 2 cost
    # 3.1 (0 cost 2.0, but every sweep cell lost 0.01-0.02 of warp-error ratio; 2 changed none by
    # more than 0.002)
    flow_refine_iters: int = 2
    photo_tau: float = 0.06  # warp error (grey, 0..1, locally averaged) at which the flow confidence is 1/e
    # landmarks: One-Euro filter
    lm_min_cutoff: float = 1.0  # Hz, cutoff of a still face
    lm_beta: float = 6.0  # cutoff increase in Hz per face width per second of landmark speed
    lm_d_cutoff: float = 2.0  # Hz, cutoff of the speed estimate
    face_hold: float = 0.3  # seconds a lost face is kept (moved with the flow)
    face_match: float = 0.5  # a new face continues an old one if their centres are closer than this x face width
    # motion-compensated recursive blends (weight of the warped previous estimate where the flow is reliable)
    matte_tau: float = 0.3  # seconds: time constant of the matte's recursive blend, scaled down where the new matte
    matte_tol: float = 0.3  # and the warped previous one differ by much more than this (a moving edge: no lag)
    # the stabilised matte below this is 0: the correction, made at the flow's resolution, would
    # otherwise leave a faint alpha (< 1/255) over a wide band around the person (~8% of a 720p
    # frame, where the input matte is 0), which every later full-resolution step treats as person
    matte_floor: float = 1.0 / 1024.0
    normals_tau: float = 0.6  # seconds: the same for the normals of the body (silhouette inflation) ...
    face_normals_tau: float = 0.25  # ... and of the face (from the One-Euro-filtered face mesh); both are
    # scaled down where the new normals differ from the warped ones by much more than
    normals_tol: float = 45.0  # ... this many degrees (a real change, e.g. a head turning, is followed quickly)
    depth_tol: float = 0.02  # the depth (cast shadows) is carried like the normals, scaled down where it differs by
    # much more than this fraction of the working image's longest side
    normals_prefilter: float = 0.0  # Gaussian sigma (working pixels) against aliasing of face-mesh edges (off: the
    # geometry stage's own ``smooth`` does this)
    fields_tau: float = 0.6  # seconds: the same for the render's shading fields (the gain the person is multiplied
    fields_tol: float = 0.4  # by), scaled down where the new gain differs from the warped one by much more than this
    # (natural log: 0.4 ~ 50%)
    shading_every: int = 2  # the shading (geometry, source fit, shading fields) is estimated on every n-th frame of
    # a shot and carried along the flow in between (1: every frame; see Relighter); the matte is made every frame
    # source lighting: sliding window
    source_window: float = 0.6  # seconds
    # de-flicker (TemporalStabilizer.deflicker): the input's low-passed colour on the person, filtered in time along
    # the flow with this time constant (seconds; 0 = off), is what is de-lit; the factor is limited to
    # ``deflicker_max`` (natural log) either way
    deflicker_tau: float = 0.2
    deflicker_tol: float = 0.1  # (natural log) where the colour changes by much more than this, the change passes
    # (0.05 left d12/forest's pumping at 0.97x the input's and 1.04x under --autorotate 10; 0.1: 0.98x there)
    deflicker_sigma: float = 0.5  # working pixels: the scale of the low-passed colour (0.5 to 4 tried: finer was
    # steadier on every clip tried, e.g. d12/warehouse warp-error ratio 1.050 at 4, 1.018 at 1, 1.009 at 0.5)
    deflicker_max: float = 0.1
    # the 8-bit output's hysteresis (OutputHold, colour.linear_to_srgb8's ``hold``): a person's pixel keeps
    # the previous frame's code while its value is within 0.5 + this many levels of it (0 = off). 0.1, 0.2
    # and 0.3 took s18/forest/10's warp-error ratio (60 frames) from 1.073 to 1.040, 1.027 and 1.024, and
    # its detail SSIM from 0.873 to 0.872, 0.870 and 0.867
    output_hold: float = 0.2
    # presence of a person (matte coverage of the frame, with hysteresis) and the fade of the effect
    presence_on: float = 0.004
    presence_off: float = 0.002
    fade_time: float = 0.2  # seconds
    # scene cuts
    cut_hist: float = 0.25  # Hellinger distance of the colour histograms above which a cut is considered ...
    cut_photo: float = 0.05  # ... when the flow-warped previous frame also differs by this much (mean grey)
    cut_hist_sure: float = 0.5  # above this distance: a cut whatever the flow says
    max_gap: float = 2.0  # seconds: a longer gap between frame times (or time going back) resets the state
    default_fps: float = 30.0


def _keep(tau: float, dt: float) -> float:
    """Weight of the previous state in a first-order recursive filter with time constant ``tau``
    seconds, at time step ``dt``."""
    return math.exp(-dt / tau) if tau > 0 else 0.0


def _alpha(cutoff, dt: float):
    """Smoothing factor of a first-order low-pass with ``cutoff`` Hz at time step ``dt``."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """The One-Euro filter (Casiez, Roussel & Vogel, CHI 2012) on arrays of values.

    ``x_hat = x_hat_prev + a(fc) (x - x_hat_prev)`` with the cutoff ``fc = min_cutoff + beta
    |dx/dt|`` (per row of the array: the speed of a point is the norm of its first two
    coordinates' speed, divided by ``scale``), so slow jitter is removed and fast motion is
    followed without lag. Written as increments, so a constant input gives a constant output
    exactly."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.x: Optional[np.ndarray] = None
        self.dx: Optional[np.ndarray] = None

    def __call__(self, x: np.ndarray, dt: float, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.x is None or self.x.shape != x.shape:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x.copy()
        dx = (x - self.x) / dt
        self.dx = self.dx + _alpha(self.d_cutoff, dt) * (dx - self.dx)
        speed = np.linalg.norm(self.dx[..., :2], axis=-1, keepdims=True) / max(scale, 1e-6)
        a = _alpha(self.min_cutoff + self.beta * speed, dt)
        self.x = self.x + a * (x - self.x)
        return self.x.copy()


@dataclass
class _Track:
    filt: OneEuroFilter
    last: np.ndarray  # filtered landmarks (N, 3) float64
    lost_for: float = 0.0  # seconds since the face was last seen


def _face_width(lm: np.ndarray) -> float:
    return float(max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1]), 1.0))


@dataclass
class FrameMotion:
    """What :meth:`TemporalStabilizer.begin` found out about a frame."""

    dt: float
    first: bool  # the first frame of a shot (start, or after a reset)
    cut: bool  # a scene cut (or a time jump) reset the state before this frame
    duplicate: bool  # identical to the previous frame
    flow: Optional[np.ndarray] = None  # (h, w, 2) float32 at the flow resolution: frame -> previous frame
    confidence: Optional[np.ndarray] = None  # (h, w) float32 in [0, 1]
    hist_distance: float = 0.0
    photo_error: float = 0.0
    _sized: dict = field(default_factory=dict, repr=False, compare=False)

    def at(self, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
        """(flow, confidence) resized to (h, w), the flow's vectors scaled with it; made once
        per size (the analysis and the render's stages share them)."""
        key = (int(h), int(w))
        if key not in self._sized:
            self._sized[key] = (_resize_flow(self.flow, h, w), _resize_to(self.confidence, (h, w)))
        return self._sized[key]


class TemporalStabilizer:
    """The temporal state of one video (see the module docstring). Call, per frame, in order:
    :meth:`begin` (motion, cuts), then :meth:`faces`, :meth:`matte`, :meth:`presence`,
    :meth:`geometry`, :meth:`source` on that frame's estimates (each optional), or
    :meth:`carry_geometry` on a frame whose shading is not estimated."""

    def __init__(self, options: Optional[TemporalOptions] = None):
        self.options = options or TemporalOptions()
        self._dis = cv2.DISOpticalFlow_create(int(self.options.flow_preset))
        self._dis.setFinestScale(int(self.options.flow_finest_scale))
        self._dis.setVariationalRefinementIterations(int(self.options.flow_refine_iters))
        self.weight = 0.0  # presence weight of the effect, 0..1
        self._present = False
        self._started = False
        self.frames = 0
        self.cuts = 0
        self._rgb_prev: Optional[np.ndarray] = None
        self._grey_prev: Optional[np.ndarray] = None
        self._hist_prev: Optional[np.ndarray] = None
        self._time_prev: Optional[float] = None
        self.motion: Optional[FrameMotion] = None
        self.dt = 1.0 / self.options.default_fps
        self._matte_frame: Optional[np.ndarray] = None  # this frame's low-resolution stabilised matte
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget everything estimated so far (a new shot). The presence weight is kept, so the
        effect still fades instead of popping."""
        self._tracks: List[_Track] = []
        self._matte_small: Optional[np.ndarray] = None
        self._normals: Optional[np.ndarray] = None
        self._depth: Optional[np.ndarray] = None
        self._normals_carried = 0.0  # seconds the normals were carried (warped, not blended) since the last blend
        self._sources: Deque[Tuple[float, np.ndarray, float]] = deque()
        self._flicker_prev: Optional[np.ndarray] = None  # the de-flicker's filtered log colour (last frame)
        self._time = 0.0  # shot time: sum of the frame steps since the reset
        self._shot_frames = 0

    # ------------------------------------------------------------------ per frame: motion
    def prepare(self, views: FrameViews) -> None:
        """Make ahead the reduced copies of a frame that :meth:`begin` will take (any thread)."""
        self._thumbnails(views)

    def _thumbnails(self, views: FrameViews) -> Tuple[np.ndarray, np.ndarray]:
        """(grey at the flow resolution, colour thumbnail for the histogram)."""
        H, W = views.rgb8.shape[:2]
        h, w = _small_hw(H, W, self.options.flow_size)
        grey = views.resized("grey", w, h, _interpolation(H, h))
        h, w = _small_hw(H, W, _HIST_SIZE)
        return grey, views.resized("rgb8", w, h, _interpolation(H, h))

    def begin(self, rgb8: np.ndarray, time: Optional[float] = None, views: Optional[FrameViews] = None) -> FrameMotion:
        """Register a new frame (uint8 RGB): frame step, repeated frame, scene cut, optical
        flow. Resets the state on a cut. ``views``: ``rgb8``'s
        :class:`~relight.types.FrameViews`, if the caller has them."""
        o = self.options
        if views is None or views.rgb8 is not rgb8:
            views = FrameViews(np.ascontiguousarray(rgb8[..., :3]))
        grey, thumb = self._thumbnails(views)
        hist = _colour_hist(thumb)
        t = None if time is None else float(time)
        default_dt = 1.0 / o.default_fps
        dt, cut, dup = default_dt, False, False
        flow = conf = None
        hdist = photo = 0.0
        same_size = self._grey_prev is not None and self._grey_prev.shape == grey.shape and \
            self._rgb_prev is not None and self._rgb_prev.shape == rgb8.shape
        if self._time_prev is not None and t is not None:
            step = t - self._time_prev
            if step > 0 and math.isfinite(step):
                dt = step
            if not math.isfinite(step) or step < -1e-6 or step > o.max_gap:
                cut = True
        if not same_size:
            cut = cut or self._grey_prev is not None
        else:
            dup = np.array_equal(grey, self._grey_prev) and np.array_equal(rgb8, self._rgb_prev)
            if dup:  # nothing moved
                flow = np.zeros(grey.shape + (2,), np.float32)
                conf = np.ones(grey.shape, np.float32)
            else:
                hdist = _hellinger(hist, self._hist_prev)
                if hdist > o.cut_hist_sure:
                    cut = True
                if not cut:
                    flow = self._dis.calc(grey, self._grey_prev, None)
                    warped = _warp(self._grey_prev, flow)
                    err = cv2.absdiff(warped, grey).astype(np.float32) * np.float32(1.0 / 255.0)
                    photo = float(err.mean())
                    if hdist > o.cut_hist and photo > o.cut_photo:
                        cut = True
                        flow = None
                    else:
                        err = cv2.blur(err, (5, 5))
                        conf = np.exp(-np.square(err * np.float32(1.0 / o.photo_tau)))
                        conf *= _inside(flow)
        if cut:
            self.cuts += 1
            self.reset()
        first = self._shot_frames == 0
        self.dt = dt
        self._matte_frame = None
        self._time += 0.0 if first else dt
        self._shot_frames += 0 if dup else 1
        self.frames += 1
        self._grey_prev, self._hist_prev, self._time_prev = grey, hist, t if t is not None else self._time_prev
        self._rgb_prev = rgb8 if rgb8.flags.writeable is False else rgb8.copy()
        self.motion = FrameMotion(dt=dt, first=first, cut=cut, duplicate=dup and not cut, flow=flow, confidence=conf,
                                  hist_distance=hdist, photo_error=photo)
        return self.motion

    def skip(self) -> None:
        """This frame's shading was not estimated (no person): the carried normals are dropped,
        so they are not blended into a later frame they no longer belong to (the render's
        :class:`FieldSmoother` is told the same by :meth:`FieldSmoother.clear`)."""
        self._normals = self._depth = None
        self._normals_carried = 0.0
        self._flicker_prev = None  # (the next frame with a person starts the de-flicker afresh)

    def carry_geometry(self, geometry: Geometry) -> Optional[Geometry]:
        """A frame whose shading is not estimated (``shading_every``): the carried normals and
        depth are moved along this frame's flow (no blend; the next blend accounts for the time
        they were carried) and returned in ``geometry`` (the last estimated one). None when there
        is nothing to carry (the caller then estimates the shading)."""
        m = self.motion
        n = self._normals
        if m is None or m.flow is None or m.first or n is None or geometry.work_normals is None \
                or geometry.work_normals.shape != n.shape:
            return None
        h, w = n.shape[:2]
        flow = m.at(h, w)[0]
        warped = _warp(n, flow)
        warped /= np.maximum(length(warped), 1e-6)[..., None]
        self._normals = warped
        changes = {"work_normals": warped}
        if self._depth is not None:
            self._depth = changes["work_depth"] = _warp(self._depth, flow)
        self._normals_carried += m.dt
        return replace(geometry, normals=None, size=geometry.frame_size(), **changes)

    # ------------------------------------------------------------------ landmarks
    def faces(self, faces: List[np.ndarray], image_hw: Tuple[int, int]) -> List[np.ndarray]:
        """One-Euro-filtered face landmarks (same layout as given), plus faces held for a moment
        after the tracker lost them."""
        o, m = self.options, self.motion
        dt = m.dt if m is not None else 1.0 / o.default_fps
        new = [np.asarray(f, dtype=np.float64) for f in faces]
        used = [False] * len(self._tracks)
        out: List[np.ndarray] = []
        tracks: List[_Track] = []
        for lm in new:
            width = _face_width(lm)
            centre = lm[:, :2].mean(0)
            best, best_d = -1, o.face_match * width
            for i, tr in enumerate(self._tracks):
                if used[i] or tr.last.shape != lm.shape:
                    continue
                d = float(np.linalg.norm(tr.last[:, :2].mean(0) - centre))
                if d < best_d:
                    best, best_d = i, d
            if best >= 0:
                used[best] = True
                tr = self._tracks[best]
            else:
                tr = _Track(OneEuroFilter(o.lm_min_cutoff, o.lm_beta, o.lm_d_cutoff), lm)
            tr.last = tr.filt(lm, dt, width)
            tr.lost_for = 0.0
            tracks.append(tr)
            out.append(tr.last.astype(np.float32))
        for i, tr in enumerate(self._tracks):  # lost faces: hold a moment, moved with the image
            if used[i]:
                continue
            tr.lost_for += dt
            if tr.lost_for > o.face_hold:
                continue
            shift = self._face_shift(tr.last, image_hw)
            if shift is not None:
                tr.last = tr.last.copy()
                tr.last[:, :2] += shift
                tr.filt.x = tr.last.copy()
            tracks.append(tr)
            out.append(tr.last.astype(np.float32))
        self._tracks = tracks
        return out

    def carry_landmarks(self, faces: List[np.ndarray]) -> Optional[List[np.ndarray]]:
        """The previous frame's face landmarks (normalised to the frame, as the face mesh gives
        them) moved along this frame's optical flow, point by point, or None without a flow
        (the first frame of a shot). The flow maps this frame to the previous one; each point
        is where the flow takes back to it (two fixed-point steps)."""
        m = self.motion
        if m is None or m.flow is None or m.first:
            return None
        h, w = m.flow.shape[:2]
        out = []
        for lm in faces:
            lm = np.asarray(lm, np.float32)
            p = lm[:, :2] * np.float32([w, h]) - np.float32(0.5)  # (flow pixel centres)
            q = p.copy()
            for _ in range(2):
                q = p - _sample(m.flow, q)
            moved = lm.copy()
            moved[:, :2] = (q + np.float32(0.5)) / np.float32([w, h])
            out.append(moved)
        return out

    def _face_shift(self, lm: np.ndarray, image_hw) -> Optional[np.ndarray]:
        """The image motion (pixels, previous -> current) of a face's box: -median flow."""
        m = self.motion
        if m is None or m.flow is None:
            return None
        H, W = image_hw
        h, w = m.flow.shape[:2]
        sx, sy = w / float(W), h / float(H)
        x0, x1 = int(np.floor(lm[:, 0].min() * sx)), int(np.ceil(lm[:, 0].max() * sx)) + 1
        y0, y1 = int(np.floor(lm[:, 1].min() * sy)), int(np.ceil(lm[:, 1].max() * sy)) + 1
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 <= x0 or y1 <= y0:
            return None
        f = m.flow[y0:y1, x0:x1].reshape(-1, 2)
        return -np.median(f, axis=0) / np.array([sx, sy])

    # ------------------------------------------------------------------ matte
    def matte(self, matte: np.ndarray) -> np.ndarray:
        """The matte blended with the previous frame's (warped along the flow) where the flow is
        reliable, at the flow resolution; the low-frequency correction is added at full
        resolution."""
        o, m = self.options, self.motion
        H, W = matte.shape
        small = _resize_to(matte.astype(np.float32, copy=False), m.flow.shape[:2] if m is not None and m.flow is not None
                           else _small_hw(H, W, o.flow_size))
        prev = self._matte_small
        if m is None or m.flow is None or prev is None or prev.shape != small.shape:
            self._matte_small = self._matte_frame = small
            return matte
        warped = _warp(prev, m.flow)
        diff = warped - small
        k = np.float32(_keep(o.matte_tau, m.dt)) * m.confidence * np.exp(-np.square(diff * np.float32(1.0 / o.matte_tol)))
        stab = small + k * diff
        self._matte_small = self._matte_frame = stab
        corr = stab - small
        if kernels.available():  # the same three full-resolution steps in one pass
            return kernels.add_upsampled(matte.astype(np.float32, copy=False), corr, o.matte_floor)
        if (H, W) != corr.shape:
            corr = cv2.resize(corr, (W, H), interpolation=cv2.INTER_LINEAR)
        out = cv2.add(matte.astype(np.float32, copy=False), corr)
        out[out < o.matte_floor] = 0.0
        return np.clip(out, 0.0, 1.0, out=out)

    # ------------------------------------------------------------------ presence
    def presence(self, matte: np.ndarray) -> float:
        """The weight (0..1) of the effect: 1 while a person is in the frame, fading in and out
        over ``fade_time`` seconds. The first frame of a video starts at its target."""
        o = self.options
        small = self._matte_frame if self._matte_frame is not None else _resize_to(
            matte.astype(np.float32, copy=False), _small_hw(*matte.shape, o.flow_size))
        coverage = float((small > 0.5).mean())
        if self._present:
            self._present = coverage >= o.presence_off
        else:
            self._present = coverage >= o.presence_on
        target = 1.0 if self._present else 0.0
        if not self._started:
            self.weight = target
            self._started = True
        else:
            step = (self.motion.dt if self.motion is not None else 1.0 / o.default_fps) / max(o.fade_time, 1e-6)
            self.weight = min(target, self.weight + step) if target > self.weight else max(target, self.weight - step)
        return self.weight

    # ------------------------------------------------------------------ de-flicker
    def deflicker(self, image: np.ndarray, matte: np.ndarray) -> Optional[np.ndarray]:
        """The factor (h, w, 3) float32 to multiply this frame's input by before it is de-lit,
        or None (1): the input's low spatial frequencies (its colour averaged over
        ``deflicker_sigma`` working pixels on the person), filtered in time along the flow, so
        that their frame-to-frame changes (camera auto-exposure, compression, a flickering lamp,
        the source shading jittering) do not reach the relit person. The relit person's light
        is the target's; the fine detail, and every change the flow does not explain by more
        than ``deflicker_tol``, pass as they are.

        ``image``: the frame's working-resolution linear copy (h, w, 3); ``matte``: its matte at
        that size. A motion-compensated recursive filter of the log of the low-passed colour
        (as the matte's): the previous filtered image, warped along the flow, is blended with
        this frame's where the flow is reliable and the two agree (time constant
        ``deflicker_tau``); the factor is their ratio, limited to ``deflicker_max`` (log) either
        way. None on a shot's first frame and without a flow (the filter starts there)."""
        o, m = self.options, self.motion
        if o.deflicker_tau <= 0:
            return None
        k = max(0.5, float(o.deflicker_sigma))
        mat = np.ascontiguousarray(np.clip(matte, 0.0, 1.0), np.float32)
        den = cv2.GaussianBlur(mat, (0, 0), k)
        num = cv2.GaussianBlur(np.ascontiguousarray(image, np.float32) * mat[..., None], (0, 0), k)
        low = cv2.log(np.maximum(num / np.maximum(den, np.float32(1e-3))[..., None], np.float32(1e-4)))
        prev = self._flicker_prev
        self._flicker_prev = low
        if m is None or m.first or m.flow is None or prev is None or prev.shape != low.shape:
            return None
        flow, conf = m.at(*low.shape[:2])  # (a repeated frame's: zero and one)
        diff = _warp(prev, flow) - low
        # exp(-mean over channels of (diff / tol)^2), in OpenCV calls (numpy's channel mean is 5x slower)
        agree = cv2.exp(cv2.transform(cv2.multiply(diff, diff), np.full((1, 3), -1.0 / (3.0 * o.deflicker_tol ** 2))))
        keep = np.float32(_keep(o.deflicker_tau, m.dt)) * conf * agree * (den > np.float32(0.5))
        corr = np.clip(keep[..., None] * diff, -o.deflicker_max, o.deflicker_max)
        self._flicker_prev = low + corr
        return cv2.exp(corr)

    # ------------------------------------------------------------------ shading
    def geometry(self, geometry: Geometry) -> Geometry:
        """The working-resolution normals (and depth, for cast shadows) blended with the previous
        frame's, warped along the flow, where it is reliable (the full-resolution normals, if any, are
        then derived from them on request)."""
        o, m = self.options, self.motion
        n = geometry.work_normals
        if n is None:
            return geometry
        n = n.astype(np.float32, copy=False)
        h, w = n.shape[:2]
        if o.normals_prefilter > 0:
            # working-resolution steps (the face mesh's occluding edges) jump a whole working
            # pixel as the face moves: an anti-aliasing blur makes them move smoothly
            n = cv2.GaussianBlur(n, (0, 0), o.normals_prefilter)
            n /= np.maximum(length(n), 1e-6)[..., None]
        depth = geometry.work_depth
        depth = None if depth is None or depth.shape != (h, w) else depth.astype(np.float32, copy=False)
        prev, prev_depth = self._normals, self._depth
        if m is None or m.flow is None or prev is None or prev.shape != n.shape:
            self._normals, self._depth = n.copy(), None if depth is None else depth.copy()
            self._normals_carried = 0.0
            if o.normals_prefilter <= 0:
                return geometry
            return replace(geometry, normals=None, work_normals=self._normals, size=geometry.frame_size())
        flow, conf = m.at(h, w)
        dt = m.dt + self._normals_carried  # (the time since the last blend)
        self._normals_carried = 0.0
        keep = np.float32(_keep(o.normals_tau, dt))
        keep_face = np.float32(_keep(o.face_normals_tau, dt))
        if keep_face != keep:
            face = geometry.face_at_work().astype(np.float32, copy=False)
            keep = keep + (keep_face - keep) * face
        keep = keep * conf
        warped = _warp(prev, flow)
        # adaptive: small differences (estimation jitter) are smoothed hard, large ones (the
        # surface really turned) pass quickly; 1 - cos(angle) ~ angle^2 / 2
        cos = np.einsum("hwc,hwc->hw", warped, n)
        tol = 1.0 - math.cos(math.radians(o.normals_tol))
        k = keep * np.exp(-np.maximum(1.0 - cos, 0.0) / np.float32(tol))
        blended = n + k[..., None] * (warped - n)
        blended /= np.maximum(length(blended), 1e-6)[..., None]
        blended = blended.astype(np.float32)
        self._normals = blended
        changes = {"work_normals": blended}
        if depth is not None:
            if prev_depth is not None and prev_depth.shape == depth.shape:
                diff = _warp(prev_depth, flow) - depth
                kd = keep * np.exp(-np.square(diff * np.float32(1.0 / max(o.depth_tol * max(h, w), 1e-6))))
                depth = (depth + kd * diff).astype(np.float32)
            self._depth = depth
            changes["work_depth"] = depth
        # the full-resolution normals (if any were given) no longer match: derived on request
        return replace(geometry, normals=None, size=geometry.frame_size(), **changes)

    # ------------------------------------------------------------------ source lighting
    def source(self, source: SourceLighting) -> SourceLighting:
        """The source lighting averaged over the last ``source_window`` seconds (triangular
        weights). What the render divides the input by is ``E_src(n) / albedo_scale``, and the
        fit's absolute level and its albedo scale move together from frame to frame, so the
        average is taken of ``sh / albedo_scale`` (and of log ``albedo_scale``)."""
        o = self.options
        now = self._time
        scale = max(float(source.albedo_scale), 1e-12)
        self._sources.append((now, np.asarray(source.sh, np.float64) / scale, math.log(scale)))
        while self._sources and now - self._sources[0][0] >= o.source_window:
            self._sources.popleft()
        wsum, sh, ls = 0.0, 0.0, 0.0
        for t, s, l in self._sources:
            wgt = 1.0 - (now - t) / o.source_window
            wsum += wgt
            sh = sh + wgt * s
            ls += wgt * l
        scale = math.exp(ls / wsum)
        return SourceLighting(sh=(sh / wsum * scale).astype(np.float32), albedo_scale=float(scale))


class FieldSmoother:
    """The render's working-resolution shading fields (see
    :class:`~relight.stages.render.PersonFields`: de-lighting, target diffuse and specular,
    source specular) blended with the previous frame's, warped along the flow, where it is
    reliable and the two agree: the gain the person is multiplied by moves with the person and
    is re-estimated only gradually (whatever made it change: the normals, the materials, the
    cast shadows, the source fit), while a large change (a head turning into the light, a new
    pose) passes within a few frames.

    It is kept apart from :class:`TemporalStabilizer` because it belongs to the render, which
    may run one frame behind the analysis in another thread: its state changes only through its
    own calls, made in frame order with each frame's :class:`FrameMotion`."""

    def __init__(self, options: Optional[TemporalOptions] = None):
        self.options = options or TemporalOptions()
        self._fields: Optional[np.ndarray] = None
        self._carried = 0.0  # seconds the fields were carried (warped, not blended) since the last blend

    def clear(self) -> None:
        """A frame without shading fields (no person): nothing is carried past it."""
        self._fields = None

    def carry(self, motion: Optional[FrameMotion]) -> Optional[np.ndarray]:
        """A frame whose fields are not estimated (``shading_every``): the carried fields moved
        along its flow, or None when there is nothing to carry (the caller then estimates them)."""
        m, prev = motion, self._fields
        if self.options.fields_tau <= 0 or m is None or m.flow is None or m.first or prev is None:
            return None
        h, w = prev.shape[:2]
        self._fields = _warp(prev, m.at(h, w)[0])
        self._carried += m.dt
        return self._fields

    def smooth(self, fields: np.ndarray, motion: Optional[FrameMotion]) -> np.ndarray:
        """This frame's (h, w, C) fields, blended with the carried ones along ``motion``'s flow
        (from :meth:`TemporalStabilizer.begin` for this frame). The first frame of a shot, or
        one without a flow, starts afresh."""
        o, m = self.options, motion
        prev = self._fields
        carried, self._carried = self._carried, 0.0
        if o.fields_tau <= 0 or m is None or m.flow is None or m.first or prev is None \
                or prev.shape != fields.shape:
            self._fields = fields
            return fields
        h, w = fields.shape[:2]
        flow, conf = m.at(h, w)
        warped = _warp(prev, flow)  # one remap of all the channels (several times faster than 3 at a time)

        def log_gain(f):  # log of the mean-channel diffuse gain (de-lighting x target)
            return np.log(np.maximum(np.einsum("hwc,hwc->hw", f[..., 0:3], f[..., 3:6]) * np.float32(1.0 / 3.0),
                                     np.float32(1e-4)))

        d = log_gain(warped) - log_gain(fields)
        k = np.float32(_keep(o.fields_tau, m.dt + carried)) * conf * np.exp(-np.square(d * np.float32(1.0 / o.fields_tol)))
        out = (fields + k[..., None] * (warped - fields)).astype(np.float32)
        self._fields = out
        return out


class OutputHold:
    """The previous frame's 8-bit output, for the hysteresis of the next one's encoding
    (``output_hold``, see the module docstring and :func:`relight.colour.linear_to_srgb8`).
    Like :class:`FieldSmoother`, it belongs to the render and changes only through its own
    calls, made in frame order."""

    def __init__(self, options: Optional[TemporalOptions] = None):
        self.options = options or TemporalOptions()
        self._last: Optional[np.ndarray] = None

    @property
    def hold(self) -> float:
        return max(0.0, float(self.options.output_hold))

    def clear(self) -> None:
        """A frame that passes through (no person): the next one is encoded afresh."""
        self._last = None

    def previous(self, motion: Optional[FrameMotion], shape) -> Optional[np.ndarray]:
        """The last frame's codes to hold this frame's to, or None: with the hold off, on a
        shot's first frame (a cut starts afresh), without a motion (a single image) or at
        another size."""
        last = self._last
        if self.hold <= 0 or motion is None or motion.first or last is None or last.shape != tuple(shape):
            return None
        return last

    def keep(self, rgb8: np.ndarray) -> None:
        """This frame's output (read, never written, by the next frame's encoding)."""
        self._last = rgb8 if self.hold > 0 else None


# ----------------------------------------------------------------------------- helpers
def _small_hw(H: int, W: int, longest: int) -> Tuple[int, int]:
    s = min(1.0, longest / float(max(H, W)))
    return max(1, int(round(H * s))), max(1, int(round(W * s)))


def _interpolation(src_h: int, h: int) -> int:
    """Area-averaging to shrink, bilinear to enlarge."""
    return cv2.INTER_AREA if src_h > h else cv2.INTER_LINEAR


def _resize_to(img: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    h, w = hw
    if img.shape[:2] == (h, w):
        return img
    return cv2.resize(img, (w, h), interpolation=_interpolation(img.shape[0], h))


def _resize_flow(flow: np.ndarray, h: int, w: int) -> np.ndarray:
    fh, fw = flow.shape[:2]
    if (fh, fw) == (h, w):
        return flow
    out = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
    out[..., 0] *= w / float(fw)
    out[..., 1] *= h / float(fh)
    return out


_GRIDS: dict = {}


def _grid(h: int, w: int):
    g = _GRIDS.get((h, w))
    if g is None:
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        g = _GRIDS[(h, w)] = (gx, gy)
        if len(_GRIDS) > 16:
            _GRIDS.pop(next(iter(_GRIDS)))
    return g


def _warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``img`` (the previous frame's) pulled onto the current frame: out(x) = img(x + flow(x))."""
    h, w = flow.shape[:2]
    gx, gy = _grid(h, w)
    return cv2.remap(img, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _inside(flow: np.ndarray) -> np.ndarray:
    """1 where the flow's source lies inside the previous frame, else 0 (float32)."""
    h, w = flow.shape[:2]
    gx, gy = _grid(h, w)
    sx, sy = gx + flow[..., 0], gy + flow[..., 1]
    return ((sx >= 0) & (sy >= 0) & (sx <= w - 1) & (sy <= h - 1)).astype(np.float32)


def _sample(field: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(n, C) bilinear samples of an (h, w, C) field at (n, 2) points (x, y in pixels, pixel
    centres at integers), the border replicated."""
    h, w = field.shape[:2]
    x = np.clip(pts[:, 0], 0, w - 1)
    y = np.clip(pts[:, 1], 0, h - 1)
    x0, y0 = np.minimum(x.astype(np.int64), w - 2 if w > 1 else 0), np.minimum(y.astype(np.int64), h - 2 if h > 1 else 0)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = field[y0, x0] * (1 - fx) + field[y0, x1] * fx
    bottom = field[y1, x0] * (1 - fx) + field[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


_HIST_SIZE = 64  # longest side of the thumbnail whose colour histogram detects cuts


def _colour_hist(small: np.ndarray, bins: int = 8) -> np.ndarray:
    """Normalised RGB histogram (bins^3) of a (thumbnail) uint8 image."""
    q = (small.astype(np.int32) * bins) >> 8
    idx = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    h = np.bincount(idx.ravel(), minlength=bins ** 3).astype(np.float64)
    return h / max(h.sum(), 1.0)


def _hellinger(p: np.ndarray, q: np.ndarray) -> float:
    return float(math.sqrt(max(0.0, 1.0 - float(np.sqrt(p * q).sum()))))
