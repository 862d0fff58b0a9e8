"""Decode / encode stages: media round trips, metadata, alpha, atomic output and error paths.

All media is generated here with PyAV / numpy / OpenCV into tmp_path.
"""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from relight.errors import InputError, OutputError, UsageError
from relight.io.exr import read_exr, write_exr
from relight.stages import decode, encode
from relight.types import MediaInfo

# NB: no av.logging.set_level() here: PyAV's Python log callback can deadlock with
# frame-threaded decoders (a decoder thread logs while the main thread holds the GIL).


# ----------------------------------------------------------------------------------------------
# media factories


def frame_image(i: int, w: int, h: int) -> np.ndarray:
    """Frame i: grey level 40 + 6 i, with a white block in the top-left quarter (orientation)."""
    img = np.full((h, w, 3), 40 + 6 * i, np.uint8)
    img[: h // 3, : w // 3] = 255
    return img


def make_video(path, *, w=64, h=48, n=12, fps=25, codec=None, pix_fmt="yuv420p", times=None,
               audio=None, rotation=None, options=None):
    """Write a test video. ``times`` (seconds) makes it VFR; ``audio`` = (codec, seconds)."""
    path = str(path)
    ext = os.path.splitext(path)[1]
    codec = codec or ("libvpx-vp9" if ext == ".webm" else "libx264")
    out = av.open(path, "w")
    v = out.add_stream(codec, rate=fps, options=options or {})
    v.width, v.height, v.pix_fmt = w, h, pix_fmt
    tb = Fraction(1, 90000)
    v.codec_context.time_base = tb
    if rotation is not None:
        v.set_display_rotation(rotation)
    a = None
    if audio is not None:
        acodec, seconds = audio
        a = out.add_stream(acodec, rate=48000)
        a.layout = "mono"
    for i in range(n):
        f = av.VideoFrame.from_ndarray(frame_image(i, w, h), format="rgb24").reformat(format=pix_fmt)
        f.pts = round((times[i] if times is not None else i / fps) / tb)
        f.time_base = tb
        out.mux(v.encode(f))
    out.mux(v.encode())
    if a is not None:
        sig = sine(seconds)
        fmt = a.codec_context.format.name
        for s in range(0, len(sig), 1024):
            block = sig[s:s + 1024][None, :]
            if fmt.startswith("s16"):
                block = (block * 32767).astype(np.int16)
            fr = av.AudioFrame.from_ndarray(block, format=fmt, layout="mono")
            fr.sample_rate, fr.pts = 48000, s
            out.mux(a.encode(fr))
        out.mux(a.encode())
    out.close()
    return path


def sine(seconds: float, rate: int = 48000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def decode_frames(path):
    with decode.open_input(path) as src:
        frames = list(src)
        return src.info, frames


def decode_audio(path):
    """(mono float samples, sample rate) of the first audio stream."""
    with av.open(str(path)) as c:
        rate = c.streams.audio[0].codec_context.sample_rate
        chunks = [f.to_ndarray().astype(np.float32).reshape(f.samples, -1).mean(axis=1)
                  if f.format.is_packed else f.to_ndarray().astype(np.float32).mean(axis=0)
                  for f in c.decode(audio=0)]
    x = np.concatenate(chunks)
    if np.abs(x).max() > 2:  # integer samples
        x = x / 32768.0
    return x, rate


def transcode(src, out, *, alpha=False, overwrite=False, codec=None, audio=True, alpha_fn=None):
    """Run input -> output through the decode and encode stages (no processing)."""
    info = decode.probe(src)
    spec = encode.plan_output(out, [src], info, alpha=alpha, overwrite=overwrite)
    with decode.open_input(src) as source, encode.open_output(
            spec, source.info, codec=codec, audio_from=src if audio else None) as sink:
        for f in source:
            a = alpha_fn(f) if alpha_fn else None
            sink.write(f.rgb, a, time=f.time)
    return spec


def gradient_alpha(frame):
    h, w = frame.rgb.shape[:2]
    return np.repeat(np.linspace(0, 1, w, dtype=np.float32)[None, :], h, axis=0)


def assert_no_temp(directory):
    left = [n for n in os.listdir(directory) if "relight-tmp" in n or "relight-write-test" in n]
    assert left == [], left


# ----------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".mov", ".webm"])
def test_video_round_trip(tmp_path, ext):
    src = make_video(tmp_path / f"in{ext}", n=15, fps=25)
    out = str(tmp_path / f"out{ext}")
    transcode(src, out)
    info_in, frames_in = decode_frames(src)
    info, frames = decode_frames(out)
    assert (info.width, info.height) == (64, 48)
    assert len(frames) == len(frames_in) == 15
    assert info.fps == pytest.approx(25, abs=0.01)
    assert info.duration == pytest.approx(info_in.duration, abs=1 / 25)
    assert info.duration == pytest.approx(0.6, abs=1 / 25)
    for a, b in zip(frames_in, frames):
        assert a.time == pytest.approx(b.time, abs=2e-3)
        assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean() < 4
    assert_no_temp(tmp_path)


def test_input_frames_and_info(tmp_path):
    src = make_video(tmp_path / "in.mp4", w=80, h=60, n=10, fps=30, audio=("aac", 10 / 30))
    info, frames = decode_frames(src)
    assert info.is_video and info.has_audio and not info.linear
    assert (info.width, info.height, info.frame_count, info.bit_depth) == (80, 60, 10, 8)
    assert info.fps == pytest.approx(30)
    f = frames[3]
    assert f.rgb.dtype == np.uint8 and f.rgb.shape == (60, 80, 3) and f.index == 3
    assert f.time == pytest.approx(0.1, abs=1e-3)
    assert abs(int(f.rgb[50, 60, 0]) - (40 + 18)) <= 3  # grey level encodes the index
    assert f.rgb[5, 5].min() > 240  # white block top-left


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_vfr_timing_kept(tmp_path, ext):
    times = [0.0, 0.04, 0.1, 0.2, 0.21, 0.5, 0.9, 1.0]
    src = make_video(tmp_path / f"vfr{ext}", n=len(times), times=times)
    out = str(tmp_path / f"out{ext}")
    transcode(src, out)
    _, frames_in = decode_frames(src)
    info, frames = decode_frames(out)
    assert [round(f.time, 3) for f in frames] == pytest.approx(times, abs=1e-3)
    assert [round(f.time, 3) for f in frames_in] == pytest.approx(times, abs=1e-3)
    # the last frame lasts as long as the one before it (0.1 s): the file ends at 1.1 s
    assert info.duration == pytest.approx(1.1, abs=0.011)


def test_odd_size_kept(tmp_path):
    src = make_video(tmp_path / "in.mkv", w=65, h=47, n=6, codec="ffv1", pix_fmt="yuv444p")
    for ext in (".mp4", ".webm", ".mov"):
        out = str(tmp_path / f"out{ext}")
        transcode(src, out)
        info, frames = decode_frames(out)
        assert (info.width, info.height) == (65, 47), ext
        assert len(frames) == 6 and frames[0].rgb.shape == (47, 65, 3)
        ref = frame_image(2, 65, 47)
        assert np.abs(frames[2].rgb.astype(int) - ref).mean() < 6, ext


def test_ten_bit_input(tmp_path):
    src = make_video(tmp_path / "hevc10.mp4", w=64, h=48, n=5, codec="libx265", pix_fmt="yuv420p10le",
                     options={"x265-params": "log-level=error"})
    info, frames = decode_frames(src)
    assert info.bit_depth == 10
    assert len(frames) == 5 and frames[0].rgb.dtype == np.uint8
    assert np.abs(frames[4].rgb.astype(int) - frame_image(4, 64, 48)).mean() < 4
    out = str(tmp_path / "out.mp4")
    transcode(src, out)
    assert decode.probe(out).frame_count == 5


@pytest.mark.parametrize("display_ccw, expect_cw", [(-90, 90), (90, 270), (180, 180)])
def test_rotation_metadata_gives_upright_frames(tmp_path, display_ccw, expect_cw):
    # A display matrix (what phones write) rotating the coded 64x32 frame for display.
    src = make_video(tmp_path / "rot.mp4", w=64, h=32, n=3, rotation=display_ccw)
    info, frames = decode_frames(src)
    assert info.rotation == expect_cw
    img = frames[0].rgb
    white = img.min(axis=2) > 200
    ys, xs = np.nonzero(white)
    cy, cx = ys.mean() / img.shape[0], xs.mean() / img.shape[1]
    if expect_cw == 180:
        assert (info.width, info.height) == (64, 32) and img.shape == (32, 64, 3)
        assert cy > 0.5 and cx > 0.5  # top-left block now bottom-right
        return
    assert (info.width, info.height) == (32, 64) and img.shape == (64, 32, 3)
    if expect_cw == 90:  # clockwise: the top-left block goes to the top-right
        assert cy < 0.5 and cx > 0.5
    else:  # counter-clockwise: to the bottom-left
        assert cy > 0.5 and cx < 0.5
    # the output is written upright with the displayed size
    out = str(tmp_path / "out.mp4")
    transcode(src, out)
    info2, frames2 = decode_frames(out)
    assert (info2.width, info2.height, info2.rotation) == (32, 64, 0)
    assert np.abs(frames2[0].rgb.astype(int) - img).mean() < 4


# ----------------------------------------------------------------------------------------------
# audio


def _audio_check(src, out, seconds):
    x_in, r_in = decode_audio(src)
    x_out, r_out = decode_audio(out)
    assert len(x_out) / r_out == pytest.approx(seconds, abs=0.05)
    rms_in, rms_out = np.sqrt(np.mean(x_in ** 2)), np.sqrt(np.mean(x_out ** 2))
    assert rms_out == pytest.approx(rms_in, rel=0.1)
    spectrum = np.abs(np.fft.rfft(x_out[: r_out]))
    assert np.fft.rfftfreq(r_out, 1 / r_out)[spectrum.argmax()] == pytest.approx(440, abs=2)


@pytest.mark.parametrize("in_ext, acodec, out_ext, out_codec", [
    (".mp4", "aac", ".mp4", "aac"),  # copied
    (".mp4", "aac", ".mkv", "aac"),  # copied
    (".mp4", "aac", ".webm", "opus"),  # re-encoded: WebM takes Opus/Vorbis only
    (".mov", "pcm_s16le", ".mp4", "aac"),  # re-encoded: PCM is not for MP4
    (".mkv", "libopus", ".mov", "aac"),  # re-encoded
])
def test_audio_kept(tmp_path, in_ext, acodec, out_ext, out_codec):
    n, fps = 50, 25
    src = make_video(tmp_path / f"in{in_ext}", n=n, fps=fps, audio=(acodec, n / fps))
    out = str(tmp_path / f"out{out_ext}")
    transcode(src, out)
    with av.open(out) as c:
        assert c.streams.audio[0].codec_context.name == out_codec
        assert c.duration / 1e6 == pytest.approx(2.0, abs=1 / fps)
    assert decode.probe(out).duration == pytest.approx(2.0, abs=1 / fps)
    _audio_check(src, out, 2.0)
    if in_ext == out_ext == ".mp4":  # a remux keeps the coded audio bit for bit
        with av.open(src) as a, av.open(out) as b:
            pa = [bytes(p) for p in a.demux(audio=0) if p.size]
            pb = [bytes(p) for p in b.demux(audio=0) if p.size]
        assert pa == pb


def test_image_outputs_ignore_audio(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=3, audio=("aac", 0.12))
    transcode(src, str(tmp_path / "f_%04d.png"))
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".png")) == ["f_0000.png", "f_0001.png", "f_0002.png"]


# ----------------------------------------------------------------------------------------------
# alpha


def test_alpha_mov_prores4444(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=4)
    out = str(tmp_path / "out.mov")
    transcode(src, out, alpha=True, alpha_fn=gradient_alpha)
    with av.open(out) as c:
        st = c.streams.video[0]
        assert st.codec_context.name == "prores"
        frame = next(c.decode(st))
        assert "a" in frame.format.name  # yuva444p1xle
        rgba = frame.to_ndarray(format="rgba")
    alpha = rgba[..., 3].astype(int)
    assert alpha[:, 0].max() < 10 and alpha[:, -1].min() > 245
    assert np.all(np.diff(alpha[10]) >= -2)


def test_alpha_webm_vp9(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=4)
    out = str(tmp_path / "out.webm")
    transcode(src, out, alpha=True, alpha_fn=gradient_alpha)
    with av.open(out) as c:
        st = c.streams.video[0]
        assert st.metadata.get("alpha_mode") == "1"
        # FFmpeg's native vp9 decoder ignores the alpha layer; libvpx-vp9 decodes it
        ctx = av.codec.CodecContext.create("libvpx-vp9", "r")
        frames = []
        for packet in c.demux(st):
            frames += ctx.decode(packet)
            if frames:
                break
    rgba = frames[0].to_ndarray(format="rgba")
    assert frames[0].format.name == "yuva420p"
    assert rgba[..., 3][:, 0].max() < 15 and rgba[..., 3][:, -1].min() > 240


def test_alpha_png_sequence_and_exr(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=3)
    transcode(src, str(tmp_path / "a_%04d.png"), alpha=True, alpha_fn=gradient_alpha)
    png = cv2.imread(str(tmp_path / "a_0001.png"), cv2.IMREAD_UNCHANGED)
    assert png.shape == (48, 64, 4)
    assert png[:, 0, 3].max() == 0 and png[:, -1, 3].min() == 255
    transcode(src, str(tmp_path / "e_%03d.exr"), alpha=True, alpha_fn=gradient_alpha)
    exr = read_exr(tmp_path / "e_002.exr")
    assert exr.shape == (48, 64, 4)
    assert exr[:, 0, 3].max() == 0 and exr[:, -1, 3].min() == pytest.approx(1.0)
    # EXR colour is premultiplied by alpha
    assert np.abs(exr[..., :3]).max(axis=2)[:, 0].max() == 0


def test_alpha_refused_where_impossible(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=2)
    info = decode.probe(src)
    for name in ("out.mp4", "out.mkv", "out_%04d.jpg"):
        with pytest.raises(UsageError, match="transparent") as exc:
            encode.plan_output(str(tmp_path / name), [src], info, alpha=True, overwrite=False)
        assert name in str(exc.value)


# ----------------------------------------------------------------------------------------------
# sequences and still images


def test_sequence_output_png_and_overwrite_removes_stale(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=5)
    pattern = str(tmp_path / "seq" / "f_%04d.png")
    os.mkdir(tmp_path / "seq")
    transcode(src, pattern)
    names = sorted(os.listdir(tmp_path / "seq"))
    assert names == [f"f_{i:04d}.png" for i in range(5)]
    img = cv2.cvtColor(cv2.imread(str(tmp_path / "seq" / "f_0003.png")), cv2.COLOR_BGR2RGB)
    assert np.abs(img.astype(int) - frame_image(3, 64, 48)).mean() < 4
    # exists without --overwrite
    with pytest.raises(OutputError, match="overwrite"):
        transcode(src, pattern)
    short = make_video(tmp_path / "short.mp4", n=2)
    transcode(short, pattern, overwrite=True)
    assert sorted(os.listdir(tmp_path / "seq")) == ["f_0000.png", "f_0001.png"]


def test_exr_sequence_is_linear(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=2)
    transcode(src, str(tmp_path / "lin_%04d.exr"))
    img = read_exr(tmp_path / "lin_0001.exr")
    assert img.shape == (48, 64, 3)
    assert img[0, 0].min() > 0.95  # white stays 1.0
    grey = (40 + 6) / 255
    expect = ((grey + 0.055) / 1.055) ** 2.4  # sRGB -> linear
    assert img[40, 50, 1] == pytest.approx(expect, abs=0.01)


def test_exr_image_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    hdr = (rng.random((20, 30, 3)) * 8).astype(np.float32)  # values above 1 are kept
    write_exr(tmp_path / "in.exr", hdr, half=False)
    info, frames = decode_frames(str(tmp_path / "in.exr"))
    assert info.linear and not info.is_video and (info.width, info.height) == (30, 20)
    assert frames[0].rgb.dtype == np.float32 and frames[0].rgb.shape == (20, 30, 3)
    np.testing.assert_allclose(frames[0].rgb, hdr, rtol=1e-6)
    spec = encode.plan_output(str(tmp_path / "out.exr"), [str(tmp_path / "in.exr")], info, False, False)
    with encode.open_output(spec, info) as sink:
        sink.write(frames[0].rgb)
    np.testing.assert_allclose(read_exr(tmp_path / "out.exr"), hdr, rtol=1e-3)  # half float
    assert_no_temp(tmp_path)


def test_exr_rgba_input_drops_alpha(tmp_path):
    write_exr(tmp_path / "rgba.exr", np.full((4, 5, 4), 0.5, np.float32))
    info, frames = decode_frames(str(tmp_path / "rgba.exr"))
    assert frames[0].rgb.shape == (4, 5, 3)


def _jpeg_with_exif_orientation(bgr, orientation):
    data = cv2.imencode(".jpg", bgr)[1].tobytes()
    tiff = (b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0))
    app1 = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


def test_still_image_inputs(tmp_path):
    img = frame_image(0, 40, 20)
    # JPEG with EXIF orientation 6 (rotate 90 clockwise to display)
    (tmp_path / "exif.jpg").write_bytes(_jpeg_with_exif_orientation(img[..., ::-1], 6))
    info, frames = decode_frames(str(tmp_path / "exif.jpg"))
    assert (info.width, info.height) == (20, 40) and not info.is_video
    assert frames[0].rgb[2, -3].min() > 200 and frames[0].rgb[-3, 2].max() < 100  # block top-right
    # 16-bit PNG -> 8 bit
    png16 = (np.arange(40 * 20 * 3).reshape(20, 40, 3) % 65536).astype(np.uint16) * 23
    cv2.imwrite(str(tmp_path / "deep.png"), png16)
    _, frames = decode_frames(str(tmp_path / "deep.png"))
    assert frames[0].rgb.dtype == np.uint8
    np.testing.assert_array_equal(frames[0].rgb.astype(int), np.round(png16[..., ::-1] / 257.0).astype(int))
    # greyscale -> 3 channels
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((20, 40), 77, np.uint8))
    _, frames = decode_frames(str(tmp_path / "grey.png"))
    assert frames[0].rgb.shape == (20, 40, 3) and (frames[0].rgb == 77).all()
    # BGR -> RGB
    red = np.zeros((20, 40, 3), np.uint8)
    red[..., 2] = 255
    cv2.imwrite(str(tmp_path / "red.png"), red)
    _, frames = decode_frames(str(tmp_path / "red.png"))
    assert tuple(frames[0].rgb[0, 0]) == (255, 0, 0)


def test_still_image_to_png_and_jpeg(tmp_path):
    cv2.imwrite(str(tmp_path / "in.png"), frame_image(5, 40, 30)[..., ::-1])
    src = str(tmp_path / "in.png")
    for name in ("out.png", "out.jpg"):
        transcode(src, str(tmp_path / name))
        back = cv2.cvtColor(cv2.imread(str(tmp_path / name)), cv2.COLOR_BGR2RGB)
        assert np.abs(back.astype(int) - frame_image(5, 40, 30)).mean() < 2
    assert_no_temp(tmp_path)


def test_is_image_path():
    assert decode.is_image_path("a/b.PNG") and decode.is_image_path("x.jpeg") and decode.is_image_path("x.exr")
    assert decode.is_image_path("x.tif") and decode.is_image_path("x.webp") and decode.is_image_path("x.bmp")
    assert not decode.is_image_path("x.mp4") and not decode.is_image_path("x.mov") and not decode.is_image_path("png")


# ----------------------------------------------------------------------------------------------
# atomic output


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_exception_midway_leaves_nothing(tmp_path, exc_type):
    src = make_video(tmp_path / "in.mp4", n=6)
    info = decode.probe(src)
    for name in ("out.mp4", "out_%04d.png", "out.webm"):
        spec = encode.plan_output(str(tmp_path / name), [src], info, False, False)
        with pytest.raises(exc_type):
            with decode.open_input(src) as source, encode.open_output(spec, info, audio_from=src) as sink:
                for f in source:
                    sink.write(f.rgb, time=f.time)
                    if f.index == 3:
                        raise exc_type("stop")
        assert sorted(os.listdir(tmp_path)) == ["in.mp4"], name


def test_exception_keeps_previous_output(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=4)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    info = decode.probe(src)
    spec = encode.plan_output(str(out), [src], info, False, overwrite=True)
    with pytest.raises(RuntimeError):
        with encode.open_output(spec, info) as sink:
            sink.write(frame_image(0, 64, 48))
            raise RuntimeError("boom")
    assert out.read_bytes() == b"previous result"
    transcode(src, str(out), overwrite=True)
    assert decode.probe(str(out)).frame_count == 4
    assert_no_temp(tmp_path)


def test_empty_output_is_an_error(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=2)
    info = decode.probe(src)
    spec = encode.plan_output(str(tmp_path / "out.mp4"), [src], info, False, False)
    with pytest.raises(OutputError, match="no frames"):
        with encode.open_output(spec, info):
            pass
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]


_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from relight.stages import decode, encode
    src, out = sys.argv[1], sys.argv[2]
    encode.install_signal_handlers()
    info = decode.probe(src)
    spec = encode.plan_output(out, [src], info, False, False)
    with encode.open_output(spec, info, audio_from=src) as sink:
        for i in range(100000):
            sink.write(np.full((info.height, info.width, 3), i % 255, np.uint8), time=i / 25)
            if i == 5:
                print("writing", flush=True)
            time.sleep(0.01)
""")


def _start_writer(tmp_path, src, out):
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), src, out], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "writing", proc.stderr.read()
    time.sleep(0.2)
    return proc


def test_sigkill_midway_leaves_no_target(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=3, audio=("aac", 0.12))
    out = str(tmp_path / "out.mp4")
    proc = _start_writer(tmp_path, src, out)
    assert any("relight-tmp" in n for n in os.listdir(tmp_path))  # it is writing next to the target
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=20)
    assert not os.path.exists(out)  # temporary files may stay behind after SIGKILL...
    transcode(src, out)  # ...until the next run to the same target removes them
    assert_no_temp(tmp_path)
    assert decode.probe(out).frame_count == 3


def test_sigterm_midway_cleans_up(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=3)
    out = str(tmp_path / "out.mp4")
    proc = _start_writer(tmp_path, src, out)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in proc.stderr.read()
    assert not os.path.exists(out)
    assert_no_temp(tmp_path)


# ----------------------------------------------------------------------------------------------
# input errors


def test_missing_input(tmp_path):
    path = str(tmp_path / "nope.mp4")
    for fn in (decode.probe, decode.open_input):
        with pytest.raises(InputError, match="not found") as exc:
            fn(path)
        assert path in str(exc.value)
    with pytest.raises(InputError, match="not found"):
        decode.probe(str(tmp_path / "nope.png"))


def test_garbage_inputs(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("garbage.mp4", "garbage.mov", "garbage.png", "garbage.jpg", "garbage.exr", "empty.mkv"):
        p = tmp_path / name
        p.write_bytes(b"" if name.startswith("empty") else rng.bytes(4096))
        with pytest.raises(InputError) as exc:
            decode.probe(str(p))
        assert str(p) in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(InputError, match="directory"):
        decode.probe(str(tmp_path))


def test_truncated_video(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=10)
    data = open(src, "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as exc:
        with decode.open_input(str(tmp_path / "cut.mp4")) as source:
            list(source)
    assert "cut.mp4" in str(exc.value)


def test_audio_only_input(tmp_path):
    path = str(tmp_path / "sound.m4a")
    with av.open(path, "w") as c:
        a = c.add_stream("aac", rate=48000)
        a.layout = "mono"
        fr = av.AudioFrame.from_ndarray(sine(0.1)[None, :4096], format="fltp", layout="mono")
        fr.sample_rate, fr.pts = 48000, 0
        c.mux(a.encode(fr))
        c.mux(a.encode())
    with pytest.raises(InputError, match="no video stream") as exc:
        decode.probe(path)
    assert path in str(exc.value)


def test_zero_frame_video(tmp_path):
    path = str(tmp_path / "zero.mkv")
    with av.open(path, "w") as c:  # a video stream, but frames only in the audio stream
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("aac", rate=48000)
        a.layout = "mono"
        fr = av.AudioFrame.from_ndarray(sine(0.1)[None, :4096], format="fltp", layout="mono")
        fr.sample_rate, fr.pts = 48000, 0
        c.mux(a.encode(fr))
        c.mux(a.encode())
    with av.open(path) as c:
        assert len(c.streams.video) == 1
    with pytest.raises(InputError, match="no video frames") as exc:
        decode.probe(path)
    assert path in str(exc.value)


# ----------------------------------------------------------------------------------------------
# output errors


def test_output_equal_to_input(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=2)
    info = decode.probe(src)
    with pytest.raises(OutputError, match="refusing to overwrite an input"):
        encode.plan_output(src, [src], info, False, overwrite=True)
    os.symlink(src, tmp_path / "link.mp4")  # same file through another name
    with pytest.raises(OutputError, match="refusing to overwrite an input"):
        encode.plan_output(str(tmp_path / "link.mp4"), [src], info, False, overwrite=True)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        with pytest.raises(OutputError, match="refusing"):
            encode.plan_output("./sub/../in.mp4", ["in.mp4"], info, False, overwrite=True)
    finally:
        os.chdir(cwd)
    # an output sequence that would overwrite an input image / matte sequence frame
    open(tmp_path / "m_0001.png", "wb").close()
    with pytest.raises(OutputError, match="refusing"):
        encode.plan_output(str(tmp_path / "m_%04d.png"), [src, str(tmp_path / "m_0001.png")], info, False, True)
    with pytest.raises(OutputError, match="refusing"):
        encode.plan_output(str(tmp_path / "m_%04d.png"), [src, str(tmp_path / "m_%04d.png")], info, False, True)


def test_output_exists_needs_overwrite(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=2)
    info = decode.probe(src)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"x")
    with pytest.raises(OutputError, match="exists; pass --overwrite") as exc:
        encode.plan_output(str(out), [src], info, False, overwrite=False)
    assert str(out) in str(exc.value)
    spec = encode.plan_output(str(out), [src], info, False, overwrite=True)
    assert spec.path == str(out) and spec.kind == "video" and spec.ext == ".mp4"
    os.mkdir(tmp_path / "dir.mp4")
    with pytest.raises(OutputError, match="directory"):
        encode.plan_output(str(tmp_path / "dir.mp4"), [src], info, False, overwrite=True)


def test_output_directory_problems(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=2)
    info = decode.probe(src)
    missing = str(tmp_path / "no" / "such" / "out.mp4")
    with pytest.raises(OutputError, match="does not exist") as exc:
        encode.plan_output(missing, [src], info, False, False)
    assert missing in str(exc.value)
    # a directory we cannot write in: /proc refuses new files even to root
    with pytest.raises(OutputError, match="cannot write"):
        encode.plan_output("/proc/relight-out.mp4", [src], info, False, False)
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(OutputError, match="cannot write"):
                encode.plan_output(str(locked / "out.mp4"), [src], info, False, False)
        finally:
            locked.chmod(0o700)
    assert_no_temp(tmp_path)


def test_output_format_usage_errors(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=2)
    video = decode.probe(src)
    still = MediaInfo(path="in.png", width=64, height=48, is_video=False)
    cases = [
        ("out.avi", video, "unsupported output format"),
        ("out", video, "unsupported output format"),
        ("out.png", video, "%04d"),  # a video into one image
        ("out_%04d.mp4", video, "image sequences"),
        ("out.mp4", still, "still image"),
        ("out.webm", still, "still image"),
    ]
    for name, info, message in cases:
        with pytest.raises(UsageError, match=message):
            encode.plan_output(str(tmp_path / name), [src], info, False, False)
    assert encode.plan_output(str(tmp_path / "o.png"), [src], still, False, False).kind == "image"
    assert encode.plan_output(str(tmp_path / "o_%04d.exr"), [src], video, True, False).linear
    spec = encode.plan_output(str(tmp_path / "o.mp4"), [src], video, False, False)
    with pytest.raises(UsageError, match="encoder"):
        encode.open_output(spec, video, codec="no-such-codec")
    with pytest.raises(UsageError, match="rejected its settings"):
        encode.open_output(spec, video, preset="no-such-preset")
    with pytest.raises(UsageError, match="cannot hold"):
        encode.open_output(encode.plan_output(str(tmp_path / "o.webm"), [src], video, False, False),
                           video, codec="libx264")
    assert_no_temp(tmp_path)


# ----------------------------------------------------------------------------------------------
# mattes


def _write_png(path, arr):
    assert cv2.imwrite(str(path), arr)
    return str(path)


def test_matte_single_image_rgb_16bit_and_alpha(tmp_path):
    info = MediaInfo(path="in.mp4", width=40, height=30, is_video=True, fps=25, frame_count=50)
    ramp = np.repeat(np.linspace(0, 65535, 40).astype(np.uint16)[None, :], 30, axis=0)
    with decode.open_matte(_write_png(tmp_path / "m16.png", ramp), info) as m:
        a = m.get(0)
        assert a.dtype == np.float32 and a.shape == (30, 40)
        assert a[0, 0] == 0 and a[0, -1] == pytest.approx(1.0)
        assert m.get(49) is a  # one image for every frame
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[:, 20:] = 255
    with decode.open_matte(_write_png(tmp_path / "rgb.png", rgb), info) as m:
        assert m.get(3)[0, 0] == 0 and m.get(3)[0, 39] == pytest.approx(1.0)
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., 3] = np.linspace(0, 255, 40).astype(np.uint8)[None, :]
    with decode.open_matte(_write_png(tmp_path / "rgba.png", rgba), info) as m:
        assert m.get(0)[0, -1] == pytest.approx(1.0) and m.get(0)[0, 0] == 0


@pytest.mark.parametrize("start", [0, 1])
def test_matte_sequence(tmp_path, start):
    info = MediaInfo(path="in.mp4", width=40, height=30, is_video=True, fps=25, frame_count=4)
    for i in range(4):
        _write_png(tmp_path / f"m_{start + i:04d}.png", np.full((30, 40), 60 * i, np.uint8))
    with decode.open_matte(str(tmp_path / "m_%04d.png"), info) as m:
        for i in range(4):
            assert m.get(i)[5, 5] == pytest.approx(60 * i / 255)
    short = MediaInfo(path="in.mp4", width=40, height=30, is_video=True, fps=25, frame_count=5)
    with pytest.raises(InputError, match="4 frames") as exc:
        decode.open_matte(str(tmp_path / "m_%04d.png"), short)
    assert "m_%04d.png" in str(exc.value)
    with pytest.raises(InputError, match="no matte image sequence"):
        decode.open_matte(str(tmp_path / "x_%04d.png"), info)


def test_matte_video(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=8)
    info = decode.probe(src)
    matte = make_video(tmp_path / "matte.mp4", n=8)
    with decode.open_matte(matte, info) as m:
        for i in (0, 1, 1, 5, 7):  # increasing, repeats allowed
            a = m.get(i)
            assert a.shape == (48, 64) and a.dtype == np.float32
            assert a[2, 2] == pytest.approx(1.0, abs=0.02)  # white block = person
            assert a[40, 50] == pytest.approx((40 + 6 * i) / 255, abs=0.03)
        with pytest.raises(InputError, match="ended"):
            m.get(8)


def test_matte_wrong_size_or_too_short(tmp_path):
    src = make_video(tmp_path / "in.mp4", n=8)
    info = decode.probe(src)
    small = make_video(tmp_path / "small.mp4", w=32, h=24, n=8)
    with pytest.raises(InputError, match="32x24.*64x48") as exc:
        decode.open_matte(small, info)
    assert "small.mp4" in str(exc.value)
    img = _write_png(tmp_path / "small.png", np.zeros((24, 32), np.uint8))
    with pytest.raises(InputError, match="32x24.*64x48") as exc:
        decode.open_matte(img, info)
    assert "small.png" in str(exc.value)
    short = make_video(tmp_path / "short.mp4", n=5)
    with pytest.raises(InputError, match="5 frames.*8") as exc:
        decode.open_matte(short, info)
    assert "short.mp4" in str(exc.value)
    with pytest.raises(InputError, match="not found"):
        decode.open_matte(str(tmp_path / "none.png"), info)


# ----------------------------------------------------------------------------------------------
# backgrounds


def test_background_image_cover(tmp_path):
    img = np.zeros((50, 100, 3), np.uint8)
    img[:, :25] = (255, 0, 0)  # left quarter red (cropped away by a square cover)
    img[:, 25:75] = (0, 255, 0)
    img[:, 75:] = (0, 0, 255)
    path = _write_png(tmp_path / "bg.png", img[..., ::-1])
    with decode.open_background_media(path, 40, 40) as bg:
        a = bg.get(0)
        assert a.shape == (40, 40, 3) and a.dtype == np.uint8
        assert (a[:, 3:-3] == (0, 255, 0)).all()  # the centre, scaled up from 50 to 40 rows
        assert bg.get(10) is a
    with decode.open_background_media(path, 300, 60) as bg:  # wider: scale up, crop rows
        a = bg.get(0)
        assert a.shape == (60, 300, 3)
        assert tuple(a[30, 10]) == (255, 0, 0) and tuple(a[30, 290]) == (0, 0, 255)


def test_background_video_loops(tmp_path):
    path = make_video(tmp_path / "bg.mp4", w=32, h=24, n=3)
    levels = []
    with decode.open_background_media(path, 64, 48) as bg:
        for i in range(8):
            a = bg.get(i)
            assert a.shape == (48, 64, 3)
            levels.append(int(a[40, 50, 1]))
    expect = [40 + 6 * (i % 3) for i in range(8)]
    assert np.abs(np.array(levels) - expect).max() <= 3


def test_background_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        decode.open_background_media(str(tmp_path / "none.jpg"), 64, 48)
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all" * 50)
    with pytest.raises(InputError) as exc:
        decode.open_background_media(str(tmp_path / "bad.mp4"), 64, 48)
    assert "bad.mp4" in str(exc.value)
