"""Read and write OpenEXR files with the ``OpenEXR`` package (OpenCV's wheels lack EXR).

* :func:`read_exr`: a whole image (inputs, mattes), refused above :data:`MAX_IMAGE_PIXELS`.
* :func:`iter_exr_bands`: a band of scanlines at a time (HDRIs of any size, memory bounded).
* :func:`write_exr`: a half or float scanline file.

The OpenEXR C library prints its own errors to stderr; every call here captures them (see
:func:`captured_stderr`) and turns them into one :class:`~relight.errors.InputError` line.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator, List, Tuple

import numpy as np

from ..errors import InputError

MAX_IMAGE_PIXELS = 1 << 26  # whole-image reads (64 Mpixel, 1 GiB as float32 RGBA)
MAX_BANDED_PIXELS = 1 << 29  # banded reads (HDRIs): 32768x16384
BAND_BYTES = 16 << 20  # about this much float32 per band
MAX_SIDE = 1 << 17
MAX_TILE = 8192  # real files use 16..1024; a huge tile size makes OpenEXR allocate without bound
_limits_set = False


def _set_library_limits() -> None:
    """Make OpenEXR itself refuse absurd image and tile sizes while reading a header (a fuzzed
    file with 8 x 150994952 tiles made it allocate 23 GB). Process-wide; done once."""
    global _limits_set
    if _limits_set:
        return
    import OpenEXR

    for name, args in (("setMaxImageSize", (MAX_SIDE, MAX_SIDE)), ("setMaxTileSize", (MAX_TILE, MAX_TILE))):
        setter = getattr(OpenEXR, name, None)
        if setter is not None:
            try:
                setter(*args)
            except Exception:
                pass
    _limits_set = True


@contextlib.contextmanager
def captured_stderr():
    """Redirect file descriptors 2 and 1 (where C/C++ libraries print: OpenEXR writes errors to
    stderr and some warnings to stdout) to a temporary file for the duration of the block;
    yields a list that receives the first line of the captured text, if any."""
    lines: List[str] = []
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    saved = {}
    with tempfile.TemporaryFile() as tmp:
        for fd in (2, 1):
            try:
                saved[fd] = os.dup(fd)
                os.dup2(tmp.fileno(), fd)
            except OSError:  # no such descriptor: nothing to capture there
                saved.pop(fd, None)
        try:
            yield lines
        finally:
            for fd, old in saved.items():
                os.dup2(old, fd)
                os.close(old)
            tmp.seek(0)
            text = tmp.read(4096).decode("utf-8", "replace").strip()
            if text:
                lines.append(text.splitlines()[0])


def _reason(exc: BaseException, noise: List[str]) -> str:
    """A short reason for a failed read: the library's own first line when it printed one."""
    text = noise[0] if noise else (str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    text = re.sub(r" ?'/[^']*'", "", text)  # the file's name: the message names it already
    if ": (" in text:  # "/path/file.exr: (EXR_ERR_...) message" -> "message"
        text = text.split(": (", 1)[1]
        text = text.split(") ", 1)[1] if ") " in text else text
    return text[:160]


def _header_size(path) -> Tuple[int, int]:
    """(width, height) of the data window, from the header only."""
    import OpenEXR

    _set_library_limits()
    noise: List[str] = []
    try:
        with captured_stderr() as noise, OpenEXR.File(str(path), header_only=True) as f:
            lo, hi = f.header()["dataWindow"]
            lo, hi = (int(lo[0]), int(lo[1])), (int(hi[0]), int(hi[1]))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"not a readable OpenEXR file ({_reason(exc, noise)})", path) from None
    return int(hi[0]) - int(lo[0]) + 1, int(hi[1]) - int(lo[1]) + 1


def _check_size(w: int, h: int, limit: int, path) -> None:
    if w <= 0 or h <= 0:
        raise InputError(f"OpenEXR file has an empty data window ({w}x{h})", path)
    if w * h > limit or w > MAX_SIDE or h > MAX_SIDE:
        raise InputError(f"OpenEXR image is too large ({w}x{h}; at most {limit / 1e6:.1f} Mpixels): "
                         "downscale it first", path)


def read_exr(path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an EXR's colour channels -> float32 (H, W, C) with C = 3 (RGB), 4 (RGBA) or 1 (Y).

    Raises :class:`InputError` naming the file if it cannot be read or has more than
    ``max_pixels`` pixels (checked from the header, before reading)."""
    import OpenEXR

    _check_size(*_header_size(path), max_pixels, path)
    noise: List[str] = []
    try:
        with captured_stderr() as noise, OpenEXR.File(str(path), separate_channels=False) as f:
            channels = {k: np.array(v.pixels, dtype=np.float32) for k, v in f.channels().items()}
    except Exception as exc:  # OpenEXR raises RuntimeError/OSError/ValueError with long messages
        raise InputError(f"not a readable OpenEXR file ({_reason(exc, noise)})", path) from None
    for name in ("RGBA", "RGB"):
        if name in channels and channels[name].ndim == 3:
            return channels[name]
    # separate channels: pick R, G, B (any layer prefix), else Y, else the first channel
    by_suffix = {}
    for key, ch in channels.items():
        by_suffix.setdefault(key.split(".")[-1].upper(), ch)
    if all(c in by_suffix for c in "RGB"):
        planes = [by_suffix[c] for c in "RGB"] + ([by_suffix["A"]] if "A" in by_suffix else [])
        if len({p.shape for p in planes}) != 1 or planes[0].ndim != 2:
            raise InputError("OpenEXR colour channels have different sizes (subsampled?)", path)
        return np.stack(planes, axis=-1)
    for key in ("Y", "L"):
        if key in by_suffix and by_suffix[key].ndim == 2:
            return by_suffix[key][..., None]
    if channels:
        first = next(iter(channels.values()))
        if first.ndim == 3:
            return first
        if first.ndim == 2:
            return first[..., None]
    raise InputError("OpenEXR file has no image channels", path)


def _pick_colour_channels(channels: dict) -> List[str]:
    """R, G, B (unprefixed first, else any layer), else Y/L, else the first channel by name."""
    names = sorted(channels)
    by_suffix: dict = {}
    for name in sorted(names, key=lambda n: ("." in n, n)):  # "R" before "layer.R"
        by_suffix.setdefault(name.split(".")[-1].upper(), name)
    if all(c in by_suffix for c in "RGB"):
        return [by_suffix[c] for c in "RGB"]
    for key in ("Y", "L"):
        if key in by_suffix:
            return [by_suffix[key]]
    return names[:1]


def iter_exr_bands(path, band_bytes: int = BAND_BYTES) -> Tuple[int, int, int, Iterator[Tuple[int, np.ndarray]]]:
    """Open an EXR for banded reading: returns ``(width, height, channels, bands)`` where
    ``bands`` yields ``(y0, float32 (rows, width, channels))`` top to bottom, ``channels`` being
    3 (RGB) or 1 (grey); alpha and other channels are skipped. Memory stays around
    ``band_bytes`` whatever the image size. Raises InputError naming the file.

    Uses OpenEXR's scanline-range reads (``InputFile.channels``); where this OpenEXR build lacks
    them, falls back to reading the whole image (still refused above MAX_IMAGE_PIXELS)."""
    import OpenEXR

    _set_library_limits()
    try:
        import Imath  # shipped with the OpenEXR wheel, for the (deprecated) scanline API
        InputFile = OpenEXR.InputFile
    except (ImportError, AttributeError):
        return _whole_as_bands(path)

    # the header through the current API (the legacy InputFile.header() crashes on some
    # malformed attributes); the legacy API only for what the current one lacks: range reads
    noise: List[str] = []
    try:
        with captured_stderr() as noise, OpenEXR.File(str(path), header_only=True) as hf:
            header = hf.header()  # a view: read it before the file closes
            (x0, y0), (x1, y1) = [(int(v[0]), int(v[1])) for v in header["dataWindow"]]
            channels = {str(c.name): (int(c.xSampling), int(c.ySampling)) for c in header.get("channels", [])}
            tiles = header.get("tiles")
            tile_cols = int(getattr(tiles, "xSize", 0) or 0) if tiles is not None else 0
            tile_rows = int(getattr(tiles, "ySize", 0) or 0) if tiles is not None else 0
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"not a readable OpenEXR file ({_reason(exc, noise)})", path) from None
    w, h = x1 - x0 + 1, y1 - y0 + 1
    _check_size(w, h, MAX_BANDED_PIXELS, path)
    # reading tiles a band at a time buffers whole rows of tiles: keep that bounded
    if tiles is not None and not (0 < tile_cols <= MAX_TILE and 0 < tile_rows <= MAX_TILE
                                  and tile_rows * w * 16 <= 1 << 30):
        raise InputError(f"corrupt OpenEXR file (absurd tile size {tile_cols}x{tile_rows})", path)
    if not channels:
        raise InputError("OpenEXR file has no image channels", path)
    names = _pick_colour_channels(channels)
    for n in names:
        if channels[n] != (1, 1):
            raise InputError(f"OpenEXR channel {n!r} is subsampled; only full-resolution channels are supported",
                             path)
    try:
        with captured_stderr() as noise:
            f = InputFile(str(path))
            complete = f.isComplete()
    except Exception as exc:
        raise InputError(f"not a readable OpenEXR file ({_reason(exc, noise)})", path) from None
    if not complete:
        f.close()
        raise InputError("truncated or incomplete OpenEXR file (some scanlines or tiles are missing)", path)
    rows = max(1, band_bytes // (w * 4 * len(names)))
    align = tile_rows or 32
    if 0 < align < rows:
        rows -= rows % align
    float_type = Imath.PixelType(Imath.PixelType.FLOAT)

    def bands() -> Iterator[Tuple[int, np.ndarray]]:
        try:
            for r0 in range(0, h, rows):
                r1 = min(h, r0 + rows)
                noise2: List[str] = []
                try:
                    with captured_stderr() as noise2:
                        planes = f.channels(names, float_type, y0 + r0, y0 + r1 - 1)
                except Exception as exc:
                    raise InputError(f"corrupt or truncated OpenEXR file ({_reason(exc, noise2)})", path) from None
                n = r1 - r0
                if any(len(p) != n * w * 4 for p in planes):
                    raise InputError("corrupt OpenEXR file (a channel read returned the wrong size)", path)
                band = np.empty((n, w, len(names)), np.float32)
                for i, p in enumerate(planes):
                    band[..., i] = np.frombuffer(p, np.float32).reshape(n, w)
                del planes
                yield r0, band
        finally:
            f.close()

    return w, h, len(names), bands()


def _whole_as_bands(path):
    img = read_exr(path)
    if img.shape[2] == 2:
        img = img[..., :1]
    elif img.shape[2] > 3:
        img = img[..., :3]
    h, w, c = img.shape
    return w, h, c, iter([(0, np.ascontiguousarray(img))])


def write_exr(path, image: np.ndarray, half: bool = True) -> None:
    """Write (H, W, 3) RGB or (H, W, 4) RGBA float as a scanline EXR (ZIP compression).

    Raises OSError when the file cannot be written (e.g. the disk is full)."""
    import OpenEXR

    img = np.ascontiguousarray(image, dtype=np.float16 if half else np.float32)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"write_exr expects (H, W, 3|4), got {img.shape}")
    name = "RGBA" if img.shape[2] == 4 else "RGB"
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    noise: List[str] = []
    try:
        with captured_stderr() as noise, OpenEXR.File(header, {name: img}) as f:
            f.write(str(path))
    except OSError:
        raise
    except Exception as exc:  # OpenEXR reports I/O failures (disk full...) as RuntimeError
        raise OSError(f"cannot write OpenEXR file ({_reason(exc, noise)})") from None


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
