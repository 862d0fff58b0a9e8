"""Load the target HDRI: a Radiance ``.hdr`` / OpenEXR ``.exr`` file or a built-in preset.

Every map comes out the same way: float32 scene-linear Rec.709 RGB, (H, W, 3) with W = 2 H
(equirectangular, oriented as described in :mod:`relight.envmap`), finite and non-negative,
at most :data:`MAX_WIDTH` wide. Problems that can be fixed (not 2:1, NaN/Inf/negative values)
are fixed with a :class:`~relight.errors.RelightWarning`; anything else raises
:class:`~relight.errors.InputError` naming the file.

Files are read a band of scanlines at a time (:mod:`relight.io.radiance`,
:func:`relight.io.exr.iter_exr_bands`) and area-averaged down to the target size as they are
read, so memory is bounded by the output (a 16384x8192 map takes about 230 MB, not 1.6 GB).
Cube-map crosses and mirror balls are recognised (:func:`detect_layout`) and refused: only
equirectangular maps are supported.
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
MAX_VALUE = 1e30  # no real radiance comes near; larger values are clamped so that sums stay finite
MAX_PIXELS = 1 << 29  # 32768x16384; larger files are refused (they are read band by band, so memory is not the limit)
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
        w, h, c, bands = _exr_bands(path)
    elif kind == "Radiance":
        w, h, c, bands = _radiance_bands(path)
    elif ext == ".exr":
        raise InputError("not an OpenEXR file (bad magic number)", path)
    else:
        raise InputError("not a Radiance HDR file (missing '#?' header)", path)
    return _conform(_reduce(bands, w, h, c, path), w, h, path)


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


def _radiance_bands(path: Path):
    """(width, height, 3, bands) of a Radiance file, decoded band by band (:mod:`relight.io.radiance`)."""
    from .io.radiance import iter_bands, read_header

    try:
        with open(path, "rb") as f:
            header = read_header(f, path)
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror or type(exc).__name__})", path) from None
    if header.width * header.height > MAX_PIXELS:
        raise InputError(f"HDRI is too large ({header.width}x{header.height}; at most {MAX_PIXELS >> 20} "
                         "Mpixels): downscale it first", path)
    return header.width, header.height, 3, iter_bands(path)


def _exr_bands(path: Path):
    from .io.exr import iter_exr_bands

    return iter_exr_bands(path)


def _target_size(w: int, h: int) -> Tuple[int, int]:
    """The 2:1 size a w x h map is resampled to: its own width (made even) within
    MIN_WIDTH..MAX_WIDTH."""
    tw = max(MIN_WIDTH, min(MAX_WIDTH, w - (w % 2)))
    return tw, tw // 2


class _Stats:
    """Counts of bad values seen while reading, and the largest finite value."""

    def __init__(self):
        self.nan = self.inf = self.neg = self.huge = 0
        self.vmax = 0.0
        self.inf_acc: Optional[np.ndarray] = None  # area-reduced mask of the +Inf values


def _sanitise_band(band: np.ndarray, stats: _Stats) -> Optional[np.ndarray]:
    """Make ``band`` finite and in 0..MAX_VALUE in place (NaN, -Inf, negatives -> 0; +Inf -> 0
    for now; absurdly large values -> MAX_VALUE) and count what was fixed. Returns a float32 mask
    of the +Inf values (None when none): they are filled in later with the map's largest finite
    value."""
    with np.errstate(all="ignore"):
        total = float(np.sum(band, dtype=np.float64))
        lo = float(band.min())
        hi = float(band.max())
        if np.isfinite(total) and lo >= 0.0 and hi <= MAX_VALUE:
            stats.vmax = max(stats.vmax, hi)
            return None
        nan = np.isnan(band)
        posinf = np.isposinf(band)
        stats.nan += int(nan.sum())
        stats.inf += int(posinf.sum())
        stats.neg += int((band < 0).sum())  # includes -Inf
        stats.huge += int((band > MAX_VALUE).sum()) - int(posinf.sum())
        np.nan_to_num(band, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.clip(band, 0.0, MAX_VALUE, out=band)
        stats.vmax = max(stats.vmax, float(band.max()))
    return posinf.astype(np.float32) if posinf.any() else None


def _warn_sanitised(stats: _Stats, fill: float, path: Path) -> None:
    parts = []
    if stats.nan:
        parts.append(f"{stats.nan} NaN")
    if stats.inf:
        parts.append(f"{stats.inf} +Inf")
    if stats.neg:
        parts.append(f"{stats.neg} negative")
    if stats.huge:
        parts.append(f"{stats.huge} absurdly large (> {MAX_VALUE:g})")
    if not parts:
        return
    fixes = []
    if stats.nan or stats.neg:
        fixes.append("NaN/negative -> 0" if stats.nan and stats.neg else ("NaN -> 0" if stats.nan else "negative -> 0"))
    if stats.inf:
        fixes.append(f"+Inf -> {fill:g}")
    if stats.huge:
        fixes.append(f"> {MAX_VALUE:g} -> {MAX_VALUE:g}")
    warnings.warn(
        f"{path}: HDRI has {', '.join(parts)} values; clamped ({', '.join(fixes)})",
        RelightWarning, stacklevel=5)  # _warn_sanitised <- _reduce <- _load_file <- load_hdri <- caller


class _AreaReducer:
    """Area-averages an image of size (h, w) given band by band (in any order) down to (oh, ow),
    oh <= h and ow <= w, holding only the output."""

    def __init__(self, w: int, h: int, c: int, ow: int, oh: int):
        self.w, self.h, self.c, self.ow, self.oh = w, h, c, ow, oh
        self.out = np.zeros((oh, ow, c), np.float32)

    def add(self, y0: int, band: np.ndarray, out: Optional[np.ndarray] = None) -> None:
        out = self.out if out is None else out
        n = band.shape[0]
        if band.ndim == 2:
            band = band[..., None]
        if self.ow != self.w:
            band = cv2.resize(band, (self.ow, n), interpolation=cv2.INTER_AREA).reshape(n, self.ow, self.c)
        if self.oh == self.h:
            out[y0:y0 + n] += band
            return
        r = np.arange(y0, y0 + n, dtype=np.float64)
        lo = r * self.oh / self.h  # this band's rows in output-row units
        hi = (r + 1) * self.oh / self.h
        j0 = np.minimum(np.floor(lo).astype(np.int64), self.oh - 1)
        wa = np.minimum(hi, j0 + 1) - lo
        wb = hi - (j0 + 1)
        second = (wb > 1e-12) & (j0 + 1 < self.oh)
        jmin, jmax = int(j0.min()), int(min(self.oh - 1, j0.max() + 1))
        m = np.zeros((jmax - jmin + 1, n), np.float32)
        cols = np.arange(n)
        m[j0 - jmin, cols] += wa.astype(np.float32)
        m[j0[second] + 1 - jmin, cols[second]] += wb[second].astype(np.float32)
        out[jmin:jmax + 1] += (m @ band.reshape(n, -1)).reshape(-1, self.ow, self.c)


def _reduce(bands, w: int, h: int, c: int, path: Path) -> np.ndarray:
    """Read the bands, fix bad values (warning once) and area-average the axes that shrink to
    the target size. Returns float32 (min(th, h), min(tw, w), c)."""
    if w <= 0 or h <= 0 or c <= 0:
        raise InputError(f"image is empty ({w}x{h} pixels)", path)
    tw, th = _target_size(w, h)
    reducer = _AreaReducer(w, h, c, min(tw, w), min(th, h))
    stats = _Stats()
    covered = 0
    try:
        for y0, band in bands:
            covered += _add_band(reducer, stats, y0, band, w, h, c, path)
    except OSError as exc:  # an I/O error while reading (the format errors are InputErrors already)
        raise InputError(f"cannot read file ({exc.strerror or type(exc).__name__})", path) from None
    if covered != h:
        raise InputError(f"corrupt HDR file ({covered} of {h} scanlines read)", path)
    fill = stats.vmax if stats.vmax > 0.0 else HALF_MAX
    if stats.inf_acc is not None:
        reducer.out += stats.inf_acc * np.float32(fill)
    _warn_sanitised(stats, fill, path)
    return reducer.out


def _add_band(reducer: "_AreaReducer", stats: _Stats, y0: int, band: np.ndarray, w: int, h: int, c: int,
              path: Path) -> int:
    """Check, sanitise and accumulate one band; returns its number of rows."""
    band = np.ascontiguousarray(band, dtype=np.float32)
    if band.ndim == 2:
        band = band[..., None]
    if band.shape[1:] != (w, c) or not 0 <= y0 <= h - band.shape[0]:
        raise InputError("corrupt HDR file (inconsistent scanline data)", path)
    infs = _sanitise_band(band, stats)
    if infs is not None:
        if stats.inf_acc is None:
            stats.inf_acc = np.zeros_like(reducer.out)
        reducer.add(y0, infs, out=stats.inf_acc)
    reducer.add(y0, band)
    return band.shape[0]


def _conform(colour: np.ndarray, w: int, h: int, path: Path) -> np.ndarray:
    """The reduced map -> final (th, tw, 3): refuse cube maps and mirror balls, warn when the
    map is not 2:1 and enlarge the axes that grow."""
    layout = detect_layout(colour, w, h)
    if layout is not None:
        raise InputError(
            f"looks like a {layout}, not an equirectangular map: only equirectangular (latitude-longitude, "
            "2:1) HDRIs are supported; convert it first (e.g. in Blender, HDRShop or PTGui)", path)
    tw, th = _target_size(w, h)
    if w != 2 * h:
        warnings.warn(
            f"{path}: HDRI is {w}x{h}, not 2:1 (equirectangular); resampled to {tw}x{th}",
            RelightWarning, stacklevel=4)  # _conform <- _load_file <- load_hdri <- caller
    if colour.shape[:2] != (th, tw):
        colour = _resize(colour, tw, th)
    if colour.ndim == 2:
        colour = colour[..., None]
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    return np.ascontiguousarray(colour, dtype=np.float32)


# ----------------------------------------------------------------------------- projections
def _cell_stats(lum: np.ndarray, cols: int, rows: int) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and max of the central half of each cell of a cols x rows grid over ``lum``."""
    h, w = lum.shape
    means = np.zeros((rows, cols))
    maxes = np.zeros((rows, cols))
    for r in range(rows):
        for c in range(cols):
            y0, y1 = int((r + 0.25) * h / rows), int(np.ceil((r + 0.75) * h / rows))
            x0, x1 = int((c + 0.25) * w / cols), int(np.ceil((c + 0.75) * w / cols))
            cell = lum[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
            means[r, c] = float(cell.mean())
            maxes[r, c] = float(cell.max())
    return means, maxes


def detect_layout(px: np.ndarray, w: int, h: int) -> Optional[str]:
    """Name the projection of a map that is clearly not equirectangular, else None.

    ``px`` is the map (possibly resampled; only relative positions matter) and ``w`` x ``h`` its
    size on disk. Recognised: a cube-map cross (4:3 or 3:4: six faces in a cross, the other six
    cells black) and a mirror ball / angular map (1:1, black outside the inscribed circle)."""
    if min(w, h) < 16 or px.size == 0:
        return None
    lum = px.mean(axis=2) if px.ndim == 3 else px
    ratio = w / h
    for cols, rows in ((4, 3), (3, 4)):
        if abs(ratio - cols / rows) > 0.02:
            continue
        means, maxes = _cell_stats(lum, cols, rows)
        level = float(np.sort(means.ravel())[-6:].mean())
        if level <= 0:
            return None
        empty = maxes <= 0.01 * level
        grid = empty if cols == 4 else empty.T  # as a horizontal cross: 3 rows x 4 columns
        full = ~grid
        if (grid.sum() == 6 and full[1].all() and full[0].sum() == 1 and full[2].sum() == 1):
            return f"cube map ({'horizontal' if cols == 4 else 'vertical'} cross)"
        return None
    if abs(ratio - 1.0) <= 0.02:
        hh, ww = lum.shape
        ys = (np.arange(hh) + 0.5) / hh * 2 - 1
        xs = (np.arange(ww) + 0.5) / ww * 2 - 1
        r2 = ys[:, None] ** 2 + xs[None, :] ** 2
        inside = lum[r2 < 0.9 ** 2]
        corners = lum[r2 > 1.1 ** 2]
        if inside.size == 0 or corners.size == 0:
            return None
        level = float(inside.mean())
        if level > 0 and float(corners.max()) <= 0.01 * level and float(inside.std()) > 0.01 * level:
            return "mirror ball or angular map (a round image in a square)"
    return None


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
