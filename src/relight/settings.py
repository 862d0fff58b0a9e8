"""The user's settings: one dataclass shared by the CLI and the Python API.

Every numeric option has its default and range here, and only here; the CLI's ``--help``
text is generated from :data:`RANGES`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Optional

from .errors import UsageError

# name -> (low, high, help); the default lives on the dataclass field
RANGES = {
    "pan": (-360.0, 360.0, "turns the virtual camera DEG degrees to the right in the HDRI (the lighting turns the other way)"),
    "autorotate": (-180.0, 180.0, "rotates the lighting over time, in degrees per second of video"),
    "vfov": (10.0, 150.0, "vertical field of view of the HDRI background's virtual camera, degrees"),
    "fg_gain": (0.0, 4.0, "scales the brightness of the relit person"),
    "bg_gain": (0.0, 4.0, "scales the brightness of the HDRI background"),
    "blur": (0.0, 1.0, "blurs the background (0 sharp, 1 very soft)"),
    "specular": (0.0, 2.0, "scales specular highlights"),
    "fill": (0.0, 1.0, "soft fill under the shadow side of a hard light: the diffuse light on the person is kept "
                       "above this fraction of its average over a face turned to the camera (0 = the HDRI's light "
                       "alone, as a CG render of the set has it)"),
    "strength": (0.0, 1.0, "blends between the input person (0) and the fully relit person (1)"),
}

LIGHT_FROM = ("front", "left", "right", "back")
BACKGROUND_KEYWORDS = ("source", "source-blur", "hdri", "transparent")
_COLOR_RE = re.compile(r"^#?([0-9a-fA-F]{6})$")


@dataclass(frozen=True)
class RelightSettings:
    """How to relight. ``hdri`` is a path to a .hdr/.exr file or a built-in preset name.

    ``background`` is one of ``source``, ``source-blur``, ``hdri``, ``transparent``,
    a colour ``#RRGGBB``, or the path of an image or video.
    ``light_from`` (front/left/right/back), when set, overrides ``pan`` with the pan that puts
    the HDRI's brightest direction on that side of the subject.
    """

    hdri: str = "studio"
    pan: float = 0.0
    autorotate: float = 0.0
    light_from: Optional[str] = None
    vfov: float = 60.0
    fg_gain: float = 1.0
    bg_gain: float = 1.0
    blur: float = 0.0
    specular: float = 1.0
    fill: float = 0.2  # (what it trades, measured: stages.render.RenderOptions.fill)
    strength: float = 1.0
    background: str = "hdri"

    def validated(self) -> "RelightSettings":
        """Return self after checking every range; raise :class:`UsageError` otherwise."""
        for name, (lo, hi, _) in RANGES.items():
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise UsageError(f"--{name.replace('_', '-')} must be a number, got {value!r}") from None
            if not (lo <= value <= hi):
                raise UsageError(f"--{name.replace('_', '-')} must be in {lo:g}..{hi:g}, got {value:g}")
        if self.light_from is not None and self.light_from not in LIGHT_FROM:
            raise UsageError(f"--light-from must be one of {', '.join(LIGHT_FROM)}, got {self.light_from!r}")
        if not self.background:
            raise UsageError("--background must not be empty")
        return self

    def with_(self, **changes) -> "RelightSettings":
        return replace(self, **changes)


def default_of(name: str):
    for f in fields(RelightSettings):
        if f.name == name:
            return f.default
    raise KeyError(name)


def parse_color(text: str) -> "tuple[int, int, int] | None":
    """``#RRGGBB`` (or ``RRGGBB``) -> (r, g, b) in 0..255, else None."""
    m = _COLOR_RE.match(text.strip())
    if not m:
        return None
    h = m.group(1)
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
