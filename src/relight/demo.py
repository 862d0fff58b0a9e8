"""The built-in input of ``relight demo``: a short clip made from a public-domain NASA portrait.

The portrait (astronaut Eileen Collins, NASA, public domain; via scikit-image's sample data,
see ``assets/CREDITS.md``) is filmed by a virtual camera that slowly zooms in and drifts
towards the face, with a quiet chord as the soundtrack so that audio pass-through can be shown.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
PORTRAIT = ASSETS_DIR / "astronaut.jpg"

# where the camera looks in the 512x512 portrait (source pixels) at the start and at the end:
# the face is around (225, 110), so it sits in the upper third of a 16:9 frame
_CENTRE_START = (256.0, 150.0)
_CENTRE_END = (236.0, 128.0)
_ZOOM_END = 1.12  # relative to the scale that just covers the frame
_AUDIO_RATE = 48000
_CHORD_HZ = (220.0, 277.18, 329.63)  # A major
_CHORD_GAIN = 0.04  # per note: about -20 dBFS in all


def load_portrait() -> np.ndarray:
    """The demo portrait as uint8 sRGB RGB (512, 512, 3)."""
    bgr = cv2.imread(str(PORTRAIT), cv2.IMREAD_COLOR)
    if bgr is None:  # a broken installation, not a user error
        raise RuntimeError(f"demo portrait missing or unreadable: {PORTRAIT}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _ease(t: float) -> float:
    """0 -> 1 with zero velocity at both ends."""
    return 0.5 - 0.5 * math.cos(math.pi * min(max(t, 0.0), 1.0))


def demo_frames(n: int, width: int, height: int, image: "np.ndarray | None" = None):
    """Yield ``n`` uint8 RGB frames (height, width, 3) of the slow camera move over the portrait."""
    img = load_portrait() if image is None else image
    ih, iw = img.shape[:2]
    cover = max(width / iw, height / ih)
    for i in range(n):
        a = _ease(i / (n - 1)) if n > 1 else 0.0
        s = cover * (1.0 + (_ZOOM_END - 1.0) * a)
        cx = _CENTRE_START[0] + (_CENTRE_END[0] - _CENTRE_START[0]) * a
        cy = _CENTRE_START[1] + (_CENTRE_END[1] - _CENTRE_START[1]) * a
        # keep the visible window inside the image (no borders)
        hw, hh = width / (2 * s), height / (2 * s)
        cx = min(max(cx, hw), iw - hw)
        cy = min(max(cy, hh), ih - hh)
        # pixel centres: dst_x + 0.5 = s (src_x + 0.5 - cx) + width / 2 (same for y)
        off = 0.5 * (s - 1.0)
        m = np.array([[s, 0.0, width / 2 - s * cx + off], [0.0, s, height / 2 - s * cy + off]])
        yield cv2.warpAffine(img, m, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def demo_audio(seconds: float, rate: int = _AUDIO_RATE) -> np.ndarray:
    """A quiet, slowly swelling A-major chord, float32 stereo (2, samples) in [-1, 1]."""
    n = int(round(seconds * rate))
    t = np.arange(n, dtype=np.float64) / rate
    left = sum(np.sin(2 * np.pi * f * t) for f in _CHORD_HZ)
    right = sum(np.sin(2 * np.pi * f * 1.002 * t + 0.3 * k) for k, f in enumerate(_CHORD_HZ))
    fade = np.minimum(1.0, np.minimum(t / 0.3, (seconds - t) / 0.3)).clip(0.0, 1.0)
    swell = 0.85 + 0.15 * np.sin(2 * np.pi * 0.5 * t)
    env = _CHORD_GAIN * fade * swell
    return np.stack([left * env, right * env]).astype(np.float32)


def make_demo_clip(path, seconds: float = 3.0, fps: int = 30, width: int = 640, height: int = 360):
    """Write the demo clip (H.264 yuv420p + AAC stereo in an MP4) to ``path``; return ``path``."""
    import av

    if width % 2 or height % 2 or width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive and even, got {width}x{height}")
    n_frames = max(1, int(round(seconds * fps)))
    seconds = n_frames / fps
    with av.open(str(path), mode="w") as out:
        video = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": "20", "preset": "fast", "tune": "stillimage"}
        # PyAV converts rgb24 -> yuv420p with the BT.601 matrix, limited range: say so in the stream
        video.codec_context.colorspace = 5  # AVCOL_SPC_BT470BG (BT.601)
        video.codec_context.color_range = 1  # AVCOL_RANGE_MPEG (limited)
        audio = out.add_stream("aac", rate=_AUDIO_RATE)
        audio.layout = "stereo"
        audio.bit_rate = 96000

        for i, rgb in enumerate(demo_frames(n_frames, width, height)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())

        samples = demo_audio(seconds)
        chunk = 1024
        for start in range(0, samples.shape[1], chunk):
            block = np.ascontiguousarray(samples[:, start:start + chunk])
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate = _AUDIO_RATE
            frame.pts = start
            out.mux(audio.encode(frame))
        out.mux(audio.encode())
    return path


def run_demo(output_dir="relight-demo", hdri: str = "sunset", show_progress: bool = True) -> dict:
    """Make the demo clip in ``output_dir``, relight it to ``hdri`` over the HDRI background and
    write a preview PNG of its middle frame. Returns the run's summary plus ``preview``."""
    from .pipeline import relight_file
    from .settings import RelightSettings

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    clip = make_demo_clip(str(out / "demo_input.mp4"))
    relit = out / "demo_relit.mp4"
    settings = RelightSettings(hdri=hdri, background="hdri", light_from="left")
    summary = relight_file(clip, str(relit), settings, overwrite=True, show_progress=show_progress)
    preview = out / "demo_preview.png"
    _write_preview(relit, preview)
    summary["preview"] = str(preview)
    summary["input"] = str(clip)
    return summary


def _write_preview(video: Path, png: Path) -> None:
    """Save the middle frame of ``video`` as a PNG."""
    import av

    with av.open(str(video)) as container:
        middle = max(0, (container.streams.video[0].frames or 1) // 2)
        for i, frame in enumerate(container.decode(video=0)):
            rgb = frame.to_ndarray(format="rgb24")
            if i >= middle:
                break
    cv2.imwrite(str(png), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
