"""Print the face mesh's mirror pairs (landmark i <-> its left-right twin j) as a Python literal.

Usage: python tools/face_mesh_mirror.py [IMAGE_OR_VIDEO ...]
(default: the package's built-in portrait; a video gives its first frame)

The face mesh's 468 landmarks (the iris points left aside) come from a left-right symmetric
canonical model, so each landmark off the midline has a mirror twin. On each near-frontal face
the landmarks (in pixels, z in the units of x) are reflected in the plane that best fits the
face's midline landmarks (forehead, nose bridge and tip, lips, chin); landmarks and reflections
are then matched one to one, closest first. A pair is kept when at least half of the faces agree
on it. The output is pasted into ``relight.models.mediapipe_backend.FACE_MESH_MIRROR_PAIRS``.
"""
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from relight.models.mediapipe_backend import MediaPipeBackend

MIDLINE = [10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 17, 18, 200, 199, 175, 152]
MESH = 468


def mirror_pairs(lm: np.ndarray):
    """Mirror pairs (i < j) of one face's (468, 3) landmarks in pixels."""
    mid = lm[MIDLINE]
    c = mid.mean(0)
    _, _, vt = np.linalg.svd(mid - c)
    normal = vt[2]  # the midline spans the up and forward axes: its normal is left-right
    reflected = lm - 2.0 * ((lm - c) @ normal)[:, None] * normal[None, :]
    dist = np.linalg.norm(lm[:, None, :] - reflected[None, :, :], axis=-1)  # [i, j]: i to j's reflection
    dist = 0.5 * (dist + dist.T)
    taken = np.zeros(MESH, bool)
    pairs = []
    for k in np.argsort(dist, axis=None):  # closest first, one to one
        i, j = divmod(int(k), MESH)
        if taken[i] or taken[j]:
            continue
        taken[i] = taken[j] = True
        if i != j:
            pairs.append((min(i, j), max(i, j)))
    return pairs


def first_frame(path: str) -> np.ndarray:
    img = cv2.imread(path)
    if img is None:
        cap = cv2.VideoCapture(path)
        ok, img = cap.read()
        cap.release()
        if not ok:
            sys.exit(f"error: {path}: not an image or video")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def main(argv):
    paths = argv or [str(Path(__file__).resolve().parents[1] / "src" / "relight" / "assets" / "astronaut.jpg")]
    votes: Counter = Counter()
    faces = 0
    with MediaPipeBackend(video=False) as backend:
        for path in paths:
            rgb = first_frame(path)
            h, w = rgb.shape[:2]
            found = backend.still_face_landmarks(rgb)
            if not found:
                print(f"# {path}: no face", file=sys.stderr)
                continue
            lm = np.asarray(found[0], np.float64)[:MESH] * np.array([w, h, w], np.float64)
            votes.update(mirror_pairs(lm))
            faces += 1
    if not faces:
        sys.exit("error: no face found")
    pairs = sorted(p for p, n in votes.items() if 2 * n >= faces)
    print(f"# {len(pairs)} pairs agreed on by at least half of {faces} face(s)")
    print("FACE_MESH_MIRROR_PAIRS = (")
    for k in range(0, len(pairs), 8):
        print("    " + " ".join(f"({a}, {b})," for a, b in pairs[k:k + 8]))
    print(")")


if __name__ == "__main__":
    main(sys.argv[1:])
