#!/usr/bin/env python
"""Regenerate the built-in HDRI presets (src/relight/presets/*.exr) from their source maps.

    python tools/make_presets.py SOURCE_DIR [--out src/relight/presets] [--width 512]

SOURCE_DIR holds the source maps named as in ``relight.hdri.PRESETS[name].source`` (e.g.
``blender_sunset.exr``; see src/relight/presets/CREDITS.md for where each comes from). Each map
is read as linear RGB, NaN/Inf/negative values are clamped (NaN, negatives -> 0), it is
area-averaged (cv2.INTER_AREA) to WIDTH x WIDTH/2 when larger, values are capped at 65504 (the
float16 maximum) and it is written as a half-float, ZIP-compressed RGB OpenEXR named
``<preset>.exr``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from relight.hdri import PRESETS  # noqa: E402
from relight.io.exr import read_exr, write_exr  # noqa: E402


def read_source(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".hdr":
        bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if bgr is None:
            raise SystemExit(f"{path}: cannot read")
        return bgr[..., ::-1].astype(np.float32)
    return read_exr(path)[..., :3].astype(np.float32)


def make_preset(src: Path, dst: Path, width: int) -> None:
    img = np.nan_to_num(read_source(src), nan=0.0, posinf=65504.0, neginf=0.0)
    img = np.clip(img, 0.0, 65504.0)
    h, w = img.shape[:2]
    if w != 2 * h:
        raise SystemExit(f"{src}: {w}x{h} is not a 2:1 equirectangular map")
    if w > width:
        img = cv2.resize(img, (width, width // 2), interpolation=cv2.INTER_AREA)
    write_exr(dst, img, half=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source_dir", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "relight" / "presets")
    ap.add_argument("--width", type=int, default=512)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, preset in PRESETS.items():
        src = args.source_dir / preset.source
        dst = args.out / f"{name}.exr"
        make_preset(src, dst, args.width)
        size = dst.stat().st_size
        total += size
        print(f"{name:10s} <- {preset.source:22s} {size / 1024:7.1f} KiB")
    print(f"total {total / 1024 / 1024:.2f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
