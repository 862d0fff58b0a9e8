"""The pipeline: decode -> perception -> geometry -> lighting estimate -> render -> composite -> encode.

:class:`Relighter` relights frames given as numpy arrays (the Python API's core);
:func:`relight_file` runs the whole chain on a video or image file.
"""
from __future__ import annotations

import os
import warnings
from time import perf_counter
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Tuple

import cv2
import numpy as np

from . import envmap, kernels
from .colour import LINEAR_TO_SRGB8_LUT, TONE_KNEE, linear_to_srgb8, to_linear
from .errors import RelightWarning, UsageError
from .hdri import load_hdri
from .progress import Progress
from .settings import BACKGROUND_KEYWORDS, RelightSettings, parse_color
from .stages import composite as composite_stage
from .stages.decode import open_background_media, open_input, open_matte, probe
from .stages.encode import open_output, plan_output
from .stages.geometry import GeometryOptions, estimate_geometry, work_shape
from .stages.lighting import estimate_source_lighting
from .stages.perception import Perceiver
from .stages.render import (PersonFields, RenderOptions, TargetHDRI, apply_fields, catchlights_on, deflickered,
                             eye_boxes, person_fields, upsample_fields)
from .stages.temporal import FieldSmoother, FrameMotion, OutputHold, TemporalOptions, TemporalStabilizer
from .threads import BackgroundWriter, InOrder, Prefetch, blas_one_thread, no_huge_pages, one_core_per_call
from .types import FrameViews, Geometry, Perception, SourceLighting

# videos up to this size run each OpenCV call and kernel on one core (see relight_file)
ONE_CORE_PER_CALL_MAX_PIXELS = 1_500_000


@dataclass
class StageTimer:
    """Wall-clock seconds spent in each stage, summed over frames."""

    seconds: dict = field(default_factory=lambda: defaultdict(float))

    def add(self, stage: str, since: float) -> float:
        now = perf_counter()
        self.seconds[stage] += now - since
        return now


def background_media_path(background: str) -> Optional[str]:
    """The file named by ``--background``, or None for a keyword or a colour."""
    if background in BACKGROUND_KEYWORDS or parse_color(background) is not None:
        return None
    return background


class Relighter:
    """Relights frames of one video (or single images) with fixed :class:`RelightSettings`.

    >>> r = Relighter(RelightSettings(hdri="sunset", background="hdri"))
    >>> out = r.process(rgb_uint8, time=0.0)   # (H, W, 3) uint8 sRGB, same size

    ``process`` takes an (H, W, 3) uint8 sRGB frame, or a float32 scene-linear frame, and returns
    uint8 sRGB, or float32 scene-linear when ``linear_output`` is True (default: the same kind as
    the input). With ``background="transparent"`` the result has a 4th (alpha) channel:
    straight alpha for uint8, premultiplied for float (the OpenEXR convention).

    With ``video=True`` (the default) the frames are taken as one video: they must be given in
    order, with their presentation ``time`` in seconds (used by ``autorotate`` and by the
    temporal filters), and the per-frame estimates are kept steady over time by
    :class:`~relight.stages.temporal.TemporalStabilizer` (landmark, matte, shading and
    source-lighting smoothing along the optical flow; scene cuts reset it; frames without a person
    pass through, with the effect fading in and out; the shading is estimated on every second frame
    and carried along the flow in between, ``TemporalOptions.shading_every``). ``temporal`` overrides its
    :class:`~relight.stages.temporal.TemporalOptions`, or ``False`` turns it off. With
    ``video=False`` every frame is processed on its own. :meth:`reset` forgets the temporal state
    (call it between unrelated clips). The same frames give the same output on every run.
    ``perceiver`` lets several Relighters share one set of loaded models (the caller then closes
    it).
    """

    def __init__(self, settings: RelightSettings = RelightSettings(), *, video: bool = True,
                 linear_output: Optional[bool] = None, use_segmentation: bool = True,
                 perceiver: Optional[Perceiver] = None, temporal: "TemporalOptions | bool | None" = None):
        self.settings = settings.validated()
        self.hdri = load_hdri(settings.hdri)
        pixels = self.hdri.pixels
        self.pan0 = envmap.pan_for_light_from(pixels, settings.light_from) if settings.light_from else float(settings.pan)
        self.target_hdri = TargetHDRI(pixels)
        self.render_options = RenderOptions(fill=float(self.settings.fill))
        self.linear_output = linear_output
        self.temporal: Optional[TemporalStabilizer] = None
        if video and temporal is not False:
            self.temporal = TemporalStabilizer(temporal if isinstance(temporal, TemporalOptions) else None)
        # the render's own temporal state (it may run a frame behind, in another thread)
        self._field_smoother = FieldSmoother(self.temporal.options) if self.temporal is not None else None
        self._output_hold = OutputHold(self.temporal.options) if self.temporal is not None else None
        # a perceiver passed in (shared between several Relighters) is the caller's to close
        self._own_perceiver = perceiver is None
        if perceiver is None:
            # the temporal stage smooths the matte along the optical flow; the perceiver's own
            # (not motion-compensated, so lagging) smoothing is then left out
            extra = {"temporal": 0.0} if self.temporal is not None else {}
            perceiver = Perceiver(video=video, use_segmentation=use_segmentation, **extra)
        self.perceiver = perceiver
        self.timer = StageTimer()
        self._background: Optional[composite_stage.BackgroundMaker] = None
        # (the render's) last display background, and its 8-bit encoding once it came back unchanged
        self._background8: Optional[tuple] = None
        self._frames = 0
        self._last: Optional[tuple] = None  # the previous frame's estimates, reused for a repeated frame
        # the last estimated (geometry, source) and the frames since (see TemporalOptions.shading_every)
        self._shading: Optional[tuple] = None
        self._shading_age = 0
        self._faces: Optional[list] = None  # the last analysed frame's faces, as the face mesh gives them
        # (prepare's own state: it may run ahead, in another thread) the last frame's time, and
        # whether the face mesh was left out of it
        self._prepared_time: Optional[float] = None
        self._face_mesh_skipped = False

    # -- lifecycle
    def close(self) -> None:
        if self._own_perceiver:
            self.perceiver.close()
        media = self._background.media if self._background is not None else None
        if media is not None and hasattr(media, "close"):
            media.close()

    def __enter__(self) -> "Relighter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def reset(self) -> None:
        """Forget the temporal state (the next frame starts a new shot, as in a fresh Relighter)."""
        if self.temporal is not None:
            self.temporal.reset()
            self._field_smoother.clear()
            self._output_hold.clear()
        self.perceiver.reset(faces=True)
        self._last = None
        self._shading = None
        self._faces = None
        self._prepared_time, self._face_mesh_skipped = None, False

    def _reset_perception(self) -> None:
        """A new shot: the perceiver forgets its previous matte. (MediaPipe's face tracker needs
        no reset: it re-detects by itself when the face it tracked is gone; the frames after a cut
        then equal a fresh Relighter's. Nor does the square a small face is followed in: the
        models run ahead in the decode thread, so a reset from here would land on a frame that
        depends on timing; the square is left when no face is found in it. :meth:`reset`,
        called between clips, forgets it too.)"""
        self.perceiver.reset()

    # -- lighting placement
    def pan_at(self, t: float) -> float:
        """The pan (degrees) at presentation time ``t`` (seconds): ``--pan`` (or
        ``--light-from``) plus ``--autorotate`` degrees per second. It depends on the frame's
        time only (not on how many frames came before), so the rotation has the same speed at any
        frame rate, is smooth across dropped or variable-rate frames, and a video processed in
        chunks turns exactly as in one pass."""
        return self.pan0 + self.settings.autorotate * float(t)

    def exposure_at(self, pan: float) -> float:
        """The exposure the person and the HDRI background share at ``pan`` (:meth:`pan_at`):
        the automatic exposure of :meth:`~relight.stages.render.TargetHDRI.exposure` for that
        pan. With ``--autorotate`` it follows the light as it turns, as a camera's would (each
        frame gets what a fixed pan would): the person's overall brightness stays steady while
        the light moves around them, and it changes as smoothly as the pan does (about 0.1 ms:
        made for each frame)."""
        return self.target_hdri.exposure(pan)

    def _backgrounds(self, width: int, height: int) -> composite_stage.BackgroundMaker:
        bg = self._background
        if bg is None or (bg.width, bg.height) != (width, height):
            s = self.settings
            path = background_media_path(s.background)
            media = open_background_media(path, width, height) if path else None
            bg = self._background = composite_stage.BackgroundMaker(
                s.background, width, height, vfov=s.vfov, bg_gain=s.bg_gain, blur=s.blur,
                hdri=self.hdri.pixels, media=media)
        return bg

    # -- per frame
    def process_composite(self, image: np.ndarray, *, time: float = 0.0, matte: Optional[np.ndarray] = None,
                          index: Optional[int] = None, scene_linear: bool = False,
                          encode8: bool = False) -> composite_stage.Composite:
        """Run every stage on one frame and return the :class:`~relight.stages.composite.Composite`:
        :meth:`analyse`, then :meth:`render`.

        ``encode8`` (display output only): the composite may come back already encoded to 8-bit
        sRGB (``Composite.rgb8``, with ``rgb`` None), made by the fused full-resolution kernel
        of :mod:`relight.kernels` in one pass instead of the numpy reference steps."""
        return self.render(self.analyse(image, time=time, matte=matte, index=index, scene_linear=scene_linear,
                                        encode8=encode8))

    def prepare(self, image: np.ndarray, has_matte: bool = False, time: Optional[float] = None) -> FrameViews:
        """The frame's :class:`~relight.types.FrameViews`, with what :meth:`analyse` will take
        already made: the reduced copies the perception, temporal and
        working-resolution stages read, and the perception models' outputs
        (:meth:`Perceiver.prepare`). Call it for every frame, in order, from one thread at a time
        (another than :meth:`analyse`'s is fine): the pipeline calls it in the decode thread,
        ahead of :meth:`analyse`, so the models run beside the analysis of the frame before.
        ``has_matte``: the frame comes with an external matte (no segmentation). ``time``: the
        frame's presentation time; given, the face mesh is left out of the frames whose
        shading is carried (:meth:`_runs_face_mesh`)."""
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise UsageError(f"expected an (H, W, 3) RGB frame, got shape {image.shape}")
        image = image[..., :3]
        if image.dtype == np.uint8:
            views = FrameViews(np.ascontiguousarray(image))
        else:
            lin = to_linear(image)
            views = FrameViews(linear_to_srgb8(lin), linear=lin)
        h, w = image.shape[:2]
        views.resized("linear", *_work_size(h, w))  # (from the 8-bit pixels: no full-size float copy)
        self.perceiver.prepare(views, external_matte=has_matte, faces=self._runs_face_mesh(time))
        if self.temporal is not None:
            self.temporal.prepare(views)
        return views

    def _runs_face_mesh(self, time: Optional[float]) -> bool:
        """Whether :meth:`prepare` runs the face mesh on the frame at ``time`` (the frames come
        in order). Not on a frame whose number (time / frame step) is not a multiple of
        ``TemporalOptions.shading_every`` (the frames whose shading is carried, see
        :meth:`_carries_shading`; never two frames in a row): :meth:`analyse` moves the last
        frame's landmarks along the flow instead (their uses between estimates, the matte's head
        prior and the eyes' catchlights, follow them there), or where it cannot (a shot's first
        frame) searches the frame as a still image (:meth:`Perceiver.still_faces`). Always run
        without a time, with ``--autorotate``, or without the temporal stage."""
        last, self._prepared_time = self._prepared_time, time
        if time is None or last is None or self._face_mesh_skipped:
            run = True
        else:
            dt = float(time) - float(last)
            run = dt <= 0 or self._shading_frame(time, dt)
        self._face_mesh_skipped = not run
        return run

    def _shading_frame(self, time: float, dt: float) -> bool:
        """Whether the frame at ``time`` (frame step ``dt``) is one the shading is estimated on
        by the rule of ``TemporalOptions.shading_every`` = n: its number (time / frame step) a
        multiple of n (none without a positive step); every frame with n = 1, with
        ``--autorotate`` (the lighting moves every frame), or without the temporal stage or its
        field smoothing. The one rule :meth:`_carries_shading` and :meth:`_runs_face_mesh`
        follow."""
        ts = self.temporal
        if ts is None or self.settings.autorotate != 0 or ts.options.fields_tau <= 0:
            return True
        every = max(1, int(ts.options.shading_every))
        return every == 1 or (dt > 0 and int(round(float(time) / dt)) % every == 0)

    def analyse(self, image: np.ndarray, *, time: float = 0.0, matte: Optional[np.ndarray] = None,
                index: Optional[int] = None, scene_linear: bool = False, encode8: bool = False,
                views: Optional[FrameViews] = None) -> "FramePlan":
        """The first half of :meth:`process_composite`: motion, perception, geometry and the
        source lighting of one frame (frames in order), as a :class:`FramePlan` for
        :meth:`render`. The two halves keep separate state (the render's carried shading fields
        change only with the plans it is given), so frame n may be rendered in another thread
        while frame n + 1 is analysed, as long as the plans are rendered in order.
        ``views``: the frame's :meth:`prepare` (made here if not given)."""
        t0 = perf_counter()
        if views is None:
            views = self.prepare(image, has_matte=matte is not None, time=time)
        t = self.timer.add("decode-convert", t0)
        rgb8 = views.rgb8
        h, w = rgb8.shape[:2]
        index = self._frames if index is None else index
        self._frames += 1
        ts = self.temporal
        motion = None
        if ts is not None:
            motion = ts.begin(rgb8, time, views=views)
            if motion.cut:
                self._reset_perception()
                self._last = self._shading = self._faces = None
            t = self.timer.add("temporal", t)
        weight, refresh = 1.0, True
        if motion is not None and motion.duplicate and self._last is not None and matte is None:
            # the same frame again: the same estimates (a still image fed as a video stays still)
            perception, geometry, source, work, weight = self._last
            if geometry is not None:  # a fade in progress goes on
                weight = ts.presence(perception.matte)
        else:
            if ts is not None and self.perceiver.options.use_face_mesh and self.perceiver.faces_found(views) is None:
                # the face mesh was left out of this frame (see prepare): the last faces moved
                # along the flow, or (a shot's first frame) a still-image search, which leaves
                # the trackers, running ahead in prepare's thread, as they are
                carried = ts.carry_landmarks(self._faces) if self._faces is not None else None
                self.perceiver.give_faces(views, carried if carried is not None else self.perceiver.still_faces(views))
            perception = self.perceiver.process(rgb8, external_matte=matte, views=views)
            self._faces = self.perceiver.faces_found(views)
            t = self.timer.add("perception", t)
            if ts is not None:
                perception.face_landmarks = ts.faces(perception.face_landmarks, (h, w))
                if matte is None:  # a user's matte is taken as given
                    perception.matte = ts.matte(perception.matte)
                weight = ts.presence(perception.matte)
                t = self.timer.add("temporal", t)
            geometry = source = work = None
            if weight > 0.0:
                # the analysis stages share one working-resolution copy of the input and matte
                ww, wh = _work_size(h, w)
                work = _Work(image=views.resized("linear", ww, wh), matte=_shrink(perception.matte, wh, ww))
                t = self.timer.add("shrink", t)
                if ts is not None:
                    work.deflicker = ts.deflicker(work.image, work.matte)
                    t = self.timer.add("temporal", t)
                if self._carries_shading(motion, time):
                    geometry = ts.carry_geometry(self._shading[0])
                if geometry is not None:
                    # between estimates: the last shading, moved along the flow
                    source, refresh = self._shading[1], False
                    self._shading_age += 1
                    t = self.timer.add("geometry", t)
                else:
                    geometry = estimate_geometry(perception, h, w, work_matte=work.matte)
                    if ts is not None:
                        geometry = ts.geometry(geometry)
                    t = self.timer.add("geometry", t)
                    source = estimate_source_lighting(work.image, perception, geometry, work_image=work.image,
                                                      work_matte=work.matte)
                    if ts is not None:
                        source = ts.source(source)
                    self._shading, self._shading_age = (geometry, source), 0
                    self.timer.add("lighting", t)
            else:
                self._shading = None
                if ts is not None:
                    ts.skip()
            self._last = (perception, geometry, source, work, weight)
        return FramePlan(index=index, time=float(time), views=views, perception=perception, geometry=geometry,
                         source=source, work=work, weight=weight, motion=motion, scene_linear=scene_linear,
                         encode8=encode8, refresh=refresh)

    def _carries_shading(self, motion: Optional[FrameMotion], time: float) -> bool:
        """Whether this frame takes the last estimated shading, carried along the flow, instead
        of estimating it (``TemporalOptions.shading_every`` = n): the shading is estimated on the
        frames whose number (presentation time / frame step) is a multiple of n, so a video
        processed in chunks estimates it on the same frames as one pass, and never carried for
        n frames in a row; always on a shot's first frame, and on every frame with
        ``--autorotate`` (the lighting moves every frame) or without a flow to carry it along."""
        ts = self.temporal
        if ts is None or self._shading is None or motion is None or motion.first or motion.flow is None:
            return False
        if self._shading_age + 1 >= max(1, int(ts.options.shading_every)):
            return False
        return not self._shading_frame(time, motion.dt)

    def render(self, plan: "FramePlan") -> composite_stage.Composite:
        """The second half of :meth:`process_composite`: the relit person (its shading fields,
        steadied along the flow), the background and the composite of one analysed frame.
        Plans must be rendered in the order they were made."""
        s = self.settings
        t = perf_counter()
        perception, geometry, weight = plan.perception, plan.geometry, plan.weight
        h, w = perception.matte.shape
        pan = self.pan_at(plan.time)
        maker = self._backgrounds(w, h)
        if weight <= 0.0:
            # no person: the frame passes through (only the background is made)
            if self._field_smoother is not None:
                self._field_smoother.clear()
                self._output_hold.clear()
            zero = np.zeros((h, w), np.float32)
            lin = plan.lin
            background = maker.make(plan.index, lin, zero, pan, self.exposure_at(pan))
            out = composite_stage.composite(lin, lin, zero, background, strength=1.0, scene_linear=plan.scene_linear,
                                            background_is_scene=(maker.kind == "hdri"))
            self.timer.add("composite", t)
            return out
        work = plan.work
        if work.edges is None:  # (a repeated frame shares its work with the previous one)
            # the old background's and the person's colours near soft edges (hair): the edge
            # pixels are decontaminated with them
            work.edges = composite_stage.edge_fields(work.image, work.matte,
                                                     composite_stage.edge_sigma(h, w) * work.image.shape[1] / float(w))
            t = self.timer.add("edges", t)
        target = self.target_hdri.target(pan)
        carried = None
        if not plan.refresh and self._field_smoother is not None:
            carried = self._field_smoother.carry(plan.motion)
        if carried is not None:  # the last fields, moved along the flow (see analyse)
            pf = PersonFields(fields=carried, size=(h, w), albedo_max=float(self.render_options.albedo_max),
                              catchlights=catchlights_on(perception, target, s.specular, self.render_options))
        else:
            pf = person_fields(plan.pixels, perception, geometry, plan.source, target, specular=s.specular,
                               options=self.render_options, work_image=work.image)
            if self._field_smoother is not None:
                pf.fields = self._field_smoother.smooth(pf.fields, plan.motion)
        if work.deflicker is not None:
            pf = replace(pf, fields=deflickered(pf.fields, work.deflicker))
        exposure = self.exposure_at(pan)
        gain = float(exposure * s.fg_gain)
        if plan.encode8 and not plan.scene_linear and kernels.available():
            t = self.timer.add("render", t)
            out = self._fused8(pf, work, plan, target, maker, pan, exposure, gain)
            self.timer.add("composite", t)
            return out
        lin = plan.lin
        person_in = composite_stage.decontaminate(lin, perception.matte, fields=work.edges)
        person = apply_fields(person_in, pf, perception, geometry, target, specular=s.specular,
                              options=self.render_options)
        person *= np.float32(gain)
        t = self.timer.add("render", t)
        m = perception.matte if weight >= 1.0 else perception.matte * np.float32(weight)
        background = maker.make(plan.index, lin, m, pan, exposure)
        out = composite_stage.composite(person, lin, m, background, strength=s.strength,
                                        scene_linear=plan.scene_linear, background_is_scene=(maker.kind == "hdri"))
        if plan.encode8 and not plan.scene_linear and self._output_hold is not None:
            held = self._output_hold.previous(plan.motion, out.rgb.shape)
            out.rgb8 = linear_to_srgb8(out.rgb, held=held, hold=self._output_hold.hold, where=m > 0)
            self._output_hold.keep(out.rgb8)
        self.timer.add("composite", t)
        return out

    def _fused8(self, pf, work, plan: "FramePlan", target, maker, pan, exposure, gain):
        """Decontaminate the soft edges, apply the person's fields, tone-map, composite and
        encode to 8-bit sRGB in one pass (:func:`relight.kernels.fused_composite8`, reading an
        8-bit frame's pixels as they are); the few pixels of the eyes' catchlights are then
        redone with the numpy reference steps. The person's pixels are encoded with the
        hysteresis of :class:`~relight.stages.temporal.OutputHold` (as the numpy path's are)."""
        s = self.settings
        perception, geometry, weight, index = plan.perception, plan.geometry, plan.weight, plan.index
        matte = perception.matte
        H, W = matte.shape
        alpha = matte if weight >= 1.0 else matte * np.float32(weight)  # what the compositor uses
        pixels = plan.pixels
        if maker.kind == "source" and s.blur <= 0 and pixels.dtype == np.uint8:
            # the input itself behind the person: its 8-bit pixels, copied where there is no person
            bg = bg8 = pixels
        else:
            bg = maker.make_display(index, plan.lin if maker.reads_input else None, alpha, pan, exposure)
            bg8 = self._encoded_background(bg)
        transparent = maker.transparent
        keeper = self._output_hold
        held = keeper.previous(plan.motion, (H, W, 3)) if keeper is not None else None
        hold = keeper.hold if held is not None else 0.0
        rgb8 = kernels.fused_composite8(pixels, pixels, pf.fields, matte, weight, bg, edges=work.edges,
                                        gain=gain, amax=pf.albedo_max,
                                        strength=s.strength, knee=TONE_KNEE, lut=LINEAR_TO_SRGB8_LUT,
                                        transparent=transparent, background8=bg8,
                                        edge_band=(composite_stage.EDGE_LO, composite_stage.EDGE_FADE,
                                                   composite_stage.EDGE_HI), held=held, hold=hold)
        if pf.catchlights:
            for box in eye_boxes(perception, pf.size):
                y0, y1, x0, x1 = box
                m = matte[y0:y1, x0:x1]
                lin = to_linear(pixels[y0:y1, x0:x1])
                person_in = lin.copy()
                band = (m >= composite_stage.EDGE_LO) & (m <= composite_stage.EDGE_HI)
                if band.any():
                    e = upsample_fields(work.edges, H, W, box)[band]
                    person_in[band] = composite_stage.solve_edge_pixels(person_in[band], m[band][:, None],
                                                                        e[:, :3], e[:, 3:])
                person = apply_fields(person_in, pf, perception, geometry, target, specular=s.specular,
                                      options=self.render_options, box=box)
                person *= np.float32(gain)
                patch_bg = None if bg is None else (bg if np.ndim(bg) == 1 else to_linear(bg[y0:y1, x0:x1]))
                comp = composite_stage.composite(person, lin, alpha[y0:y1, x0:x1], patch_bg,
                                                 strength=s.strength, scene_linear=False, background_is_scene=False)
                rgb8[y0:y1, x0:x1] = linear_to_srgb8(comp.rgb, held=None if held is None else held[y0:y1, x0:x1],
                                                     hold=hold, where=alpha[y0:y1, x0:x1] > 0)
        if keeper is not None:
            keeper.keep(rgb8)
        return composite_stage.Composite(rgb=None, alpha=alpha if transparent else None, scene_linear=False,
                                         rgb8=rgb8)

    def _encoded_background(self, bg) -> Optional[np.ndarray]:
        """The 8-bit encoding of an image background that is the same as the last frame's (a
        static HDRI view, cached by the background maker), made once: the fused kernel then
        copies its pixels instead of encoding them for every frame. None otherwise."""
        if bg is None or np.ndim(bg) != 3 or bg.strides[:2] == (0, 0):
            return None
        last = self._background8
        if last is None or last[0] is not bg:
            self._background8 = (bg, None)
            return None
        if last[1] is None:
            self._background8 = (bg, kernels.encode8(bg, LINEAR_TO_SRGB8_LUT))
        return self._background8[1]

    def process(self, image: np.ndarray, time: float = 0.0, matte: Optional[np.ndarray] = None) -> np.ndarray:
        """Relight one frame; see the class docstring for types."""
        linear = self.linear_output if self.linear_output is not None else image.dtype != np.uint8
        comp = self.process_composite(image, time=time, matte=matte, scene_linear=linear, encode8=not linear)
        return to_array(comp)


@dataclass
class FramePlan:
    """One analysed frame, handed from :meth:`Relighter.analyse` to :meth:`Relighter.render`."""

    index: int
    time: float  # presentation time, seconds
    views: FrameViews  # the input frame (and its copies)
    perception: Perception  # the matte steadied, the faces filtered
    geometry: Optional[Geometry]  # None without a person
    source: Optional[SourceLighting]  # None without a person
    work: Optional["_Work"]  # working-resolution copies, or None without a person
    weight: float  # presence weight of the effect, 0..1 (0: the frame passes through)
    motion: Optional[FrameMotion]  # None for single images or with the temporal stage off
    scene_linear: bool
    encode8: bool
    refresh: bool = True  # the shading was estimated on this frame (False: carried; see Relighter.analyse)

    @property
    def pixels(self) -> np.ndarray:
        """The input as the fused kernel reads it: (H, W, 3) uint8 sRGB, or float32 linear for
        a float (EXR) input."""
        v = self.views
        return v.linear() if v.is_linear else v.rgb8

    @property
    def lin(self) -> np.ndarray:
        """(H, W, 3) float32 linear input (made on first use)."""
        return self.views.linear()


@dataclass
class _Work:
    """One frame's working-resolution copies, shared by the analysis and render stages."""

    image: np.ndarray  # (h, w, 3) linear input, area-averaged
    matte: np.ndarray  # (h, w)
    edges: Optional[np.ndarray] = None  # (h, w, 6) composite.edge_fields, made by the render
    deflicker: Optional[np.ndarray] = None  # (h, w, 3) the input's factor (TemporalStabilizer.deflicker), or None


def _work_size(h: int, w: int) -> Tuple[int, int]:
    """(w, h) of the working resolution that the analysis stages share."""
    wh, ww, _ = work_shape(h, w, GeometryOptions().work_size)
    return ww, wh


def _shrink(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Area-average an image or matte to (h, w)."""
    x = np.asarray(x, np.float32)
    H, W = x.shape[:2]
    if (H, W) == (h, w):
        return x
    if x.ndim == 2 and (H % h or W % w) and h <= H and w <= W and kernels.available():
        return kernels.area_shrink(x, w, h)  # (the same values; OpenCV is slow at a fractional factor)
    return cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA)


def to_array(comp: composite_stage.Composite) -> np.ndarray:
    """A composite -> uint8 sRGB (display) or float32 scene-linear, with alpha as a 4th channel."""
    if comp.scene_linear:
        if comp.alpha is None:
            return comp.rgb.astype(np.float32, copy=False)
        a = comp.alpha[..., None]
        return np.concatenate([comp.rgb * a, a], axis=-1).astype(np.float32)
    rgb8 = comp.rgb8 if comp.rgb8 is not None else linear_to_srgb8(comp.rgb)
    if comp.alpha is None:
        return rgb8
    a8 = np.clip(comp.alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)[..., None]
    return np.concatenate([rgb8, a8], axis=-1)


def relight_file(input_path: str, output_path: str, settings: RelightSettings = RelightSettings(), *,
                 matte: Optional[str] = None, overwrite: bool = False, codec: Optional[str] = None,
                 crf: int = 18, preset: str = "veryfast", show_progress: bool = True,
                 on_frame: Optional[Callable[[int], None]] = None) -> dict:
    """Relight a video or image file and write ``output_path`` atomically.

    Returns a summary: ``{"input", "output", "frames", "seconds", "fps", "width", "height",
    "stages": {stage: seconds}, "dropped_frames", "repaired_frames", "input_problems"}`` (the last
    three: damage in the input that was survived, also given as one warning). Raises :class:`~relight.errors.RelightError` subclasses with
    one-line messages for bad input, options or outputs; nothing is left at ``output_path``
    unless the run completes."""
    settings = settings.validated()
    info = probe(input_path)
    inputs = [input_path] + [p for p in (matte, background_media_path(settings.background),
                                         settings.hdri if os.path.exists(settings.hdri) else None) if p]
    spec = plan_output(output_path, inputs, info, settings.background == "transparent", overwrite)
    scene_linear = str(output_path).lower().endswith(".exr")
    start = perf_counter()
    with ExitStack() as stack:
        stack.enter_context(blas_one_thread())  # (its calls are small; its idle threads spin)
        stack.enter_context(no_huge_pages())  # (each frame's new large arrays: faulted in faster)
        # every input is checked before the slow set-up (models) and before any output exists
        mattes = open_matte(matte, info) if matte else None
        if mattes is not None and hasattr(mattes, "close"):
            stack.callback(mattes.close)
        bg_path = background_media_path(settings.background)
        if bg_path:
            open_background_media(bg_path, info.width, info.height).close()
        relighter = stack.enter_context(Relighter(settings, video=info.is_video, use_segmentation=matte is None))
        # the stages' threads fill the cores: on small frames each library call is faster on
        # its caller's core than split over cores another stage holds (threads.one_core_per_call),
        # and so is the encoder
        one_core = info.is_video and info.width * info.height <= ONE_CORE_PER_CALL_MAX_PIXELS
        source = stack.enter_context(open_input(input_path))
        sink = stack.enter_context(open_output(spec, info, codec=codec, crf=crf, preset=preset,
                                               audio_from=input_path if info.is_video else None,
                                               threads=1 if one_core else 0))
        # decode ahead and encode behind in their own threads (they release the GIL): the run
        # takes about as long as the processing instead of processing + decode + encode
        # (the decode thread also makes each frame's reduced copies and runs the
        # perception models on it: Relighter.prepare).
        # Frames in flight each hold ~40 bytes a pixel: above 4 Mpx (4K) one waits in each queue.
        # Below, four: the threads' uneven pace (the shading is estimated on every second frame)
        # is absorbed (2 -> 4: 2-4% faster at 720p and 1080p for ~40 MB; no gain at 4K)
        ahead = 4 if info.width * info.height <= 4_000_000 else 1
        if one_core:
            stack.enter_context(one_core_per_call())
        # (each thread that launches kernels holds them to its own core, as one_core_per_call
        # does for this one: the decoder's guided filter too)
        one_core_init = (lambda: kernels.set_threads(1)) if one_core else None
        frames_in = stack.enter_context(Prefetch(
            source, depth=ahead, fn=lambda f: (f, relighter.prepare(f.rgb, has_matte=mattes is not None, time=f.time)),
            initializer=one_core_init)) if info.is_video else ((f, None) for f in source)
        writer = stack.enter_context(BackgroundWriter(sink)) if info.is_video else sink
        progress = Progress(info.frame_count if info.is_video else None, label="relight", enabled=show_progress)
        stack.callback(progress.close)
        frames = 0

        def emit(comp: composite_stage.Composite, time: float) -> None:
            nonlocal frames
            t = perf_counter()
            if scene_linear:
                rgb = comp.rgb
            else:
                rgb = comp.rgb8 if comp.rgb8 is not None else linear_to_srgb8(comp.rgb)
            if scene_linear and comp.alpha is not None:
                rgb = rgb * comp.alpha[..., None]  # EXR stores premultiplied colour
            writer.write(rgb, comp.alpha, time=time)
            relighter.timer.add("encode-wait" if writer is not sink else "encode", t)
            frames += 1
            progress.update()
            if on_frame is not None:
                on_frame(frames)

        # a video's frames are rendered in their own thread, one frame behind the analysis (the
        # render's heavy parts, OpenCV and the fused kernel, release the GIL)
        renderer = stack.enter_context(InOrder(relighter.render, depth=ahead, initializer=one_core_init)) \
            if info.is_video else None
        for frame, views in frames_in:
            m = mattes.get(frame.index) if mattes is not None else None
            plan = relighter.analyse(frame.rgb, time=frame.time, matte=m, index=frame.index,
                                     scene_linear=scene_linear, encode8=not scene_linear, views=views)
            if renderer is None:
                emit(relighter.render(plan), frame.time)
                continue
            t = perf_counter()
            done = renderer.submit(plan, frame.time)
            relighter.timer.add("render-wait", t)
            for comp, time in done:
                emit(comp, time)
        if renderer is not None:
            for comp, time in renderer.drain():
                emit(comp, time)
        stages = dict(relighter.timer.seconds)
    # the decode and encode threads' own busy time (they overlap the stages above)
    if isinstance(frames_in, Prefetch):
        stages["decode (thread)"] = frames_in.busy
    if renderer is not None:
        stages["render (thread)"] = renderer.busy
    if isinstance(writer, BackgroundWriter):
        stages["encode (thread)"] = writer.busy
    seconds = perf_counter() - start
    # damage survived in the input (see VideoSource): one warning line, and counts in the summary
    problems = [p for p in (getattr(source, "problems", lambda: None)(), getattr(sink, "audio_problems", None)) if p]
    if problems:
        warnings.warn(f"{input_path}: damaged input: {'; '.join(problems)}", RelightWarning, stacklevel=2)
    return {
        "input": str(input_path),
        "output": str(output_path),
        "frames": frames,
        "seconds": round(seconds, 3),
        "fps": round(frames / seconds, 2) if seconds > 0 else 0.0,
        "width": info.width,
        "height": info.height,
        "stages": {k: round(v, 3) for k, v in stages.items()},
        "dropped_frames": int(getattr(source, "dropped", 0)),
        "repaired_frames": int(getattr(source, "repaired", 0)),
        "input_problems": problems,
    }
