"""Read and write OpenEXR files with the ``OpenEXR`` package (OpenCV's wheels lack EXR)."""
from __future__ import annotations

import numpy as np

from ..errors import InputError


def read_exr(path) -> np.ndarray:
    """Read an EXR's colour channels -> float32 (H, W, C) with C = 3 (RGB), 4 (RGBA) or 1 (Y).

    Raises :class:`InputError` naming the file if it cannot be read."""
    import OpenEXR

    try:
        with OpenEXR.File(str(path), separate_channels=False) as f:
            channels = {k: np.array(v.pixels, dtype=np.float32) for k, v in f.channels().items()}
    except Exception as exc:  # OpenEXR raises RuntimeError/OSError with long messages
        raise InputError(f"not a readable OpenEXR file ({_short(exc)})", path) from None
    for name in ("RGBA", "RGB"):
        if name in channels:
            return channels[name]
    # separate channels: pick R, G, B (any layer prefix), else Y, else the first channel
    by_suffix = {}
    for key, ch in channels.items():
        by_suffix.setdefault(key.split(".")[-1].upper(), ch)
    if all(c in by_suffix for c in "RGB"):
        planes = [by_suffix[c] for c in "RGB"] + ([by_suffix["A"]] if "A" in by_suffix else [])
        return np.stack(planes, axis=-1)
    for key in ("Y", "L"):
        if key in by_suffix:
            return by_suffix[key][..., None]
    if channels:
        first = next(iter(channels.values()))
        return first if first.ndim == 3 else first[..., None]
    raise InputError("OpenEXR file has no image channels", path)


def write_exr(path, image: np.ndarray, half: bool = True) -> None:
    """Write (H, W, 3) RGB or (H, W, 4) RGBA float as a scanline EXR (ZIP compression)."""
    import OpenEXR

    img = np.ascontiguousarray(image, dtype=np.float16 if half else np.float32)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"write_exr expects (H, W, 3|4), got {img.shape}")
    name = "RGBA" if img.shape[2] == 4 else "RGB"
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {name: img}) as f:
        f.write(str(path))


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
