"""Shared fixtures: small inputs made inside the tests (no ../shared data)."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

ASSET = Path(__file__).resolve().parents[1] / "src" / "relight" / "assets" / "astronaut.jpg"


@pytest.fixture(scope="session")
def portrait_rgb() -> np.ndarray:
    """The packaged public-domain portrait (NASA astronaut), 320x320 uint8 RGB."""
    bgr = cv2.imread(str(ASSET), cv2.IMREAD_COLOR)
    assert bgr is not None, f"missing packaged asset {ASSET}"
    return cv2.cvtColor(cv2.resize(bgr, (320, 320), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="session")
def portrait_png(tmp_path_factory, portrait_rgb) -> str:
    path = tmp_path_factory.mktemp("inputs") / "portrait.png"
    cv2.imwrite(str(path), cv2.cvtColor(portrait_rgb, cv2.COLOR_RGB2BGR))
    return str(path)


@pytest.fixture(scope="session")
def demo_clip(tmp_path_factory) -> str:
    """A 1-second 320x180 30 fps H.264 clip of the portrait with a slow camera move and AAC audio."""
    from relight.demo import make_demo_clip

    path = tmp_path_factory.mktemp("inputs") / "clip.mp4"
    make_demo_clip(str(path), seconds=1.0, fps=30, width=320, height=180)
    return str(path)


def write_hdri(path: Path, sun_u: float = 0.25, sun_v: float = 0.45, width: int = 128) -> str:
    """A synthetic .exr HDRI: dim blue-grey sky plus one small bright warm sun at (u, v)."""
    from relight.envmap import pixel_grid, uv_to_direction
    from relight.io.exr import write_exr

    u, v = pixel_grid(width, width // 2)
    d = uv_to_direction(u, v)
    sun = uv_to_direction(sun_u, sun_v)
    cosang = d @ sun
    img = np.zeros((width // 2, width, 3), np.float32)
    img[:] = (0.05, 0.06, 0.08)
    img[cosang > np.cos(np.radians(12))] = (60.0, 50.0, 40.0)
    write_exr(str(path), img, half=False)
    return str(path)


@pytest.fixture
def sun_left_hdri(tmp_path) -> str:
    """Sun at u = 0.25: the camera's left (-x), slightly above the horizon."""
    return write_hdri(tmp_path / "sun_left.exr", sun_u=0.25)


def listdir(path) -> list:
    return sorted(os.listdir(path))
