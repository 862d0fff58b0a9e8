"""Property-based tests (hypothesis) of the HDRI loader, the matte loader and the CLI's argument
parsing: whatever the input, the outcome is a valid result or a one-line RelightError."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from relight.cli import build_parser, main, settings_from_args
from relight.errors import InputError, RelightWarning
from relight.hdri import MAX_WIDTH, MIN_WIDTH, _AreaReducer, load_hdri
from relight.io.exr import write_exr
from relight.io.radiance import iter_bands
from relight.settings import RANGES
from relight.stages import decode
from relight.types import MediaInfo

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])
TMP = Path(tempfile.mkdtemp(prefix="relight-props-"))
atexit.register(shutil.rmtree, TMP, True)


def _load_quietly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RelightWarning)
        return load_hdri(str(path))


# ============================================================================ HDRI loader
values = st.one_of(st.floats(0, 1e4, width=32), st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 0.0, 65504.0]))


@st.composite
def maps(draw, max_side=40):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    c = draw(st.sampled_from([1, 3, 4]))
    return draw(hnp.arrays(np.float32, (h, w, c), elements=values))


@SETTINGS
@given(img=maps(), half=st.booleans())
def test_exr_hdri_always_loads_to_a_valid_map_or_refuses(img, half):
    path = TMP / "map.exr"
    if img.shape[2] == 1:  # a luminance-only map
        import OpenEXR

        with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                          {"Y": np.ascontiguousarray(img[..., 0], np.float16 if half else np.float32)}) as f:
            f.write(str(path))
    else:
        write_exr(path, img, half=half)
    try:
        px = _load_quietly(path).pixels
    except InputError as exc:  # only a cube-map/mirror-ball look-alike may be refused
        assert "equirectangular" in str(exc) and "\n" not in str(exc)
        return
    h, w = img.shape[:2]
    tw = max(MIN_WIDTH, min(MAX_WIDTH, w - w % 2))
    assert px.shape == (tw // 2, tw, 3) and px.dtype == np.float32
    assert np.isfinite(px).all() and px.min() >= 0


@SETTINGS
@given(img=hnp.arrays(np.float32, st.tuples(st.integers(8, 24), st.just(0), st.just(3)).map(
    lambda s: (s[0], 2 * s[0], 3)), elements=st.floats(0, 1e4, width=32)))
def test_clean_2to1_float_exr_is_loaded_exactly(img):
    path = TMP / "exact.exr"
    write_exr(path, img, half=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean map gives no warning
        px = load_hdri(str(path)).pixels
    if img.shape[1] >= MIN_WIDTH:
        np.testing.assert_array_equal(px, img)


@SETTINGS
@given(h=st.integers(1, 30), w=st.integers(1, 70), value=st.floats(0.001, 1000))
def test_constant_maps_stay_constant_at_any_size(h, w, value):
    """Resampling (area down, bilinear up) never invents light: a constant map stays constant."""
    path = TMP / "const.hdr"
    cv2.imwrite(str(path), np.full((h, w, 3), value, np.float32))
    ref = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[0, 0, 0]  # the value after RGBE rounding
    try:
        px = _load_quietly(path).pixels
    except InputError as exc:
        assert "equirectangular" in str(exc)
        return
    np.testing.assert_allclose(px, ref, rtol=1e-5)


@SETTINGS
@given(img=hnp.arrays(np.float32, st.tuples(st.integers(1, 20), st.integers(1, 90), st.just(3)),
                      elements=st.floats(0, 1e6, width=32)), band=st.integers(1, 9))
def test_radiance_stream_decoder_matches_opencv(img, band):
    path = TMP / "same.hdr"
    cv2.imwrite(str(path), img)
    ref = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1]
    out = np.full(ref.shape, -1.0, np.float32)
    for y0, b in iter_bands(path, band_rows=band):
        out[y0:y0 + len(b)] = b
    np.testing.assert_array_equal(out, ref)


@SETTINGS
@given(h=st.integers(1, 60), w=st.integers(1, 60), oh=st.integers(1, 60), ow=st.integers(1, 60),
       band=st.integers(1, 17), seed=st.integers(0, 2 ** 16))
def test_streaming_area_reduction_matches_opencv(h, w, oh, ow, band, seed):
    """Band-by-band area averaging (in any band order) equals OpenCV's INTER_AREA."""
    assume(oh <= h and ow <= w)
    img = np.random.default_rng(seed).uniform(0, 10, (h, w, 3)).astype(np.float32)
    red = _AreaReducer(w, h, 3, ow, oh)
    starts = list(range(0, h, band))
    for y0 in starts[::-1]:  # bottom-up, as a +Y Radiance file is read
        red.add(y0, img[y0:y0 + band])
    ref = cv2.resize(img, (ow, oh), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(red.out, ref, rtol=1e-4, atol=1e-4)


@SETTINGS
@given(data=st.binary(max_size=600), cut=st.integers(0, 4000), header=st.sampled_from([
    b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 8 +X 16\n", b"#?RGBE\n\n+Y 3 -X 9\n",
    b"#?RADIANCE\nFORMAT=32-bit_rle_xyze\n\n-Y 2 +X 40\n", b"#?RADIANCE\n\n-Y 1 +X 1\n"]))
def test_radiance_bytes_load_or_refuse_in_one_line(data, cut, header):
    good = TMP / "seed.hdr"
    cv2.imwrite(str(good), np.random.default_rng(cut).uniform(0, 4, (8, 16, 3)).astype(np.float32))
    raw = good.read_bytes()
    path = TMP / "bytes.hdr"
    path.write_bytes(header + data + raw[len(raw) - (cut % len(raw)):])
    try:
        px = _load_quietly(path).pixels
    except InputError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert np.isfinite(px).all() and px.min() >= 0 and px.shape[1] == 2 * px.shape[0]


# ============================================================================ matte loader
def _info(w, h, n=5):
    return MediaInfo(path="in.mp4", width=w, height=h, is_video=True, fps=25.0, frame_count=n)


@SETTINGS
@given(grey=hnp.arrays(st.sampled_from([np.uint8, np.uint16]), st.tuples(st.integers(1, 40), st.integers(1, 40)),
                       elements=st.integers(0, 255)),
       channels=st.sampled_from([1, 3, 4]), ext=st.sampled_from([".png", ".tif"]))
def test_grey_mattes_load_in_unit_range(grey, channels, ext):
    img = grey if channels == 1 else np.dstack([grey] * channels)
    if channels == 4:
        img[..., 3] = img.dtype.type(np.iinfo(img.dtype).max)  # opaque: the grey level is the matte
    path = TMP / f"matte{ext}"
    assert cv2.imwrite(str(path), img)
    h, w = grey.shape
    with decode.open_matte(str(path), _info(w, h)) as m:
        matte = m.get(0)
    assert matte.shape == (h, w) and matte.dtype == np.float32
    assert matte.min() >= 0.0 and matte.max() <= 1.0
    scale = 255.0 if grey.dtype == np.uint8 else 65535.0
    np.testing.assert_allclose(matte, grey / scale, atol=1.0 / 255 + 1e-6)


@SETTINGS
@given(h=st.integers(4, 40), w=st.integers(4, 40), seed=st.integers(0, 1000))
def test_colour_images_are_refused_as_mattes(h, w, seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[..., 0] = 255 - img[..., 2] // 4  # strongly coloured everywhere
    img[..., 1] = 0
    path = TMP / "colour.png"
    cv2.imwrite(str(path), img)
    with pytest.raises(InputError, match="not greyscale"):
        decode.open_matte(str(path), _info(w, h))


@SETTINGS
@given(h=st.integers(2, 30), w=st.integers(2, 30), dh=st.integers(-3, 3), dw=st.integers(-3, 3))
def test_matte_size_must_match(h, w, dh, dw):
    assume((dh, dw) != (0, 0) and h + dh > 0 and w + dw > 0)
    path = TMP / "sized.png"
    cv2.imwrite(str(path), np.zeros((h + dh, w + dw), np.uint8))
    with pytest.raises(InputError, match=f"{w + dw}x{h + dh} but the input is {w}x{h}"):
        decode.open_matte(str(path), _info(w, h))


@SETTINGS
@given(data=st.binary(max_size=300), ext=st.sampled_from([".png", ".jpg", ".exr", ".mkv"]))
def test_garbage_mattes_are_refused_in_one_line(data, ext):
    path = TMP / f"garbage{ext}"
    path.write_bytes(data)
    try:
        with decode.open_matte(str(path), _info(16, 8)):
            pass
    except InputError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
    else:  # random bytes that happen to be a valid matte of the right size: fine
        pass


# ============================================================================ CLI parsing
NUMERIC = sorted(RANGES)


def _flag(name):
    return "--" + name.replace("_", "-")


@SETTINGS
@given(name=st.sampled_from(NUMERIC), value=st.floats(allow_nan=True, allow_infinity=True))
def test_numeric_options_are_range_checked(name, value, capsys):
    lo, hi, _ = RANGES[name]
    argv = ["run", "in.png", "-o", "out.png", f"{_flag(name)}={value!r}"]  # '=': "-1e-9" is not an option
    parser = build_parser()
    if lo <= value <= hi:
        args = parser.parse_args(argv)
        assert getattr(args, name) == value
        settings_from_args(args).validated()
    else:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and _flag(name) in err[0]


@SETTINGS
@given(name=st.sampled_from(NUMERIC), text=st.text(max_size=12))
def test_numeric_options_refuse_text(name, text, capsys):
    try:
        float(text)
        assume(False)
    except ValueError:
        pass
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["run", "x.png", "-o", "y.png", f"{_flag(name)}={text}"])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


TOKENS = st.sampled_from([
    "run", "presets", "--hdri", "studio", "sunset", "no-such-preset", "--pan", "10", "720", "nan", "--light-from",
    "left", "sideways", "--background", "source", "#00ff00", "#zzzzzz", "transparent", "--crf", "18", "99",
    "--fg-gain", "2", "-1", "--quiet", "--json", "--overwrite", "--matte", "-o", "--output", "--codec", "nope",
    "--strength", "0.5", "--vfov", "5", "x.png", "y.mp4", "", "--", "-x", "--blur", "1e999",
])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(TOKENS, max_size=10))
def test_any_command_line_gives_an_exit_code_not_a_traceback(argv, tmp_path, capsys, monkeypatch):
    """Random command lines (inputs that do not exist) end in 0 (help, presets) or a usage/input
    error, with at most one line of stderr and never an internal error."""
    monkeypatch.chdir(tmp_path)  # relative outputs land here, and no input exists
    code = main(argv)
    out, err = capsys.readouterr()
    assert code in (0, 2, 3, 4), (argv, code, err)
    lines = [line for line in err.splitlines() if line.strip()]
    if code:
        assert len(lines) == 1 and "Traceback" not in err, (argv, err)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temporary files
