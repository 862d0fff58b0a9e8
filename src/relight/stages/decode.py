"""Decode stage: read the input video or image, an external matte and a background.

Everything a user gives us goes through here, and every problem with it becomes an
:class:`~relight.errors.InputError` with a one-line message naming the file; no traceback
from PyAV or OpenCV reaches the user.

* :func:`open_input` / :func:`probe`: the input (video via PyAV, PNG/JPEG/TIFF/... via OpenCV,
  EXR via :mod:`relight.io.exr`). Video frames come out upright (rotation metadata applied)
  as uint8 sRGB; EXR frames as float32 scene-linear.
* :func:`open_matte`: an external matte (video, single image, or ``%04d`` image sequence).
* :func:`open_background_media`: a background image or video, scaled to cover the frame.

Sources are context managers and are read front to back; nothing is loaded whole.
"""
from __future__ import annotations

import os
import re
import struct
from typing import Iterator, Optional, Union

import numpy as np

from ..colour import linear_to_srgb8
from ..errors import InputError
from ..io.exr import read_exr
from ..types import Frame, MediaInfo

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".bmp", ".webp")

# The largest frame relight accepts (inputs, mattes, backgrounds): 4096x4096, e.g. 5K video or a
# 12-Mpixel photo. Memory grows with the frame (about 2.8 GB peak for 3840x2160, see README);
# larger frames are refused before any work so that a huge file cannot exhaust memory.
MAX_FRAME_PIXELS = 4096 * 4096
MAX_FRAME_SIDE = 16384

# a printf-style frame-number placeholder: %d, %4d, %04d
_PLACEHOLDER = re.compile(r"%(0?)(\d*)d")


# ----------------------------------------------------------------------------------------------
# small shared helpers (also used by the encode stage)


def is_image_path(path) -> bool:
    """True when ``path`` names a still image (judged by its extension)."""
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


def has_pattern(path) -> bool:
    """True when the file name of ``path`` holds a ``%d`` / ``%04d`` frame-number placeholder."""
    return _PLACEHOLDER.search(os.path.basename(str(path))) is not None


def format_pattern(pattern: str, number: int) -> str:
    """Fill the first ``%0Nd`` placeholder of ``pattern`` (other ``%`` characters are kept)."""
    def fill(m: re.Match) -> str:
        width = int(m.group(2) or 0)
        return f"{number:0{width}d}" if m.group(1) else f"{number:{width}d}".replace(" ", "")

    directory, name = os.path.split(pattern)
    return os.path.join(directory, _PLACEHOLDER.sub(fill, name, count=1))


def pattern_regex(pattern: str) -> "re.Pattern[str]":
    """A regex that matches the file names (not directories) that ``pattern`` can produce."""
    name = os.path.basename(pattern)
    m = _PLACEHOLDER.search(name)
    if m is None:
        return re.compile(re.escape(name))
    digits = r"\d+" if not m.group(2) else r"\d{%d,}" % int(m.group(2))
    return re.compile(re.escape(name[: m.start()]) + digits + re.escape(name[m.end():]))


def _short(exc: BaseException) -> str:
    """First line of an exception message, without PyAV's errno prefix and file suffix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    text = re.sub(r":\s*'[^']*'$", "", text)  # PyAV appends ": 'path'"
    return text[:160]


def _check_frame_size(width: int, height: int, path, what: str = "frame") -> None:
    """InputError when a frame is larger than relight handles (0 = unknown passes)."""
    width, height = int(width or 0), int(height or 0)
    if width * height > MAX_FRAME_PIXELS or width > MAX_FRAME_SIDE or height > MAX_FRAME_SIDE:
        raise InputError(
            f"{what} is {width}x{height} ({width * height / 1e6:.1f} Mpixels); relight handles up to "
            f"{MAX_FRAME_PIXELS / 1e6:.1f} Mpixels (e.g. 4096x4096, 5K video): downscale it first, e.g. "
            "ffmpeg -i IN -vf scale=3840:-2 OUT", path)


def _header_image_size(data: np.ndarray) -> "tuple[int, int] | None":
    """(width, height) from a PNG or JPEG header without decoding; None for other formats or
    when the header cannot be parsed (the decoder then decides)."""
    head = data[:8].tobytes()
    if head.startswith(b"\x89PNG\r\n\x1a\n") and data.size >= 24:
        w, h = struct.unpack(">II", data[16:24].tobytes())
        return w, h
    if head.startswith(b"\xff\xd8"):
        i, n = 2, min(int(data.size), 1 << 20)
        buf = data[:n].tobytes()
        while i + 9 < n:
            if buf[i] != 0xFF:
                i += 1
                continue
            marker = buf[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            length = (buf[i + 2] << 8) | buf[i + 3]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                h, w = struct.unpack(">HH", buf[i + 5:i + 9])
                return w, h
            if marker == 0xDA or length < 2:  # start of scan before a frame header: give up
                return None
            i += 2 + length
    return None


def _require_file(path, what: str = "file") -> str:
    """Return ``path`` as str if it is an existing regular file, else raise InputError."""
    p = str(path)
    if not os.path.exists(p):
        raise InputError(f"{what} not found", p)
    if os.path.isdir(p):
        raise InputError(f"{what} is a directory, not a file", p)
    if not os.access(p, os.R_OK):
        raise InputError(f"{what} is not readable (permission denied)", p)
    if os.path.isfile(p) and os.path.getsize(p) == 0:
        raise InputError(f"{what} is empty (0 bytes)", p)
    return p


# ----------------------------------------------------------------------------------------------
# still images


def _imread_raw(path: str, flags: int) -> np.ndarray:
    """cv2 decode of a file (works with non-ASCII paths); InputError when unreadable."""
    import cv2

    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read image ({exc.strerror})", path) from None
    if not data.size:
        raise InputError("image file is empty (0 bytes)", path)
    size = _header_image_size(data)
    if size is not None:
        _check_frame_size(*size, path, what="image")
    try:
        img = cv2.imdecode(data, flags)
    except cv2.error:  # e.g. EXR bytes: OpenCV's EXR codec is disabled and raises instead of returning None
        img = None
    if img is None:
        raise InputError("not a readable image (corrupt, truncated or unsupported format)", path)
    _check_frame_size(img.shape[1], img.shape[0], path, what="image")
    return img


def _to_uint8(img: np.ndarray) -> np.ndarray:
    """16-bit or float (display-referred, [0, 1]) image -> uint8; uint8 passes through."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        return np.clip(np.nan_to_num(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.clip(img, 0, 255).astype(np.uint8)


def _read_exr_rgb(path: str) -> np.ndarray:
    """EXR -> float32 (H, W, 3) scene-linear (alpha dropped, grey expanded, NaN removed)."""
    img = read_exr(path, max_pixels=MAX_FRAME_PIXELS)
    _check_frame_size(img.shape[1], img.shape[0], path, what="image")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    rgb = np.ascontiguousarray(img[..., :3], dtype=np.float32)
    return np.nan_to_num(rgb, copy=False, nan=0.0, posinf=65504.0, neginf=0.0)


def read_image_rgb(path) -> np.ndarray:
    """Read a still image: uint8 sRGB (H, W, 3), or float32 linear (H, W, 3) for EXR.

    16-bit images are reduced to 8 bits, grey is expanded to RGB, alpha is dropped and the
    JPEG EXIF orientation is applied. Raises InputError naming the file."""
    import cv2

    path = _require_file(path, "image")
    if path.lower().endswith(".exr"):
        return _read_exr_rgb(path)
    # ANYDEPTH|ANYCOLOR keeps 16-bit and grey, drops alpha, and honours EXIF orientation
    img = _to_uint8(_imread_raw(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR))
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _check_grey(rgb: np.ndarray, path: str) -> None:
    """InputError when a matte is clearly a colour picture (such as the input video itself)
    rather than a black-and-white matte. ``rgb``: (H, W, 3) uint8 or float in [0, 1]."""
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.size == 0:
        return
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 250_000)))  # a subsample is enough
    px = rgb[::step, ::step, :3].astype(np.float32)
    if rgb.dtype == np.uint8:
        px *= np.float32(1.0 / 255.0)
    elif rgb.dtype == np.uint16:
        px *= np.float32(1.0 / 65535.0)
    px = np.nan_to_num(px)
    spread = px.max(axis=2) - px.min(axis=2)
    coloured = float(np.mean(spread > 0.1))
    if coloured > 0.02:
        raise InputError(
            f"matte is not greyscale ({coloured:.0%} of its pixels are coloured): a matte is black (background) "
            "and white (person); is this the video itself rather than its matte?", path)


def _read_matte_image(path: str) -> np.ndarray:
    """Read a matte image -> float32 (H, W) in [0, 1].

    A varying alpha channel is the matte; otherwise the image must be grey (a colour image is
    refused, see :func:`_check_grey`) and its grey level is the matte."""
    import cv2

    if path.lower().endswith(".exr"):
        img = read_exr(path, max_pixels=MAX_FRAME_PIXELS)
        _check_frame_size(img.shape[1], img.shape[0], path, what="matte")
        if img.shape[2] == 4 and np.ptp(np.nan_to_num(img[..., 3])) > 0:
            grey = img[..., 3]
        elif img.shape[2] >= 3:
            _check_grey(np.clip(img[..., :3], 0.0, 1.0), path)
            grey = img[..., :3].mean(axis=2)
        else:
            grey = img[..., 0]
        return np.clip(np.nan_to_num(grey), 0.0, 1.0).astype(np.float32)
    is_jpeg = path.lower().endswith((".jpg", ".jpeg"))
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR if is_jpeg else cv2.IMREAD_UNCHANGED
    img = _imread_raw(path, flags)
    if img.ndim == 3 and img.shape[2] == 4 and img[..., 3].min() != img[..., 3].max():
        grey = img[..., 3]
    elif img.ndim == 3 and img.shape[2] >= 3:
        _check_grey(img, path)
        grey = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_BGR2GRAY)
    elif img.ndim == 3:
        grey = img[..., 0]
    else:
        grey = img
    return _unit_float(grey)


def _unit_float(grey: np.ndarray) -> np.ndarray:
    """An integer or float grey image -> float32 in [0, 1]."""
    if grey.dtype == np.uint8:
        return grey.astype(np.float32) * np.float32(1.0 / 255.0)
    if grey.dtype == np.uint16:
        return grey.astype(np.float32) * np.float32(1.0 / 65535.0)
    return np.clip(np.nan_to_num(grey.astype(np.float32)), 0.0, 1.0)


class ImageSource:
    """A still image as a one-frame source (same interface as :class:`VideoSource`)."""

    def __init__(self, path):
        self.path = str(path)
        self._rgb = read_image_rgb(self.path)
        h, w = self._rgb.shape[:2]
        linear = self._rgb.dtype != np.uint8
        self.info = MediaInfo(
            path=self.path, width=w, height=h, is_video=False,
            bit_depth=32 if linear else 8, linear=linear,
        )

    def __iter__(self) -> Iterator[Frame]:
        yield Frame(rgb=self._rgb, index=0, time=0.0)

    def close(self) -> None:
        """Nothing to release (kept for interface symmetry)."""

    def __enter__(self) -> "ImageSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# video


def _open_container(path: str):
    """av.open for reading; InputError with a short reason when FFmpeg cannot read it."""
    import av

    try:
        return av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as exc:
        damage = mp4_damage(path)
        if damage:
            raise InputError(damage, path) from None
        raise InputError(f"not a readable video or image ({_short(exc)})", path) from None


def mp4_damage(path: str) -> Optional[str]:
    """For an MP4/MOV (ISO media) file, say why it is incomplete, from its top-level boxes:
    one that runs past the end of the file (cut mid-file) or no 'moov' index (an unfinished
    recording). None when the file is not ISO media or looks complete."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 8 or head[4:8] not in (b"ftyp", b"wide", b"mdat", b"moov", b"free", b"skip"):
                return None
            pos, boxes = 0, []
            while pos + 8 <= size and len(boxes) < 10000:
                f.seek(pos)
                hdr = f.read(16)
                box_size, kind = struct.unpack(">I4s", hdr[:8])
                if box_size == 1 and len(hdr) == 16:
                    box_size = struct.unpack(">Q", hdr[8:16])[0]
                elif box_size == 0:
                    box_size = size - pos
                if box_size < 8:
                    return None  # not a box structure we understand: let FFmpeg's message stand
                boxes.append(kind)
                if pos + box_size > size:
                    name = kind.decode("latin-1")
                    return (f"truncated: the file ends inside its '{name}' box ({size} of {pos + box_size} bytes); "
                            "use a complete copy of the file")
                pos += box_size
    except OSError:
        return None
    if b"moov" not in boxes:
        return ("truncated or unfinished MP4/MOV: its index (the 'moov' box) is missing, so no frame can be "
                "found; use a complete copy of the file")
    return None


def _find_video_stream(container, path: str):
    """The first real video stream (cover art in audio files does not count)."""
    import av

    cover = av.stream.Disposition.attached_pic
    for stream in container.streams.video:
        if not (stream.disposition & cover):
            return stream
    if container.streams.audio:
        raise InputError("has no video stream (audio only)", path)
    raise InputError("has no video stream", path)


def _duration_tag(text: Optional[str]) -> float:
    """Seconds from a Matroska 'HH:MM:SS.nnnnnnnnn' duration tag; 0 when absent or malformed."""
    m = re.fullmatch(r"\s*(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)\s*", text or "")
    if not m:
        return 0.0
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def _stream_duration(stream, container) -> float:
    """Seconds of the video stream (0 when unknown): its own duration, else the Matroska
    per-stream tag (an end time), else the container's duration."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tagged = _duration_tag(stream.metadata.get("DURATION") or stream.metadata.get("duration"))
    if tagged:
        start = float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
        return tagged - start if 0 < start < tagged else tagged
    if container.duration:
        return container.duration / 1_000_000
    return 0.0


def _rotation_cw(stream, frame) -> int:
    """Clockwise degrees (0/90/180/270) to rotate coded frames for display."""
    ccw = getattr(frame, "rotation", None)  # PyAV >= 13: display-matrix angle, counter-clockwise
    if ccw:
        return int(round(-float(ccw) / 90.0)) * 90 % 360
    tag = stream.metadata.get("rotate")  # old FFmpeg: clockwise degrees as a tag
    if tag:
        try:
            return int(round(float(tag) / 90.0)) * 90 % 360
        except ValueError:
            return 0
    return 0


def _rotate(img: np.ndarray, cw: int) -> np.ndarray:
    import cv2

    if cw == 90:
        return cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    if cw == 180:
        return cv2.rotate(img, cv2.ROTATE_180)
    if cw == 270:
        return cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return img


class VideoSource:
    """Frames of a video file, decoded with PyAV (threaded), upright, as uint8 arrays.

    ``pix_fmt`` is ``"rgb24"`` (frames (H, W, 3) sRGB) or ``"gray"`` (frames (H, W), used for
    mattes). The first frame is decoded on open so that empty or undecodable files fail early.

    Damage is survived, not fatal: a packet the decoder rejects is skipped (``dropped`` counts
    them; the next frames keep their index, so the earlier frame simply lasts longer), a frame
    the decoder had to conceal errors in is kept (``repaired`` counts them), and a file that
    ends early (cut mid-file) or whose container breaks off ends the video there
    (``ended_early`` says why). :meth:`problems` sums this up in one line.
    """

    def __init__(self, path, pix_fmt: str = "rgb24"):
        from av.video.reformatter import VideoReformatter

        self.path = _require_file(path, "video")
        self._pix_fmt = pix_fmt
        self.dropped = 0  # packets that could not be decoded
        self.repaired = 0  # frames decoded with errors concealed
        self.decoded = 0  # frames delivered so far
        self.ended_early: Optional[str] = None  # why reading stopped before the end, if it did
        self._last_error = ""
        self._container = _open_container(self.path)
        try:
            self._stream = _find_video_stream(self._container, self.path)
            _check_frame_size(self._stream.codec_context.width, self._stream.codec_context.height, self.path)
            self._stream.thread_type = "AUTO"
            self._reformatter = VideoReformatter()
            self._decoded = self._decode_tolerant()
            self._first = self._next_av_frame(0)
            if self._first is None:
                announced = self._stream.frames or 0
                if self.dropped:
                    raise InputError(f"contains no decodable video frames ({self.dropped} damaged packets: "
                                     f"{self._last_error})", self.path)
                damage = mp4_damage(self.path)
                if damage:
                    raise InputError(damage, self.path)
                if announced > 0 or self.ended_early:
                    raise InputError(f"no video frame could be read although the file announces {announced}: "
                                     "truncated or damaged file", self.path)
                raise InputError("contains no video frames", self.path)
            _check_frame_size(self._first.width, self._first.height, self.path)
            self._rotation = _rotation_cw(self._stream, self._first)
            self.info = self._make_info(self._first)
        except BaseException:
            self._container.close()
            raise

    # -- metadata

    def _make_info(self, first) -> MediaInfo:
        stream, container = self._stream, self._container
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = _stream_duration(stream, container)
        if not (0 < fps < 10000):
            fps = stream.frames / duration if stream.frames and duration else 30.0
            if not (0 < fps < 10000):
                fps = 30.0
        frames = stream.frames if stream.frames and stream.frames > 0 else max(1, round(duration * fps))
        if duration <= 0:
            duration = frames / fps
        w, h = first.width, first.height
        if self._rotation in (90, 270):
            w, h = h, w
        depth = max((c.bits for c in first.format.components), default=8)
        return MediaInfo(
            path=self.path, width=w, height=h, is_video=True, fps=fps, frame_count=int(frames),
            duration=duration, rotation=self._rotation, has_audio=bool(container.streams.audio),
            bit_depth=int(depth), linear=False,
        )

    # -- decoding

    def _decode_tolerant(self):
        """Decoded av.VideoFrames, front to back, skipping packets the decoder rejects."""
        import av

        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:  # the container breaks off
                self.ended_early = f"the file is damaged after {self.decoded} frames ({_short(exc)})"
                packet = None
            try:
                frames = packet.decode() if packet is not None else self._stream.codec_context.decode(None)
            except (av.FFmpegError, ValueError, MemoryError) as exc:
                if packet is None or packet.size:  # a damaged packet (not the end-of-stream flush)
                    self.dropped += 1
                    self._last_error = _short(exc)
                frames = []
            for frame in frames:
                if frame.is_corrupt:
                    self.repaired += 1
                yield frame
            if packet is None:
                break

    def _next_av_frame(self, index: int):
        """The next decoded av.VideoFrame, None at the end."""
        frame = next(self._decoded, None)
        if frame is not None:
            self.decoded += 1
        return frame

    def problems(self) -> Optional[str]:
        """One line on the damage survived so far (None when there was none)."""
        parts = []
        if self.dropped:
            one = self.dropped == 1
            parts.append(f"{self.dropped} damaged frame{'' if one else 's'} could not be decoded and "
                         f"{'was' if one else 'were'} dropped (the frame before is shown longer)")
        if self.repaired:
            one = self.repaired == 1
            parts.append(f"{self.repaired} frame{'' if one else 's'} had decoding errors, concealed by the "
                         "decoder (repaired)")
        if self.ended_early:
            parts.append(self.ended_early)
        elif self.info.frame_count > 1 and self.decoded + self.dropped < 0.9 * self.info.frame_count - 1:
            parts.append(f"the video ends after {self.decoded + self.dropped} of the {self.info.frame_count} "
                         "frames its header announces (truncated file?)")
        return "; ".join(parts) if parts else None

    def _convert(self, frame) -> np.ndarray:
        """av.VideoFrame -> upright uint8 ndarray in the requested pixel format."""
        src_cs = None
        if frame.colorspace == 2 and frame.format.name not in ("rgb24", "bgr24", "gray"):
            # untagged YUV: follow players (Rec.709 for HD, Rec.601 for SD)
            src_cs = "ITU709" if frame.height >= 720 else "ITU601"
        out = self._reformatter.reformat(frame, format=self._pix_fmt, src_colorspace=src_cs)
        return _rotate(out.to_ndarray(), self._rotation)

    def frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
        """Yield (index, time in seconds, array) for every frame, front to back (once).

        The index counts dropped (undecodable) frames too, so that it stays the frame's
        position in the file."""
        frame = self._first
        self._first = None
        last_time = None
        step = 1.0 / self.info.fps
        while frame is not None:
            t = frame.time
            if t is None or not np.isfinite(t):
                t = 0.0 if last_time is None else last_time + step
            last_time = t
            yield self.decoded - 1 + self.dropped, float(t), self._convert(frame)
            frame = self._next_av_frame(self.decoded)

    def __iter__(self) -> Iterator[Frame]:
        for index, t, arr in self.frames():
            # each frame is a fresh array, read-only: later stages may keep it as it is (the
            # temporal stage holds the last frame without copying it)
            arr.setflags(write=False)
            yield Frame(rgb=arr, index=index, time=t)

    def close(self) -> None:
        """Release the demuxer and decoder."""
        self._container.close()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# public entry points: input


FrameSource = Union[VideoSource, ImageSource]


def open_input(path):
    """Open the input for reading. Returns a context manager with ``.info`` (MediaInfo) that
    iterates :class:`~relight.types.Frame` objects. Raises InputError for any bad input."""
    p = _require_file(path, "input")
    if is_image_path(p):
        return ImageSource(p)
    return VideoSource(p)


def probe(path) -> MediaInfo:
    """What :func:`open_input` would report about ``path``, without reading all frames."""
    with open_input(path) as src:
        return src.info


# ----------------------------------------------------------------------------------------------
# mattes


class _StillMatte:
    """One matte image used for every frame."""

    def __init__(self, path: str):
        self.path = path
        self._matte = _read_matte_image(path)
        self._matte.setflags(write=False)
        self.size = (self._matte.shape[1], self._matte.shape[0])
        self.length: Optional[int] = None  # applies to any number of frames

    def get(self, index: int) -> np.ndarray:
        return self._matte

    def close(self) -> None:
        pass


class _SequenceMatte:
    """A numbered image sequence (``matte_%04d.png``), numbered from 0 or from 1."""

    def __init__(self, pattern: str):
        self.path = pattern
        self._pattern = pattern
        self._start = self._find_start()
        first = _read_matte_image(format_pattern(pattern, self._start))
        self.size = (first.shape[1], first.shape[0])
        self.length = self._count()

    def _find_start(self) -> int:
        for start in (0, 1):
            if os.path.isfile(format_pattern(self._pattern, start)):
                return start
        raise InputError(
            f"no matte image sequence found (looked for {os.path.basename(format_pattern(self._pattern, 0))}"
            f" and {os.path.basename(format_pattern(self._pattern, 1))})", self._pattern,
        )

    def _count(self) -> int:
        n = 0
        while os.path.isfile(format_pattern(self._pattern, self._start + n)):
            n += 1
        return n

    def get(self, index: int) -> np.ndarray:
        path = format_pattern(self._pattern, self._start + index)
        if not os.path.isfile(path):
            raise InputError(f"matte image for frame {index} is missing", path)
        matte = _read_matte_image(path)
        if (matte.shape[1], matte.shape[0]) != self.size:
            raise InputError(
                f"matte is {matte.shape[1]}x{matte.shape[0]} but the first matte image is "
                f"{self.size[0]}x{self.size[1]}", path,
            )
        return matte

    def close(self) -> None:
        pass


class _VideoMatte:
    """A matte video, decoded frame by frame in increasing index order."""

    def __init__(self, path: str):
        self.path = path
        self._open()
        self.size = (self._video.info.width, self._video.info.height)
        self.length = self._video.info.frame_count

    def _open(self) -> None:
        self._video = VideoSource(self.path, pix_fmt="gray")
        try:
            _check_grey(self._video._first.to_ndarray(format="rgb24"), self.path)
        except BaseException:
            self._video.close()
            raise
        self._frames = self._video.frames()
        self._index = -1
        self._raw: Optional[np.ndarray] = None
        self._current: Optional[np.ndarray] = None

    def get(self, index: int) -> np.ndarray:
        if index < self._index:  # not expected: restart from the beginning
            self._video.close()
            self._open()
        while self._index < index:
            item = next(self._frames, None)
            if item is None:
                raise InputError(f"matte video ended after {self._index + 1} frames; frame {index} was needed", self.path)
            self._index, _, self._raw = item
            self._current = None
        if self._current is None:
            self._current = _unit_float(self._raw)
        return self._current

    def close(self) -> None:
        self._video.close()


class MatteSource:
    """An external matte: ``get(index)`` -> float32 (H, W) in [0, 1], 1 = person.

    Frames must be requested in increasing index order (repeating an index is fine). The
    array returned for a single-image matte is shared and read-only."""

    def __init__(self, impl, info: MediaInfo):
        self._impl = impl
        self.path = impl.path
        self._check(info)

    def _check(self, info: MediaInfo) -> None:
        w, h = self._impl.size
        if (w, h) != (info.width, info.height):
            raise InputError(f"matte is {w}x{h} but the input is {info.width}x{info.height}", self.path)
        length = self._impl.length
        if info.is_video and length is not None and length < info.frame_count:
            raise InputError(f"matte has {length} frames but the input has {info.frame_count}", self.path)

    def get(self, index: int) -> np.ndarray:
        return self._impl.get(index)

    def close(self) -> None:
        self._impl.close()

    def __enter__(self) -> "MatteSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_matte(path, info: MediaInfo) -> MatteSource:
    """Open an external matte for an input described by ``info``.

    ``path`` is a video, a single image (used for every frame), or an image-sequence pattern
    such as ``matte_%04d.png`` (numbered from 0 or 1). The matte must have the input's size,
    and a matte video or sequence at least as many frames; otherwise InputError."""
    p = str(path)
    if has_pattern(p):
        impl = _SequenceMatte(p)
    elif is_image_path(_require_file(p, "matte")):
        impl = _StillMatte(p)
    else:
        impl = _VideoMatte(p)
    try:
        return MatteSource(impl, info)
    except BaseException:
        impl.close()
        raise


# ----------------------------------------------------------------------------------------------
# backgrounds


def cover_resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale ``img`` keeping its aspect ratio so that it covers width x height, then crop the
    centre. Returns a contiguous (height, width, C) array."""
    import cv2

    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    scale = max(width / w, height / h)
    nw, nh = max(width, int(np.ceil(w * scale - 1e-6))), max(height, int(np.ceil(h * scale - 1e-6)))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    resized = cv2.resize(img, (nw, nh), interpolation=interp)
    x0, y0 = (nw - width) // 2, (nh - height) // 2
    return np.ascontiguousarray(resized[y0:y0 + height, x0:x0 + width])


class BackgroundSource:
    """A background image or video scaled to cover the output frame.

    ``get(index)`` -> uint8 (H, W, 3) sRGB. A video loops when it is shorter than the input;
    video frames are matched to input frames one for one. A still background is returned as
    one shared read-only array."""

    def __init__(self, path: str, width: int, height: int):
        self.path = path
        self.size = (width, height)
        self._still: Optional[np.ndarray] = None
        self._video: Optional[VideoSource] = None
        if is_image_path(path):
            rgb = read_image_rgb(path)
            if rgb.dtype != np.uint8:
                rgb = linear_to_srgb8(rgb)
            self._still = cover_resize(rgb, width, height)
            self._still.setflags(write=False)
        else:
            self._restart()

    def _restart(self) -> None:
        if self._video is not None:
            self._video.close()
        self._video = VideoSource(self.path)
        self._frames = self._video.frames()
        self._next = 0  # input index that the next decoded frame serves
        self._raw: Optional[np.ndarray] = None
        self._current: Optional[np.ndarray] = None
        self._current_index = -1

    def get(self, index: int) -> np.ndarray:
        if self._still is not None:
            return self._still
        if index < self._current_index:
            self._restart()
        while self._current_index < index:
            item = next(self._frames, None)
            if item is None:  # loop: restart the decoder, keep counting input frames
                served = self._next
                self._restart()
                self._next = served
                item = next(self._frames, None)
                if item is None:
                    raise InputError("background video has no frames", self.path)
            self._current_index = self._next
            self._next += 1
            self._raw = item[2]
            self._current = None
        if self._current is None:
            self._current = cover_resize(self._raw, *self.size)
        return self._current

    def close(self) -> None:
        if self._video is not None:
            self._video.close()

    def __enter__(self) -> "BackgroundSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_background_media(path, width: int, height: int) -> BackgroundSource:
    """Open a user image or video to use as the background at width x height (cover fit)."""
    return BackgroundSource(_require_file(path, "background"), width, height)
