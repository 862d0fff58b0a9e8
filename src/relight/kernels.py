"""Fused full-resolution per-pixel kernels (numba), the hot loop of a relighting run.

The render stage computes its smooth factors at a small working resolution
(:class:`~relight.stages.render.PersonFields`); applying them to the frame, tone mapping,
compositing over the background and encoding to 8-bit sRGB are all per-pixel operations on the
full-resolution frame. Done one numpy/OpenCV call at a time they make ~20 passes over 11 MB
arrays (at 720p) and cost more than everything else together; here they are one pass, split
over the CPU cores by rows, reading the working-resolution factors with bilinear interpolation
(the same half-pixel convention as ``cv2.resize(..., INTER_LINEAR)``).

The numpy reference of the same maths is :func:`relight.stages.render.render_person` followed by
:func:`relight.stages.composite.composite` and :func:`relight.colour.linear_to_srgb8`; the tests
check that the two agree to 1/255.

Two more full-resolution passes: the matte's guided filter (:func:`guided_apply`) and the
temporal stage's correction of it (:func:`add_upsampled`); :func:`encode8` encodes a static
background once for the fused kernel. Two area averages read a whole frame too: an 8-bit frame's
linear working copy (:func:`linear_area`, linearised as it is read) and the matte's, at a
fractional factor (:func:`area_shrink`; OpenCV is faster at an integer one).

Five small loops of the working-resolution stages are compiled here too, because done in
numpy/OpenCV calls they cost more in per-call overhead than in arithmetic: the red-black
relaxation of the silhouette's height (:func:`sor`, ~230 calls a frame), the cast-shadow march
(:func:`shadow_march`, ~5 calls per step), the guided filter's solve for the matte
(:func:`guided_coefficients`, ~50 calls) and each dominant light's terms of the target shading
(:func:`add_light`, ~20 calls); and the face mesh's triangles are painted in one pass
(:func:`paint_triangles`, ~900 calls). Their numpy/OpenCV forms stay in the stages, used
without numba; the tests check that both forms agree.

Measure a change to a kernel with its on-disk cache warm (a second run): a cached kernel can run
at a different speed from the one compiled in the same process (seen: 25% slower after an
innocuous change of its arguments, though the fresh compile was not).

The kernels may be called from several threads (the pipeline renders one frame while it
analyses the next). numba's fallback threading layer (``workqueue``, used when neither OpenMP nor
TBB is present) aborts the process on concurrent parallel launches, so under it the parallel
kernels' launches are serialised by one lock; under OpenMP or TBB (found after the first launch,
which is made under the lock) they run side by side: serialised, the analysis thread's short
matte kernels waited for the render thread's fused kernel (720p: ~3% slower). Each launch uses
all the cores it is allowed (:func:`set_threads`); the serial kernels need no lock.

Compiled on first use and cached on disk by numba (``cache=True``: in the package's
``__pycache__``, or numba's user cache directory when that is not writable).
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from functools import lru_cache
from typing import Optional

import numpy as np

try:  # pragma: no cover - exercised implicitly
    import numba
    from numba import njit, prange
    from numba.extending import overload
except ImportError:  # pragma: no cover
    numba = None

from .colour import SRGB8_TO_LINEAR, hold_bounds

# background modes of :func:`fused_composite8`
BG_IMAGE = 0  # a full-resolution display-linear image
BG_COLOUR = 1  # one display-linear colour
BG_NONE = 2  # transparent: the relit person alone (the caller writes the matte as alpha)
BG_IMAGE8 = 3  # an image, given also encoded to 8-bit sRGB: copied where there is no person

N_FIELDS = 12  # albedo_scale / E_src (3), E_tgt / pi (3), target specular (3), source specular (3)
N_EDGE_FIELDS = 6  # optional: old background colour (3), person colour (3) near soft edges

# serialises the parallel launches under the workqueue threading layer (see the module
# docstring): a process-wide resource, like numba's thread pool it guards
_LAUNCH_LOCK = threading.Lock()
_CONCURRENT_LAYERS = ("omp", "tbb")  # threading layers that take concurrent launches
_concurrent_launches = False  # set once the layer in use is known to be one of them


@contextmanager
def _launch():
    """The context of one parallel kernel launch (see the module docstring)."""
    global _concurrent_launches
    if _concurrent_launches:
        yield
        return
    with _LAUNCH_LOCK:
        yield
        try:
            _concurrent_launches = numba.threading_layer() in _CONCURRENT_LAYERS
        except ValueError:  # (no parallel launch made yet)
            pass


def available() -> bool:
    return numba is not None


def set_threads(n: int) -> int:
    """How many cores each kernel launched from the calling thread may use (numba keeps this
    setting per thread); 0 = all of them. Returns the previous setting (0 without numba)."""
    if numba is None:
        return 0
    prev = numba.get_num_threads()
    numba.set_num_threads(int(n) if n > 0 else numba.config.NUMBA_NUM_THREADS)
    return prev


def axis_table(n_out: int, n_in: int):
    """Bilinear taps along one axis, OpenCV's INTER_LINEAR convention: source coordinate
    (i + 0.5) * n_in / n_out - 0.5, clamped to the edge. -> (i0 int32, i1 int32, frac float32)."""
    s = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / float(n_out)) - 0.5
    s = np.clip(s, 0.0, n_in - 1)
    i0 = np.floor(s).astype(np.int32)
    i1 = np.minimum(i0 + 1, n_in - 1).astype(np.int32)
    return i0, i1, (s - i0).astype(np.float32)


def _pixel(img, y, x, c, lut):
    """Channel ``c`` of pixel (y, x) in linear light: a float image's value, or an 8-bit sRGB
    image's code through ``lut`` (:data:`relight.colour.SRGB8_TO_LINEAR`). The kernels read
    their full-resolution images through it, so an 8-bit frame needs no float copy."""
    v = img[y, x, c]
    return lut[v] if img.dtype == np.uint8 else v


if numba is not None:

    @overload(_pixel, inline="always")
    def _pixel_compiled(img, y, x, c, lut):
        # chosen when the kernel is compiled for the image's dtype (numba specialises per type)
        if isinstance(img.dtype, numba.types.Integer):
            return lambda img, y, x, c, lut: lut[img[y, x, c]]
        return lambda img, y, x, c, lut: img[y, x, c]

    @njit(cache=True, fastmath=True, inline="always")
    def _tone(x, knee, span):
        if x <= knee:
            return x if x > 0.0 else 0.0
        return knee + span * (1.0 - math.exp(-(x - knee) / span))

    @njit(cache=True, fastmath=True, inline="always")
    def _lerp(row, b0, b1, u, c):
        return row[b0, c] + u * (row[b1, c] - row[b0, c])

    @njit(cache=True, fastmath=True, inline="always")
    def _enc(v, lut):
        if v <= 0.0:
            return lut[0]
        if v >= 1.0:
            return lut[lut.shape[0] - 1]
        return lut[int(v * (lut.shape[0] - 1) + 0.5)]

    @njit(cache=True, fastmath=True, inline="always")
    def _enc_held(v, lut, held, lo, hi):
        # _enc with hysteresis (relight.colour.linear_to_srgb8's ``held``): the held code k is
        # kept while the table index is in lo[k]..hi[k] (relight.colour.hold_bounds)
        # (both codes read first and one chosen: a branch here is mispredicted on real frames,
        # where held and new codes mix finely: at 720p 1.6 -> 0.4 ms a frame)
        i = 0 if v <= 0.0 else (lut.shape[0] - 1 if v >= 1.0 else int(v * (lut.shape[0] - 1) + 0.5))
        r = lut[i]
        keep = (i >= lo[held]) & (i <= hi[held])
        return held if keep else r

    @njit(cache=True, parallel=True, fastmath=True, nogil=True)
    def _fused(person_in, lin, fields, edges, y0, y1, fy, x0, x1, fx, matte, weight, bg, bg8, bg_mode, bg_colour,
               gain, amax, strength, knee, lut, in_lut, edge_lo, edge_fade, edge_hi, held, hold_lo, hold_hi, out):
        H, W = matte.shape
        holds = held.shape[0] == H and held.shape[1] == W
        decont = edges.shape[2] >= N_EDGE_FIELDS
        span = 1.0 - knee
        for y in prange(H):
            # the person's extent along this row (all of it without a background) ...
            first, last = 0, W - 1
            if bg_mode != 2:
                first, last = W, -1
                for x in range(W):
                    if matte[y, x] > 0.0:
                        first = x
                        break
                for x in range(W - 1, first - 1, -1):
                    if matte[y, x] > 0.0:
                        last = x
                        break
            # ... and the working-resolution fields (and edge colours) interpolated to this row
            # over the columns that the extent reads, then along it
            row = np.empty((fields.shape[1], N_FIELDS + N_EDGE_FIELDS), np.float32)
            a0, a1, t = y0[y], y1[y], fy[y]
            for j in range(x0[first] if first <= last else 0, x1[last] + 1 if first <= last else 0):
                for c in range(N_FIELDS):
                    v0 = fields[a0, j, c]
                    row[j, c] = v0 + t * (fields[a1, j, c] - v0)
                if decont:
                    for c in range(N_EDGE_FIELDS):
                        v0 = edges[a0, j, c]
                        row[j, N_FIELDS + c] = v0 + t * (edges[a1, j, c] - v0)
            lo, hi = 0, W
            if bg_mode == 3:
                # an encoded background: the row copied first (as one flat run of bytes: 3-5x
                # faster than pixel by pixel), then only the person's pixels made
                orow = out[y].reshape(W * 3)
                brow = bg8[y].reshape(W * 3)
                for i in range(W * 3):
                    orow[i] = brow[i]
                lo, hi = first, last + 1
            for x in range(lo, hi):
                b0, b1, u = x0[x], x1[x], fx[x]
                am = matte[y, x]
                a = am * weight
                if a <= 0.0 and bg_mode != 2:
                    # background only (most of a frame): the person is not needed there (an
                    # encoded background's row is in place already)
                    if bg_mode != 3:
                        for c in range(3):
                            out[y, x, c] = _enc(_pixel(bg, y, x, c, in_lut) if bg_mode == 0 else bg_colour[c], lut)
                    continue
                # the three channels as scalars (kept in registers)
                p0 = _pixel(person_in, y, x, 0, in_lut)
                p1 = _pixel(person_in, y, x, 1, in_lut)
                p2 = _pixel(person_in, y, x, 2, in_lut)
                if decont and am >= edge_lo and am <= edge_hi:
                    # soft edge: the person's own colour without the old background (the
                    # per-pixel form of relight.stages.composite.solve_edge_pixels)
                    f0 = max(_lerp(row, b0, b1, u, 15), 1e-6)
                    f1 = max(_lerp(row, b0, b1, u, 16), 1e-6)
                    f2 = max(_lerp(row, b0, b1, u, 17), 1e-6)
                    r0 = p0 - (1.0 - am) * _lerp(row, b0, b1, u, 12)
                    r1 = p1 - (1.0 - am) * _lerp(row, b0, b1, u, 13)
                    r2 = p2 - (1.0 - am) * _lerp(row, b0, b1, u, 14)
                    sc = (f0 * r0 + f1 * r1 + f2 * r2) / max(am * (f0 * f0 + f1 * f1 + f2 * f2), 1e-12)
                    sc = min(max(sc, 0.25), 4.0)
                    we = min(max((am - 0.7) / 0.25, 0.0), 1.0)
                    ds = min(max((edge_hi - am) / max(edge_hi - edge_fade, 1e-6), 0.0), 1.0)
                    ia = max(am, 0.05)
                    p0 = ds * (we * max(r0 / ia, 0.25 * f0) + (1.0 - we) * f0 * sc) + (1.0 - ds) * p0
                    p1 = ds * (we * max(r1 / ia, 0.25 * f1) + (1.0 - we) * f1 * sc) + (1.0 - ds) * p1
                    p2 = ds * (we * max(r2 / ia, 0.25 * f2) + (1.0 - we) * f2 * sc) + (1.0 - ds) * p2
                opaque = a >= 1.0 or bg_mode == 2  # (the person covers the pixel: no background to read)
                for c, i in ((0, p0), (1, p1), (2, p2)):
                    # the source's own sheen is not albedo (keep at least half the pixel)
                    i = max(i - _lerp(row, b0, b1, u, 9 + c), 0.5 * i)
                    alb = min(i * _lerp(row, b0, b1, u, c), amax)
                    v = _tone((alb * _lerp(row, b0, b1, u, 3 + c) + _lerp(row, b0, b1, u, 6 + c)) * gain, knee, span)
                    if strength < 1.0:
                        v = strength * v + (1.0 - strength) * _pixel(lin, y, x, c, in_lut)
                    if not opaque:
                        v = a * v + (1.0 - a) * (_pixel(bg, y, x, c, in_lut) if bg_mode != 1 else bg_colour[c])
                    if holds and a > 0.0:
                        out[y, x, c] = _enc_held(v, lut, held[y, x, c], hold_lo, hold_hi)
                    else:
                        out[y, x, c] = _enc(v, lut)


if numba is not None:

    @njit(cache=True, fastmath=True, inline="always")
    def _cut(q, floor, inv, cut):
        q = min(max(q, 0.0), 1.0)
        if cut:
            q = min(max((q - floor) * inv, 0.0), 1.0)
        return q

    @njit(cache=True, fastmath=True, inline="always")
    def _guided_pixel(rgb8, row, y, x, x0, x1, fx, floor, inv, cut):
        b0, b1, u = x0[x], x1[x], fx[x]
        q = row[b0, 3] + u * (row[b1, 3] - row[b0, 3])
        for c in range(3):
            q += rgb8[y, x, c] * (row[b0, c] + u * (row[b1, c] - row[b0, c]))
        return _cut(q, floor, inv, cut)

    @njit(cache=True, fastmath=True, inline="always")
    def _reach(coef, i, j):
        return (abs(coef[i, j, 0]) + abs(coef[i, j, 1]) + abs(coef[i, j, 2])) * np.float32(510.0) + np.float32(1e-6)

    @njit(cache=True, parallel=True, fastmath=True, nogil=True)
    def _guided(rgb8, coef, y0, y1, fy, x0, x1, fx, floor, ceiling, out):
        H, W = out.shape
        inv = 1.0 / (ceiling - floor)
        cut = floor > 0.0 or ceiling < 1.0
        w = coef.shape[1]
        # the output columns between coefficient columns j and j + 1: starts[j] .. starts[j + 1]
        starts = np.full(w + 1, W, np.int64)
        for x in range(W - 1, -1, -1):
            starts[x0[x]] = x
        for j in range(w - 1, -1, -1):
            starts[j] = min(starts[j], starts[j + 1])
        # most of a frame is surely matte or surely not (the coefficients flat there, b well
        # below the floor or above the ceiling): such a span gets 0 or 1 at once, as each of its
        # pixels would. Each cell of the coefficient grid (rows i, i + 1, columns j, j + 1) is
        # classed once from its four corners (the bilinear values between lie within their
        # range): 1 surely 0, 2 surely 1, 0 to be computed. reach: (twice) the most that the
        # guide moves the output from b.
        h = coef.shape[0]
        sure = np.zeros((h, w), np.uint8)
        if cut:
            for i in prange(h):
                i1 = min(i + 1, h - 1)
                for j in range(w):
                    j1 = min(j + 1, w - 1)
                    hi_b = max(max(coef[i, j, 3], coef[i, j1, 3]), max(coef[i1, j, 3], coef[i1, j1, 3]))
                    lo_b = min(min(coef[i, j, 3], coef[i, j1, 3]), min(coef[i1, j, 3], coef[i1, j1, 3]))
                    m = max(max(_reach(coef, i, j), _reach(coef, i, j1)), max(_reach(coef, i1, j), _reach(coef, i1, j1)))
                    if _cut(hi_b + m, floor, inv, cut) <= 0.0:
                        sure[i, j] = 1
                    elif _cut(lo_b - m, floor, inv, cut) >= 1.0:
                        sure[i, j] = 2
        for y in prange(H):
            row = np.empty((w, 4), np.float32)
            a0, a1, t = y0[y], y1[y], fy[y]
            if not cut:
                for j in range(w):
                    for c in range(4):
                        v0 = coef[a0, j, c]
                        row[j, c] = v0 + t * (coef[a1, j, c] - v0)
                for x in range(W):
                    out[y, x] = _guided_pixel(rgb8, row, y, x, x0, x1, fx, floor, inv, cut)
                continue
            ia = min(a0, a1)  # the cell row between a0 and a1 (the same row at the frame's edges)
            done = -1  # the last column whose row values are interpolated
            for j in range(w):
                xa, xb = starts[j], starts[j + 1]
                if xa >= xb:
                    continue
                k = sure[ia, j]
                if k == 1:
                    out[y, xa:xb] = 0.0
                elif k == 2:
                    out[y, xa:xb] = 1.0
                else:
                    j1 = x1[xb - 1]
                    for jj in range(max(j, done + 1), j1 + 1):  # (only the columns the span reads)
                        for c in range(4):
                            v0 = coef[a0, jj, c]
                            row[jj, c] = v0 + t * (coef[a1, jj, c] - v0)
                    done = max(done, j1)
                    for x in range(xa, xb):
                        out[y, x] = _guided_pixel(rgb8, row, y, x, x0, x1, fx, floor, inv, cut)


def guided_apply(rgb8: np.ndarray, coef: np.ndarray, floor: float = 0.0, ceiling: float = 1.0) -> np.ndarray:
    """The full-resolution output of a fast guided filter in one pass: the (h, w, 4) mean
    coefficients (a_r, a_g, a_b per uint8 guide level, b) upsampled bilinearly, applied to the
    uint8 guide, clipped to [0, 1], then rescaled so that ``floor`` maps to 0 and ``ceiling``
    to 1 (clipped again). -> (H, W) float32."""
    H, W = rgb8.shape[:2]
    h, w = coef.shape[:2]
    y0, y1, fy = axis_table(H, h)
    x0, x1, fx = axis_table(W, w)
    out = np.empty((H, W), np.float32)
    rgb8, coef = np.ascontiguousarray(rgb8[..., :3]), _contig(coef)
    with _launch():
        _guided(rgb8, coef, y0, y1, fy, x0, x1, fx, np.float32(floor), np.float32(ceiling), out)
    return out


if numba is not None:

    @njit(cache=True, fastmath=True, nogil=True)
    def _sor(u, mask, iters, omega):
        h, w = u.shape
        for _ in range(iters):
            for colour in range(2):
                for y in range(h):
                    ya, yb = max(y - 1, 0), min(y + 1, h - 1)
                    for x in range((y + colour) % 2, w, 2):
                        m = mask[y, x]
                        if m != 0.0:
                            nb = u[ya, x] + u[yb, x] + u[y, max(x - 1, 0)] + u[y, min(x + 1, w - 1)]
                            u[y, x] += omega * m * (0.25 * nb + 0.25 - u[y, x])

    @njit(cache=True, fastmath=True, nogil=True)
    def _march(occ, d, dx, dy, dz, n_steps, bias, tan_r, step, far, occl):
        h, w = d.shape
        for k in range(1, n_steps + 1):
            # occ seen k steps towards the light, bilinear, ``far`` beyond the image
            # the offset rounded to 1/32 pixel, as OpenCV's warpAffine does (the two paths agree)
            sx, sy = round(k * dx * 32.0) / 32.0, round(k * dy * 32.0) / 32.0
            ix, iy = int(math.floor(sx)), int(math.floor(sy))
            fx, fy = sx - ix, sy - iy
            soft = 0.5 + tan_r * k * step
            inv_soft = 1.0 / soft
            off = (k * dz + bias) * inv_soft
            for y in range(h):
                y0, y1 = y + iy, y + iy + 1
                for x in range(w):
                    x0, x1 = x + ix, x + ix + 1
                    v00 = occ[y0, x0] if 0 <= y0 < h and 0 <= x0 < w else far
                    v01 = occ[y0, x1] if 0 <= y0 < h and 0 <= x1 < w else far
                    v10 = occ[y1, x0] if 0 <= y1 < h and 0 <= x0 < w else far
                    v11 = occ[y1, x1] if 0 <= y1 < h and 0 <= x1 < w else far
                    s = (v00 * (1.0 - fx) + v01 * fx) * (1.0 - fy) + (v10 * (1.0 - fx) + v11 * fx) * fy
                    r = (s - d[y, x]) * inv_soft - off
                    if r > occl[y, x]:
                        occl[y, x] = r

    @njit(cache=True, fastmath=True, nogil=True)
    def _guided_moments(rgb8, p, out):
        h, w = p.shape
        for y in range(h):
            for x in range(w):
                r = rgb8[y, x, 0] * np.float32(1.0 / 255.0)
                g = rgb8[y, x, 1] * np.float32(1.0 / 255.0)
                b = rgb8[y, x, 2] * np.float32(1.0 / 255.0)
                q = p[y, x]
                o = out[y, x]
                o[0], o[1], o[2], o[3] = r, g, b, q
                o[4], o[5], o[6] = r * q, g * q, b * q
                o[7], o[8], o[9], o[10], o[11], o[12] = r * r, r * g, r * b, g * g, g * b, b * b

    @njit(cache=True, fastmath=True, nogil=True)
    def _guided_solve(m, eps, out):
        h, w = m.shape[:2]
        for y in range(h):
            for x in range(w):
                v = m[y, x]
                mr, mg, mb, mp = v[0], v[1], v[2], v[3]
                cr, cg, cb = v[4] - mr * mp, v[5] - mg * mp, v[6] - mb * mp
                vrr = v[7] - mr * mr + eps
                vrg = v[8] - mr * mg
                vrb = v[9] - mr * mb
                vgg = v[10] - mg * mg + eps
                vgb = v[11] - mg * mb
                vbb = v[12] - mb * mb + eps
                c00 = vgg * vbb - vgb * vgb
                c01 = vgb * vrb - vrg * vbb
                c02 = vrg * vgb - vgg * vrb
                c11 = vrr * vbb - vrb * vrb
                c12 = vrb * vrg - vrr * vgb
                c22 = vrr * vgg - vrg * vrg
                inv = np.float32(1.0 / 255.0) / (vrr * c00 + vrg * c01 + vrb * c02)
                ar = (c00 * cr + c01 * cg + c02 * cb) * inv
                ag = (c01 * cr + c11 * cg + c12 * cb) * inv
                ab = (c02 * cr + c12 * cg + c22 * cb) * inv
                o = out[y, x]
                o[0], o[1], o[2] = ar, ag, ab
                o[3] = mp - (ar * mr + ag * mg + ab * mb) * np.float32(255.0)


def guided_coefficients(rgb8: np.ndarray, p: np.ndarray, box, eps: float) -> np.ndarray:
    """The fast guided filter's mean linear coefficients at the reduced size: ``rgb8`` (h, w, 3)
    uint8 guide, ``p`` (h, w) float32 input, ``box`` the window's mean filter (applied to a
    many-channel image at once). -> (h, w, 4) float32: a_r, a_g, a_b per uint8 guide level, b
    (what :func:`guided_apply` takes); the maths of :func:`relight.stages.perception.refine_matte`'s
    OpenCV form in two compiled passes."""
    h, w = p.shape
    moments = np.empty((h, w, 13), np.float32)
    _guided_moments(np.ascontiguousarray(rgb8[..., :3]), _contig(p), moments)
    coef = np.empty((h, w, 4), np.float32)
    _guided_solve(box(moments), np.float32(eps), coef)
    return box(coef)


def sor(u: np.ndarray, mask: np.ndarray, iters: int, omega: float) -> None:
    """Red-black successive over-relaxation of lap(u) = -1 where ``mask`` (weights in [0, 1])
    is non-zero, in place on (h, w) float32 ``u``, replicated borders (see
    :func:`relight.stages.geometry.poisson_height`)."""
    _sor(u, np.ascontiguousarray(mask, np.float32), int(iters), np.float32(omega))


def shadow_march(occ: np.ndarray, d: np.ndarray, dx: float, dy: float, dz: float, n_steps: int, bias: float,
                 tan_r: float, step: float, far: float) -> np.ndarray:
    """The occlusion of :func:`relight.stages.render.shadow_map`: max over k = 1..n_steps of
    (occ(x + k (dx, dy)) - d(x) - k dz - bias) / (0.5 + tan_r k step), with ``occ`` read
    bilinearly and ``far`` beyond the image, floored at 0. -> (h, w) float32."""
    occl = np.zeros(d.shape, np.float32)
    _march(_contig(occ), _contig(d), float(dx), float(dy), float(dz), int(n_steps), float(bias), float(tan_r),
           float(step), np.float32(far), occl)
    return occl


def add_light(e: np.ndarray, spec: Optional[np.ndarray], n: np.ndarray, refl: np.ndarray, direction, power,
              soft: float, vis: Optional[np.ndarray], skin: np.ndarray, box, wrap, skin_vis: Optional[np.ndarray],
              lobes, fres: np.ndarray) -> None:
    """One light's diffuse and specular terms of :func:`relight.stages.render.target_fields`,
    added in place to ``e`` and ``spec`` ((h, w, 3) float32; ``spec`` may be None), in one pass
    instead of ~20 numpy operations; :func:`relight.stages.render._add_light` is its numpy form
    (used without numba).

    ``n``, ``refl``: (h, w, 3) normals and mirror directions; ``direction``, ``power``: the
    light's unit vector and RGB power; ``soft``: its terminator's half-width (in cosine);
    ``vis``: (h, w) visibility or None. On skin, within ``box`` ((y0, y1, x0, x1), or None),
    each channel's cosine is wrapped by ``wrap[c]`` and its visibility is ``skin_vis[c]``
    ((3, h, w), None without ``vis``). ``lobes``: up to two (exponent, weight (h, w)) Phong
    lobes about the mirror direction, normalised by (exponent + 1) / 2 pi, times ``fres``."""
    h, w = n.shape[:2]
    y0, y1, x0, x1 = box if box is not None else (0, 0, 0, 0)
    lobes = list(lobes)
    ex = np.zeros(2, np.float64)
    wgt = np.zeros((2, h, w), np.float32)
    for k, (e0, wk) in enumerate(lobes[:2]):
        ex[k] = e0
        wgt[k] = wk
    _add_light(e, spec if spec is not None else _DUMMY_FIELD, spec is not None, _contig(n), _contig(refl),
               np.asarray(direction, np.float32), np.asarray(power, np.float32), np.float32(soft),
               _contig(vis) if vis is not None else _DUMMY_PLANE, vis is not None, _contig(skin),
               int(y0), int(y1), int(x0), int(x1), np.asarray(wrap, np.float32),
               _contig(skin_vis) if skin_vis is not None else _DUMMY_FIELD, len(lobes), ex, wgt,
               _contig(fres) if spec is not None else _DUMMY_PLANE)


if numba is not None:

    @njit(cache=True, fastmath=True, inline="always")
    def _soft_cos(c, soft):
        # relight.stages.render._soft_cosine
        if c >= soft:
            return c
        cc = min(max(c + soft, 0.0), 2.0 * soft)
        return cc * cc * (np.float32(0.25) / soft)

    @njit(cache=True, fastmath=True, nogil=True)
    def _add_light(e, spec, has_spec, n, refl, l, pw, soft, vis, has_vis, skin, y0, y1, x0, x1, wrap,
                   skin_vis, n_lobes, ex, wgt, fres):
        h, w = n.shape[:2]
        norm0 = np.float32((ex[0] + 1.0) / (2.0 * math.pi))
        norm1 = np.float32((ex[1] + 1.0) / (2.0 * math.pi))
        for y in range(h):
            for x in range(w):
                cos = n[y, x, 0] * l[0] + n[y, x, 1] * l[1] + n[y, x, 2] * l[2]
                lam = _soft_cos(cos, soft)
                v = vis[y, x] if has_vis else np.float32(1.0)
                lam = lam * v
                for c in range(3):
                    e[y, x, c] += lam * pw[c]
                if y0 <= y < y1 and x0 <= x < x1:
                    sk = skin[y, x]
                    for c in range(3):
                        if wrap[c] > 0:
                            lc = _soft_cos(cos + wrap[c], soft) / (np.float32(1.0) + wrap[c])
                        else:
                            lc = _soft_cos(cos, soft)
                        if has_vis:
                            lc = lc * skin_vis[c, y, x]
                        e[y, x, c] += sk * (lc - lam) * pw[c]
                if has_spec and n_lobes > 0:
                    rl = refl[y, x, 0] * l[0] + refl[y, x, 1] * l[1] + refl[y, x, 2] * l[2]
                    if rl <= 0.0:  # facing away from the mirror direction: no highlight
                        continue
                    rl = min(rl, 1.0)
                    lobe = norm0 * rl ** np.float32(ex[0]) * wgt[0, y, x]
                    if n_lobes > 1:
                        lobe += norm1 * rl ** np.float32(ex[1]) * wgt[1, y, x]
                    lobe = lobe * fres[y, x] * v
                    for c in range(3):
                        spec[y, x, c] += lobe * pw[c]


def paint_triangles(vertices: np.ndarray, triangles: np.ndarray, values: np.ndarray, canvas: np.ndarray) -> None:
    """Fill triangles into an (h, w) int32 ``canvas`` in the order given (later ones on top):
    pixel (x, y) gets ``values[k]`` when the point (x, y) lies in triangle k or on its edges
    (``cv2.fillConvexPoly``'s rule); ``vertices`` (n, 2) float pixel coordinates, ``triangles``
    (t, 3) vertex indices. One pass instead of one OpenCV call per triangle (~900 per face)."""
    _paint(np.ascontiguousarray(vertices, np.float64), np.ascontiguousarray(triangles, np.int64),
           np.ascontiguousarray(values, np.int32), canvas)


if numba is not None:

    @njit(cache=True, nogil=True)
    def _paint(v, tris, values, canvas):
        h, w = canvas.shape
        for k in range(tris.shape[0]):
            ax, ay = v[tris[k, 0], 0], v[tris[k, 0], 1]
            bx, by = v[tris[k, 1], 0], v[tris[k, 1], 1]
            cx, cy = v[tris[k, 2], 0], v[tris[k, 2], 1]
            area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
            if area == 0.0:
                continue
            s = 1.0 if area > 0 else -1.0
            x0 = max(0, int(math.ceil(min(ax, bx, cx))))
            x1 = min(w - 1, int(math.floor(max(ax, bx, cx))))
            y0 = max(0, int(math.ceil(min(ay, by, cy))))
            y1 = min(h - 1, int(math.floor(max(ay, by, cy))))
            for y in range(y0, y1 + 1):
                for x in range(x0, x1 + 1):
                    e0 = ((bx - ax) * (y - ay) - (by - ay) * (x - ax)) * s
                    e1 = ((cx - bx) * (y - by) - (cy - by) * (x - bx)) * s
                    e2 = ((ax - cx) * (y - cy) - (ay - cy) * (x - cx)) * s
                    if e0 >= 0.0 and e1 >= 0.0 and e2 >= 0.0:
                        canvas[y, x] = values[k]


def fused_composite8(person_in: np.ndarray, lin: np.ndarray, fields: np.ndarray, matte: np.ndarray,
                     weight: float, background, *, gain: float, amax: float, strength: float, knee: float,
                     lut: np.ndarray, transparent: bool = False, edge_band=(0.02, 0.9, 0.98),
                     background8: Optional[np.ndarray] = None, edges: Optional[np.ndarray] = None,
                     held: Optional[np.ndarray] = None, hold: float = 0.0) -> np.ndarray:
    """One pass: relit person (fields applied to ``person_in``, times ``gain``), tone curve,
    ``strength`` blend with ``lin``, over ``background`` with alpha ``matte * weight``, 8-bit sRGB.

    ``person_in`` and ``lin`` (H, W, 3): float32 linear, or uint8 sRGB (linearised per pixel as
    it is read: an 8-bit frame needs no full-resolution float copy).
    ``fields`` (h, w, 12 or 18): :class:`~relight.stages.render.PersonFields`' 12 channels,
    optionally followed by :func:`~relight.stages.composite.edge_fields`' 6 (or those given
    apart, as ``edges`` (h, w, 6)); with those, the pixels whose matte lies in ``edge_band`` =
    (lo, fade, hi) are decontaminated first (the old background taken out of soft edges, fully
    up to ``fade``, less and less above it), as :func:`~relight.stages.composite.decontaminate`
    does.

    ``background``: (H, W, 3) display-linear image (float32, or uint8 sRGB), a length-3 colour,
    or None with ``transparent`` (then the output is the relit person alone). ``background8``:
    optionally, the image background encoded by :func:`encode8` (or, for a uint8 background,
    itself): its pixels are copied where there is no person. ``held`` (H, W, 3) uint8 and
    ``hold`` > 0: the person's pixels (alpha > 0) are encoded with that hysteresis, as
    :func:`relight.colour.linear_to_srgb8` does with them. Returns (H, W, 3) uint8."""
    H, W = matte.shape
    h, w = fields.shape[:2]
    if edges is None and fields.shape[2] >= N_FIELDS + N_EDGE_FIELDS:
        fields, edges = fields[..., :N_FIELDS], fields[..., N_FIELDS:N_FIELDS + N_EDGE_FIELDS]
    if fields.shape[2] != N_FIELDS:
        raise ValueError(f"expected {N_FIELDS} field channels, got {fields.shape[2]}")
    if edges is not None and edges.shape != (h, w, N_EDGE_FIELDS):
        raise ValueError(f"expected edge colours of shape {(h, w, N_EDGE_FIELDS)}, got {edges.shape}")
    y0, y1, fy = axis_table(H, h)
    x0, x1, fx = axis_table(W, w)
    bg8 = _DUMMY_IMAGE8
    if transparent or background is None:
        mode, bg, colour = BG_NONE, _DUMMY_IMAGE, _DUMMY_COLOUR
    elif np.ndim(background) == 1 or (np.ndim(background) == 3 and background.strides[:2] == (0, 0)):
        mode, bg = BG_COLOUR, _DUMMY_IMAGE
        colour = np.ascontiguousarray(np.asarray(background, np.float32).reshape(-1, 3)[0])
    else:
        mode, bg, colour = BG_IMAGE, _image(background), _DUMMY_COLOUR
        if background8 is not None:
            mode, bg8 = BG_IMAGE8, np.ascontiguousarray(background8, np.uint8)
            if bg8.shape != bg.shape:
                raise ValueError(f"background8 has shape {bg8.shape}, the background {bg.shape}")
    if held is not None and hold > 0:
        if held.shape != (H, W, 3) or held.dtype != np.uint8:
            raise ValueError(f"held must be ({H}, {W}, 3) uint8, got {held.shape} {held.dtype}")
        held = np.ascontiguousarray(held)
        hold_lo, hold_hi = hold_bounds(hold)
    else:
        held, hold_lo, hold_hi = _DUMMY_IMAGE8, _DUMMY_BOUNDS, _DUMMY_BOUNDS
    out = np.empty((H, W, 3), np.uint8)
    args = (_image(person_in), _image(lin), _contig(fields), _DUMMY_FIELD if edges is None else _contig(edges),
            y0, y1, fy, x0, x1, fx, _contig(matte),
            np.float32(weight), bg, bg8, mode, colour, np.float32(gain), np.float32(amax), np.float32(strength),
            np.float32(knee), lut, SRGB8_TO_LINEAR, *(np.float32(e) for e in edge_band),
            held, hold_lo, hold_hi, out)
    with _launch():
        _fused(*args)
    return out


def add_upsampled(base: np.ndarray, small: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """clip(``base`` + ``small`` upsampled bilinearly to ``base``'s size, 0, 1) in one pass:
    (H, W) float32 ``base``, (h, w) float32 ``small`` (``cv2.resize(..., INTER_LINEAR)``'s
    convention); a sum below ``floor`` becomes 0. -> a new (H, W) float32 array."""
    H, W = base.shape
    h, w = small.shape
    y0, y1, fy = axis_table(H, h)
    x0, x1, fx = axis_table(W, w)
    out = np.empty((H, W), np.float32)
    with _launch():
        _add_upsampled(_contig(base), _contig(small), y0, y1, fy, x0, x1, fx, np.float32(floor), out)
    return out


if numba is not None:

    @njit(cache=True, parallel=True, fastmath=True, nogil=True)
    def _add_upsampled(base, small, y0, y1, fy, x0, x1, fx, floor, out):
        H, W = out.shape
        for y in prange(H):
            row = np.empty(small.shape[1], np.float32)
            a0, a1, t = y0[y], y1[y], fy[y]
            for j in range(small.shape[1]):
                row[j] = small[a0, j] + t * (small[a1, j] - small[a0, j])
            for x in range(W):
                v = base[y, x] + (row[x0[x]] + fx[x] * (row[x1[x]] - row[x0[x]]))
                out[y, x] = min(v, 1.0) if v >= floor and v > 0.0 else 0.0


@lru_cache(maxsize=16)
def area_table(n_out: int, n_in: int):
    """Area-averaging taps along one axis, ``cv2.resize(..., INTER_AREA)``'s when shrinking
    (``n_out <= n_in``): output i averages the input over [i s, (i + 1) s), s = n_in / n_out,
    the input samples cut by the interval's ends weighted by the part inside.
    -> (first tap int32 (n_out,), taps int32 (n_out,), weights float32 (n_out, k)), cached:
    not to be modified."""
    if n_out > n_in:
        raise ValueError(f"area_table shrinks only ({n_in} -> {n_out})")
    scale = n_in / float(n_out)
    taps = []
    for i in range(n_out):
        f1 = i * scale
        f2 = f1 + scale
        cell = min(scale, n_in - f1)
        s1 = math.ceil(f1)
        s2 = min(math.floor(f2), n_in - 1)
        s1 = min(s1, s2)
        row = []
        if s1 - f1 > 1e-3:
            row.append((s1 - 1, (s1 - f1) / cell))
        row += [(j, 1.0 / cell) for j in range(s1, s2)]
        if f2 - s2 > 1e-3:
            row.append((s2, min(min(f2 - s2, 1.0), cell) / cell))
        taps.append(row)
    k = max(len(r) for r in taps)
    first = np.array([r[0][0] for r in taps], np.int32)
    count = np.array([len(r) for r in taps], np.int32)
    weights = np.zeros((n_out, k), np.float32)
    for i, r in enumerate(taps):
        weights[i, :len(r)] = [wt for _, wt in r]
    return first, count, weights


def linear_area(rgb8: np.ndarray, w: int, h: int) -> np.ndarray:
    """(H, W, 3) uint8 sRGB -> (h, w, 3) float32 linear, area-averaged: the same as
    ``cv2.resize(to_linear(rgb8), (w, h), interpolation=INTER_AREA)`` (to float rounding)
    in one pass over the 8-bit pixels, without the full-resolution float copy (at 4K: 100 MB
    written and read again). Shrinks only. Serial (no lock): it runs beside the other stages."""
    H, W = rgb8.shape[:2]
    ys, yn, yw = area_table(h, H)
    xs, xn, xw = area_table(w, W)
    out = np.empty((h, w, 3), np.float32)
    flat = np.ascontiguousarray(rgb8[..., :3]).reshape(H, W * 3)
    _linear_area(flat, SRGB8_TO_LINEAR, ys, yn, yw, xs, xn, xw, out)
    return out


if numba is not None:

    @njit(cache=True, fastmath=True, nogil=True)
    def _linear_area(rgb8, lut, ys, yn, yw, xs, xn, xw, out):
        h, w = out.shape[:2]
        acc = np.empty((w, 3), np.float32)
        for i in range(h):
            acc[:] = 0.0
            for k in range(yn[i]):
                sy = ys[i] + k
                wy = yw[i, k]
                for j in range(w):
                    s0 = 3 * xs[j]
                    r = np.float32(0.0)
                    g = np.float32(0.0)
                    b = np.float32(0.0)
                    for m in range(xn[j]):
                        wx = xw[j, m]
                        q = s0 + 3 * m
                        r += wx * lut[rgb8[sy, q]]
                        g += wx * lut[rgb8[sy, q + 1]]
                        b += wx * lut[rgb8[sy, q + 2]]
                    acc[j, 0] += wy * r
                    acc[j, 1] += wy * g
                    acc[j, 2] += wy * b
            for j in range(w):
                for c in range(3):
                    out[i, j, c] = acc[j, c]


def area_shrink(plane: np.ndarray, w: int, h: int) -> np.ndarray:
    """(H, W) float32 -> (h, w) float32 area average: ``cv2.resize(plane, (w, h),
    interpolation=INTER_AREA)`` (to float rounding) in one serial pass. OpenCV's own is faster
    at an integer factor and slower at a fractional one (a 1080p matte to 256 px, 7.5x: 3.6 ms
    against 2.7). Shrinks only."""
    H, W = plane.shape
    ys, yn, yw = area_table(h, H)
    xs, xn, xw = area_table(w, W)
    out = np.empty((h, w), np.float32)
    _area_plane(_contig(plane), ys, yn, yw, xs, xn, xw, out)
    return out


if numba is not None:

    # (the loop of _linear_area for one float channel; a generic form of the two, with the
    # channel count and the lookup as parameters, was 25-60% slower)
    @njit(cache=True, fastmath=True, nogil=True)
    def _area_plane(src, ys, yn, yw, xs, xn, xw, out):
        h, w = out.shape
        acc = np.empty(w, np.float32)
        for i in range(h):
            acc[:] = 0.0
            for k in range(yn[i]):
                sy = ys[i] + k
                wy = yw[i, k]
                for j in range(w):
                    s0 = xs[j]
                    r = np.float32(0.0)
                    for m in range(xn[j]):
                        r += xw[j, m] * src[sy, s0 + m]
                    acc[j] += wy * r
            for j in range(w):
                out[i, j] = acc[j]


def encode8(image: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """(H, W, 3) display-linear float -> uint8 sRGB through ``lut``, exactly as
    :func:`fused_composite8` encodes (its ``background8``)."""
    image = _contig(image)
    out = np.empty(image.shape, np.uint8)
    _encode8(image, lut, out)
    return out


if numba is not None:

    @njit(cache=True, fastmath=True, nogil=True)
    def _encode8(image, lut, out):
        H, W = image.shape[:2]
        for y in range(H):
            for x in range(W):
                for c in range(3):
                    out[y, x, c] = _enc(image[y, x, c], lut)


def edge_weighted(image: np.ndarray, matte: np.ndarray, lo: float, hi: float):
    """The inputs of :func:`relight.stages.composite.edge_fields`' two normalised blurs in one
    pass: (image x w_bg (h, w, 3), w_bg (h, w), image x w_fg, w_fg), w_bg = matte < ``lo``,
    w_fg = matte > ``hi`` (0 or 1), all float32."""
    image, matte = _contig(image), _contig(matte)
    h, w = matte.shape
    bg, fg = np.empty((h, w, 3), np.float32), np.empty((h, w, 3), np.float32)
    wb, wf = np.empty((h, w), np.float32), np.empty((h, w), np.float32)
    _edge_weighted(image, matte, np.float32(lo), np.float32(hi), bg, wb, fg, wf)
    return bg, wb, fg, wf


def edge_normalised(bg: np.ndarray, wb: np.ndarray, fg: np.ndarray, wf: np.ndarray, floor: float) -> np.ndarray:
    """The two blurred sums of :func:`edge_weighted` divided by their blurred weights (at least
    ``floor``), side by side: (h, w, 6) float32, the background's colour then the person's."""
    h, w = wb.shape
    out = np.empty((h, w, 6), np.float32)
    _edge_normalised(_contig(bg), _contig(wb), _contig(fg), _contig(wf), np.float32(floor), out)
    return out


if numba is not None:

    @njit(cache=True, nogil=True)
    def _edge_weighted(image, matte, lo, hi, bg, wb, fg, wf):
        h, w = matte.shape
        for y in range(h):
            for x in range(w):
                m = matte[y, x]
                b = np.float32(1.0) if m < lo else np.float32(0.0)
                f = np.float32(1.0) if m > hi else np.float32(0.0)
                wb[y, x] = b
                wf[y, x] = f
                for c in range(3):
                    bg[y, x, c] = image[y, x, c] * b
                    fg[y, x, c] = image[y, x, c] * f

    @njit(cache=True, nogil=True)
    def _edge_normalised(bg, wb, fg, wf, floor, out):
        h, w = wb.shape
        for y in range(h):
            for x in range(w):
                db = max(wb[y, x], floor)
                df = max(wf[y, x], floor)
                for c in range(3):
                    out[y, x, c] = bg[y, x, c] / db
                    out[y, x, 3 + c] = fg[y, x, c] / df


_DUMMY_IMAGE = np.zeros((1, 1, 3), np.float32)
_DUMMY_IMAGE8 = np.zeros((1, 1, 3), np.uint8)
_DUMMY_BOUNDS = np.zeros(256, np.int32)
_DUMMY_COLOUR = np.zeros(3, np.float32)
_DUMMY_PLANE = np.zeros((1, 1), np.float32)
_DUMMY_FIELD = np.zeros((1, 1, 1), np.float32)


def _contig(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _image(x: np.ndarray) -> np.ndarray:
    """A full-resolution image for :func:`_pixel`: uint8 sRGB kept as it is, anything else float32."""
    x = np.asarray(x)
    return np.ascontiguousarray(x) if x.dtype == np.uint8 else _contig(x)
