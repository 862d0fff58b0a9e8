"""A dependency-free progress bar for the terminal: frames, fps and time left."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
    """Draws ``label [#####.....] 120/300 frames  31.2 fps  0:05 left`` on one line of a terminal.

    Silent when ``enabled`` is False or the stream is not a terminal (logs, CI)."""

    def __init__(self, total: Optional[int], label: str = "relight", enabled: bool = True,
                 stream: Optional[TextIO] = None, min_interval: float = 0.2):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(enabled) and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total = total if total and total > 0 else None
        self.label = label
        self.count = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self.min_interval = min_interval

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.perf_counter()
        if self.enabled and (now - self._last_draw >= self.min_interval or self.count == self.total):
            self._last_draw = now
            self._draw(now)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def fps(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else 0.0

    def _draw(self, now: float) -> None:
        fps = self.fps
        if self.total:
            frac = min(1.0, self.count / self.total)
            bar = "#" * int(frac * 30) + "." * (30 - int(frac * 30))
            left = (self.total - self.count) / fps if fps > 0 else 0.0
            text = f"{self.label} [{bar}] {self.count}/{self.total} frames  {fps:5.1f} fps  {_hms(left)} left"
        else:
            text = f"{self.label} {self.count} frames  {fps:5.1f} fps  {_hms(self.elapsed)} elapsed"
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()


def _hms(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
