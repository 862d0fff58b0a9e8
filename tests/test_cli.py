"""End-to-end tests of `relight run` and the Python API on small generated inputs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from relight.cli import main
from conftest import listdir, write_hdri


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def read_png(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def video_facts(path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
    with av.open(str(path)) as c:
        audio = [s for s in c.streams.audio]
        duration = float(c.duration / av.time_base) if c.duration else 0.0
        fps = float(c.streams.video[0].average_rate)
    return {"frames": frames, "fps": fps, "duration": duration, "audio": len(audio)}


# --------------------------------------------------------------------- images and backgrounds
@pytest.mark.parametrize("background", ["source", "source-blur", "hdri", "#00ff00"])
def test_image_every_opaque_background(tmp_path, portrait_png, portrait_rgb, sun_left_hdri, background):
    out = tmp_path / "out.png"
    assert run_cli("run", portrait_png, "--hdri", sun_left_hdri, "--background", background, "-o", out, "--quiet") == 0
    img = read_png(out)
    assert img.shape == portrait_rgb.shape
    corner = img[:12, :12].reshape(-1, 3).mean(0)
    if background == "#00ff00":
        assert corner[1] > 240 and corner[0] < 15 and corner[2] < 15
    if background == "source":
        assert np.abs(corner - portrait_rgb[:12, :12].reshape(-1, 3).mean(0)).max() < 3
    assert listdir(tmp_path) == ["out.png", "sun_left.exr"]  # no temporary files left


def test_image_background_from_image_file(tmp_path, portrait_png):
    bg = np.zeros((90, 200, 3), np.uint8)
    bg[:] = (200, 30, 40)  # RGB
    cv2.imwrite(str(tmp_path / "bg.png"), cv2.cvtColor(bg, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out.png"
    assert run_cli("run", portrait_png, "--hdri", "studio", "--background", tmp_path / "bg.png", "-o", out, "-q") == 0
    corner = read_png(out)[:10, :10].reshape(-1, 3).mean(0)
    assert np.abs(corner - (200, 30, 40)).max() < 6


def test_transparent_png_has_real_alpha(tmp_path, portrait_png):
    out = tmp_path / "out.png"
    assert run_cli("run", portrait_png, "--hdri", "studio", "--background", "transparent", "-o", out, "-q") == 0
    img = read_png(out)
    assert img.shape[2] == 4
    h, w = img.shape[:2]
    assert img[int(h * 0.3), w // 2, 3] > 200  # the face is opaque
    assert img[:8, :8, 3].max() < 40  # the corner is transparent


def test_strength_zero_keeps_the_input(tmp_path, portrait_png, portrait_rgb, sun_left_hdri):
    out = tmp_path / "out.png"
    assert run_cli("run", portrait_png, "--hdri", sun_left_hdri, "--background", "source", "--strength", "0",
                   "-o", out, "-q") == 0
    diff = np.abs(read_png(out).astype(int) - portrait_rgb.astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 3


def _face_sides(out, portrait_png, hdri, *options):
    """Relight the portrait over black with ``options``: the mean brightness of the face's image-left
    and image-right halves."""
    assert run_cli("run", portrait_png, "--hdri", hdri, *options, "--background", "#000000", "-o", out, "-q") == 0
    img = read_png(out).astype(float).mean(2)
    h, w = img.shape
    face = img[int(0.16 * h):int(0.36 * h)]  # the astronaut's face: x 0.35..0.53 of the width
    cx = int(0.44 * w)
    return face[:, cx - int(0.07 * w):cx].mean(), face[:, cx:cx + int(0.07 * w)].mean()


def test_light_direction_follows_the_hdri_and_pan(tmp_path, portrait_png, sun_left_hdri):
    """A sun on the camera's left makes the image-left half of the face brighter; pan 180 flips it."""
    left, right = _face_sides(tmp_path / "pan0.png", portrait_png, sun_left_hdri, "--pan", 0)
    assert left > 1.15 * right
    left, right = _face_sides(tmp_path / "pan180.png", portrait_png, sun_left_hdri, "--pan", 180)
    assert right > 1.15 * left


def test_fill_lifts_the_shadow_side_of_a_hard_key_only(tmp_path, portrait_png, sun_left_hdri):
    """--fill: under a sun on the camera's left, the face's image-right (shadow) half gets
    brighter as the fill goes up from 0 (the HDRI's light alone); the lit half stays."""
    lit0, dark0 = _face_sides(tmp_path / "fill0.png", portrait_png, sun_left_hdri, "--fill", 0)
    lit1, dark1 = _face_sides(tmp_path / "fill05.png", portrait_png, sun_left_hdri, "--fill", 0.5)
    assert dark1 > 1.2 * dark0
    assert lit1 == pytest.approx(lit0, rel=0.05)


def test_exr_output_is_scene_linear(tmp_path, portrait_png):
    from relight.io.exr import read_exr

    out = tmp_path / "out.exr"
    assert run_cli("run", portrait_png, "--hdri", "sunset", "--background", "hdri", "-o", out, "-q") == 0
    img = read_exr(out)
    assert img.shape[:2] == (320, 320) and np.isfinite(img).all()
    assert img.max() > 1.0  # the sun in the background is not tone-mapped away


# --------------------------------------------------------------------- video
def test_video_keeps_size_frames_fps_duration_audio(tmp_path, demo_clip):
    out = tmp_path / "out.mp4"
    assert run_cli("run", demo_clip, "--hdri", "sunset", "-o", out, "-q") == 0
    a, b = video_facts(demo_clip), video_facts(out)
    assert len(b["frames"]) == len(a["frames"]) == 30
    assert b["frames"][0].shape == a["frames"][0].shape
    assert b["fps"] == pytest.approx(a["fps"], rel=1e-3)
    assert b["audio"] == 1 == a["audio"]
    assert b["duration"] == pytest.approx(a["duration"], abs=0.05)


@pytest.mark.parametrize("ext", [".mov", ".webm"])
def test_transparent_video_carries_alpha(tmp_path, demo_clip, ext):
    out = tmp_path / f"out{ext}"
    assert run_cli("run", demo_clip, "--hdri", "studio", "--background", "transparent", "-o", out, "-q") == 0
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        if ext == ".webm":  # VP9 alpha lives in side data that only libvpx decodes
            ctx = av.codec.CodecContext.create("libvpx-vp9", "r")
            frame = next(f for p in c.demux(stream) for f in ctx.decode(p))
        else:
            frame = next(c.decode(stream))
        rgba = frame.to_ndarray(format="rgba")
    alpha = rgba[..., 3]
    assert alpha.max() > 200 and alpha.min() < 40


def test_video_to_png_sequence(tmp_path, demo_clip):
    out = tmp_path / "seq" / "f_%04d.png"
    out.parent.mkdir()
    assert run_cli("run", demo_clip, "--hdri", "studio", "--background", "source", "-o", out, "-q") == 0
    files = listdir(out.parent)
    assert len(files) == 30 and all(f.startswith("f_") and f.endswith(".png") for f in files)


def test_json_summary(tmp_path, demo_clip, capsys):
    out = tmp_path / "out.mp4"
    assert run_cli("run", demo_clip, "--hdri", "studio", "-o", out, "--json") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == 30 and summary["output"] == str(out) and summary["fps"] > 0


# --------------------------------------------------------------------- errors: exit code, one line naming the file
def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_missing_input(tmp_path, capsys):
    missing = tmp_path / "nope.mp4"
    assert run_cli("run", missing, "-o", tmp_path / "o.mp4") == 3
    assert str(missing) in _error_line(capsys)
    assert listdir(tmp_path) == []


def test_garbage_input(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(5000))
    assert run_cli("run", bad, "-o", tmp_path / "o.mp4") == 3
    assert str(bad) in _error_line(capsys)
    assert listdir(tmp_path) == ["bad.mp4"]


def test_bad_hdri_names_the_file(tmp_path, portrait_png, capsys):
    bad = tmp_path / "sky.exr"
    bad.write_bytes(b"not an exr at all")
    assert run_cli("run", portrait_png, "--hdri", bad, "-o", tmp_path / "o.png") == 3
    assert str(bad) in _error_line(capsys)
    png = tmp_path / "sky.png"
    cv2.imwrite(str(png), np.zeros((8, 16, 3), np.uint8))
    assert run_cli("run", portrait_png, "--hdri", png, "-o", tmp_path / "o.png") == 3
    assert str(png) in _error_line(capsys)
    assert run_cli("run", portrait_png, "--hdri", "no-such-preset", "-o", tmp_path / "o.png") == 3
    assert "no-such-preset" in _error_line(capsys)
    assert not (tmp_path / "o.png").exists()


def test_existing_output_needs_overwrite(tmp_path, portrait_png, capsys):
    out = tmp_path / "o.png"
    out.write_bytes(b"keep me")
    assert run_cli("run", portrait_png, "--hdri", "studio", "-o", out) == 4
    assert str(out) in _error_line(capsys)
    assert out.read_bytes() == b"keep me"
    assert run_cli("run", portrait_png, "--hdri", "studio", "-o", out, "--overwrite", "-q") == 0
    assert read_png(out).shape == (320, 320, 3)


def test_output_equal_to_input_is_refused(tmp_path, portrait_png, capsys):
    before = Path(portrait_png).read_bytes()
    assert run_cli("run", portrait_png, "--hdri", "studio", "-o", portrait_png, "--overwrite") == 4
    assert portrait_png in _error_line(capsys)
    assert Path(portrait_png).read_bytes() == before


def test_alpha_into_mp4_is_a_usage_error(tmp_path, demo_clip, capsys):
    assert run_cli("run", demo_clip, "--background", "transparent", "-o", tmp_path / "o.mp4") == 2
    assert "o.mp4" in _error_line(capsys)
    assert listdir(tmp_path) == []


def test_out_of_range_option(tmp_path, portrait_png, capsys):
    assert run_cli("run", portrait_png, "--fg-gain", "9", "-o", tmp_path / "o.png") == 2
    assert "--fg-gain" in _error_line(capsys)


def test_unwritable_output_directory(tmp_path, portrait_png, capsys):
    target = tmp_path / "missing-dir" / "o.png"
    assert run_cli("run", portrait_png, "--hdri", "studio", "-o", target) == 4
    assert "missing-dir" in _error_line(capsys)


# --------------------------------------------------------------------- atomic output
def _long_clip(tmp_path) -> str:
    from relight.demo import make_demo_clip

    return make_demo_clip(str(tmp_path / "long.mp4"), seconds=8.0, fps=30, width=320, height=180)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_killed_run_leaves_no_output(tmp_path, sig):
    clip = _long_clip(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "relit.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "relight", "run", clip, "--hdri", "studio", "-o", str(target),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not os.listdir(out_dir) and proc.poll() is None:
        time.sleep(0.05)  # wait until the run has started writing its temporary file
    time.sleep(1.0)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert not target.exists()
    if sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C or kill: exit 130, one line, nothing left
        assert proc.returncode == 130, err
        assert os.listdir(out_dir) == []  # temporary files cleaned up
        assert b"Traceback" not in err and b"interrupted" in err
    else:  # killed outright: only a hidden temporary file may remain; the next run removes it
        assert all(n.startswith(".relit.relight-tmp-") for n in os.listdir(out_dir))
        from relight.stages.encode import remove_stale_temp_files

        remove_stale_temp_files(str(target))
        assert os.listdir(out_dir) == []


def test_interrupt_raised_inside_string_code_still_exits_130(tmp_path):
    """Ctrl-C or SIGTERM can land while CPython runs code from a string (mediapipe builds a
    namedtuple, an eval, on every frame). CPython then flags the KeyboardInterrupt as unhandled
    although the CLI caught it, and `python -m relight` would die by SIGINT (-2), not exit 130."""
    (tmp_path / "interrupted_relight.py").write_text(
        "import runpy, sys\n"
        "import relight.cli as cli\n"
        "def interrupted(args):\n"
        "    exec('raise KeyboardInterrupt')\n"
        "cli._cmd_presets = interrupted\n"
        "sys.argv = ['relight', 'presets']\n"
        "runpy.run_module('relight', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-m", "interrupted_relight"], cwd=tmp_path, capture_output=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == b"relight: interrupted; no partial output was left behind"


# --------------------------------------------------------------------- Python API
def test_python_api_frames_and_file(tmp_path, portrait_rgb, demo_clip):
    from relight import RelightSettings, Relighter, relight_file

    settings = RelightSettings(hdri="studio", background="transparent")
    with Relighter(settings, video=False) as r:
        out = r.process(portrait_rgb)
        assert out.shape == (320, 320, 4) and out.dtype == np.uint8
        lin = r.process(portrait_rgb.astype(np.float32) / 255.0)
        assert lin.dtype == np.float32 and lin.shape == (320, 320, 4)
    summary = relight_file(demo_clip, str(tmp_path / "o.mkv"), RelightSettings(hdri="forest"), show_progress=False)
    assert summary["frames"] == 30 and os.path.exists(tmp_path / "o.mkv")


def test_process_settings_during_a_run(tmp_path, demo_clip):
    """numpy imported before relight (so OPENBLAS_NUM_THREADS is not set in time) would leave
    OpenBLAS' spinning worker threads on: relight_file holds BLAS to one thread while it runs,
    and restores the user's setting after. Likewise numpy's huge pages for large arrays are off
    during the run and as the user had them after."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from relight import RelightSettings, relight_file

    def blas_threads():
        return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]

    huge = getattr(np.core.multiarray, "_get_madvise_hugepage", lambda: None)
    if not blas_threads():
        pytest.skip("no BLAS library loaded")
    seen = []
    before = huge()
    with threadpool_limits(limits=2, user_api="blas"):
        relight_file(demo_clip, str(tmp_path / "o.mp4"), RelightSettings(hdri="studio"), show_progress=False,
                     on_frame=lambda n: seen.append((max(blas_threads()), huge())))
        after = max(blas_threads())
    assert seen and {b for b, _ in seen} == {1}
    assert after == 2
    if before is not None:
        assert {h for _, h in seen} == {False} and huge() == before


def test_help_lists_every_option_with_default_and_range(capsys):
    assert main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--hdri", "--pan", "--autorotate", "--light-from", "--vfov", "--fg-gain", "--bg-gain", "--blur",
                 "--specular", "--strength", "--background", "--matte", "--crf", "--preset", "--codec", "--quiet",
                 "--json", "--overwrite"):
        assert flag in text
    assert text.lower().count("default") >= 15 and "0..4" in text
