"""The MediaPipe models behind perception: selfie segmentation, face mesh and (optionally) pose.

This is the only module that imports :mod:`mediapipe`, so another backend can replace it by
offering the same small interface:

* :class:`MediaPipeBackend` ``.segment(rgb) -> (h, w) float32 in [0, 1]``
* ``.face_landmarks(rgb) -> list of (478, 3) float32``, normalised: x, y in [0, 1] of the
  image width/height, z in units of the image width (negative towards the camera)
* optional ``.follow_face_landmarks(rgb)``: the same for the one face in a square around a face
  followed from frame to frame (a tracker of its own that looks for one face only)
* optional ``.still_face_landmarks(rgb)``: as ``face_landmarks``, as for a still image (no
  tracking state used or changed)
* optional ``.face_boxes(rgb) -> list of (4,) float32`` (x, y, width, height normalised), best
  first: a detector that finds smaller faces than the face mesh's own
* ``.pose_landmarks(rgb) -> (33, 4) float32 or None``: x, y normalised, z, visibility
* ``.close()``; the object is a context manager.

Every input is a uint8 RGB image (H, W, 3). The models are created lazily on first use, so a
backend that is never asked for pose never loads the pose model. The face-mesh topology
(triangles, contour index sets, mirror pairs) is exported here too, as plain numpy arrays, so
that the geometry and lighting stages do not need mediapipe either.
"""
from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from functools import lru_cache
from typing import List, Optional

import numpy as np

NUM_FACE_LANDMARKS = 478  # 468 mesh points + 10 iris points (refine_landmarks=True)
NUM_MESH_LANDMARKS = 468


def _solutions():
    import mediapipe as mp  # deferred: importing mediapipe costs ~0.5 s

    return mp.solutions


@contextmanager
def _native_stderr_silenced(active: bool):
    """Send file descriptor 2 to /dev/null while MediaPipe's native code starts a graph: it
    prints informational absl/TFLite lines there that no Python setting turns off.
    ``RELIGHT_NATIVE_LOGS=1`` keeps them."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced (e.g. captured): nothing to do
        fd = None
    if not active or fd is None or os.environ.get("RELIGHT_NATIVE_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


class MediaPipeBackend:
    """Lazy wrappers around ``mp.solutions`` models.

    ``video``: tracking mode (the face mesh reuses the previous frame's landmarks instead of
    running the detector on every frame); frames must then be fed in order.
    ``landscape_segmentation``: the 256x144 landscape selfie model (faster) instead of the
    256x256 general one.
    """

    def __init__(
        self,
        video: bool = False,
        max_num_faces: int = 4,
        landscape_segmentation: bool = True,
        min_face_detection_confidence: float = 0.5,
        min_face_tracking_confidence: float = 0.5,
        pose_model_complexity: int = 1,  # only the "full" pose model is bundled with the wheel
    ):
        self.video = bool(video)
        self.max_num_faces = int(max_num_faces)
        self.landscape_segmentation = bool(landscape_segmentation)
        self.min_face_detection_confidence = float(min_face_detection_confidence)
        self.min_face_tracking_confidence = float(min_face_tracking_confidence)
        self.pose_model_complexity = int(pose_model_complexity)
        self._segmenter = None
        self._face_mesh = None
        self._follow_mesh = None
        self._still_mesh = None
        self._face_detector = None
        self._pose = None
        self._lock = threading.Lock()
        self._started: set = set()  # models that have run once (their start-up logs are silenced)

    # ------------------------------------------------------------------ model creation
    def _get_segmenter(self):
        if self._segmenter is None:
            self._segmenter = _solutions().selfie_segmentation.SelfieSegmentation(
                model_selection=1 if self.landscape_segmentation else 0
            )
        return self._segmenter

    def _new_face_mesh(self, still: bool, max_faces: int):
        return _solutions().face_mesh.FaceMesh(
            static_image_mode=still,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=self.min_face_detection_confidence,
            min_tracking_confidence=self.min_face_tracking_confidence,
        )

    def _get_face_mesh(self):
        if self._face_mesh is None:
            self._face_mesh = self._new_face_mesh(not self.video, self.max_num_faces)
        return self._face_mesh

    def _get_follow_mesh(self):
        # tracking one face: the whole-frame mesh (up to max_num_faces) runs its face
        # detector again on every frame while it tracks fewer faces than that (~2 ms of the
        # ~5.5 a frame here); this one does only when it loses its face
        if self._follow_mesh is None:
            self._follow_mesh = self._new_face_mesh(not self.video, 1)
        return self._follow_mesh

    def _get_still_mesh(self):
        # a still-image search that leaves the video trackers' state alone
        if self._still_mesh is None:
            self._still_mesh = self._new_face_mesh(True, self.max_num_faces)
        return self._still_mesh

    def _get_face_detector(self):
        if self._face_detector is None:
            # the full-range model (192 px input, faces up to ~5 m away): the face mesh's own
            # detector is the short-range one and misses faces under ~1/6 of the image width
            self._face_detector = _solutions().face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=self.min_face_detection_confidence)
        return self._face_detector

    def _get_pose(self):
        if self._pose is None:
            self._pose = _solutions().pose.Pose(
                static_image_mode=not self.video,
                model_complexity=self.pose_model_complexity,
                smooth_landmarks=self.video,
                enable_segmentation=False,
            )
        return self._pose

    # ------------------------------------------------------------------ inference
    @staticmethod
    def _check(rgb: np.ndarray) -> np.ndarray:
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected a uint8 RGB image (H, W, 3), got {rgb.dtype} {rgb.shape}")
        return np.ascontiguousarray(rgb)

    def segment(self, rgb: np.ndarray) -> np.ndarray:
        """Person probability (H, W) float32 in [0, 1] at the input's resolution."""
        rgb = self._check(rgb)
        with self._lock, _native_stderr_silenced("segmenter" not in self._started):
            result = self._get_segmenter().process(rgb)
            self._started.add("segmenter")
        mask = result.segmentation_mask
        if mask is None:
            return np.zeros(rgb.shape[:2], np.float32)
        return np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)

    def face_landmarks(self, rgb: np.ndarray) -> List[np.ndarray]:
        """One (478, 3) float32 array per face found (normalised, see the module docstring)."""
        return self._landmarks(rgb, self._get_face_mesh, "face_mesh")

    def follow_face_landmarks(self, rgb: np.ndarray) -> List[np.ndarray]:
        """As :meth:`face_landmarks`, for at most one face: ``rgb`` is a square around a face
        that is followed from frame to frame (a tracker of its own)."""
        return self._landmarks(rgb, self._get_follow_mesh, "follow_mesh")

    def still_face_landmarks(self, rgb: np.ndarray) -> List[np.ndarray]:
        """As :meth:`face_landmarks`, as for a still image: a face mesh of its own, which keeps
        no tracking state (a video's trackers are neither used nor changed)."""
        return self._landmarks(rgb, self._get_still_mesh, "still_mesh")

    def _landmarks(self, rgb: np.ndarray, model, name: str) -> List[np.ndarray]:
        rgb = self._check(rgb)
        with self._lock, _native_stderr_silenced(name not in self._started):
            result = model().process(rgb)
            self._started.add(name)
        faces = []
        for face in result.multi_face_landmarks or []:
            arr = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)
            if arr.shape[0] >= NUM_MESH_LANDMARKS:
                faces.append(arr)
        return faces

    def face_boxes(self, rgb: np.ndarray) -> List[np.ndarray]:
        """Faces found by the full-range face detector, best first: one (x, y, width, height)
        float32 box each, normalised to the image."""
        rgb = self._check(rgb)
        with self._lock, _native_stderr_silenced("face_detector" not in self._started):
            result = self._get_face_detector().process(rgb)
            self._started.add("face_detector")
        boxes = []
        for det in sorted(result.detections or [], key=lambda d: -d.score[0]):
            b = det.location_data.relative_bounding_box
            boxes.append(np.array([b.xmin, b.ymin, b.width, b.height], np.float32))
        return boxes

    def pose_landmarks(self, rgb: np.ndarray) -> Optional[np.ndarray]:
        """(33, 4) float32 (x, y normalised, z, visibility) or None."""
        rgb = self._check(rgb)
        with self._lock, _native_stderr_silenced("pose" not in self._started):
            result = self._get_pose().process(rgb)
            self._started.add("pose")
        if result.pose_landmarks is None:
            return None
        return np.array([(p.x, p.y, p.z, p.visibility) for p in result.pose_landmarks.landmark], dtype=np.float32)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        for name in ("_segmenter", "_face_mesh", "_follow_mesh", "_still_mesh", "_face_detector", "_pose"):
            model = getattr(self, name)
            if model is not None:
                try:
                    model.close()
                except Exception:  # pragma: no cover - closing twice / interpreter shutdown
                    pass
                setattr(self, name, None)

    def __enter__(self) -> "MediaPipeBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


# ---------------------------------------------------------------------- face-mesh topology
@lru_cache(maxsize=1)
def face_mesh_triangles() -> np.ndarray:
    """Triangles (T, 3) int32 of the 468-point face mesh, consistently oriented.

    MediaPipe ships the tessellation only as edges; a triangle is a 3-clique of that edge graph.
    Cliques that would make an edge shared by more than two triangles (spurious cliques) are
    dropped, then the orientation is made consistent by walking across shared edges. The sign
    of the whole mesh is fixed later, per face, from the landmarks (see geometry)."""
    edges = _solutions().face_mesh_connections.FACEMESH_TESSELATION
    return _triangles_from_edges(edges)


# the mesh's left-right twins (i, j), i < j, as made by tools/face_mesh_mirror.py: the 190 pairs
# that at least half of 7 near-frontal faces agreed on (the built-in portrait, two light-stage
# renders and the first frames of four talking-head clips). Midline landmarks are their own
# twins and are not listed; in the eyes and lips (rarely symmetric: gaze, expression) a pair may
# be a neighbour off, which the lighting fit does not mind: it leaves those regions out
FACE_MESH_MIRROR_PAIRS = (
    (3, 248), (7, 466), (20, 250), (21, 251), (22, 252), (23, 253), (24, 254), (25, 255),
    (26, 256), (28, 258), (31, 261), (32, 262), (34, 264), (35, 265), (36, 266), (37, 267),
    (38, 268), (39, 269), (41, 271), (43, 273), (44, 274), (45, 275), (46, 276), (47, 277),
    (48, 278), (49, 279), (50, 280), (51, 281), (54, 284), (55, 285), (56, 286), (57, 287),
    (58, 288), (59, 289), (60, 290), (64, 294), (65, 295), (66, 296), (67, 297), (68, 298),
    (69, 299), (70, 300), (71, 301), (72, 302), (73, 303), (75, 305), (76, 292), (79, 309),
    (82, 312), (83, 313), (84, 314), (85, 315), (86, 316), (87, 317), (89, 319), (90, 320),
    (91, 321), (92, 322), (93, 323), (96, 325), (97, 326), (98, 327), (99, 328), (100, 329),
    (101, 330), (102, 331), (103, 332), (104, 333), (105, 334), (106, 335), (107, 336), (108, 337),
    (109, 338), (110, 339), (111, 340), (112, 341), (113, 342), (114, 343), (115, 344), (116, 345),
    (117, 346), (118, 347), (119, 348), (120, 349), (121, 350), (122, 351), (123, 352), (124, 353),
    (125, 354), (126, 355), (127, 356), (128, 357), (129, 358), (131, 360), (132, 361), (133, 382),
    (134, 363), (135, 364), (136, 365), (137, 366), (138, 367), (139, 368), (140, 369), (141, 370),
    (142, 371), (143, 372), (144, 373), (145, 374), (146, 375), (147, 376), (148, 377), (149, 378),
    (150, 379), (153, 380), (154, 381), (155, 362), (156, 383), (157, 384), (158, 385), (159, 386),
    (160, 387), (162, 389), (165, 391), (166, 392), (167, 393), (169, 394), (170, 395), (171, 396),
    (172, 397), (173, 398), (174, 399), (176, 400), (177, 401), (178, 311), (179, 403), (180, 404),
    (181, 405), (182, 406), (186, 410), (187, 411), (188, 412), (189, 413), (190, 414), (192, 416),
    (193, 417), (194, 418), (196, 419), (198, 420), (201, 421), (202, 422), (203, 423), (204, 424),
    (205, 425), (206, 426), (207, 427), (208, 428), (209, 429), (210, 430), (211, 431), (212, 432),
    (213, 433), (214, 434), (215, 435), (216, 436), (217, 437), (218, 438), (219, 439), (220, 440),
    (221, 441), (222, 442), (226, 446), (227, 447), (228, 448), (229, 449), (230, 450), (231, 451),
    (232, 452), (233, 453), (234, 454), (235, 455), (236, 456), (237, 457), (238, 458), (239, 459),
    (240, 460), (241, 461), (242, 462), (243, 463), (244, 464), (245, 465),
)


def face_mesh_mirror_pairs() -> np.ndarray:
    """(P, 2) int32: pairs of face-mesh landmarks that are each other's left-right mirror image
    (faces are close to symmetric: the two have about the same albedo)."""
    return np.array(FACE_MESH_MIRROR_PAIRS, dtype=np.int32)


def _triangles_from_edges(edges) -> np.ndarray:
    adj: dict = {}
    for a, b in edges:
        if a == b:
            continue
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    cliques = set()
    for a, nb in adj.items():
        for b in nb:
            if b <= a:
                continue
            for c in nb & adj[b]:
                if c > b:
                    cliques.add((a, b, c))
    tris = sorted(cliques)
    # drop cliques that over-use an edge (an edge of a 2-manifold borders at most 2 triangles);
    # spurious cliques are those whose three edges are all already used by two other triangles
    edge_count: dict = {}
    for t in tris:
        for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])):
            edge_count[e] = edge_count.get(e, 0) + 1
    keep = []
    for t in tris:
        es = ((t[0], t[1]), (t[1], t[2]), (t[0], t[2]))
        if all(edge_count[e] > 2 for e in es):
            for e in es:
                edge_count[e] -= 1
            continue
        keep.append(t)
    tris = np.array(keep, dtype=np.int32)
    return _orient_consistently(tris)


def _orient_consistently(tris: np.ndarray) -> np.ndarray:
    """Flip triangles so that every shared edge is traversed in opposite directions."""
    tris = tris.copy()
    edge_tris: dict = {}
    for i, t in enumerate(tris):
        for k in range(3):
            e = tuple(sorted((int(t[k]), int(t[(k + 1) % 3]))))
            edge_tris.setdefault(e, []).append(i)
    seen = np.zeros(len(tris), bool)
    for start in range(len(tris)):
        if seen[start]:
            continue
        seen[start] = True
        stack = [start]
        while stack:
            i = stack.pop()
            t = tris[i]
            directed = {(int(t[k]), int(t[(k + 1) % 3])) for k in range(3)}
            for a, b in directed:
                for j in edge_tris[tuple(sorted((a, b)))]:
                    if seen[j]:
                        continue
                    u = tris[j]
                    other = {(int(u[k]), int(u[(k + 1) % 3])) for k in range(3)}
                    if (a, b) in other:  # same direction -> flip j
                        tris[j] = u[[0, 2, 1]]
                    seen[j] = True
                    stack.append(j)
    return tris


def _index_set(connections) -> np.ndarray:
    return np.array(sorted({i for e in connections for i in e}), dtype=np.int32)


@lru_cache(maxsize=1)
def face_mesh_regions() -> dict:
    """Landmark index sets of the face parts: ``oval``, ``left_eye``, ``right_eye``,
    ``left_eyebrow``, ``right_eyebrow``, ``lips``, ``nose`` (int32 arrays), and ``oval_path``:
    the face-oval landmarks in order around the contour."""
    fmc = _solutions().face_mesh_connections
    regions = {
        "oval": _index_set(fmc.FACEMESH_FACE_OVAL),
        "left_eye": _index_set(fmc.FACEMESH_LEFT_EYE),
        "right_eye": _index_set(fmc.FACEMESH_RIGHT_EYE),
        "left_eyebrow": _index_set(fmc.FACEMESH_LEFT_EYEBROW),
        "right_eyebrow": _index_set(fmc.FACEMESH_RIGHT_EYEBROW),
        "lips": _index_set(fmc.FACEMESH_LIPS),
        "nose": _index_set(fmc.FACEMESH_NOSE),
    }
    # order the oval edges into a closed path
    nxt: dict = {}
    for a, b in fmc.FACEMESH_FACE_OVAL:
        nxt.setdefault(a, []).append(b)
        nxt.setdefault(b, []).append(a)
    start = min(nxt)
    path, prev, cur = [start], None, start
    while True:
        cands = [n for n in nxt[cur] if n != prev]
        if not cands or cands[0] == start:
            break
        prev, cur = cur, cands[0]
        path.append(cur)
        if len(path) > len(nxt):
            break
    regions["oval_path"] = np.array(path, dtype=np.int32)
    return regions
