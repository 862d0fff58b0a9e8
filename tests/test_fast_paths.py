"""The speed paths give the same result as the reference steps: the fused full-resolution
kernel (relight.kernels) against render + composite + sRGB encoding in numpy, and the threaded
decode/encode against errors in the source or the sink."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from relight import kernels
from relight.colour import LINEAR_TO_SRGB8_LUT, TONE_KNEE, linear_to_srgb8, srgb_to_linear, tonemap
from relight.pipeline import Relighter
from relight.settings import RelightSettings
from relight.stages.composite import decontaminate, edge_fields
from relight.threads import BackgroundWriter, Prefetch

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")


@pytest.mark.parametrize("background,strength", [("hdri", 1.0), ("source", 0.7), ("#336699", 1.0),
                                                 ("transparent", 1.0)])
def test_fused_frame_matches_reference(portrait_rgb, background, strength):
    """Whole frames (a real face: edges, eyes with catchlights, hair) through both paths."""
    frame = cv2.resize(portrait_rgb, (301, 233), interpolation=cv2.INTER_AREA)  # odd sizes on purpose
    with Relighter(RelightSettings(hdri="sunset", background=background, strength=strength), video=False) as r:
        fused = r.process_composite(frame, encode8=True)
        ref = r.process_composite(frame, encode8=False)
    assert fused.rgb8 is not None and fused.rgb8.shape == frame.shape and fused.rgb8.dtype == np.uint8
    ref8 = linear_to_srgb8(ref.rgb).astype(int)
    diff = np.abs(fused.rgb8.astype(int) - ref8)
    if background == "transparent":
        np.testing.assert_allclose(fused.alpha, ref.alpha, atol=1e-6)
        diff = diff * (ref.alpha[..., None] > 0.1)  # colour under ~zero alpha is invisible
    assert diff.max() <= 2, diff.max()
    assert (diff > 1).mean() < 1e-3
    # the relit frame is not the input (the test would pass for a no-op otherwise)
    assert np.abs(fused.rgb8.astype(int) - frame.astype(int)).mean() > 2


def test_fused_kernel_pieces_against_numpy():
    """The kernel alone on random data: bilinear field upsampling (cv2.resize convention), edge
    decontamination, albedo clip, tone curve, strength, background blend and sRGB encoding."""
    rng = np.random.default_rng(3)
    H, W, h, w = 57, 83, 13, 19
    lin = rng.random((H, W, 3), dtype=np.float32)
    matte = np.clip(rng.random((H, W), dtype=np.float32) * 1.2 - 0.1, 0, 1)
    # rows without the person, and rows with it only in the middle or at one end (the kernel
    # works on each row's extent of the person)
    matte[:4] = 0
    matte[10:20, :30] = 0
    matte[10:30, 60:] = 0
    fields = rng.random((h, w, 12), dtype=np.float32) * np.float32(1.5)
    fields[..., 9:] *= 0.1
    small = cv2.resize(lin, (w, h), interpolation=cv2.INTER_AREA)
    edges = edge_fields(small, cv2.resize(matte, (w, h), interpolation=cv2.INTER_AREA), 2.0)
    bg = rng.random((H, W, 3), dtype=np.float32)
    gain, amax, strength, weight = 1.7, 0.9, 0.8, 0.6
    out = kernels.fused_composite8(lin, lin, np.concatenate([fields, edges], -1), matte, weight, bg, gain=gain,
                                   amax=amax, strength=strength, knee=TONE_KNEE, lut=LINEAR_TO_SRGB8_LUT)
    up = cv2.resize(fields, (W, H), interpolation=cv2.INTER_LINEAR) if fields.shape[2] <= 4 else np.concatenate(
        [cv2.resize(np.ascontiguousarray(fields[..., c:c + 3]), (W, H), interpolation=cv2.INTER_LINEAR)
         for c in range(0, 12, 3)], -1)
    img = decontaminate(lin, matte, fields=edges)
    img = np.maximum(img - up[..., 9:12], 0.5 * img)
    person = np.minimum(img * up[..., 0:3], amax) * up[..., 3:6] + up[..., 6:9]
    relit = strength * tonemap(person * gain) + (1 - strength) * lin
    a = (matte * weight)[..., None]
    ref = linear_to_srgb8(a * relit + (1 - a) * bg).astype(int)
    diff = np.abs(out.astype(int) - ref)
    assert diff.max() <= 2 and (diff > 1).mean() < 2e-3
    # the edge colours may come apart from the fields (no 18-channel copy): the same output
    apart = kernels.fused_composite8(lin, lin, fields, matte, weight, bg, edges=edges, gain=gain, amax=amax,
                                     strength=strength, knee=TONE_KNEE, lut=LINEAR_TO_SRGB8_LUT)
    assert np.array_equal(apart, out)
    without = kernels.fused_composite8(lin, lin, fields, matte, weight, bg, gain=gain, amax=amax,
                                       strength=strength, knee=TONE_KNEE, lut=LINEAR_TO_SRGB8_LUT)
    assert not np.array_equal(without, out)  # (the soft edges are decontaminated only with them)


def test_fused_kernel_holds_codes_as_the_reference_encoding_does():
    """With the previous frame's codes (``held``), the kernel keeps a person's pixel at its held
    code while its exact code is within 0.5 + hold of it, as linear_to_srgb8 does; the
    background is never held."""
    rng = np.random.default_rng(11)
    H, W, h, w = 47, 61, 10, 14
    lin = rng.random((H, W, 3), dtype=np.float32)
    matte = np.clip(rng.random((H, W), dtype=np.float32) * 1.4 - 0.2, 0, 1)
    matte[:6] = 0
    fields = rng.random((h, w, 12), dtype=np.float32)
    bg = rng.random((H, W, 3), dtype=np.float32)
    kw = dict(gain=1.1, amax=0.9, strength=1.0, knee=TONE_KNEE, lut=LINEAR_TO_SRGB8_LUT)
    plain = kernels.fused_composite8(lin, lin, fields, matte, 0.9, bg, **kw)
    person = (matte > 0)[..., None] & np.ones(3, bool)
    for step, hold, kept in ((0, 0.2, (1.0, 1.0)), (1, 0.2, (0.12, 0.28)), (-1, 0.2, (0.12, 0.28)),
                             (1, 0.0, (0.0, 0.0)), (2, 0.2, (0.0, 0.0)), (1, 0.6, (0.5, 0.7))):
        held = np.clip(plain.astype(int) + step, 0, 255).astype(np.uint8)
        got = kernels.fused_composite8(lin, lin, fields, matte, 0.9, bg, held=held, hold=hold, **kw)
        assert np.array_equal(got[~person], plain[~person])  # (the background: as without)
        is_held = got == held
        assert np.all(is_held | (got == plain))
        moved = person & (held != plain)
        share = is_held[moved].mean() if moved.any() else 1.0
        # the exact codes are spread evenly over (plain - 0.5, plain + 0.5): a held code one
        # level away is kept where the exact one is within 0.5 + hold of it, ~hold of the time
        assert kept[0] <= share <= kept[1], (step, hold, share)
    with pytest.raises(ValueError):
        kernels.fused_composite8(lin, lin, fields, matte, 0.9, bg, held=plain[1:], hold=0.2, **kw)


def test_fused_kernel_copies_an_encoded_background():
    """A background given already encoded (encode8: a static one, encoded once) is copied where
    there is no person, and the output is exactly the one without it."""
    rng = np.random.default_rng(5)
    H, W, h, w = 41, 67, 9, 15
    lin = rng.random((H, W, 3), dtype=np.float32)
    matte = np.clip(rng.random((H, W), dtype=np.float32) * 1.4 - 0.2, 0, 1)
    matte[30:], matte[5:15, :40], matte[10:20, 25:] = 0, 0, 0  # rows without the person, or with it in part
    fields = rng.random((h, w, 12), dtype=np.float32)
    bg = rng.random((H, W, 3), dtype=np.float32)
    kw = dict(gain=1.3, amax=0.9, strength=0.7, knee=TONE_KNEE, lut=LINEAR_TO_SRGB8_LUT)
    ref = kernels.fused_composite8(lin, lin, fields, matte, 0.8, bg, **kw)
    bg8 = kernels.encode8(bg, LINEAR_TO_SRGB8_LUT)
    assert np.abs(bg8.astype(int) - linear_to_srgb8(bg)).max() <= 1
    assert np.array_equal(kernels.fused_composite8(lin, lin, fields, matte, 0.8, bg, background8=bg8, **kw), ref)
    assert np.array_equal(ref[matte == 0], bg8[matte == 0])
    with pytest.raises(ValueError):
        kernels.fused_composite8(lin, lin, fields, matte, 0.8, bg, background8=bg8[1:], **kw)


def test_fused_kernel_reads_8bit_frames_as_their_linear_values():
    """An 8-bit frame (and an 8-bit background, copied where there is no person) given to the
    kernel as it is gives exactly the output of its linear float copy."""
    rng = np.random.default_rng(7)
    H, W, h, w = 45, 71, 11, 16
    rgb8 = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    lin = srgb_to_linear(rgb8)
    matte = np.clip(rng.random((H, W), dtype=np.float32) * 1.4 - 0.2, 0, 1)
    fields = rng.random((h, w, 18), dtype=np.float32)
    bg = rng.random((H, W, 3), dtype=np.float32)
    kw = dict(gain=1.2, amax=0.9, strength=0.6, knee=TONE_KNEE, lut=LINEAR_TO_SRGB8_LUT)
    ref = kernels.fused_composite8(lin, lin, fields, matte, 0.9, bg, **kw)
    assert np.array_equal(kernels.fused_composite8(rgb8, rgb8, fields, matte, 0.9, bg, **kw), ref)
    # the frame as its own background (--background source): 8-bit pixels copied
    ref = kernels.fused_composite8(lin, lin, fields, matte, 0.9, lin, **kw)
    got = kernels.fused_composite8(rgb8, rgb8, fields, matte, 0.9, rgb8, background8=rgb8, **kw)
    assert np.array_equal(got, ref)
    assert np.array_equal(got[matte == 0], rgb8[matte == 0])


@pytest.mark.parametrize("size,shrunk", [((720, 1280), (144, 256)), ((233, 301), (57, 74)),
                                         ((100, 100), (100, 37)), ((57, 83), (13, 19))])
def test_linear_area_is_opencvs_area_average_of_the_linear_frame(size, shrunk):
    rng = np.random.default_rng(11)
    rgb8 = rng.integers(0, 256, size + (3,), dtype=np.uint8)
    h, w = shrunk
    got = kernels.linear_area(rgb8, w, h)
    ref = cv2.resize(srgb_to_linear(rgb8), (w, h), interpolation=cv2.INTER_AREA)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-6)
    with pytest.raises(ValueError):
        kernels.linear_area(rgb8, size[1] + 1, h)


def test_frame_views_big_linear_reductions_come_from_the_half_size_copy(portrait_rgb):
    """A 3x-or-more area shrink of an 8-bit frame's linear pixels is made from its half-size
    8-bit copy: close to the exact linear average (its 2x2 averages are taken in sRGB), the same
    whichever copy is asked for first; a smaller shrink is the exact one."""
    from relight.types import FrameViews

    frame = cv2.resize(portrait_rgb, (960, 540), interpolation=cv2.INTER_CUBIC)
    views = FrameViews(frame)
    got = views.resized("linear", 256, 144)
    half = views.resized("rgb8", 480, 270)
    np.testing.assert_allclose(got, kernels.linear_area(half, 256, 144), atol=1e-6)
    exact = cv2.resize(srgb_to_linear(frame), (256, 144), interpolation=cv2.INTER_AREA)
    levels = np.abs(linear_to_srgb8(got).astype(int) - linear_to_srgb8(exact).astype(int))
    # (this frame is all fine high-contrast detail: measured 0.8 and 9 levels; real video less)
    assert levels.mean() < 1.5 and np.percentile(levels, 99) <= 12, (levels.mean(), np.percentile(levels, 99))
    other = FrameViews(frame)
    assert np.array_equal(other.resized("linear", 256, 144), got)  # (no half-size copy asked for first)
    np.testing.assert_allclose(FrameViews(frame).resized("linear", 480, 270),
                               cv2.resize(srgb_to_linear(frame), (480, 270), interpolation=cv2.INTER_AREA),
                               atol=1e-6)


@pytest.mark.parametrize("size,shrunk", [((1080, 1920), (144, 256)), ((233, 301), (57, 74))])
def test_area_shrink_is_opencvs_area_average(size, shrunk):
    """The matte's shrink to the working resolution at a fractional factor (1080p: 7.5x)."""
    rng = np.random.default_rng(13)
    plane = np.clip(cv2.GaussianBlur(rng.random(size, dtype=np.float32), (0, 0), 2) * 3 - 1, 0, 1)
    h, w = shrunk
    got = kernels.area_shrink(plane, w, h)
    np.testing.assert_allclose(got, cv2.resize(plane, (w, h), interpolation=cv2.INTER_AREA), atol=1e-6)


def test_video_frames_make_no_full_size_linear_copy(portrait_rgb):
    """With an HDRI background the pipeline reads an 8-bit frame's pixels as they are: its
    full-size float copy (12 bytes a pixel) is never made."""
    frame = cv2.resize(portrait_rgb, (320, 240), interpolation=cv2.INTER_AREA)
    with Relighter(RelightSettings(hdri="sunset"), video=True) as r:
        views = r.prepare(frame)
        comp = r.render(r.analyse(frame, encode8=True, views=views))
        assert comp.rgb8 is not None and np.abs(comp.rgb8.astype(int) - frame).mean() > 2
        assert views._linear is None


def test_parallel_kernels_launched_from_two_threads_at_once():
    """The pipeline launches parallel kernels from its analysis and render threads at the same
    time (serialised only under numba's workqueue layer, which cannot take it): the results are
    those of one thread."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(9)
    H, W = 90, 130
    lin = rng.random((H, W, 3), dtype=np.float32)
    matte = rng.random((H, W), dtype=np.float32)
    fields = rng.random((9, 13, 12), dtype=np.float32)
    small = rng.random((9, 13), dtype=np.float32) - 0.5
    kw = dict(gain=1.1, amax=0.9, strength=1.0, knee=TONE_KNEE, lut=LINEAR_TO_SRGB8_LUT)
    ref_f = kernels.fused_composite8(lin, lin, fields, matte, 1.0, np.full(3, 0.2, np.float32), **kw)
    ref_a = kernels.add_upsampled(matte, small)

    def fused(_):
        return kernels.fused_composite8(lin, lin, fields, matte, 1.0, np.full(3, 0.2, np.float32), **kw)

    def added(_):
        return kernels.add_upsampled(matte, small)

    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda i: (fused if i % 2 else added)(i), range(40)))
    for i, out in enumerate(outs):
        assert np.array_equal(out, ref_f if i % 2 else ref_a)


def test_prefetch_passes_items_and_errors_in_order():
    assert list(Prefetch(range(50), depth=2)) == list(range(50))

    def broken():
        yield 1
        yield 2
        raise ValueError("bad packet")

    got = []
    with pytest.raises(ValueError, match="bad packet"):
        for x in Prefetch(broken()):
            got.append(x)
    assert got == [1, 2]
    # the initializer runs first, in the thread that produces the items (where fn runs)
    import threading
    where = []
    items = list(Prefetch(range(3), fn=lambda i: (i, threading.get_ident()),
                          initializer=lambda: where.append(threading.get_ident())))
    assert [i for i, _ in items] == [0, 1, 2] and {t for _, t in items} == set(where)
    assert where[0] != threading.get_ident()


def test_background_writer_writes_in_order_and_reraises():
    class Sink:
        def __init__(self, fail_at=None):
            self.items, self.fail_at = [], fail_at

        def write(self, x, alpha=None, time=None):
            if x == self.fail_at:
                raise OSError("disk full")
            self.items.append((x, time))

    sink = Sink()
    with BackgroundWriter(sink, depth=2) as w:
        for i in range(30):
            w.write(i, None, time=i / 30)
    assert sink.items == [(i, i / 30) for i in range(30)]

    sink = Sink(fail_at=5)
    with pytest.raises(OSError, match="disk full"):
        with BackgroundWriter(sink, depth=2) as w:
            for i in range(30):
                w.write(i)
    assert [x for x, _ in sink.items] == [0, 1, 2, 3, 4]


def test_guided_matte_kernel_matches_opencv_path(portrait_rgb, monkeypatch):
    from relight.stages import perception as P

    img = cv2.resize(portrait_rgb, (417, 263), interpolation=cv2.INTER_LINEAR)
    coarse = np.zeros((40, 64), np.float32)
    cv2.circle(coarse, (32, 20), 12, 1.0, -1)
    coarse = cv2.GaussianBlur(coarse, (0, 0), 2)
    fast = P.refine_matte(img, coarse, floor=0.05, ceiling=0.9)
    plain = P.refine_matte(img, coarse)
    monkeypatch.setattr(kernels, "available", lambda: False)
    ref = P.refine_matte(img, coarse, floor=0.05, ceiling=0.9)
    assert fast.shape == ref.shape == (263, 417) and fast.dtype == np.float32
    assert np.abs(fast - ref).max() < 1e-4
    assert 0.05 < float((fast > 0.5).mean()) < 0.6  # a real matte, not all or nothing
    # floor and ceiling: below 0.05 nothing, above 0.9 solid, linear between
    assert np.abs(fast - np.clip((plain - 0.05) / 0.85, 0, 1)).max() < 1e-4


def test_edge_fields_kernels_match_numpy_path(portrait_rgb, monkeypatch):
    """The soft edges' colour fields: the compiled element-wise passes give the numpy path's
    values exactly (the same blurs in between)."""
    from relight.colour import to_linear
    from relight.stages import composite as C

    img = cv2.resize(to_linear(portrait_rgb), (160, 90), interpolation=cv2.INTER_AREA)
    matte = np.zeros((90, 160), np.float32)
    cv2.circle(matte, (80, 45), 25, 1.0, -1)
    matte = cv2.GaussianBlur(matte, (0, 0), 4)
    fast = C.edge_fields(img, matte, 2.5)
    monkeypatch.setattr(kernels, "available", lambda: False)
    ref = C.edge_fields(img, matte, 2.5)
    assert fast.shape == ref.shape == (90, 160, 6) and fast.dtype == np.float32
    assert np.array_equal(fast, ref)
    # a real field: over a red person on a blue wall, the wall's colour and the person's all
    # along the soft edge
    flat = np.where(matte[..., None] > 0.5, np.float32([0.8, 0.1, 0.1]), np.float32([0.1, 0.2, 0.9]))
    fields = C.edge_fields(flat.astype(np.float32), matte, 2.5)
    band = (matte > 0.3) & (matte < 0.7)
    assert band.sum() > 50
    assert np.abs(fields[band][:, :3] - [0.1, 0.2, 0.9]).max() < 1e-3
    assert np.abs(fields[band][:, 3:] - [0.8, 0.1, 0.1]).max() < 1e-3


def test_guided_apply_fills_sure_spans_as_its_pixels_would():
    """guided_apply gives spans whose output is surely 0 or 1 at once: the result is still the
    per-pixel formula (bilinear coefficients applied to the guide, clipped, floor and ceiling)."""
    rng = np.random.default_rng(7)
    H, W, h, w = 90, 160, 18, 32
    rgb8 = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    coef = np.zeros((h, w, 4), np.float32)
    coef[..., 3] = (np.arange(w) >= w // 2)[None, :]  # flat: 0 on the left, 1 on the right
    coef[5:9, 4:28, :3] = rng.normal(0, 2e-3, (4, 24, 3))  # a band where the guide matters
    coef[5:9, 4:28, 3] = 0.5
    coef[12, 3, 3] = 0.06  # b just above the floor, flat: not surely 0
    up = cv2.resize(coef, (W, H), interpolation=cv2.INTER_LINEAR)
    raw = np.clip((rgb8 * up[..., :3]).sum(-1) + up[..., 3], 0, 1)
    for floor, ceiling in ((0.05, 0.9), (0.0, 1.0)):
        ref = np.clip((raw - floor) / (ceiling - floor), 0, 1)
        got = kernels.guided_apply(rgb8, coef, floor, ceiling)
        assert np.abs(got - ref).max() < 1e-5
        assert 0.1 < ((got > 0) & (got < 1)).mean() < 0.5 and (got == 0).mean() > 0.3 and (got == 1).mean() > 0.3


def test_poisson_height_kernel_matches_opencv_path(monkeypatch):
    from relight.stages.geometry import poisson_height

    yy, xx = np.mgrid[:90, :160]
    inside = ((xx - 70) / 50.0) ** 2 + ((yy - 50) / 35.0) ** 2 < 1  # an ellipse touching no border
    inside |= (np.abs(xx - 140) < 8) & (yy > 30)  # and a limb reaching the bottom edge
    fast = poisson_height(inside)
    monkeypatch.setattr(kernels, "available", lambda: False)
    ref = poisson_height(inside)
    assert fast.max() > 100 and np.all(fast[~inside] == 0)
    assert np.abs(fast - ref).max() < 1e-5 * ref.max()


def test_shadow_march_kernel_matches_opencv_path(monkeypatch):
    from relight.stages.render import shadow_map

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:144, :256].astype(np.float32)
    r2 = (xx - 128) ** 2 + (yy - 72) ** 2
    depth = np.sqrt(np.maximum(60.0 ** 2 - r2, 0)).astype(np.float32)
    depth[50:60, 100:110] += 25.0  # a bump that casts a shadow
    depth += rng.random(depth.shape).astype(np.float32)
    inside = r2 < 60.0 ** 2
    for d in ([0.7, 0.3, 0.6], [-0.9, -0.1, 0.3], [0.33, -0.71, 0.4]):
        d = np.asarray(d) / np.linalg.norm(d)
        fast = shadow_map(depth, d, 0.05, 50.0, 1.0, 160, inside)
        with monkeypatch.context() as m:
            m.setattr(kernels, "available", lambda: False)
            ref = shadow_map(depth, d, 0.05, 50.0, 1.0, 160, inside)
        assert 0.05 < float((ref < 0.5).mean()) < 0.5  # real shadows on the sphere
        assert np.abs(fast - ref).mean() < 1e-4 and np.abs(fast - ref).max() < 0.05


def test_in_order_worker_keeps_order_depth_and_errors():
    import threading
    import time

    from relight.threads import InOrder

    names = set()

    def slow_square(x):
        names.add(threading.current_thread().name)
        time.sleep(0.002 * (x % 3))  # uneven work
        return x * x

    got = []
    with InOrder(slow_square, depth=2) as worker:
        for i in range(20):
            done = worker.submit(i, tag=-i)
            assert len(worker._pending) <= 2  # never more than depth behind
            got.extend(done)
        got.extend(worker.drain())
    assert got == [(i * i, -i) for i in range(20)]
    assert names and threading.current_thread().name not in names  # ran in the worker thread

    def broken(x):
        if x == 3:
            raise ValueError("bad frame 3")
        return x

    got = []
    with pytest.raises(ValueError, match="bad frame 3"):
        with InOrder(broken, depth=1) as worker:
            for i in range(10):
                got.extend(r for r, _ in worker.submit(i))
    assert got == [0, 1, 2]


@pytest.mark.parametrize("sigma", [3.0, 20.0, 38.4])
def test_wide_blur_at_reduced_resolution_matches_full_blur(sigma):
    """Background blurs (source-blur, --blur) with a wide sigma are computed at a reduced
    resolution: the result must match the full-resolution Gaussian to a small fraction of the
    image's range, on sharp edges and noise, for colour and single-channel images. (38.4 px is
    --blur 1 on this 960 px wide frame, the widest blur relight makes.)"""
    from relight.stages.composite import gaussian_blur

    rng = np.random.default_rng(5)
    img = rng.random((540, 960, 3), dtype=np.float32)
    img[:, 300:460] += 2.0
    cv2.circle(img, (600, 280), 120, (0.0, 3.0, 0.0), -1)
    for x in (img, np.ascontiguousarray(img[..., 1])):
        ref = cv2.GaussianBlur(x, (0, 0), sigma)
        got = gaussian_blur(x, sigma)
        assert got.shape == ref.shape and got.dtype == np.float32
        assert np.abs(got - ref).max() < 0.004 * float(ref.max() - ref.min()), np.abs(got - ref).max()


def test_frame_views_make_each_result_once_even_none():
    # a model run ahead in the decode thread must not run again when the stage asks for it,
    # also when it found nothing (a second run would feed its tracker the same frame twice)
    from relight.types import FrameViews

    views = FrameViews(np.zeros((8, 8, 3), np.uint8))
    calls = []
    for _ in range(3):
        assert views.derived("pose", lambda: calls.append("pose")) is None
        assert views.derived("faces", lambda: calls.append("faces") or []) == []
    assert calls == ["pose", "faces"]


def test_frame_views_big_reductions_come_from_the_pyramid(portrait_rgb):
    """A 3x-or-more area shrink of an 8-bit copy is made from the smallest 1/2, 1/4, ... copy
    at least 1.5x its size (each the 2x2 average of the one above): close to the direct average,
    the same whichever size is asked for first; the half-size luma is the luma of the half-size
    colour copy, the smaller lumas its averages."""
    from relight.types import FrameViews

    frame = cv2.resize(portrait_rgb, (960, 540), interpolation=cv2.INTER_CUBIC)  # video-like: smooth
    sizes = [(320, 180), (128, 72), (256, 144), (480, 270), (64, 36), (240, 135)]
    first = FrameViews(frame)
    got = {s: first.resized("rgb8", *s) for s in sizes}
    other = FrameViews(frame)
    for s in reversed(sizes):
        assert np.array_equal(other.resized("rgb8", *s), got[s])  # order does not matter
    for s in sizes:
        direct = cv2.resize(frame, s, interpolation=cv2.INTER_AREA).astype(int)
        diff = np.abs(got[s].astype(int) - direct)
        assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 12, (s, diff.mean())  # (~1 and 8 here)
    half_grey = cv2.cvtColor(got[(480, 270)], cv2.COLOR_RGB2GRAY)
    assert np.array_equal(first.resized("grey", 480, 270), half_grey)
    quarter_grey = cv2.resize(half_grey, (240, 135), interpolation=cv2.INTER_AREA)
    assert np.array_equal(first.resized("grey", 240, 135), quarter_grey)
    grey = first.resized("grey", 160, 90)  # 1.5x the quarter-size copy: made from it
    assert np.array_equal(grey, cv2.resize(quarter_grey, (160, 90), interpolation=cv2.INTER_AREA))
    # 2.5x the half-size copy (the quarter is under 1.5x): made from the half
    assert np.array_equal(got[(256, 144)], cv2.resize(got[(480, 270)], (256, 144), interpolation=cv2.INTER_AREA))
    assert np.array_equal(got[(64, 36)], cv2.resize(got[(240, 135)], (64, 36), interpolation=cv2.INTER_AREA))
    # linear copies (float) and other interpolations are made from the full frame, as asked
    assert np.array_equal(first.resized("rgb8", 100, 50, cv2.INTER_LINEAR),
                          cv2.resize(frame, (100, 50), interpolation=cv2.INTER_LINEAR))


def test_static_background_is_encoded_once(portrait_rgb):
    """The render encodes an image background to 8 bits once it comes back unchanged (a static
    HDRI view), and not when it changes every frame (autorotate, a source background)."""
    with Relighter(RelightSettings(hdri="studio"), video=True) as r:
        bg = np.full((4, 5, 3), 0.5, np.float32)
        assert r._encoded_background(bg) is None  # first sight: not worth encoding yet
        enc = r._encoded_background(bg)
        assert enc is not None and enc.shape == (4, 5, 3) and enc.dtype == np.uint8
        assert r._encoded_background(bg) is enc  # made once
        assert r._encoded_background(bg.copy()) is None  # another background
        assert r._encoded_background(np.array([0.1, 0.2, 0.3], np.float32)) is None  # a colour


@pytest.mark.parametrize("shadowed,with_spec", [(True, True), (False, True), (True, False)])
def test_light_kernel_matches_numpy(shadowed, with_spec):
    """kernels.add_light against render._add_light (its numpy form): one light's wrapped,
    shadowed diffuse term on skin and elsewhere, and its two Phong lobes."""
    from relight.stages import render as R

    rng = np.random.default_rng(11)
    h, w = 37, 53
    n = rng.normal(size=(h, w, 3)).astype(np.float32)
    n[..., 2] = np.abs(n[..., 2])
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    refl, _ = R._reflect(n)
    l = np.array([0.3, 0.5, 0.81], np.float32)
    l /= np.linalg.norm(l)
    pw = np.array([1.2, 1.0, 0.7], np.float32)
    vis = rng.random((h, w), dtype=np.float32) if shadowed else None
    skin_vis = np.stack([cv2.GaussianBlur(vis, (0, 0), s) for s in (2.0, 1.0, 0.5)]) if shadowed else None
    skin = rng.random((h, w), dtype=np.float32)
    rough = rng.random((h, w), dtype=np.float32)
    fres = rng.random((h, w), dtype=np.float32) * np.float32(0.1)
    lobes = [(30.0, 1.0 - rough), (6.0, rough)]
    e0 = rng.random((h, w, 3), dtype=np.float32)
    s0 = rng.random((h, w, 3), dtype=np.float32) if with_spec else None
    args = (n, refl, l, pw, 0.15, vis, skin, (5, 30, 8, 40), np.array([0.2, 0.1, 0.0], np.float32), skin_vis,
            lobes, fres)
    e_k, s_k = e0.copy(), None if s0 is None else s0.copy()
    kernels.add_light(e_k, s_k, *args)
    e_n, s_n = e0.copy(), None if s0 is None else s0.copy()
    R._add_light(e_n, s_n, *args)
    assert np.abs(e_k - e_n).max() < 1e-5 and np.abs(e_k - e0).max() > 0.1
    if with_spec:
        assert np.abs(s_k - s_n).max() < 1e-5 and np.abs(s_k - s0).max() > 0.01


def test_add_upsampled_matches_opencv():
    """kernels.add_upsampled (the temporal matte's full-resolution correction) against
    cv2.resize + add + clip, at odd sizes and with values pushed past 0 and 1."""
    rng = np.random.default_rng(13)
    base = rng.random((101, 173), dtype=np.float32)
    small = (rng.random((23, 37), dtype=np.float32) - 0.5) * np.float32(0.8)
    ref = np.clip(base + cv2.resize(small, (173, 101), interpolation=cv2.INTER_LINEAR), 0, 1)
    got = kernels.add_upsampled(base, small)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert np.abs(got - ref).max() < 1e-5
    assert (got == 0).mean() > 0.02 and (got == 1).mean() > 0.02
    # with a floor: a sum below it is 0, the rest as before
    cut = kernels.add_upsampled(base, small, floor=0.1)
    low = ref < 0.1
    assert 0.02 < (low & (ref > 0)).mean() and np.all(cut[low] == 0)
    assert np.abs(cut[~low] - ref[~low]).max() < 1e-5
