"""Encode stage: validate the output before any work, then write it safely.

* :func:`plan_output` checks the output path, format and options up front and returns an
  :class:`OutputSpec` (or raises UsageError / OutputError).
* :func:`open_output` returns a sink (a context manager) that writes frames to a hidden
  temporary file next to the target and renames it onto the target only when the context
  exits without an exception. On an error, Ctrl-C or SIGTERM (see
  :func:`install_signal_handlers`) the temporary output is removed; if the process is killed
  outright the target is still never a partial file.

Video keeps the input's size, frame timing (VFR included) and duration, and its audio
(copied when the container accepts the codec, else re-encoded to AAC, or Opus for WebM).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import signal
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

import numpy as np

from ..colour import linear_to_srgb8, srgb_to_linear
from ..errors import InputError, OutputError, UsageError
from ..io.exr import write_exr
from ..types import MediaInfo
from .decode import _short, format_pattern, has_pattern, pattern_regex

VIDEO_EXTENSIONS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".exr")
ALPHA_EXTENSIONS = (".mov", ".webm", ".png", ".exr")
SEQUENCE_START = 0  # number of the first file of an image sequence (= Frame.index)

# audio codecs that are copied without re-encoding, per container (None: ask FFmpeg)
_AUDIO_COPY = {
    ".mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"},
    ".mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s16be", "pcm_s24le",
             "pcm_s24be", "pcm_s32le", "pcm_f32le", "pcm_f32be"},
    ".webm": {"opus", "vorbis"},
    ".mkv": None,
}
_JPEG_QUALITY = 95


@dataclass(frozen=True)
class OutputSpec:
    """A validated output: where and how to write."""

    path: str  # absolute path of the target file, or of the sequence pattern
    kind: str  # "video", "image" (one still) or "sequence" (numbered images)
    ext: str  # lower-case extension with the dot: ".mp4", ".png", ".exr", ...
    alpha: bool = False  # write a transparent background
    overwrite: bool = False

    @property
    def linear(self) -> bool:
        """True when frames are written as scene-linear float (EXR)."""
        return self.ext == ".exr"

    @property
    def directory(self) -> str:
        return os.path.dirname(self.path)


# ----------------------------------------------------------------------------------------------
# validation


def plan_output(output, inputs: list, info: MediaInfo, alpha: bool, overwrite: bool) -> OutputSpec:
    """Check everything about the output before any work is done.

    ``inputs`` are all the files read (input, matte, background, HDRI...; None entries are
    skipped). Raises UsageError for a bad format / option combination and OutputError for a
    path that cannot or must not be written."""
    path = os.path.abspath(os.path.expanduser(str(output)))
    name = os.path.basename(path)
    ext = os.path.splitext(name)[1].lower()
    kind = _output_kind(str(output), name, ext, info)
    if alpha and ext not in ALPHA_EXTENSIONS:
        raise UsageError(
            f"a transparent background (--alpha) cannot be stored in {ext}; "
            "use .mov (ProRes 4444), .webm (VP9), .png or .exr", output)
    spec = OutputSpec(path=path, kind=kind, ext=ext, alpha=bool(alpha), overwrite=bool(overwrite))
    _check_not_an_input(spec, [str(p) for p in inputs if p])
    _check_directory(spec)
    _check_existing(spec)
    return spec


def _output_kind(output: str, name: str, ext: str, info: MediaInfo) -> str:
    """'video', 'image' or 'sequence' from the extension and the input; UsageError if invalid."""
    known = ", ".join(list(VIDEO_EXTENSIONS) + list(IMAGE_EXTENSIONS))
    if ext not in VIDEO_EXTENSIONS and ext not in IMAGE_EXTENSIONS:
        raise UsageError(f"unsupported output format '{ext or name}' (use one of {known})", output)
    if has_pattern(os.path.dirname(output)):
        raise UsageError("the %04d frame-number placeholder must be in the file name", output)
    pattern = has_pattern(name)
    if ext in VIDEO_EXTENSIONS:
        if pattern:
            raise UsageError("a %04d pattern is for image sequences (.png, .jpg, .exr), not video", output)
        if not info.is_video:
            raise UsageError("the input is a still image; write .png, .jpg or .exr", output)
        return "video"
    if pattern:
        return "sequence"
    if info.is_video:
        raise UsageError(
            f"the input is a video: write a video ({', '.join(VIDEO_EXTENSIONS)}) or an image "
            f"sequence with a %04d pattern, e.g. frame_%04d{ext}", output)
    return "image"


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_not_an_input(spec: OutputSpec, inputs: list) -> None:
    """OutputError when the output would overwrite (or a sequence would include) an input."""
    out_dir = os.path.realpath(spec.directory)
    for inp in inputs:
        clash = False
        if has_pattern(inp):  # an input sequence: does the output name fall into it?
            same_dir = os.path.realpath(os.path.dirname(os.path.abspath(inp))) == out_dir
            if spec.kind == "sequence":
                clash = same_dir and os.path.basename(inp) == os.path.basename(spec.path)
            else:
                clash = same_dir and bool(pattern_regex(inp).fullmatch(os.path.basename(spec.path)))
        elif spec.kind == "sequence":
            real = os.path.realpath(inp)
            clash = os.path.dirname(real) == out_dir and bool(
                pattern_regex(spec.path).fullmatch(os.path.basename(real)))
        else:
            clash = _same_file(inp, spec.path)
        if clash:
            raise OutputError(f"refusing to overwrite an input ({inp})", spec.path)


def _check_directory(spec: OutputSpec) -> None:
    """OutputError unless the output directory exists and we can create files in it."""
    directory = spec.directory
    if not os.path.exists(directory):
        raise OutputError(f"output directory does not exist: {directory}", spec.path)
    if not os.path.isdir(directory):
        raise OutputError(f"not a directory: {directory}", spec.path)
    probe = os.path.join(directory, f".relight-write-test-{secrets.token_hex(4)}")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise OutputError(f"cannot write in directory {directory} ({exc.strerror})", spec.path) from None
    os.close(fd)
    os.unlink(probe)


def _existing_sequence_files(pattern: str) -> list:
    regex = pattern_regex(pattern)
    directory = os.path.dirname(pattern)
    return sorted(n for n in os.listdir(directory) if regex.fullmatch(n))


def _check_existing(spec: OutputSpec) -> None:
    """OutputError when the output exists and --overwrite was not given (or it is a folder)."""
    if spec.kind == "sequence":
        existing = _existing_sequence_files(spec.path)
        if existing and not spec.overwrite:
            raise OutputError(
                f"{len(existing)} files of this sequence exist (e.g. {existing[0]}); pass --overwrite", spec.path)
        return
    if os.path.isdir(spec.path):
        raise OutputError("exists and is a directory", spec.path)
    if os.path.lexists(spec.path) and not spec.overwrite:
        raise OutputError("exists; pass --overwrite", spec.path)


# ----------------------------------------------------------------------------------------------
# temporary files and signals


_TEMP_MARK = ".relight-tmp-"


def _temp_name(target: str, suffix: str = "") -> str:
    """A hidden name next to ``target``: ``.name.relight-tmp-PID-XXXXXXXX.ext`` (the process id
    lets a later run recognise, and remove, what a killed run left behind)."""
    directory, name = os.path.split(target)
    stem, ext = os.path.splitext(name)
    stem = stem.replace("%", "")
    return os.path.join(directory, f".{stem}{_TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{suffix or ext}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process (or cannot tell): leave its files alone
    return True


def remove_stale_temp_files(target: str) -> int:
    """Remove the temporary files and folders that runs killed outright (SIGKILL, power loss)
    left next to ``target``: only names of the form ``.STEM.relight-tmp-PID-XXXXXXXX.EXT`` whose
    process is gone. Returns how many were removed."""
    directory, name = os.path.split(target)
    stem, ext = os.path.splitext(name)
    stem = stem.replace("%", "")
    pattern = re.compile(re.escape(f".{stem}{_TEMP_MARK}") + r"(\d+)-[0-9a-f]{8}(?:" + re.escape(ext) + r"|\.d)")
    removed = 0
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return 0
    for entry in names:
        m = pattern.fullmatch(entry)
        if m and not _pid_alive(int(m.group(1))):
            _remove_quietly(os.path.join(directory, entry))
            removed += 1
    return removed


def _reserve_temp_file(target: str) -> str:
    """Create an empty hidden temporary file next to ``target`` (same extension) and return it."""
    remove_stale_temp_files(target)
    for _ in range(100):
        path = _temp_name(target)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot create a temporary file ({exc.strerror})", target) from None
        os.close(fd)
        return path
    raise OutputError("cannot create a temporary file", target)


def _remove_quietly(path: Optional[str]) -> None:
    if not path:
        return
    try:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT/SIGTERM/SIGHUP until the block ends, so that a many-step commit is not cut in
    the middle; a signal that arrived meanwhile is acted on afterwards (its handler runs then).

    The Python-level handlers are swapped (masking the signal would not do: the kernel delivers
    it to whichever thread does not block it, e.g. a decoder's). Main thread only; elsewhere
    a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list = []

    def hold(signum, _frame):
        pending.append(signum)

    old = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            old[sig] = signal.signal(sig, hold)
        except (ValueError, OSError):
            pass
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if pending:
            signum = pending[0]
            handler = old.get(signum)
            if callable(handler):
                handler(signum, None)  # e.g. KeyboardInterrupt, now that the commit is complete
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


def install_signal_handlers() -> None:
    """Turn SIGTERM (and SIGHUP) into KeyboardInterrupt so that output contexts clean up.

    Call once from the main thread (the CLI does)."""
    def interrupt(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:
                signal.signal(sig, interrupt)
            except ValueError:  # not the main thread (embedded use): leave signals alone
                return


# ----------------------------------------------------------------------------------------------
# pixel helpers


def _as_srgb8(rgb: np.ndarray) -> np.ndarray:
    """uint8 passes through; float is taken as scene-linear and encoded to sRGB."""
    return rgb if rgb.dtype == np.uint8 else linear_to_srgb8(rgb)


def _as_linear(rgb: np.ndarray) -> np.ndarray:
    """float passes through as linear; uint8 is taken as sRGB and linearised."""
    return rgb.astype(np.float32, copy=False) if rgb.dtype != np.uint8 else srgb_to_linear(rgb)


def _alpha8(alpha: np.ndarray) -> np.ndarray:
    import cv2

    if alpha.dtype == np.uint8:
        return alpha
    return cv2.convertScaleAbs(alpha.astype(np.float32, copy=False), alpha=255.0)


def _check_shape(rgb: np.ndarray, alpha, width: int, height: int) -> None:
    if rgb.shape != (height, width, 3):
        raise ValueError(f"frame must be ({height}, {width}, 3), got {rgb.shape}")
    if alpha is not None and alpha.shape[:2] != (height, width):
        raise ValueError(f"alpha must be ({height}, {width}), got {alpha.shape}")


def _write_image_file(path: str, ext: str, rgb: np.ndarray, alpha: Optional[np.ndarray]) -> None:
    """Write one PNG/JPEG (straight alpha) or EXR (premultiplied alpha, half float)."""
    import cv2

    if ext == ".exr":
        lin = _as_linear(rgb)
        if alpha is not None:
            a = alpha.astype(np.float32, copy=False)
            lin = np.concatenate([lin * a[..., None], a[..., None]], axis=2)
        write_exr(path, lin, half=True)
        return
    rgb8 = _as_srgb8(rgb)
    if alpha is not None:
        img = cv2.merge([rgb8[..., 2], rgb8[..., 1], rgb8[..., 0], _alpha8(alpha)])
    else:
        img = cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise OutputError(f"could not encode {ext} image", path)
    with open(path, "wb") as f:  # (ndarray.tofile loses the errno of a failed write, e.g. ENOSPC)
        f.write(memoryview(buf))


# ----------------------------------------------------------------------------------------------
# sinks


class _Sink:
    """Common context-manager behaviour: commit on success, abort on any exception."""

    def __init__(self, spec: OutputSpec, info: MediaInfo):
        self.spec = spec
        self.path = spec.path
        self.width, self.height = info.width, info.height
        self.frames_written = 0
        self._done = False

    def write(self, rgb: np.ndarray, alpha: Optional[np.ndarray] = None, time: Optional[float] = None) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Write everything out and move the result onto the target (subclasses)."""
        raise NotImplementedError

    def _discard(self) -> None:
        """Drop all temporary output (subclasses); must not raise."""
        raise NotImplementedError

    def commit(self) -> None:
        """Finish the output and put it in place atomically. Idempotent."""
        if self._done:
            return
        self._done = True
        try:
            if self.frames_written == 0:
                raise OutputError("no frames were written", self.path)
            self._finish()
        except BaseException:
            self._discard()
            raise

    def abort(self) -> None:
        """Throw the output away; the target is left as it was. Idempotent."""
        if not self._done:
            self._done = True
            self._discard()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class ImageSink(_Sink):
    """One still image (.png, .jpg, .exr)."""

    def __init__(self, spec: OutputSpec, info: MediaInfo):
        super().__init__(spec, info)
        self._tmp = _reserve_temp_file(spec.path)

    def write(self, rgb, alpha=None, time=None) -> None:
        """Write the image: uint8 sRGB or float32 linear (H, W, 3), optional alpha (H, W)."""
        if self.frames_written:
            raise ValueError("a still-image output takes exactly one frame")
        _check_shape(rgb, alpha, self.width, self.height)
        _write_with_errors(self._tmp, self.spec.ext, rgb, alpha if self.spec.alpha else None, self.path)
        self.frames_written = 1

    def _finish(self) -> None:
        _replace(self._tmp, self.path)

    def _discard(self) -> None:
        _remove_quietly(self._tmp)


class SequenceSink(_Sink):
    """Numbered images (``name_%04d.png``), written into a hidden folder, moved in at commit."""

    def __init__(self, spec: OutputSpec, info: MediaInfo):
        super().__init__(spec, info)
        remove_stale_temp_files(spec.path)
        self._tmpdir = _temp_name(spec.path, suffix=".d")
        try:
            os.mkdir(self._tmpdir)
        except OSError as exc:
            raise OutputError(f"cannot create a temporary folder ({exc.strerror})", self.path) from None

    def _name(self, i: int) -> str:
        return os.path.basename(format_pattern(self.spec.path, SEQUENCE_START + i))

    def write(self, rgb, alpha=None, time=None) -> None:
        """Write the next frame (numbered from SEQUENCE_START)."""
        _check_shape(rgb, alpha, self.width, self.height)
        _write_with_errors(os.path.join(self._tmpdir, self._name(self.frames_written)), self.spec.ext,
                           rgb, alpha if self.spec.alpha else None, self.path)
        self.frames_written += 1

    def _finish(self) -> None:
        directory = self.spec.directory
        n = self.frames_written
        with _signals_deferred():  # moving many files in: Ctrl-C must not leave half a sequence
            if self.spec.overwrite:  # remove stale frames of an earlier, longer run
                for old in _existing_sequence_files(self.spec.path):
                    if not os.path.exists(os.path.join(self._tmpdir, old)):
                        _remove_quietly(os.path.join(directory, old))
            for i in range(n):
                name = self._name(i)
                _replace(os.path.join(self._tmpdir, name), os.path.join(directory, name))
            _remove_quietly(self._tmpdir)

    def _discard(self) -> None:
        _remove_quietly(self._tmpdir)


def _write_failed(exc: BaseException, target: str, what: str = "writing the output failed") -> OutputError:
    """An OutputError for a failed write, saying plainly when the disk is full."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exc):
        return OutputError(f"{what}: the disk is full (no space left on device); free some space and "
                           "run again (nothing was written)", target)
    if code == errno.EROFS:
        return OutputError(f"{what}: read-only file system", target)
    reason = getattr(exc, "strerror", None) or _short(exc)
    return OutputError(f"{what} ({reason})", target)


def _write_with_errors(path, ext, rgb, alpha, target) -> None:
    try:
        _write_image_file(path, ext, rgb, alpha)
    except OSError as exc:
        raise _write_failed(exc, target) from None


def _replace(src: str, dst: str) -> None:
    try:
        os.replace(src, dst)
    except OSError as exc:
        raise OutputError(f"cannot move the finished output into place ({exc.strerror})", dst) from None


# ----------------------------------------------------------------------------------------------
# video


def _default_codec(ext: str, alpha: bool) -> str:
    if ext == ".webm":
        return "libvpx-vp9"
    if ext == ".mov" and alpha:
        return "prores_ks"
    return "libx264"


def _pixel_format(codec: str, alpha: bool, width: int, height: int) -> str:
    """The encoder pixel format. H.264/H.265 4:2:0 cannot code odd sizes: those use 4:4:4."""
    import av

    if alpha:
        fixed = {"prores_ks": "yuva444p10le", "libvpx-vp9": "yuva420p", "libvpx": "yuva420p"}
        if codec in fixed:
            return fixed[codec]
        formats = [f.name for f in (av.codec.Codec(codec, "w").video_formats or [])]
        with_alpha = [f for f in formats if f.startswith(("yuva", "rgba", "bgra", "argb", "gbrap"))]
        if not with_alpha:
            raise UsageError(f"video encoder {codec} cannot store a transparent background")
        return with_alpha[0]
    if codec in ("libx264", "libx265"):
        return "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    if codec == "prores_ks":
        return "yuv422p10le"
    formats = [f.name for f in (av.codec.Codec(codec, "w").video_formats or [])]
    return "yuv420p" if not formats or "yuv420p" in formats else formats[0]


def _encoder_options(codec: str, crf: int, preset: str, alpha: bool) -> dict:
    if codec == "libx264":
        return {"crf": str(crf), "preset": preset}
    if codec == "libx265":
        return {"crf": str(crf), "preset": preset, "x265-params": "log-level=error"}
    if codec in ("libvpx-vp9", "libvpx"):
        return {"crf": str(crf), "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
    if codec == "prores_ks":
        return {"profile": "4444" if alpha else "hq", "vendor": "apl0"}
    return {}


def _frame_rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(30)


class _AudioTrack:
    """The input's first audio stream, copied (or re-encoded) into the output, interleaved."""

    def __init__(self, source: str, out, ext: str):
        import av

        try:
            self._in = av.open(source, metadata_errors="ignore")
        except (av.FFmpegError, OSError) as exc:
            raise InputError(f"cannot read audio ({_short(exc)})", source) from None
        self._source = source
        self._out = out
        self._src = self._in.streams.audio[0]
        name = self._src.codec_context.name
        allowed = _AUDIO_COPY.get(ext)
        if allowed is None:
            allowed = out.supported_codecs
        self._copy = name in allowed
        if self._copy:
            self._dst = out.add_stream_from_template(self._src)
        else:
            self._dst = self._add_encoder(ext)
        self._packets = self._in.demux(self._src)
        self._drop_priming = ext in (".mkv", ".webm")
        self._held = None  # next packet, not yet due
        self._ended = False
        self.skipped = 0  # damaged audio packets left out
        self.broke_off: Optional[str] = None  # why the audio stopped early, if it did

    def problems(self) -> Optional[str]:
        """One line on audio damage survived (None when there was none)."""
        parts = []
        if self.skipped:
            parts.append(f"{self.skipped} damaged audio packet{'s' if self.skipped != 1 else ''} left out")
        if self.broke_off:
            parts.append(self.broke_off)
        return "; ".join(parts) if parts else None

    def _add_encoder(self, ext: str):
        ctx = self._src.codec_context
        if ext == ".webm":
            codec, rate = "libopus", 48000
        else:
            codec = "aac"
            rate = ctx.sample_rate if ctx.sample_rate in (
                8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000) else 48000
        stream = self._out.add_stream(codec, rate=rate)
        channels = ctx.channels or 2
        stream.layout = ctx.layout.name if 0 < channels <= (8 if ext != ".webm" else 2) else "stereo"
        return stream

    def _next_packet(self):
        import av

        while True:
            try:
                packet = next(self._packets)
            except StopIteration:
                return None
            except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:  # damaged container: stop the audio here
                self.broke_off = f"the audio is damaged and stops early ({_short(exc)})"
                return None
            if packet.dts is not None or packet.size:
                return packet

    def _emit(self, packet) -> None:
        if self._copy and self._drop_priming and packet.pts is not None and packet.pts + (packet.duration or 0) <= 0:
            return  # encoder priming before t=0: Matroska would shift every stream to fit it
        try:
            if self._copy:
                packet.stream = self._dst
                self._out.mux(packet)
                return
            frames = packet.decode()
        except ValueError:  # damaged packet (bad data or timestamps): leave it out, keep going
            self.skipped += 1
            return
        for frame in frames:
            try:
                encoded = self._dst.encode(frame)
            except ValueError:
                self.skipped += 1
                continue
            self._out.mux(encoded)

    def pump(self, until: Optional[float]) -> None:
        """Mux audio packets that start before ``until`` seconds (None: all that are left)."""
        while not self._ended:
            packet = self._held or self._next_packet()
            self._held = None
            if packet is None:
                self._ended = True
                break
            if until is not None and packet.pts is not None and float(packet.pts * packet.time_base) > until:
                self._held = packet
                break
            self._emit(packet)

    def finish(self) -> None:
        """Mux the rest of the audio and flush a re-encoder."""
        self.pump(None)
        if not self._copy:
            for frame in self._src.decode(None):
                self._out.mux(self._dst.encode(frame))
            self._out.mux(self._dst.encode(None))

    def close(self) -> None:
        self._in.close()


class VideoSink(_Sink):
    """A video file encoded with PyAV: the input's size, frame times, duration and audio."""

    def __init__(self, spec: OutputSpec, info: MediaInfo, codec: Optional[str], crf: int, preset: str,
                 audio_from: Optional[str], threads: int = 0):
        super().__init__(spec, info)
        self._fps = info.fps
        self._threads = int(threads)
        self._tmp = _reserve_temp_file(spec.path)
        self._container = None
        self._audio: Optional[_AudioTrack] = None
        self.audio_problems: Optional[str] = None  # damage to the input's audio that was survived
        try:
            self._open(codec, crf, preset, audio_from)
        except BaseException:
            self._discard()
            raise

    # -- setup

    def _open(self, codec, crf, preset, audio_from) -> None:
        import av
        from av.video.reformatter import VideoReformatter

        fmt = VIDEO_EXTENSIONS[self.spec.ext]
        options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
        try:
            self._container = av.open(self._tmp, "w", format=fmt, container_options=options)
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"cannot create the output ({_short(exc)})", self.path) from None
        self._stream = self._add_video_stream(codec, crf, preset)
        self._reformatter = VideoReformatter()
        self._tb = self._stream.codec_context.time_base
        self._mov = fmt in ("mp4", "mov")
        if audio_from and self._has_audio(audio_from):
            self._audio = _AudioTrack(audio_from, self._container, self.spec.ext)
        self._pending = None  # the last frame, held until the next one gives its duration
        self._last_pts: Optional[int] = None
        self._last_duration: Optional[int] = None
        self._durations: dict = {}  # pts -> duration, to fix up the encoder's packets
        self._first_packet: Optional[tuple] = None  # (pts, dts) of the first packet
        self._held_packet = None  # the newest packet, muxed once the next one arrives

    @staticmethod
    def _has_audio(path: str) -> bool:
        import av

        try:
            with av.open(path, metadata_errors="ignore") as c:
                return bool(c.streams.audio)
        except (av.FFmpegError, OSError):
            return False

    def _add_video_stream(self, codec: Optional[str], crf: int, preset: str):
        import av

        name = codec or _default_codec(self.spec.ext, self.spec.alpha)
        try:
            av.codec.Codec(name, "w")
        except Exception:
            raise UsageError(f"unknown video encoder '{name}'") from None
        if name not in self._container.supported_codecs:
            raise UsageError(f"{self.spec.ext} files cannot hold {name} video")
        pix_fmt = _pixel_format(name, self.spec.alpha, self.width, self.height)
        rate = _frame_rate(self._fps)
        stream = self._container.add_stream(name, rate=rate, options=_encoder_options(name, crf, preset, self.spec.alpha))
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, pix_fmt
        tb = Fraction(1, 90000) if self.spec.ext in (".mp4", ".mov") else Fraction(1, 1000)
        ctx = stream.codec_context
        ctx.time_base = tb
        stream.time_base = tb
        ctx.thread_count = max(0, self._threads)  # 0: the encoder's own choice
        ctx.color_range = 1  # limited ("tv")
        ctx.colorspace = 1  # BT.709
        ctx.color_primaries = 1
        ctx.color_trc = 1
        if name == "libx265" and self.spec.ext in (".mp4", ".mov"):
            stream.codec_tag = "hvc1"  # playable by Apple players
        try:
            ctx.open()  # now, so that bad settings fail before any work
        except (av.FFmpegError, ValueError) as exc:
            raise UsageError(
                f"the {name} encoder rejected its settings (crf {crf}, preset '{preset}'): {_short(exc)}") from None
        return stream

    # -- writing

    def write(self, rgb, alpha=None, time=None) -> None:
        """Encode one frame: uint8 sRGB (H, W, 3) (float is taken as linear), optional alpha
        (H, W) float in [0, 1], and its presentation time in seconds (default: index / fps)."""
        import av

        _check_shape(rgb, alpha, self.width, self.height)
        frame = self._make_frame(rgb, alpha if self.spec.alpha else None)
        frame.pts = self._next_pts(time)
        frame.time_base = self._tb
        try:
            if self._pending is not None:
                self._encode_pending(frame.pts - self._pending.pts)
        except (av.FFmpegError, OSError) as exc:
            raise _write_failed(exc, self.path, "video encoding failed") from None
        self._pending = frame
        self.frames_written += 1

    def _make_frame(self, rgb, alpha):
        import av

        rgb8 = np.ascontiguousarray(_as_srgb8(rgb))
        if alpha is None:
            array, fmt = rgb8, "rgb24"
        else:
            import cv2

            array, fmt = cv2.merge([rgb8[..., 0], rgb8[..., 1], rgb8[..., 2], _alpha8(alpha)]), "rgba"
        if self._stream.pix_fmt == fmt:  # no conversion: the frame must own its pixels
            return av.VideoFrame.from_ndarray(array, format=fmt)
        frame = av.VideoFrame.from_numpy_buffer(array, format=fmt)  # no copy; swscale reads it
        return self._reformatter.reformat(
            frame, format=self._stream.pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")

    def _next_pts(self, time: Optional[float]) -> int:
        step = max(1, round(1 / (float(self._tb) * (self._fps or 30.0))))
        if time is None:
            pts = 0 if self._last_pts is None else self._last_pts + step
        else:
            pts = round(time / self._tb)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # timestamps must increase strictly
        self._last_pts = pts
        return pts

    def _encode_pending(self, duration: int) -> None:
        frame, self._pending = self._pending, None
        frame.duration = duration
        self._last_duration = duration
        self._durations[frame.pts] = duration
        self._mux_video(self._stream.encode(frame))

    def _mux_video(self, packets) -> None:
        """Mux encoder packets, one behind, with durations taken from the frames."""
        for packet in packets:
            if packet.pts is not None:
                packet.duration = self._durations.pop(packet.pts, packet.duration)
            if self._first_packet is None:
                self._first_packet = (packet.pts, packet.dts)
            if self._held_packet is not None:
                self._container.mux(self._held_packet)
            self._held_packet = packet
            if self._audio is not None and packet.dts is not None:
                self._audio.pump(float(packet.dts * packet.time_base) + 0.5)

    def _flush_video(self) -> None:
        """Encode the last frame, drain the encoder and mux the final packet with a duration
        that makes the file end where the last frame ends."""
        if self._pending is not None:
            step = max(1, round(1 / (float(self._tb) * (self._fps or 30.0))))
            self._encode_pending(self._last_duration or step)
        end = self._last_pts + (self._last_duration or 1)
        self._mux_video(self._stream.encode(None))
        last = self._held_packet
        if last is None:
            return
        if self._mov and last.dts is not None and self._first_packet[1] is not None:
            # MP4/MOV: the track lasts from the first dts to last dts + duration, and the edit
            # list removes the B-frame delay (first pts - first dts)
            delay = self._first_packet[0] - self._first_packet[1]
            last.duration = max(1, end - last.dts - delay)
        self._held_packet = None
        self._container.mux(last)

    def _finish(self) -> None:
        import av

        try:
            self._flush_video()
            if self._audio is not None:
                self._audio.finish()
                self.audio_problems = self._audio.problems()
                self._audio.close()
                self._audio = None
            self._container.close()
            self._container = None
        except (av.FFmpegError, OSError) as exc:
            raise _write_failed(exc, self.path, "writing the video failed") from None
        try:
            size = os.path.getsize(self._tmp)
        except OSError:
            size = 0
        if size == 0:  # never put an empty file in place of the target
            raise OutputError("writing the video failed (the file came out empty)", self.path)
        _replace(self._tmp, self.path)

    def _discard(self) -> None:
        for closable in (self._audio, self._container):
            if closable is not None:
                try:
                    closable.close()
                except Exception:
                    pass
        self._audio = self._container = None
        _remove_quietly(self._tmp)


# ----------------------------------------------------------------------------------------------
# entry point


def open_output(spec: OutputSpec, info: MediaInfo, *, codec: Optional[str] = None, crf: int = 18,
                preset: str = "veryfast", audio_from: Optional[str] = None, threads: int = 0):
    """Open a sink for ``spec`` (from :func:`plan_output`). Use it as a context manager::

        with open_output(spec, info, audio_from=info.path) as sink:
            for frame in frames:
                sink.write(rgb, alpha, time=frame.time)

    ``write(rgb, alpha=None, time=None)``: ``rgb`` is uint8 sRGB (H, W, 3) for video/PNG/JPEG
    or float32 linear for EXR (the other dtype is converted); ``alpha`` (H, W) float [0, 1]
    is straight (un-premultiplied) and used only when ``spec.alpha``; EXR stores it
    premultiplied, as that format expects. ``time`` is the frame's presentation time in
    seconds (video only; default index / fps). The file appears at ``spec.path`` only when
    the ``with`` block ends without an exception. ``threads``: the video encoder's threads (0:
    its own choice; 1 where the caller's other threads already keep every core busy: x264's
    frame threads then only add work, about 10% of its CPU time at 720p)."""
    if spec.kind == "video":
        return VideoSink(spec, info, codec, crf, preset, audio_from, threads)
    if spec.kind == "sequence":
        return SequenceSink(spec, info)
    return ImageSink(spec, info)
