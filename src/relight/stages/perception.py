"""Perception: the person matte and the face landmarks of a frame.

The models run at a small working resolution (their own inputs are 256x144 / 192x192 anyway);
the matte is brought back to full resolution with an edge-aware (fast, colour) guided filter
that uses the frame itself as the guide, so the matte edge follows hair and clothing edges in the image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from ..types import Perception


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


def _resize_longest(img: np.ndarray, longest: int, interpolation=cv2.INTER_AREA) -> np.ndarray:
    h, w = img.shape[:2]
    s = longest / max(h, w)
    if s >= 1.0:
        return img
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(img, size, interpolation=interpolation)


def refine_matte(guide_rgb: np.ndarray, coarse: np.ndarray, out_hw=None, radius_frac: float = 0.012,
                 eps: float = 2e-3, guide_size: int = 400) -> np.ndarray:
    """Upsample a coarse matte to full resolution with a colour guided filter (He et al.),
    in its fast form (He & Sun 2015): the linear coefficients are solved at a reduced size
    (longest side about ``guide_size``, an integer factor of the frame) and applied to the
    full-resolution guide, so the matte edge follows full-resolution image edges.

    ``guide_rgb``: (H, W, 3) uint8; ``coarse``: (h, w) float in [0, 1], any size."""
    rgb8 = guide_rgb if guide_rgb.dtype == np.uint8 else _as_uint8(guide_rgb)
    H, W = rgb8.shape[:2]
    if out_hw is not None and tuple(out_hw) != (H, W):
        raise ValueError("refine_matte: out_hw must be the guide's size")
    k = max(1, int(np.ceil(max(H, W) / float(guide_size))))
    h, w = max(1, H // k), max(1, W // k)
    small = cv2.resize(rgb8, (w, h), interpolation=cv2.INTER_AREA) if k > 1 else rgb8
    ir, ig, ib = [c.astype(np.float32) * np.float32(1.0 / 255.0) for c in cv2.split(small)]
    p = cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    r = max(1, int(round(radius_frac * max(h, w))))
    ksize = (2 * r + 1, 2 * r + 1)

    def box(x):
        return cv2.boxFilter(x, -1, ksize, borderType=cv2.BORDER_REFLECT)

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
    return np.clip(q, 0.0, 1.0, out=q)


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

    # ------------------------------------------------------------------ per frame
    def process(self, rgb: np.ndarray, external_matte: Optional[np.ndarray] = None) -> Perception:
        """``rgb``: (H, W, 3) uint8 sRGB (float linear input is converted for the models).
        ``external_matte``: optional (H, W) matte in [0, 1] (any dtype; uint8 is scaled by 1/255)
        used instead of segmentation."""
        rgb8 = _as_uint8(rgb)
        H, W = rgb8.shape[:2]
        opts = self.options

        if external_matte is not None:
            matte = _as_matte(external_matte, (H, W))
        else:
            matte = self._segment(rgb8)

        faces = []
        if opts.use_face_mesh:
            small = _resize_longest(rgb8, opts.face_work_size)
            scale = np.array([W, H, W], np.float32)
            for lm in self.backend.face_landmarks(small):
                faces.append((lm * scale).astype(np.float32))

        pose = None
        if opts.use_pose:
            p = self.backend.pose_landmarks(_resize_longest(rgb8, opts.face_work_size))
            if p is not None:
                pose = p.copy()
                pose[:, 0] *= W
                pose[:, 1] *= H
                pose[:, 2] *= W
        return Perception(matte=matte, face_landmarks=faces, pose_landmarks=pose)

    def _segment(self, rgb8: np.ndarray) -> np.ndarray:
        opts = self.options
        H, W = rgb8.shape[:2]
        small = _resize_longest(rgb8, opts.seg_work_size)
        coarse = self.backend.segment(small)
        if opts.video and opts.temporal > 0:
            if self._prev_coarse is not None and self._prev_coarse.shape == coarse.shape:
                coarse = (1.0 - opts.temporal) * coarse + opts.temporal * self._prev_coarse
            self._prev_coarse = coarse
        # sharpen the soft model output a little before the guided filter restores real edges
        coarse = np.clip((coarse - 0.5) * 1.6 + 0.5, 0.0, 1.0)
        return refine_matte(rgb8, coarse, None, opts.guided_radius, opts.guided_eps, opts.guide_size)

    def reset(self) -> None:
        """Forget the temporal state (call between unrelated clips)."""
        self._prev_coarse = None

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
