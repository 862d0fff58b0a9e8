"""Geometry: per-pixel camera-frame normals of the person.

Two sources, blended with a feathered face mask:

* the face, from the 478 face-mesh landmarks: the mesh triangles are rasterised (painter's
  order, nearest last) and the area-weighted vertex normals are interpolated barycentrically;
* everything else (hair, neck, body, arms), by silhouette inflation: the height is the square
  root of a Poisson solution inside the matte (see :func:`inflate_silhouette`), so a round blob
  becomes a hemisphere whose normals lie in the image plane at the silhouette. The image borders
  do not count as silhouette (the person continues outside the frame), and neither do the lower
  edges of the silhouette (a person's lower outline is almost always where something in front
  of them, a desk, the frame or the crop, hides the body, not where the body turns away: a
  floating head is a cropped bust). The inflated height saturates at about 0.8 face widths
  (``body_depth``): a torso is flat in front, not a cylinder. Around the face the body normals lean
  towards the face edge's (a "halo"), so temples, ears and hair line continue the face's curve.

A depth map comes with the normals (working resolution, working-pixel units, larger = nearer the
camera), for cast shadows: the face mesh's own depth on the face, the inflation height
elsewhere, the two joined by matching their levels around the face.

Everything is computed at a small working resolution (and upsampled only on request); the shading that uses these
normals is smooth, the fine detail comes from the image itself (see :mod:`.render`).

Landmark frame -> camera frame: MediaPipe landmarks are (x right, y down, z away from the
camera) in pixels; the camera frame is (x right, y up, z towards the camera), so
P_cam = (x, -y, -z). This is a rotation (no mirror), so triangle winding is preserved in 3-D.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import cv2
import numpy as np

from .. import kernels
from ..types import Geometry, Perception


@dataclass
class GeometryOptions:
    work_size: int = 192  # longest side of the working resolution
    inflation_size: int = 160  # longest side at which the silhouette is inflated
    inflation_depth: float = 0.75  # depth / half-width of the inflated body (1 = round)
    matte_threshold: float = 0.5
    face_depth_scale: float = 1.0  # multiplies the face-mesh z (MediaPipe's depth scale is approximate)
    face_feather: float = 0.12  # width of the face/body blend, fraction of the face size
    face_halo: float = 0.3  # around the face, body normals lean towards the face edge's, over this x face size
    open_bottom: bool = True  # lower silhouette edges are occlusion boundaries (the body continues below)
    smooth: float = 0.8  # Gaussian sigma (working pixels) of a final anti-aliasing blur of the normals (0 = none)
    body_depth: float = 0.8  # the inflated height saturates (softly) at this x the face width (0 = no limit)
    with_depth: bool = True  # also compute Geometry.work_depth (for cast shadows)


def estimate_geometry(perception: Perception, height: int, width: int,
                      options: Optional[GeometryOptions] = None, work_matte: Optional[np.ndarray] = None) -> Geometry:
    """Normals and face weight of a ``height`` x ``width`` frame, computed (and normalised) at
    the working resolution (``Geometry.work_normals``, ``work_face``, ``work_depth``). The
    full-resolution fields are derived only on request (:meth:`Geometry.full_normals`): the
    shading stages work at the working resolution. ``work_matte``: the matte already at the
    working resolution (saves a full-resolution resize)."""
    opts = options or GeometryOptions()
    n_work, face_w, depth = _lowres(perception, height, width, opts, work_matte)
    return Geometry(work_normals=n_work, work_face=face_w, work_depth=depth, size=(height, width))


def work_shape(height: int, width: int, longest: int):
    s = min(1.0, longest / max(height, width))
    return max(1, int(round(height * s))), max(1, int(round(width * s))), s


def estimate_geometry_lowres(perception: Perception, height: int, width: int,
                             options: Optional[GeometryOptions] = None):
    """The same at the working resolution: (normals (h, w, 3), face weight (h, w))."""
    n, face_w, _ = _lowres(perception, height, width, options)
    return n, face_w


def _lowres(perception: Perception, height: int, width: int, options: Optional[GeometryOptions] = None,
            work_matte: Optional[np.ndarray] = None):
    """(normals (h, w, 3), face weight (h, w), depth (h, w) or None) at the working resolution."""
    opts = options or GeometryOptions()
    h, w, s = work_shape(height, width, opts.work_size)
    if work_matte is not None and work_matte.shape == (h, w):
        matte = work_matte.astype(np.float32, copy=False)
    else:
        matte = cv2.resize(perception.matte.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)

    max_height = None
    if perception.face_landmarks and opts.body_depth > 0:
        # a body is not much deeper than a head: a wide torso is flat in front, not a cylinder
        fw = max(float(np.ptp(np.asarray(f)[:, 0])) for f in perception.face_landmarks) * s
        max_height = opts.body_depth * fw
    body, height_map = inflate_silhouette(matte, opts, return_height=True, max_height=max_height)

    face_n = np.zeros((h, w, 3), np.float32)
    face_w = np.zeros((h, w), np.float32)
    face_z = face_cov = None
    if perception.face_landmarks:
        face_n, face_cov, face_z = rasterize_faces(perception.face_landmarks, h, w, s, opts.face_depth_scale,
                                                   with_depth=True)
        face_w = _feather_face(face_cov, perception.face_landmarks, s, opts.face_feather)
        face_w *= np.clip(matte * 2.0, 0.0, 1.0)  # no face normals outside the person
        if opts.face_halo > 0:
            body = _face_halo(body, face_n, face_cov, perception.face_landmarks, s, opts.face_halo)
    normals = body * (1.0 - face_w[..., None]) + face_n * face_w[..., None]
    if opts.smooth > 0:
        # the face mesh's occluding edges (jaw, nose, lips) are steps one working pixel wide:
        # upsampled to the frame they would be stair-stepped lines in the shading
        normals = cv2.GaussianBlur(normals, (0, 0), opts.smooth)
    depth = None
    if opts.with_depth:
        depth = height_map
        if face_z is not None:
            depth = _join_depth(height_map, face_z, face_cov, face_w)
    return _normalize(normals), face_w, depth


def _join_depth(body: np.ndarray, face_z: np.ndarray, cov: np.ndarray, face_w: np.ndarray) -> np.ndarray:
    """Body height and face-mesh depth (each up to an offset) joined: the face depth is shifted
    so that it meets the body height around the face's edge, then blended with the face weight."""
    inside = cov > 0.5
    if not inside.any():
        return body
    ring = inside & ~(cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    sel = ring if ring.sum() >= 8 else inside
    offset = float(np.median(body[sel] - face_z[sel]))
    fz = face_z + np.float32(offset)
    return (body + face_w * (np.where(inside, fz, body) - body)).astype(np.float32)


# ----------------------------------------------------------------------------- silhouette inflation
def inflate_silhouette(matte: np.ndarray, opts: Optional[GeometryOptions] = None, return_height: bool = False,
                       max_height: Optional[float] = None):
    """Normals (h, w, 3) of an inflated silhouette (and, with ``return_height``, the height
    (h, w) in pixels of the matte's resolution, 0 outside). ``max_height`` (pixels of the
    matte's resolution): the height saturates softly there, h' = M tanh(h / M), so blobs much
    wider than that (a torso) get a flat front and turn only near their outline.

    The height is z = depth * sqrt(4 u) where u solves the Poisson equation lap(u) = -1 inside
    the silhouette with u = 0 on it (and no flux through the image borders): for a disc of
    radius R, 4 u = R^2 - r^2, so z is exactly a hemisphere; a long limb of half-width a becomes a
    cylinder. Unlike distance-transform heights, u has no creases along the medial axis.
    Outside the silhouette the normal of the nearest silhouette pixel is repeated, so soft
    matte edges are shaded as rim. With ``opts.open_bottom`` the silhouette is continued
    straight down to the image's bottom edge below its lowest pixel in every column (for the
    solve only), so its lower edges are not rims: a head with no body below is a cropped bust."""
    opts = opts or GeometryOptions()
    H, W = matte.shape
    h, w, s = work_shape(H, W, opts.inflation_size)
    m = cv2.resize(matte.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) if s < 1 else matte
    inside = m >= opts.matte_threshold
    if inside.sum() < 4:
        out = np.zeros((H, W, 3), np.float32)
        out[..., 2] = 1.0
        return (out, np.zeros((H, W), np.float32)) if return_height else out
    u = poisson_height(open_bottom(inside) if opts.open_bottom else inside)
    root = np.sqrt(np.maximum(u, 1e-6))
    gy, gx = np.gradient(u)
    k = opts.inflation_depth / root  # d(depth sqrt(4u)) = depth du / sqrt(u)
    if max_height is not None and max_height > 0:
        m_inf = float(max_height) * (w / float(W))  # in inflation pixels
        z = 2.0 * opts.inflation_depth * root
        k = k * (1.0 - np.tanh(z / m_inf) ** 2)  # d(M tanh(z / M)) = (1 - tanh^2) dz
    n = np.stack([-k * gx, k * gy, np.ones_like(u)], axis=-1)  # image rows go down, camera y up
    n = _normalize(n)
    # outside: copy the nearest inside normal (the rim's), so soft matte edges are shaded as rim
    _, src = _nearest_inside(inside)
    n = n.reshape(-1, 3)[src].reshape(h, w, 3)
    if (h, w) != (H, W):
        n = _normalize(cv2.resize(n, (W, H), interpolation=cv2.INTER_LINEAR))
    if not return_height:
        return n.astype(np.float32)
    z = (opts.inflation_depth * 2.0) * root * inside  # depth * sqrt(4 u), inflation pixels
    if max_height is not None and max_height > 0:
        m_inf = float(max_height) * (w / float(W))
        z = m_inf * np.tanh(z / m_inf)
    if (h, w) != (H, W):
        z = cv2.resize(z.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR) * np.float32(W / float(w))
    return n.astype(np.float32), z.astype(np.float32)


def open_bottom(inside: np.ndarray) -> np.ndarray:
    """The silhouette continued straight down to the bottom edge below its lowest pixel in every
    column."""
    h = inside.shape[0]
    has = inside.any(axis=0)
    lowest = h - 1 - np.argmax(inside[::-1], axis=0)
    below = (np.arange(h)[:, None] > lowest[None, :]) & has[None, :]
    return inside | below


_AVG4 = np.array([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]], np.float32)


def poisson_height(inside: np.ndarray, coarse_iters: int = 100, fine_iters: int = 15, min_side: int = 16) -> np.ndarray:
    """u with lap(u) = -1 (pixel units) where ``inside``, u = 0 elsewhere, zero flux through the
    image borders: red-black SOR, coarse to fine (a few ms at 160 x 90)."""
    masks = [inside.astype(np.float32)]
    while min(masks[-1].shape) >= 2 * min_side:
        mk = masks[-1]
        masks.append((cv2.resize(mk, ((mk.shape[1] + 1) // 2, (mk.shape[0] + 1) // 2),
                                 interpolation=cv2.INTER_AREA) > 0.5).astype(np.float32))
    u = np.zeros_like(masks[-1])
    for level in range(len(masks) - 1, -1, -1):
        mk = masks[level]
        if u.shape != mk.shape:  # prolong: u scales with the square of the pixel size
            u = cv2.resize(u, (mk.shape[1], mk.shape[0]), interpolation=cv2.INTER_LINEAR) * 4.0
        u *= mk
        coarsest = level == len(masks) - 1
        _sor(u, mk, coarse_iters if coarsest else fine_iters, 1.85 if coarsest else 1.5)
    return u


def _sor(u: np.ndarray, mask: np.ndarray, iters: int, omega: float) -> None:
    if kernels.available():  # the same sweeps compiled (one call instead of ~5 per sweep)
        kernels.sor(u, mask, iters, omega)
        return
    h, w = mask.shape
    red = (np.add.outer(np.arange(h), np.arange(w)) % 2 == 0).astype(np.float32)
    w_red = (omega * red * mask).astype(np.float32)
    w_black = (omega * (1.0 - red) * mask).astype(np.float32)
    for _ in range(iters):
        for wgt in (w_red, w_black):
            avg = cv2.filter2D(u, -1, _AVG4, borderType=cv2.BORDER_REPLICATE)
            avg += 0.25
            avg -= u
            avg *= wgt
            u += avg


def _nearest_inside(inside: np.ndarray):
    """For every pixel: the distance to and the flat index of the nearest ``inside`` pixel
    (itself when inside)."""
    dist, labels = cv2.distanceTransformWithLabels((~inside).astype(np.uint8), cv2.DIST_L2, 3,
                                                   labelType=cv2.DIST_LABEL_PIXEL)
    zero_order = np.flatnonzero(inside.ravel())  # every inside pixel has its own label
    idx = np.zeros(int(labels.max()) + 1, np.int64)
    idx[labels.ravel()[zero_order]] = zero_order
    return dist, idx[labels.ravel()]


# ----------------------------------------------------------------------------- face mesh
def landmarks_to_camera(lm: np.ndarray, depth_scale: float = 1.0) -> np.ndarray:
    """(N, 3) MediaPipe pixel landmarks -> camera-frame points (x, -y, -z * depth_scale)."""
    lm = np.asarray(lm, dtype=np.float64)
    return np.stack([lm[:, 0], -lm[:, 1], -lm[:, 2] * depth_scale], axis=-1)


def mesh_vertex_normals(points_cam: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (N, 3), oriented so the mesh faces the camera (+z)."""
    a, b, c = (points_cam[triangles[:, k]] for k in range(3))
    fn = np.cross(b - a, c - a)  # length = 2 x area
    if fn[:, 2].sum() < 0:  # the projected area of a visible surface is positive
        fn = -fn
    vn = np.zeros_like(points_cam)
    for k in range(3):
        np.add.at(vn, triangles[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def rasterize_faces(faces: Sequence[np.ndarray], h: int, w: int, scale: float, depth_scale: float = 1.0,
                    max_face_px: int = 160, with_depth: bool = False, supersample: float = 2.0):
    """Rasterise face meshes at a working resolution (landmarks are full-resolution pixels,
    ``scale`` = working / full). Returns (normals (h, w, 3), coverage (h, w) float32 in [0, 1]),
    and with ``with_depth`` also the mesh depth (h, w): camera z (towards the camera) in working
    pixels, 0 where no face is.

    Each face is rasterised in its own box, at most ``max_face_px`` across (the normals are
    smooth at that scale) and up to ``supersample`` times finer than the working resolution,
    then area-averaged into place (antialiased: the occluding edges of the nose, lips and jaw are
    not stair-stepped at the working pixels); larger (nearer) faces are drawn last."""
    from ..models.mediapipe_backend import NUM_MESH_LANDMARKS

    normals = np.zeros((h, w, 3), np.float32)
    normals[..., 2] = 1.0
    cov = np.zeros((h, w), np.float32)
    depth = np.zeros((h, w), np.float32)
    order = sorted(range(len(faces)), key=lambda i: np.ptp(faces[i][:NUM_MESH_LANDMARKS, 0]))
    for fi in order:
        lm = np.asarray(faces[fi], dtype=np.float64)[:NUM_MESH_LANDMARKS]
        xy = lm[:, :2] * scale  # continuous coordinates at the working resolution
        x0 = max(0, int(np.floor(xy[:, 0].min())) - 1)
        y0 = max(0, int(np.floor(xy[:, 1].min())) - 1)
        x1 = min(w, int(np.ceil(xy[:, 0].max())) + 1)
        y1 = min(h, int(np.ceil(xy[:, 1].max())) + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        bw, bh = x1 - x0, y1 - y0
        f = min(float(supersample), max_face_px / float(max(bw, bh)))
        cw, ch = max(2, int(np.ceil(bw * f))), max(2, int(np.ceil(bh * f)))
        local = (xy - (x0, y0)) * (cw / bw, ch / bh)
        n_c, cov_c, z_c = _rasterize_one(lm, local, ch, cw, depth_scale)
        if (cw, ch) != (bw, bh):
            interp = cv2.INTER_AREA if f > 1.0 else cv2.INTER_LINEAR
            n_c = _normalize(cv2.resize(n_c * cov_c[..., None], (bw, bh), interpolation=interp))
            zc = cv2.resize(z_c * cov_c, (bw, bh), interpolation=interp)
            cov_c = cv2.resize(cov_c, (bw, bh), interpolation=interp)
            z_c = zc / np.maximum(cov_c, 1e-6)
        sel = cov_c > 0.0  # partly covered (antialiased) pixels carry their covered part's normal
        normals[y0:y1, x0:x1][sel] = n_c[sel]
        depth[y0:y1, x0:x1][sel] = z_c[sel] * np.float32(scale)
        np.maximum(cov[y0:y1, x0:x1], cov_c, out=cov[y0:y1, x0:x1])
    if with_depth:
        return normals, cov, depth
    return normals, cov


def _rasterize_one(lm: np.ndarray, xy: np.ndarray, h: int, w: int, depth_scale: float):
    """One face mesh into an (h, w) canvas; ``xy``: the 468 vertices in canvas coordinates.
    Returns normals, coverage and the camera z of the mesh (full-resolution pixel units)."""
    from ..models.mediapipe_backend import face_mesh_regions, face_mesh_triangles

    tris = face_mesh_triangles()
    pts = landmarks_to_camera(lm, depth_scale)
    vn = mesh_vertex_normals(pts, tris)
    SHIFT = 4
    fixed = np.round((xy - 0.5) * (1 << SHIFT)).astype(np.int32)
    ids = np.full((h, w), -1, np.int32)
    depth = pts[tris, 2].mean(axis=1)
    order = np.argsort(depth)  # painter's order: far (small camera z) first
    if kernels.available():  # the same fill in one pass (the vertices as OpenCV rounds them)
        kernels.paint_triangles(fixed / float(1 << SHIFT), tris[order], order, ids)
    else:
        for t, poly in zip(order.tolist(), fixed[tris[order]]):
            cv2.fillConvexPoly(ids, poly, (t,), lineType=cv2.LINE_8, shift=SHIFT)
    # per triangle, the affine map pixel (x, y, 1) -> interpolated normal: G = V @ inverse(P)
    # P has the vertices (x, y, 1) as columns; its rows are r0 = xs, r1 = ys, r2 = ones, and
    # inverse(P) has the columns (r1 x r2, r2 x r0, r0 x r1) / det
    r0 = xy[tris, 0]
    r1 = xy[tris, 1]
    r2 = np.ones_like(r0)
    inv = np.stack([np.cross(r1, r2), np.cross(r2, r0), np.cross(r0, r1)], axis=-1)
    det = np.einsum("ti,ti->t", r0, inv[:, :, 0])
    det = np.where(np.abs(det) < 1e-9, 1e-9, det)  # degenerate (edge-on) triangles
    vz = np.concatenate([vn, pts[:, 2:3]], axis=1)  # per vertex: normal and camera z
    G = np.transpose(vz[tris], (0, 2, 1)) @ (inv / det[:, None, None])  # (T, 4, 3)
    normals = np.zeros((h, w, 3), np.float32)
    zmap = np.zeros((h, w), np.float32)
    cov = ids >= 0
    if cov.any():
        rows, cols = np.nonzero(cov)
        p = np.stack([cols + 0.5, rows + 0.5, np.ones(len(rows))], axis=-1)
        nz = np.einsum("nij,nj->ni", G[ids[rows, cols]], p)
        normals[rows, cols] = nz[:, :3]
        # a pixel centre can lie just outside its (steep, edge-on) triangle: no extrapolated depth
        tz = pts[tris[ids[rows, cols]], 2]
        zmap[rows, cols] = np.clip(nz[:, 3], tz.min(axis=1), tz.max(axis=1))
    # the face oval filled: eyes and mouth (holes of the mesh) are covered by inpainting
    holes = np.zeros((h, w), np.uint8)
    cv2.fillPoly(holes, [fixed[face_mesh_regions()["oval_path"]]], 1, lineType=cv2.LINE_8, shift=SHIFT)
    fill = (holes > 0) & ~cov
    if fill.any():
        filled = _inpaint_normals(np.concatenate([normals, zmap[..., None]], axis=-1), cov, fill)
        normals, zmap = filled[..., :3], np.ascontiguousarray(filled[..., 3])
        cov = cov | fill
    return _normalize(normals), cov.astype(np.float32), zmap


def _inpaint_normals(normals: np.ndarray, known: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Normalised convolution: fill ``fill`` pixels with blurred known normals (any number of
    channels; the first three are the normals)."""
    k = known.astype(np.float32)
    out = normals.copy()
    sig = 1.0
    todo = fill.copy()
    for _ in range(6):
        num = cv2.GaussianBlur(normals * k[..., None], (0, 0), sig)
        den = cv2.GaussianBlur(k, (0, 0), sig)
        ok = todo & (den > 1e-3)
        out[ok] = num[ok] / den[ok, None]
        todo &= ~ok
        if not todo.any():
            break
        sig *= 2.0
    out[todo] = 0.0
    out[todo, 2] = 1.0
    return out


def _face_halo(body: np.ndarray, face_n: np.ndarray, cov: np.ndarray, faces, scale: float, halo: float) -> np.ndarray:
    """Around each face the head keeps curving the way the face edge does (temples, ears, hair
    line): blend the body normals towards the (smoothed) nearest face-edge normal, fading out
    over ``halo`` x the face size. Works in a box around the faces only."""
    inside = cov > 0.5
    if not inside.any():
        return body
    h, w = cov.shape
    size = max(np.ptp(f[:, 0]) for f in faces) * scale
    reach = halo * size
    sig = max(1.0, 0.06 * size)
    margin = int(np.ceil(reach + 3 * sig)) + 1
    ys, xs = np.nonzero(inside)
    y0, y1 = max(0, ys.min() - margin), min(h, ys.max() + 1 + margin)
    x0, x1 = max(0, xs.min() - margin), min(w, xs.max() + 1 + margin)
    dist, src = _nearest_inside(inside[y0:y1, x0:x1])
    fn = np.ascontiguousarray(face_n[y0:y1, x0:x1])
    ext = fn.reshape(-1, 3)[src].reshape(fn.shape)
    k = 2 * int(round(sig * 1.7)) + 1  # two box passes ~ a Gaussian of sigma sig, at a cost independent of it
    ext = cv2.blur(cv2.blur(ext, (k, k)), (k, k))  # no spokes from the nearest-pixel copy
    wgt = np.clip(1.0 - dist / max(1.0, reach), 0.0, 1.0)
    wgt = (wgt * wgt)[..., None]
    out = body.copy()
    out[y0:y1, x0:x1] = _normalize(body[y0:y1, x0:x1] * (1.0 - wgt) + ext * wgt)
    return out


def _feather_face(cov: np.ndarray, faces: List[np.ndarray], scale: float, feather: float) -> np.ndarray:
    """Coverage -> a soft weight that is 1 well inside the face and 0 at and beyond its edge."""
    size = max(np.ptp(f[:, 0]) for f in faces) * scale
    r = max(1.0, feather * size)
    # distance inside the coverage, ramped over r pixels
    d = cv2.distanceTransform((cov > 0.5).astype(np.uint8), cv2.DIST_L2, 3)  # where face normals were written
    wgt = np.clip(d / r, 0.0, 1.0)
    wgt = wgt * wgt * (3.0 - 2.0 * wgt)  # smoothstep
    return wgt.astype(np.float32)


def _normalize(n: np.ndarray) -> np.ndarray:
    n = n.astype(np.float32, copy=False)
    norm = np.sqrt(np.einsum("...k,...k->...", n, n))
    bad = norm < 1e-6
    out = n / np.where(bad, 1.0, norm)[..., None]
    if bad.any():
        out[bad] = (0.0, 0.0, 1.0)
    return out
