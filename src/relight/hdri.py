"""Load the target HDRI: a Radiance ``.hdr`` / OpenEXR ``.exr`` file or a built-in preset.

Every map comes out the same way: float32 scene-linear Rec.709 RGB, (H, W, 3) with W = 2 H
(equirectangular, oriented as described in :mod:`relight.envmap`), finite and non-negative,
at most :data:`MAX_WIDTH` wide. Problems that can be fixed (not 2:1, NaN/Inf/negative values)
are fixed with a :class:`~relight.errors.RelightWarning`; anything else raises
:class:`~relight.errors.InputError` naming the file.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

from .errors import InputError, RelightWarning

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
MAX_WIDTH = 4096  # relighting never needs more; larger maps are area-averaged down to 4096x2048
MIN_WIDTH = 16  # tiny maps (even 1x1) are resampled up to at least 16x8
HALF_MAX = 65504.0  # largest finite float16: +Inf becomes this when the map has no finite value
HDR_EXTENSIONS = (".hdr", ".exr")
_LDR_EXTENSIONS = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
    ".gif": "GIF", ".webp": "WebP", ".avif": "AVIF", ".heic": "HEIC",
}
_MAGIC = (  # leading bytes -> format
    (b"#?", "Radiance"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"\x89PNG", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
)


# ----------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    credit: str
    source: str  # the source map this preset was made from (see presets/CREDITS.md)


_BLENDER = "Greg Zaal, HDRI Haven / Poly Haven (CC0), via Blender's studio lights"
_PMNDRS = "Poly Haven (CC0), via pmndrs/assets"
PRESETS = {
    p.name: p
    for p in (
        Preset("studio", "photo studio: softbox and ring light, grey cyclorama", _PMNDRS, "pmndrs_studio.exr"),
        Preset("sunset", "seaside promenade at sunset, low sun over the water", _BLENDER, "blender_sunset.exr"),
        Preset("forest", "woodland path on a sunny day", _BLENDER, "blender_forest.exr"),
        Preset("city", "car park among office buildings, hazy sun", _BLENDER, "blender_city.exr"),
        Preset("warehouse", "large empty warehouse with overhead lamps", _PMNDRS, "pmndrs_warehouse.exr"),
        Preset("night", "open field at night: starry sky, distant town lights", _BLENDER, "blender_night.exr"),
    )
}


def list_presets() -> List[Tuple[str, str, str]]:
    """The built-in HDRIs as (name, description, credit)."""
    return [(p.name, p.description, p.credit) for p in PRESETS.values()]


def preset_path(name: str) -> Path:
    """The EXR file of a built-in preset (KeyError if there is no such preset)."""
    return PRESETS_DIR / f"{PRESETS[name].name}.exr"


# ----------------------------------------------------------------------------- loading
@dataclass(frozen=True, eq=False)
class HDRI:
    """A loaded equirectangular map. ``pixels``: float32 (H, W, 3) linear RGB, W = 2 H, finite,
    >= 0. ``name``: the preset name or the file's stem. ``path``: the file it was read from."""

    pixels: np.ndarray
    name: str
    path: str

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def load_hdri(spec: str) -> HDRI:
    """Load a ``.hdr`` / ``.exr`` file or a built-in preset (see :func:`list_presets`) by name.

    Raises :class:`InputError` (one line, naming the file) when it cannot be used; warns with
    :class:`RelightWarning` when it had to be fixed (not 2:1, NaN/Inf/negative values)."""
    spec = str(spec).strip() if spec is not None else ""
    if not spec:
        raise InputError(f"no HDRI given: pass a .hdr/.exr file or one of the presets ({_preset_names()})")
    key = spec.lower()
    path = Path(os.path.expanduser(spec))
    looks_like_name = not path.suffix and os.sep not in spec and "/" not in spec
    if key in PRESETS and looks_like_name:  # a bare preset name wins over an odd extension-less file
        pixels = _load_file(preset_path(key))
        return HDRI(pixels=pixels, name=key, path=str(preset_path(key)))
    if not path.exists():
        if looks_like_name:
            raise InputError(f"no such file, and not a built-in HDRI preset (presets: {_preset_names()})", spec)
        raise InputError("HDRI file not found", spec)
    pixels = _load_file(path)
    return HDRI(pixels=pixels, name=path.stem, path=str(path))


def _preset_names() -> str:
    return ", ".join(PRESETS)


def _load_file(path: Path) -> np.ndarray:
    if path.is_dir():
        raise InputError("is a directory, not an HDR image (.hdr or .exr expected)", path)
    ext = path.suffix.lower()
    if ext in _LDR_EXTENSIONS:
        raise InputError(
            f"a {_LDR_EXTENSIONS[ext]} image is not HDR (its values stop at white): "
            "an HDRI must be a .hdr (Radiance) or .exr (OpenEXR) file", path)
    if ext not in HDR_EXTENSIONS:
        raise InputError(
            f"unknown HDRI file type {ext or '(no extension)'!r}: .hdr (Radiance) or .exr (OpenEXR) expected "
            "(a PNG/JPEG is not HDR)", path)
    kind = _sniff(path)
    if kind in ("PNG", "JPEG", "TIFF", "GIF", "BMP"):
        raise InputError(
            f"is a {kind} image, not an HDR map (its values stop at white): "
            "an HDRI must be a Radiance .hdr or OpenEXR .exr file", path)
    if kind == "OpenEXR":  # whatever its extension says
        pixels = _read_exr(path)
    elif kind == "Radiance":
        pixels = _read_radiance(path)
    elif ext == ".exr":
        raise InputError("not an OpenEXR file (bad magic number)", path)
    else:
        raise InputError("not a Radiance HDR file (missing '#?' header)", path)
    return _conform(pixels, path)


def _sniff(path: Path) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or type(exc).__name__})", path) from None
    if not head:
        raise InputError("file is empty (0 bytes)", path)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


def _read_radiance(path: Path) -> np.ndarray:
    """Radiance RGBE -> float32 (H, W, 3) RGB. OpenCV returns None for truncated/corrupt files."""
    level = cv2.getLogLevel()
    cv2.setLogLevel(0)  # silent: OpenCV would log its own error to stderr
    try:
        bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InputError(f"unreadable Radiance HDR file ({str(exc).strip().splitlines()[-1][:120]})", path) from None
    finally:
        cv2.setLogLevel(level)
    if bgr is None:
        raise InputError("unreadable Radiance HDR file (corrupt or truncated)", path)
    if bgr.dtype != np.float32:
        raise InputError(f"not a floating-point HDR image (decoded as {bgr.dtype})", path)
    if bgr.ndim == 2:
        bgr = bgr[..., None]
    # BGR -> RGB in place, a band of rows at a time (no second full-size copy of a huge map)
    if bgr.shape[2] >= 3:
        step = max(1, (1 << 20) // (bgr.shape[1] * bgr.shape[2]))
        for r0 in range(0, bgr.shape[0], step):
            band = bgr[r0:r0 + step]
            band[..., [0, 2]] = band[..., [2, 0]]
    return bgr


def _read_exr(path: Path) -> np.ndarray:
    from .io.exr import read_exr

    return read_exr(path)


def _conform(pixels: np.ndarray, path: Path) -> np.ndarray:
    """Channels -> RGB, clamp bad values (warn), resample to 2:1 (warn) and cap the size."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    h, w, c = pixels.shape
    if h == 0 or w == 0 or c == 0:
        raise InputError(f"image is empty ({w}x{h} pixels)", path)
    if c == 2:  # luminance + alpha
        c = 1
    colour = pixels[..., :3] if c >= 3 else pixels[..., :1]
    if not colour.flags.c_contiguous:
        colour = np.ascontiguousarray(colour)  # frees the alpha plane with the original array
    del pixels
    colour = colour.astype(np.float32, copy=False)
    _sanitise(colour, path)

    tw = max(MIN_WIDTH, min(MAX_WIDTH, w - (w % 2)))
    th = tw // 2
    if w != 2 * h:
        warnings.warn(
            f"{path}: HDRI is {w}x{h}, not 2:1 (equirectangular); resampled to {tw}x{th}",
            RelightWarning, stacklevel=4)  # _conform <- _load_file <- load_hdri <- caller
    if (tw, th) != (w, h):
        colour = _resize(colour, tw, th)
    if colour.ndim == 2:
        colour = colour[..., None]
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    return np.ascontiguousarray(colour, dtype=np.float32)


def _sanitise(px: np.ndarray, path: Path) -> None:
    """Replace NaN -> 0, +Inf -> the largest finite value (65504 if none), negatives -> 0, in place
    and in row chunks (no full-size temporaries), with one warning giving the counts."""
    h, w, c = px.shape
    step = max(1, (1 << 20) // max(1, w * c))
    n_nan = n_inf = n_neg = 0
    vmax = 0.0
    bad_chunks = []
    for r0 in range(0, h, step):
        ch = px[r0:r0 + step]
        total = float(np.sum(ch, dtype=np.float64))
        lo = float(ch.min())
        if np.isfinite(total) and lo >= 0.0:
            vmax = max(vmax, float(ch.max()))
            continue
        bad_chunks.append(r0)
        nan = np.isnan(ch)
        posinf = np.isposinf(ch)
        n_nan += int(nan.sum())
        n_inf += int(posinf.sum())
        n_neg += int((ch < 0).sum())  # includes -Inf
        vmax = max(vmax, float(np.max(ch, where=~(nan | posinf), initial=0.0)))
    if not bad_chunks:
        return
    fill = vmax if vmax > 0.0 else HALF_MAX
    for r0 in bad_chunks:
        ch = px[r0:r0 + step]
        np.nan_to_num(ch, copy=False, nan=0.0, posinf=fill, neginf=0.0)
        np.maximum(ch, 0.0, out=ch)
    parts = []
    if n_nan:
        parts.append(f"{n_nan} NaN")
    if n_inf:
        parts.append(f"{n_inf} +Inf")
    if n_neg:
        parts.append(f"{n_neg} negative")
    fixes = []
    if n_nan or n_neg:
        fixes.append("NaN/negative -> 0" if n_nan and n_neg else ("NaN -> 0" if n_nan else "negative -> 0"))
    if n_inf:
        fixes.append(f"+Inf -> {fill:g}")
    warnings.warn(
        f"{path}: HDRI has {', '.join(parts)} values; clamped ({', '.join(fixes)})",
        RelightWarning, stacklevel=5)  # _sanitise <- _conform <- _load_file <- load_hdri <- caller


def _resize(px: np.ndarray, tw: int, th: int) -> np.ndarray:
    """Area-average the axes that shrink, then bilinearly enlarge (wrapping around horizontally,
    clamping at the poles) the axes that grow."""
    h, w = px.shape[:2]
    channels = px.shape[2] if px.ndim == 3 else 1
    sw, sh = min(tw, w), min(th, h)
    if (sw, sh) != (w, h):
        px = cv2.resize(px, (sw, sh), interpolation=cv2.INTER_AREA)
    if (sw, sh) != (tw, th):
        xs = ((np.arange(tw) + 0.5) * sw / tw - 0.5).astype(np.float32)
        ys = np.clip((np.arange(th) + 0.5) * sh / th - 0.5, 0.0, sh - 1).astype(np.float32)
        mx, my = np.meshgrid(xs, ys)
        px = cv2.remap(np.ascontiguousarray(px), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return px.reshape(th, tw, channels) if px.ndim == 2 or channels == 1 else px
