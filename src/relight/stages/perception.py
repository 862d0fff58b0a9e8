"""Perception: the person matte and the face landmarks of a frame.

The models run at a small working resolution (their own inputs are 256x144 / 192x192 anyway);
the matte is brought back to full resolution with an edge-aware (fast, colour) guided filter
that uses the frame itself as the guide, so the matte edge follows hair and clothing edges in the image.

Before that, the model's coarse matte is cleaned (:func:`clean_coarse_matte`): the selfie model
now and then takes a patch of background next to the head for person (a bright wall behind the
hair, half transparent) or leaves islands in the background. Two checks at the model's
resolution fix most of it: colour (a person / background colour histogram from the confident
pixels of the frame itself re-weighs the uncertain ones: background-coloured patches lose,
hair-coloured ones stay) and connectivity (blobs that are small next to the largest one and hold
no face are dropped, with their soft edges), plus reach (wide half-sure plateaus away from the
confident person fade) and a head prior (above the eyes, the head is a half ellipse around the
face). After the guided filter, alpha below ``alpha_floor`` is cut (a faint haze of the old
background on textured walls) and alpha above ``alpha_ceiling`` made opaque (the new background
showing faintly through the person's edge).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from .. import kernels
from ..types import FrameViews, Perception


@dataclass
class PerceptionOptions:
    video: bool = False  # frames arrive in order: track faces, smooth the matte over time
    use_segmentation: bool = True  # False when an external matte is always given
    use_face_mesh: bool = True
    use_pose: bool = False
    max_num_faces: int = 4
    face_work_size: int = 640  # longest side of the image given to the face mesh
    seg_work_size: int = 256  # longest side of the image given to selfie segmentation
    guide_size: int = 400  # the guided filter's coefficients are solved at about this longest side
    guided_radius: float = 0.012  # guided-filter window radius, fraction of the guide's longest side
    guided_eps: float = 2e-3  # guided-filter regulariser (on [0, 1] images): lower = sharper edges
    temporal: float = 0.35  # video: weight of the previous low-res matte (0 = none)
    colour_refine: float = 0.6  # weight of the colour evidence on the coarse matte (0 = off)
    soft_reach: float = 0.012  # uncertain matte farther than ~this x the longest side from confident person fades out (0 = off)
    alpha_floor: float = 0.05  # full-resolution alpha below this is background ...
    alpha_ceiling: float = 0.9  # ... and above this person (rescaled between the two)
    head_width: float = 0.75  # above the eyes, uncertain matte beyond this x the face width from its centre line fades out (0 = off)
    min_blob: float = 0.03  # blobs smaller than this x the largest one (and with no face) are dropped (0 = off)


def _longest_size(h: int, w: int, longest: int) -> Tuple[int, int]:
    """(w, h) of an image scaled down so that its longest side is ``longest`` (never up)."""
    s = longest / max(h, w)
    if s >= 1.0:
        return w, h
    return max(1, round(w * s)), max(1, round(h * s))


def _guide_shape(H: int, W: int, guide_size: int) -> Tuple[int, int, int]:
    """(k, h, w): the integer factor and size at which :func:`refine_matte` solves its filter."""
    k = max(1, int(np.ceil(max(H, W) / float(guide_size))))
    return k, max(1, H // k), max(1, W // k)


def refine_matte(guide_rgb: np.ndarray, coarse: np.ndarray, out_hw=None, radius_frac: float = 0.012,
                 eps: float = 2e-3, guide_size: int = 400, floor: float = 0.0, ceiling: float = 1.0,
                 views: Optional[FrameViews] = None) -> np.ndarray:
    """Upsample a coarse matte to full resolution with a colour guided filter (He et al.),
    in its fast form (He & Sun 2015): the linear coefficients are solved at a reduced size
    (longest side about ``guide_size``, an integer factor of the frame) and applied to the
    full-resolution guide, so the matte edge follows full-resolution image edges.

    ``guide_rgb``: (H, W, 3) uint8; ``coarse``: (h, w) float in [0, 1], any size. ``floor`` and
    ``ceiling``: output alpha below the floor becomes 0, above the ceiling 1, and what lies
    between is rescaled to [0, 1]. With numba, the solve and the full-resolution step are
    compiled (:func:`relight.kernels.guided_coefficients`, :func:`relight.kernels.guided_apply`);
    below is the same maths in OpenCV calls.
    ``views``: the guide's :class:`~relight.types.FrameViews` (its reduced copy is taken from there)."""
    rgb8 = guide_rgb if guide_rgb.dtype == np.uint8 else _as_uint8(guide_rgb)
    H, W = rgb8.shape[:2]
    if out_hw is not None and tuple(out_hw) != (H, W):
        raise ValueError("refine_matte: out_hw must be the guide's size")
    k, h, w = _guide_shape(H, W, guide_size)
    if views is None or views.rgb8 is not rgb8:
        views = FrameViews(rgb8)
    small = views.resized("rgb8", w, h)  # (the guide itself when k == 1)
    p = cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    r = max(1, int(round(radius_frac * max(h, w))))
    ksize = (2 * r + 1, 2 * r + 1)

    def box(x):
        return cv2.boxFilter(x, -1, ksize, borderType=cv2.BORDER_REFLECT)

    if kernels.available():
        return kernels.guided_apply(rgb8, kernels.guided_coefficients(small, p, box, eps), floor, ceiling)
    ir, ig, ib = [c.astype(np.float32) * np.float32(1.0 / 255.0) for c in cv2.split(small)]
    # contiguous planes: numpy is several times slower on interleaved channel views
    mr, mg, mb, mp = box(ir), box(ig), box(ib), box(p)
    cr = box(ir * p) - mr * mp
    cg = box(ig * p) - mg * mp
    cb = box(ib * p) - mb * mp
    e = np.float32(eps)
    vrr = box(ir * ir) - mr * mr + e
    vrg = box(ir * ig) - mr * mg
    vrb = box(ir * ib) - mr * mb
    vgg = box(ig * ig) - mg * mg + e
    vgb = box(ig * ib) - mg * mb
    vbb = box(ib * ib) - mb * mb + e
    # a = Sigma^-1 cov(I, p) per pixel, by cofactors (Sigma is symmetric)
    c00 = vgg * vbb - vgb * vgb
    c01 = vgb * vrb - vrg * vbb
    c02 = vrg * vgb - vgg * vrb
    c11 = vrr * vbb - vrb * vrb
    c12 = vrb * vrg - vrr * vgb
    c22 = vrr * vgg - vrg * vrg
    inv = np.float32(1.0 / 255.0) / (vrr * c00 + vrg * c01 + vrb * c02)  # /255: applied to the uint8 guide
    ar = (c00 * cr + c01 * cg + c02 * cb) * inv
    ag = (c01 * cr + c11 * cg + c12 * cb) * inv
    ab = (c02 * cr + c12 * cg + c22 * cb) * inv
    b = mp - (ar * mr + ag * mg + ab * mb) * np.float32(255.0)
    ma = cv2.merge([box(ar), box(ag), box(ab)])
    mb_ = box(b)
    if k > 1:
        ma = cv2.resize(ma, (W, H), interpolation=cv2.INTER_LINEAR)
        mb_ = cv2.resize(mb_, (W, H), interpolation=cv2.INTER_LINEAR)
    q = cv2.multiply(rgb8, ma, dtype=cv2.CV_32F)
    q = cv2.transform(q, np.ones((1, 3), np.float32))
    q = cv2.add(q, mb_)
    np.clip(q, 0.0, 1.0, out=q)
    if floor > 0 or ceiling < 1:
        q = cv2.addWeighted(q, 1.0 / (ceiling - floor), q, 0.0, -floor / (ceiling - floor))
        np.clip(q, 0.0, 1.0, out=q)
    return q


_SEARCH_EVERY = 5  # video: a small face not found is searched for again every this many frames
_LOOK_EVERY = 10  # video: while one face is followed, the whole frame is looked at every this many frames


def _square(cx: float, cy: float, side: float, H: int, W: int) -> Tuple[int, int, int]:
    """(x0, y0, side) of a square centred near (cx, cy), shifted (not cut) to lie in the frame."""
    side = int(round(min(max(side, 64.0), H, W)))
    x0 = int(round(min(max(cx - side / 2.0, 0.0), W - side)))
    y0 = int(round(min(max(cy - side / 2.0, 0.0), H - side)))
    return x0, y0, side


def _snapped(cx: float, cy: float, side: float) -> Tuple[float, float, float]:
    """A square's centre and side snapped to a grid (the side to steps of 2^(1/4), the centre
    to an eighth of it): a face found at about the same place gets the same square, whatever
    came before (a video processed in chunks follows it in the square of one pass)."""
    side = float(2.0 ** (round(4.0 * math.log2(max(side, 1.0))) / 4.0))
    step = side / 8.0
    return round(cx / step) * step, round(cy / step) * step, side


def _head_square(coarse: np.ndarray, H: int, W: int) -> Optional[Tuple[int, int, int]]:
    """A square around the head of the person in a coarse matte (the top of its silhouette,
    about twice the head's width), in frame pixels, or None without a person."""
    mask = coarse > 0.5
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size < 4:
        return None
    h, w = mask.shape
    cols = np.flatnonzero(mask.any(axis=0))
    top, height, width = rows[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    band = mask[top:top + max(2, int(0.12 * height))]
    cx = float(np.nonzero(band)[1].mean()) + 0.5
    side = 0.6 * width  # shoulders are about three heads wide
    sx, sy = W / float(w), H / float(h)
    return _square(cx * sx, (top + 0.3 * side) * sy, side * sx, H, W)


def _follow_face(box: Optional[Tuple[int, int, int]], landmarks: np.ndarray, H: int, W: int) -> Tuple[int, int, int]:
    """The square to look for a face in next frame: ``box`` again while the face (normalised
    landmarks) stays well inside it at about the same size, else (or without a box) one centred
    on the face, 2.5 times its size (on a grid: :func:`_snapped`)."""
    x, y = landmarks[:, 0] * W, landmarks[:, 1] * H
    size = max(float(np.ptp(x)), float(np.ptp(y)), 1.0)
    want = 2.5 * size
    if box is not None:
        x0, y0, side = box
        margin = 0.15 * side
        inside = (x.min() >= x0 + margin and x.max() <= x0 + side - margin and y.min() >= y0 + margin
                  and y.max() <= y0 + side - margin)
        if inside and 0.6 <= side / min(want, H, W) <= 1.6:
            return box
    return _square(*_snapped(float(x.mean()), float(y.mean()), want), H, W)


def head_box(landmarks: np.ndarray, sx: float, sy: float):
    """(centre x, centre y, eye-line y, face width, head height above the eyes) of a face, in
    pixels of an image scaled by (sx, sy) from the landmarks' frame. The head above the eyes is
    taken to reach half a face height above the face mesh's top (forehead)."""
    lm = np.asarray(landmarks, np.float64)
    x, y = lm[:, 0] * sx, lm[:, 1] * sy
    eyes = float(np.mean(y[[33, 263]])) if lm.shape[0] > 263 else float(np.mean(y))
    top = float(y[10]) if lm.shape[0] > 10 else float(y.min())
    up = max(eyes - top, 0.0) + 0.5 * float(np.ptp(y))
    return float(np.mean(x)), float(np.mean(y)), eyes, float(np.ptp(x)), up


def clean_coarse_matte(coarse: np.ndarray, rgb8: np.ndarray, heads=(), colour: float = 0.6,
                       min_blob: float = 0.03, soft_reach: float = 0.012, head_width: float = 0.75,
                       bins: int = 16) -> np.ndarray:
    """Clean a coarse person probability (h, w) with the image (h, w, 3) uint8 it came from.

    * colour: histograms (``bins`` per channel) of the confidently-person (> 0.9) and
      confidently-background (< 0.1) pixels give a colour likelihood ratio; every pixel's logit
      moves by ``colour`` x its log (clipped to +-3), so an uncertain patch whose colour is the
      background's drops and one with the person's colours firms up; confident pixels barely move.
    * blobs: connected parts of the thresholded matte smaller than ``min_blob`` x the largest
      one are dropped unless they hold a face centre (``heads``: :func:`head_box` of each face
      in the coarse matte's pixels), together with their soft surroundings.
    * head: above a face's eye line the head (with its hair) lies within a half ellipse,
      ``head_width`` x the face width either side of the face's centre line at the eyes, up to
      half a face height above the forehead; beyond it values fade out (over 0.2 face widths),
      so a hair-coloured wall next to the head is not taken for hair. Only uncertain values
      (< 0.95) are cut farther out: a confident raised hand away from the head is kept.
    * reach: a real soft edge (hair, motion blur) is a narrow band next to confident person; a
      wide half-transparent plateau is the model hesitating over background. Uncertain values
      fade out with the distance from the confident person (> 0.9) beyond ``soft_reach`` x
      the longest side (Gaussian, same width)."""
    p = np.clip(coarse.astype(np.float32), 0.0, 1.0)
    h, w = p.shape
    if colour > 0:
        fg, bg = p > 0.9, p < 0.1
        if fg.sum() >= 50 and bg.sum() >= 50:
            q = (rgb8.astype(np.int32) * bins) // 256
            idx = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
            nb = bins ** 3
            hf = np.bincount(idx[fg], minlength=nb).astype(np.float32)
            hb = np.bincount(idx[bg], minlength=nb).astype(np.float32)
            # a little smoothing between neighbouring colours, then densities
            hf = cv2.GaussianBlur(hf.reshape(bins * bins, bins), (3, 3), 0.7).ravel() + 0.5
            hb = cv2.GaussianBlur(hb.reshape(bins * bins, bins), (3, 3), 0.7).ravel() + 0.5
            llr = np.clip(np.log((hf / hf.sum()) / (hb / hb.sum())), -3.0, 3.0).astype(np.float32)
            e = np.float32(1e-4)
            logit = np.log((p + e) / (1.0 - p + e)) + np.float32(colour) * llr[idx]
            p = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    if soft_reach > 0:
        sure = p > 0.9
        if sure.any():
            d = cv2.distanceTransform((~sure).astype(np.uint8), cv2.DIST_L2, 3)
            r = np.float32(max(1.0, soft_reach * max(h, w)))
            over = np.maximum(d - r, 0.0) / r
            p = (p * np.exp(-0.5 * over * over)).astype(np.float32)
    if head_width > 0 and heads:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + np.float32(0.5)
        allow = np.zeros((h, w), np.float32)
        far = np.zeros((h, w), bool)
        for cx, cy, eyes, fw, up in heads:
            if fw < 1.0 or up < 1.0:
                continue
            a = head_width * fw
            # distance outside the half ellipse, in face widths (approximately)
            r = np.sqrt(((xx - cx) / a) ** 2 + (np.minimum(yy - eyes, 0.0) / up) ** 2)
            out = (r - 1.0) * a / fw
            reach = np.clip(1.0 - out / 0.2, 0.0, 1.0)
            reach[yy > eyes] = 1.0  # below the eyes: shoulders, arms, long hair are not bounded here
            np.maximum(allow, reach, out=allow)
            far |= (out > 0.5) & (yy <= eyes)
        if allow.min() < 1.0:
            cut = np.where((p < 0.95) | ~far, allow, 1.0)
            p = (p * cut).astype(np.float32)
    if min_blob > 0:
        n, labels, stats, _ = cv2.connectedComponentsWithStats((p > 0.5).astype(np.uint8), connectivity=8)
        if n > 2:
            areas = stats[1:, cv2.CC_STAT_AREA]
            keep = np.zeros(n, bool)
            keep[1:] = areas >= min_blob * areas.max()
            for cx, cy, *_ in heads:
                xi, yi = int(round(cx)), int(round(cy))
                if 0 <= xi < w and 0 <= yi < h and labels[yi, xi] > 0:
                    keep[labels[yi, xi]] = True
            if not keep[1:].all():
                kept = keep[labels].astype(np.uint8)
                r = max(2, int(round(0.02 * max(h, w))))
                near = cv2.dilate(kept, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
                p = np.where(near > 0, p, 0.0).astype(np.float32)
                dropped = ~keep[labels] & (labels > 0)
                p[dropped] = 0.0
    return p


class Perceiver:
    """Runs the models on each frame.

    >>> with Perceiver(video=True) as p:
    ...     perception = p.process(frame_rgb_uint8)
    """

    def __init__(self, video: bool = False, use_segmentation: bool = True, backend=None, **options):
        """``video``: frames come in order (face tracking, temporal matte smoothing).
        ``use_segmentation``: False when an external matte will be given with every frame (the
        segmentation model is then only loaded if a frame comes without one).
        ``backend``: an object with the :class:`~relight.models.mediapipe_backend.MediaPipeBackend`
        interface (default: MediaPipe). ``options``: any :class:`PerceptionOptions` field."""
        self.options = PerceptionOptions(video=bool(video), use_segmentation=bool(use_segmentation), **options)
        if backend is None:
            from ..models.mediapipe_backend import MediaPipeBackend

            backend = MediaPipeBackend(video=self.options.video, max_num_faces=self.options.max_num_faces)
        self.backend = backend
        self._prev_coarse: Optional[np.ndarray] = None
        # video: the square (x0, y0, side), in frame pixels, where the one face followed was
        # found last; None while faces are looked for in the whole frame
        self._face_box: Optional[Tuple[int, int, int]] = None
        self._search_wait = 0  # video: frames to go before the next search for a small face
        self._followed = 0  # video: frames the face has been followed since the whole frame was looked at

    # ------------------------------------------------------------------ per frame
    def prepare(self, views: FrameViews, external_matte: bool = False, faces: bool = True) -> None:
        """Run ahead, on a frame's reduced copies, what :meth:`process` will take: the models'
        outputs (kept in ``views``). The face tracker follows the frames in the order it is given
        them: call this (or :meth:`process`) for the frames in order, from one thread at a time.
        ``faces=False``: not the face mesh (the caller gives the frame's faces with
        :meth:`give_faces`, or :meth:`process` runs it)."""
        opts = self.options
        if opts.use_face_mesh and faces:
            self._face_landmarks(views)
        if opts.use_pose:
            self._pose_landmarks(views)
        if not external_matte:
            self._coarse_matte(views)
            H, W = views.rgb8.shape[:2]
            k, h, w = _guide_shape(H, W, opts.guide_size)
            if k > 1:
                views.resized("rgb8", w, h)

    def faces_found(self, views: FrameViews) -> Optional[list]:
        """The faces (normalised landmarks) the face mesh found on this frame, or None where it
        was not run on it (yet)."""
        key = (self.backend, "face_landmarks")
        return views.derived(key, lambda: None) if views.has_derived(key) else None

    def still_faces(self, views: FrameViews) -> list:
        """The faces (normalised landmarks) on the whole frame, found as in a still image: by
        a face mesh of their own, without the trackers' state and without changing it (so
        from any thread, at any time: for a frame the face mesh was left out of where the last
        faces cannot be carried, a shot's first frame). Small faces are missed."""
        H, W = views.rgb8.shape[:2]
        small = views.resized("rgb8", *_longest_size(H, W, self.options.face_work_size))
        find = getattr(self.backend, "still_face_landmarks", None) or self.backend.face_landmarks
        return self._on_person(views, find(small))

    def give_faces(self, views: FrameViews, faces: list) -> None:
        """Take ``faces`` (normalised landmarks, as the face mesh gives them) as this frame's,
        in place of running the face mesh on it (a frame it was not run on; see :meth:`prepare`)."""
        views.derived((self.backend, "face_landmarks"), lambda: list(faces))

    def _face_landmarks(self, views: FrameViews) -> list:
        """The face mesh's landmarks (coordinates normalised to the frame) on this frame, run once.

        The face mesh finds a face by first detecting it in the whole image scaled to 128 px, so
        a face narrower than about a sixth of the frame (a medium shot, a webcam at desk
        distance) is missed there. Then it is looked for again in a square around the face
        that the full-range face detector finds (down to about a twelfth of the frame), or else
        around the top of the person's matte. A search that finds no face is tried again only
        every fifth frame of a video.

        In a video, a face that is alone in the frame (or found only in such a square) is then
        followed in a square around it, by a tracker of its own that looks for one face only
        (the whole-frame one runs its detector on every frame while it tracks fewer than
        ``max_num_faces``: ~2 ms a frame); the square moves only when the face nears its edge or
        changes size a lot. Every tenth frame the whole frame is looked at too: when it shows
        more than one face, they are all tracked there again. When the followed face is lost,
        the whole frame is searched again.

        Faces not on the person (less than half of their landmarks on the segmentation's coarse
        matte) are dropped: the face mesh now and then takes a pattern in a blurred background
        for a face, and follows it for seconds."""
        return views.derived((self.backend, "face_landmarks"), lambda: self._find_faces(views))

    def _find_faces(self, views: FrameViews) -> list:
        H, W = views.rgb8.shape[:2]

        def small():  # the whole frame, reduced for the face mesh (made when first needed)
            return views.resized("rgb8", *_longest_size(H, W, self.options.face_work_size))

        box = self._face_box
        if box is not None:
            faces = self._on_person(views, self._faces_in(views, box))
            if faces:
                self._face_box = _follow_face(box, faces[0], H, W)
                self._followed += 1
                if self._followed < _LOOK_EVERY:
                    return faces
                self._followed = 0
                everyone = self._on_person(views, self.backend.face_landmarks(small()))
                if len(everyone) < 2:
                    return faces
                self._face_box = None  # more than one face: all tracked in the whole frame
                return everyone
            self._face_box = None
        faces = self._on_person(views, self.backend.face_landmarks(small()))
        if faces:
            if len(faces) == 1:
                self._follow(_follow_face(None, faces[0], H, W))
            return faces
        if self._search_wait > 0:  # (a person who shows no face is not searched every frame)
            self._search_wait -= 1
            return []
        for box in self._face_squares(views, small()):
            faces = self._on_person(views, self._faces_in(views, box))
            if faces:
                self._follow(_follow_face(box, faces[0], H, W))
                return faces
        if self.options.video:
            self._search_wait = _SEARCH_EVERY - 1
        return []

    def _follow(self, box: Tuple[int, int, int]) -> None:
        """Video: follow the face found in ``box`` from the next frame on."""
        if self.options.video:
            self._face_box, self._followed = box, 0

    def _on_person(self, views: FrameViews, faces) -> list:
        """The faces (normalised landmarks) with at least half of their landmarks on the
        segmentation's coarse matte (all of them without segmentation)."""
        faces = list(faces)
        if not faces or not self.options.use_segmentation:
            return faces
        coarse = self._coarse_matte(views)
        h, w = coarse.shape
        kept = []
        for lm in faces:
            x = np.clip((np.asarray(lm[:, 0]) * w).astype(np.int64), 0, w - 1)
            y = np.clip((np.asarray(lm[:, 1]) * h).astype(np.int64), 0, h - 1)
            if np.mean(coarse[y, x] > 0.5) >= 0.5:
                kept.append(lm)
        return kept

    def _face_squares(self, views: FrameViews, small: np.ndarray):
        """Squares (frame pixels) where a face too small for the face mesh's own detector may
        be: around the best face of the full-range detector, else around the top of the
        person's matte."""
        H, W = views.rgb8.shape[:2]
        detect = getattr(self.backend, "face_boxes", None)
        boxes = detect(small) if detect is not None else []
        if boxes:
            x, y, w, h = (float(v) for v in boxes[0])
            yield _square((x + 0.5 * w) * W, (y + 0.5 * h) * H, 2.5 * max(w * W, h * H), H, W)
        elif self.options.use_segmentation:
            box = _head_square(self._coarse_matte(views), H, W)
            if box is not None:
                yield box

    def _faces_in(self, views: FrameViews, box: Tuple[int, int, int]) -> list:
        """The face mesh run on the square ``box`` of the frame; landmarks normalised to the frame."""
        x0, y0, side = box
        H, W = views.rgb8.shape[:2]
        crop = views.rgb8[y0:y0 + side, x0:x0 + side]
        n = min(side, self.options.face_work_size)
        if n != side:
            crop = cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA)
        # (in a video, the face in the square is followed: the one-face tracker, if the backend has one)
        find = getattr(self.backend, "follow_face_landmarks", None) if self.options.video else None
        faces = []
        for lm in (find or self.backend.face_landmarks)(np.ascontiguousarray(crop)):
            lm = np.asarray(lm, np.float32)
            out = np.empty_like(lm)
            out[:, 0] = (x0 + lm[:, 0] * side) / W
            out[:, 1] = (y0 + lm[:, 1] * side) / H
            out[:, 2] = lm[:, 2] * side / W  # (z is in units of the image width)
            faces.append(out)
        return faces

    def _pose_landmarks(self, views: FrameViews) -> Optional[np.ndarray]:
        H, W = views.rgb8.shape[:2]
        small = views.resized("rgb8", *_longest_size(H, W, self.options.face_work_size))
        return views.derived((self.backend, "pose_landmarks"), lambda: self.backend.pose_landmarks(small))

    def _coarse_matte(self, views: FrameViews) -> np.ndarray:
        """The segmentation model's matte on this frame (its own resolution), run once."""
        H, W = views.rgb8.shape[:2]
        small = views.resized("rgb8", *_longest_size(H, W, self.options.seg_work_size))
        return views.derived((self.backend, "segment"), lambda: self.backend.segment(small))

    def process(self, rgb: np.ndarray, external_matte: Optional[np.ndarray] = None,
                views: Optional[FrameViews] = None) -> Perception:
        """``rgb``: (H, W, 3) uint8 sRGB (float linear input is converted for the models).
        ``external_matte``: optional (H, W) matte in [0, 1] (any dtype; uint8 is scaled by 1/255)
        used instead of segmentation. ``views``: ``rgb``'s :class:`~relight.types.FrameViews`,
        if the caller has them (its reduced copies are shared)."""
        rgb8 = _as_uint8(rgb)
        if views is None or views.rgb8 is not rgb8:
            views = FrameViews(rgb8)
        H, W = rgb8.shape[:2]
        opts = self.options

        faces = []
        if opts.use_face_mesh:
            scale = np.array([W, H, W], np.float32)
            for lm in self._face_landmarks(views):
                faces.append((lm * scale).astype(np.float32))

        if external_matte is not None:
            matte = _as_matte(external_matte, (H, W))
        else:
            matte = self._segment(views, faces)

        pose = None
        if opts.use_pose:
            p = self._pose_landmarks(views)
            if p is not None:
                pose = p.copy()
                pose[:, 0] *= W
                pose[:, 1] *= H
                pose[:, 2] *= W
        return Perception(matte=matte, face_landmarks=faces, pose_landmarks=pose)

    def _segment(self, views: FrameViews, faces=()) -> np.ndarray:
        opts = self.options
        rgb8 = views.rgb8
        H, W = rgb8.shape[:2]
        small = views.resized("rgb8", *_longest_size(H, W, opts.seg_work_size))
        coarse = self._coarse_matte(views)
        if opts.video and opts.temporal > 0:
            if self._prev_coarse is not None and self._prev_coarse.shape == coarse.shape:
                coarse = (1.0 - opts.temporal) * coarse + opts.temporal * self._prev_coarse
            self._prev_coarse = coarse
        if opts.colour_refine > 0 or opts.min_blob > 0 or opts.soft_reach > 0:
            h, w = coarse.shape
            heads = [head_box(f, w / float(W), h / float(H)) for f in faces]
            img = small if small.shape[:2] == (h, w) else cv2.resize(small, (w, h), interpolation=cv2.INTER_AREA)
            coarse = clean_coarse_matte(coarse, img, heads, opts.colour_refine, opts.min_blob, opts.soft_reach,
                                        opts.head_width)
        # sharpen the soft model output a little before the guided filter restores real edges
        coarse = np.clip((coarse - 0.5) * 1.6 + 0.5, 0.0, 1.0)
        # the guided filter leaves faint alpha on textured background next to the person:
        # relit, it shows as a haze of the old background; a small floor removes it. Likewise
        # it leaves the person's edge a little short of opaque over a wide band: the new
        # background would show through the skin there (and flicker as the edge moves); the
        # ceiling makes it solid
        return refine_matte(rgb8, coarse, None, opts.guided_radius, opts.guided_eps, opts.guide_size,
                            floor=max(0.0, float(opts.alpha_floor)), ceiling=min(1.0, float(opts.alpha_ceiling)),
                            views=views)

    def reset(self, faces: bool = False) -> None:
        """Forget the temporal state (call between unrelated clips). ``faces``: also where a small
        face was followed or last searched for in vain (leave it False at a cut found while the
        models run ahead in another thread: the frame it would apply to depends on timing)."""
        self._prev_coarse = None
        if faces:
            self._face_box = None
            self._search_wait = 0
            self._followed = 0

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    def __enter__(self) -> "Perceiver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_uint8(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb
    from ..colour import linear_to_srgb8  # float frames are scene-linear (EXR input)

    return linear_to_srgb8(rgb[..., :3])


def _as_matte(m: np.ndarray, hw) -> np.ndarray:
    m = np.asarray(m)
    if m.ndim == 3:
        m = m[..., -1] if m.shape[2] in (2, 4) else m[..., 0]
    if m.dtype == np.uint8:
        m = m.astype(np.float32) / 255.0
    elif m.dtype == np.uint16:
        m = m.astype(np.float32) / 65535.0
    else:
        m = m.astype(np.float32)
    if m.shape != tuple(hw):
        m = cv2.resize(m, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(m, 0.0, 1.0)
