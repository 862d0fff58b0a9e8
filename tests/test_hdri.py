"""HDRI loading (relight.hdri), the equirect/SH conventions (relight.envmap) and the demo clip."""
from __future__ import annotations

import dataclasses
import math
import warnings

import cv2
import numpy as np
import pytest

from relight import envmap
from relight.errors import InputError, RelightWarning
from relight.hdri import HDRI, MAX_WIDTH, PRESETS_DIR, list_presets, load_hdri
from relight.io.exr import write_exr


# ============================================================================ helpers
def _convention_dir(u, v, pan=0.0):
    """The camera-frame direction of map point (u, v) at pan ``pan``, straight from the
    convention (envmap's docstring), written out independently of the implementation."""
    t = 2 * np.pi * (np.asarray(u, float) - 0.5 - pan / 360.0)
    e = np.pi * (0.5 - np.asarray(v, float))
    return np.stack([np.sin(t) * np.cos(e), np.sin(e), -np.cos(t) * np.cos(e)], axis=-1)


def _turn(d, pan):
    """Camera-frame direction at pan ``pan`` -> the same direction in the pan-0 frame (the camera
    turned ``pan`` degrees to the right about +y)."""
    p = math.radians(pan)
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    return np.stack([x * math.cos(p) - z * math.sin(p), y, x * math.sin(p) + z * math.cos(p)], axis=-1)


def _grid(w, h):
    u = (np.arange(w) + 0.5) / w
    v = (np.arange(h) + 0.5) / h
    return np.meshgrid(u, v)


def _direction_map(w=1024):
    """Each pixel holds its own pan-0 unit direction, shifted to be positive: d + 1."""
    u, v = _grid(w, w // 2)
    return (_convention_dir(u, v) + 1.0).astype(np.float32)


def _brute_force_irradiance(hdri, normals, kernel=None):
    """E(n) = sum over pixels of L(w) k(n.w) dOmega, at pan 0; k = max(0, x) by default."""
    h, w = hdri.shape[:2]
    u, v = _grid(w, h)
    dirs = _convention_dir(u, v).reshape(-1, 3)
    e = np.pi * (0.5 - v)
    domega = ((2 * np.pi / w) * (np.pi / h) * np.cos(e)).reshape(-1)
    L = hdri.reshape(-1, hdri.shape[2]).astype(np.float64) * domega[:, None]
    cos = np.asarray(normals, float) @ dirs.T  # (N, pixels)
    k = np.maximum(cos, 0.0) if kernel is None else kernel(cos)
    return k @ L  # (N, C)


def _sh_irradiance(hdri, normals, pan=0.0):
    coeffs = envmap.irradiance_sh(envmap.project_sh(hdri, pan_deg=pan))
    return envmap.eval_sh(coeffs, np.asarray(normals, np.float32)).astype(np.float64)


def _test_normals():
    rng = np.random.default_rng(3)
    n = np.concatenate([np.eye(3), -np.eye(3), rng.normal(size=(20, 3))])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def _sun_map(w=512, u0=0.75, v0=0.35, radius_deg=3.0, sun=2000.0, sky=0.5):
    u, v = _grid(w, w // 2)
    d = _convention_dir(u, v)
    s = _convention_dir(u0, v0)
    img = np.full(d.shape, sky, np.float32)
    img[d @ s > math.cos(math.radians(radius_deg))] += sun
    return img, s


def _write_exr_channels(path, channels):
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, channels) as f:
        f.write(str(path))


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _rgb_map(w=64, h=32, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.uniform(0.01, 1.0, size=(h, w, 3)).astype(np.float32)
    img[..., 0] *= 20.0  # red much brighter than blue: catches an RGB/BGR swap
    img[..., 2] *= 0.1
    return img


# ============================================================================ loading files
def test_hdr_round_trip_rgb_order(tmp_path, no_warnings):
    img = _rgb_map()
    path = tmp_path / "map.hdr"
    assert cv2.imwrite(str(path), img[..., ::-1].copy())  # cv2 writes BGR
    h = load_hdri(str(path))
    assert isinstance(h, HDRI)
    assert h.pixels.dtype == np.float32 and h.pixels.shape == (32, 64, 3)
    assert h.pixels.flags.c_contiguous
    assert h.name == "map" and h.path == str(path)
    # RGBE: 8-bit mantissa shared by the three channels -> error within 1% of the largest channel
    tol = 0.01 * img.max(axis=2, keepdims=True)
    assert np.all(np.abs(h.pixels - img) <= tol)


@pytest.mark.parametrize("half", [True, False])
@pytest.mark.parametrize("alpha", [False, True])
def test_exr_round_trip(tmp_path, half, alpha, no_warnings):
    img = _rgb_map()
    data = np.concatenate([img, np.full(img.shape[:2] + (1,), 0.25, np.float32)], axis=2) if alpha else img
    path = tmp_path / "map.exr"
    write_exr(path, data, half=half)
    h = load_hdri(str(path))
    assert h.pixels.shape == (32, 64, 3) and h.pixels.dtype == np.float32
    expected = img.astype(np.float16).astype(np.float32) if half else img
    np.testing.assert_array_equal(h.pixels, expected)


def test_exr_single_channel_is_grey(tmp_path, no_warnings):
    y = np.linspace(0.0, 3.0, 32 * 64, dtype=np.float32).reshape(32, 64)
    path = tmp_path / "lum.exr"
    _write_exr_channels(path, {"Y": y})
    h = load_hdri(str(path))
    assert h.pixels.shape == (32, 64, 3)
    for c in range(3):
        np.testing.assert_array_equal(h.pixels[..., c], y)


def test_extension_is_case_insensitive(tmp_path, no_warnings):
    path = tmp_path / "MAP.EXR"
    write_exr(path, _rgb_map(), half=False)
    assert load_hdri(str(path)).pixels.shape == (32, 64, 3)


def test_hdri_is_frozen(tmp_path):
    path = tmp_path / "m.exr"
    write_exr(path, _rgb_map(), half=False)
    h = load_hdri(str(path))
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.name = "other"


# ============================================================================ fixing up
def test_not_2to1_warns_and_resamples(tmp_path):
    rows = np.linspace(1.0, 5.0, 80, dtype=np.float32)  # smooth vertical gradient
    img = np.repeat(rows[:, None, None], 100, axis=1).repeat(3, axis=2)
    img[..., 1] *= 0.5
    path = tmp_path / "square.exr"
    write_exr(path, img, half=False)
    with pytest.warns(RelightWarning, match=r"100x80, not 2:1.*100x50") as rec:
        h = load_hdri(str(path))
    assert str(path) in str(rec[0].message)
    assert h.pixels.shape == (50, 100, 3)
    # the vertical profile is kept: top ~1, bottom ~5, monotonic; columns identical
    col = h.pixels[:, 0, 0]
    assert np.all(np.diff(col) > 0)
    assert abs(col[0] - 1.0) < 0.1 and abs(col[-1] - 5.0) < 0.1
    np.testing.assert_allclose(h.pixels, np.broadcast_to(h.pixels[:, :1], h.pixels.shape), rtol=1e-6)
    np.testing.assert_allclose(h.pixels[..., 1], 0.5 * h.pixels[..., 0], rtol=1e-6)


def test_too_wide_map_warns_and_resamples(tmp_path):
    img = np.ones((20, 100, 3), np.float32) * np.array([1.0, 2.0, 3.0], np.float32)
    path = tmp_path / "wide.exr"
    write_exr(path, img, half=False)
    with pytest.warns(RelightWarning, match="not 2:1"):
        h = load_hdri(str(path))
    assert h.pixels.shape == (50, 100, 3)
    np.testing.assert_allclose(h.pixels, np.broadcast_to([1.0, 2.0, 3.0], h.pixels.shape), rtol=1e-6)


def test_tiny_map_is_resampled(tmp_path):
    path = tmp_path / "one.hdr"
    cv2.imwrite(str(path), np.full((1, 1, 3), [0.5, 1.0, 2.0], np.float32))  # BGR
    with pytest.warns(RelightWarning, match="1x1"):
        h = load_hdri(str(path))
    assert h.pixels.shape[1] == 2 * h.pixels.shape[0] >= 8
    np.testing.assert_allclose(h.pixels, np.broadcast_to([2.0, 1.0, 0.5], h.pixels.shape), rtol=0.01)


def test_large_map_is_downsampled_to_4096(tmp_path, no_warnings):
    w = 5000
    u, v = _grid(w, w // 2)
    img = np.stack([1.0 + u, 1.0 + v, np.full_like(u, 0.5)], axis=-1).astype(np.float32)
    path = tmp_path / "big.hdr"
    cv2.imwrite(str(path), img[..., ::-1].copy())
    del img, u, v
    h = load_hdri(str(path))
    assert h.pixels.shape == (MAX_WIDTH // 2, MAX_WIDTH, 3)
    # still the same picture: red follows u, green follows v
    uu, vv = _grid(MAX_WIDTH, MAX_WIDTH // 2)
    np.testing.assert_allclose(h.pixels[..., 0], 1.0 + uu, atol=0.02)
    np.testing.assert_allclose(h.pixels[..., 1], 1.0 + vv, atol=0.02)


def test_nan_inf_negative_warn_and_clamp(tmp_path):
    img = np.ones((16, 32, 3), np.float32)
    img[0, 0, 0] = np.nan
    img[1, 1, 1] = np.nan
    img[2, 2, 2] = np.inf
    img[3, 3, 0] = -2.0
    img[4, 4, 1] = -np.inf
    img[5, 5, :] = 7.0  # the largest finite value
    path = tmp_path / "bad.exr"
    write_exr(path, img, half=False)
    with pytest.warns(RelightWarning) as rec:
        h = load_hdri(str(path))
    msg = " ".join(str(r.message) for r in rec)
    assert "2 NaN" in msg and "1 +Inf" in msg and "2 negative" in msg and str(path) in msg
    p = h.pixels
    assert np.isfinite(p).all() and p.min() >= 0.0
    assert p[0, 0, 0] == 0.0 and p[1, 1, 1] == 0.0
    assert p[2, 2, 2] == 7.0
    assert p[3, 3, 0] == 0.0 and p[4, 4, 1] == 0.0
    assert p[6, 6, 0] == 1.0  # untouched elsewhere


def test_all_infinite_map_clamps_to_half_max(tmp_path):
    img = np.full((8, 16, 3), np.inf, np.float32)
    path = tmp_path / "inf.exr"
    write_exr(path, img, half=True)  # half: inf stays inf
    with pytest.warns(RelightWarning, match=r"\+Inf"):
        h = load_hdri(str(path))
    np.testing.assert_array_equal(h.pixels, 65504.0)


def test_nan_in_alpha_is_ignored(tmp_path, no_warnings):
    img = np.ones((8, 16, 4), np.float32)
    img[..., 3] = np.nan
    path = tmp_path / "alpha.exr"
    write_exr(path, img, half=False)
    np.testing.assert_array_equal(load_hdri(str(path)).pixels, 1.0)


# ============================================================================ errors
def _assert_input_error(spec, *fragments):
    with pytest.raises(InputError) as exc:
        load_hdri(str(spec))
    text = str(exc.value)
    assert "\n" not in text
    assert exc.value.exit_code == 3
    for f in fragments:
        assert f in text, (f, text)
    return exc.value


def test_missing_file(tmp_path):
    path = tmp_path / "nope.hdr"
    err = _assert_input_error(path, str(path), "not found")
    assert err.path == str(path)


def test_unknown_name_lists_presets():
    names = [n for n, _, _ in list_presets()]
    _assert_input_error("no-such-preset", "no-such-preset", "preset", *names)


def test_empty_spec():
    _assert_input_error("", "preset")


def test_directory_is_refused(tmp_path):
    d = tmp_path / "maps.hdr"
    d.mkdir()
    _assert_input_error(d, str(d), "directory")


@pytest.mark.parametrize("ext", [".png", ".jpg", ".JPEG"])
def test_ldr_image_is_refused(tmp_path, ext):
    path = tmp_path / f"photo{ext}"
    cv2.imwrite(str(path), np.full((32, 64, 3), 128, np.uint8))
    err = _assert_input_error(path, str(path), "not HDR", ".hdr", ".exr")
    assert ("PNG" if ext == ".png" else "JPEG") in str(err)


@pytest.mark.parametrize("ext", [".hdr", ".exr"])
def test_png_renamed_as_hdr_is_refused(tmp_path, ext):
    path = tmp_path / f"photo{ext}"
    ok, buf = cv2.imencode(".png", np.full((32, 64, 3), 128, np.uint8))
    path.write_bytes(buf.tobytes())
    _assert_input_error(path, str(path), "PNG", "not an HDR")


def test_unknown_extension(tmp_path):
    path = tmp_path / "map.txt"
    path.write_text("hello")
    _assert_input_error(path, str(path), ".hdr", ".exr", "PNG/JPEG is not HDR")


@pytest.mark.parametrize("ext", [".hdr", ".exr"])
def test_garbage_is_refused(tmp_path, ext):
    path = tmp_path / f"garbage{ext}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _assert_input_error(path, str(path))


@pytest.mark.parametrize("ext", [".hdr", ".exr"])
def test_empty_file_is_refused(tmp_path, ext):
    path = tmp_path / f"empty{ext}"
    path.write_bytes(b"")
    _assert_input_error(path, str(path), "empty")


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_hdr(tmp_path, keep):
    good = tmp_path / "good.hdr"
    cv2.imwrite(str(good), np.random.default_rng(1).uniform(0, 4, (64, 128, 3)).astype(np.float32))
    data = good.read_bytes()
    path = tmp_path / "cut.hdr"
    path.write_bytes(data[: int(len(data) * keep)])
    _assert_input_error(path, str(path), "truncated")


def test_header_only_hdr(tmp_path):
    path = tmp_path / "header.hdr"
    path.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 10 +X 20\n")
    _assert_input_error(path, str(path))


@pytest.mark.parametrize("keep", [0.3, 0.8])
def test_truncated_exr(tmp_path, keep):
    good = tmp_path / "good.exr"
    write_exr(good, np.random.default_rng(1).uniform(0, 4, (64, 128, 3)).astype(np.float32), half=False)
    data = good.read_bytes()
    path = tmp_path / "cut.exr"
    path.write_bytes(data[: int(len(data) * keep)])
    _assert_input_error(path, str(path))


def test_error_does_not_print_opencv_noise(tmp_path, capfd):
    path = tmp_path / "bad.hdr"
    path.write_bytes(b"#?RADIANCE\nnonsense")
    with pytest.raises(InputError):
        load_hdri(str(path))
    assert "RGBE" not in capfd.readouterr().err


# ============================================================================ presets
def test_presets_load_and_are_sane(no_warnings):
    presets = list_presets()
    assert 5 <= len(presets) <= 8
    names = [p[0] for p in presets]
    assert len(set(names)) == len(names)
    for name, description, credit in presets:
        assert name == name.lower() and description and "CC0" in credit
        h = load_hdri(name)
        assert h.name == name
        p = h.pixels
        assert p.dtype == np.float32 and p.shape == (256, 512, 3)
        assert np.isfinite(p).all() and p.min() >= 0.0
        lum = p @ np.array([0.2126, 0.7152, 0.0722], np.float32)
        assert lum.mean() > 0.01 and lum.max() > 5 * lum.mean()  # has actual light sources
    total = sum(f.stat().st_size for f in PRESETS_DIR.glob("*.exr"))
    assert total < 3.5e6
    assert (PRESETS_DIR / "CREDITS.md").is_file()
    assert load_hdri("Studio").name == "studio"  # names are case-insensitive


def test_default_preset_exists():
    from relight.settings import default_of

    assert default_of("hdri") in [p[0] for p in list_presets()]


# ============================================================================ envmap conventions
@pytest.mark.parametrize("pan", [0.0, 90.0, 180.0, -90.0, 37.0])
def test_reproject_looks_where_the_convention_says(pan):
    hdri = _direction_map()
    w, h, vfov = 64, 36, 60.0
    view = envmap.reproject(hdri, w, h, vfov, pan) - 1.0  # the pan-0 direction seen at each pixel
    tan_h = math.tan(math.radians(vfov) / 2)
    rays = {  # camera-frame rays through the centre, the middle of the left/right edge and the top
        "centre": (0.0, 0.0, -1.0),
        "left": (-(1 - 1 / w) * tan_h * w / h, 0.0, -1.0),
        "right": ((1 - 1 / w) * tan_h * w / h, 0.0, -1.0),
        "top": (0.0, (1 - 1 / h) * tan_h, -1.0),
    }
    # pixels at those rays (even sizes: average the two middle pixels)
    px = {
        "centre": view[h // 2 - 1: h // 2 + 1, w // 2 - 1: w // 2 + 1].mean(axis=(0, 1)),
        "left": view[h // 2 - 1: h // 2 + 1, 0].mean(axis=0),
        "right": view[h // 2 - 1: h // 2 + 1, -1].mean(axis=0),
        "top": view[0, w // 2 - 1: w // 2 + 1].mean(axis=0),
    }
    for key, ray in rays.items():
        d = np.array(ray) / np.linalg.norm(ray)
        expected = _turn(d, pan)
        got = px[key] / np.linalg.norm(px[key])
        assert np.degrees(np.arccos(np.clip(got @ expected, -1, 1))) < 2.5, (key, got, expected)
    if pan == 0:
        c = px["centre"]
        assert c[2] < -0.99  # straight ahead is -z
        assert px["right"][0] > 0.5 and px["left"][0] < -0.5 and px["top"][1] > 0.4


@pytest.mark.parametrize("pan,column", [(0, 2), (90, 3), (180, 0), (-90, 1), (270, 1)])
def test_reproject_colour_patches(pan, column):
    """Four vertical bands centred at u = 0, .25, .5, .75 coloured 0..3: at pan 0 the camera sees
    u = .5, turning right by 90 degrees shows u = .75, by 180 u = 0, by -90 u = .25."""
    w = 256
    u, v = _grid(w, w // 2)
    band = np.round(u * 4) % 4  # band k is centred at u = k / 4
    colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], np.float32)
    hdri = colours[band.astype(int)]
    view = envmap.reproject(hdri, 32, 18, 40.0, pan)
    np.testing.assert_allclose(view[9, 16], colours[column], atol=1e-5)


def test_uv_direction_round_trip():
    rng = np.random.default_rng(0)
    u, v = rng.uniform(0, 1, 100), rng.uniform(0.02, 0.98, 100)
    for pan in (0.0, 45.0, -120.0):
        d = envmap.uv_to_direction(u, v, pan)
        np.testing.assert_allclose(d, _convention_dir(u, v, pan), atol=1e-12)
        u2, v2 = envmap.direction_to_uv(d, pan)
        np.testing.assert_allclose(np.minimum(abs(u2 - u), 1 - abs(u2 - u)), 0, atol=1e-9)
        np.testing.assert_allclose(v2, v, atol=1e-9)


def test_solid_angles_sum_to_4pi():
    assert abs(envmap.solid_angles(512, 256).sum() * 512 - 4 * np.pi) < 1e-3


def test_sh_irradiance_constant_map():
    hdri = np.full((128, 256, 3), [0.5, 1.0, 2.0], np.float32)
    normals = _test_normals()
    e = _sh_irradiance(hdri, normals)
    np.testing.assert_allclose(e, np.pi * np.broadcast_to([0.5, 1.0, 2.0], e.shape), rtol=1e-3)


def test_sh_irradiance_smooth_map():
    u, v = _grid(512, 256)
    d = _convention_dir(u, v)
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    hdri = np.stack(
        [
            2.0 + 0.6 * x + 0.3 * y - 0.4 * z + 0.3 * x * y,
            1.5 - 0.2 * x + 0.5 * y + 0.2 * (3 * z * z - 1) / 2,
            1.0 + 0.3 * z + 0.2 * x * z - 0.2 * (x * x - y * y),
        ],
        axis=-1,
    ).astype(np.float32)
    assert hdri.min() > 0
    normals = _test_normals()
    ref = _brute_force_irradiance(hdri, normals)
    got = _sh_irradiance(hdri, normals)
    assert np.max(np.abs(got - ref) / ref) < 0.01


def test_sh_irradiance_with_sun_is_within_order2_truncation():
    hdri, _ = _sun_map()
    normals = _test_normals()
    ref = _brute_force_irradiance(hdri, normals)
    got = _sh_irradiance(hdri, normals)
    # order-2 SH of the clamped cosine errs by at most ~9.4% of the peak for a point light
    assert np.max(np.abs(got - ref)) < 0.10 * ref.max()
    # and it is exactly the convolution with the order-2 truncated clamped cosine
    trunc = lambda c: 0.25 + 0.5 * c + (5.0 / 16.0) * (3 * c * c - 1) / 2  # noqa: E731
    ref2 = _brute_force_irradiance(hdri, normals, kernel=trunc)
    np.testing.assert_allclose(got, ref2, rtol=5e-3, atol=5e-3 * ref2.max())


def test_sh_pan_rotates_irradiance():
    hdri, sun = _sun_map(u0=0.75)  # at pan 0 the sun is on camera right (+x), a bit above
    assert sun[0] > 0.85
    normals = _test_normals()
    for pan in (90.0, -90.0, 180.0, 30.0):
        e_pan = _sh_irradiance(hdri, normals, pan)
        e_0 = _sh_irradiance(hdri, _turn(normals, pan))
        np.testing.assert_allclose(e_pan, e_0, rtol=2e-3, atol=2e-3 * e_0.max())
    front, back, right = np.array([[0, 0, 1.0], [0, 0, -1.0], [1.0, 0, 0]])
    e0 = _sh_irradiance(hdri, np.stack([front, back, right]))[:, 0]
    assert e0[2] > 3 * max(e0[0], e0[1])  # pan 0: lit from the right
    e90 = _sh_irradiance(hdri, np.stack([front, back, right]), 90.0)[:, 0]
    assert e90[1] > 3 * max(e90[0], e90[2])  # turned right by 90: the sun is ahead, lighting -z


@pytest.mark.parametrize("u0", [0.1, 0.37, 0.62, 0.9])
@pytest.mark.parametrize("side,expected", [("front", (0, 0, 1)), ("right", (1, 0, 0)), ("left", (-1, 0, 0)), ("back", (0, 0, -1))])
def test_pan_for_light_from(u0, side, expected):
    hdri, _ = _sun_map(w=512, u0=u0, v0=0.4, radius_deg=4.0, sun=500.0, sky=0.2)
    pan = envmap.pan_for_light_from(hdri, side)
    assert -180.0 < pan <= 180.0
    sun = _convention_dir(u0, 0.4, pan)  # where the sun is in the camera frame at that pan
    horiz = np.array([sun[0], 0.0, sun[2]])
    horiz /= np.linalg.norm(horiz)
    angle = np.degrees(np.arccos(np.clip(horiz @ np.array(expected, float), -1, 1)))
    assert angle < 4.0, (side, pan, sun)


def test_brightest_direction_across_the_seam():
    """A sun straddling u = 0 / 1 (behind the camera) is found (the blur wraps around)."""
    hdri, sun = _sun_map(w=512, u0=0.0, v0=0.45, radius_deg=4.0, sun=500.0, sky=0.2)
    d = envmap.brightest_direction(hdri)
    assert d @ sun > math.cos(math.radians(4.0))


# ============================================================================ demo clip
def test_make_demo_clip(tmp_path):
    import av

    from relight.demo import make_demo_clip

    path = tmp_path / "demo.mp4"
    assert make_demo_clip(path, seconds=1.0, fps=30, width=320, height=180) == path
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        assert vs.codec_context.name == "h264"
        assert vs.average_rate == 30
        assert (vs.width, vs.height) == (320, 180)
        assert len(c.streams.audio) == 1
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac" and a.channels == 2
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    assert len(frames) == 30
    assert all(f.shape == (180, 320, 3) for f in frames)
    # the camera moves (slowly), and there is no black border
    diffs = [np.abs(frames[i + 1].astype(int) - frames[i]).mean() for i in range(len(frames) - 1)]
    assert 0.0 < np.mean(diffs) < 10.0
    assert all(f[:, :3].mean() > 20 and f[:, -3:].mean() > 20 and f[:3].mean() > 20 for f in frames)
    # about a second of quiet, non-silent audio
    assert samples.size >= 2 * 48000 * 0.9
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    assert 0.005 < rms < 0.2
