"""A streaming reader for Radiance RGBE (``.hdr``, ``.pic``) files.

OpenCV decodes a whole ``.hdr`` into one float32 array (12 bytes a pixel: 1.6 GB for a
16384x8192 map, and a small run-length-encoded file can claim far more). This reader decodes a
band of scanlines at a time, so that :mod:`relight.hdri` can downsample huge maps with memory
bounded by the band and the output, whatever the file claims.

Supported: the ``#?RADIANCE`` / ``#?RGBE`` header, ``FORMAT=32-bit_rle_rgbe`` (default) and
``32-bit_rle_xyze`` (converted to linear Rec.709), the standard ``-Y H +X W`` resolution line and
its flips (``+Y``, ``-X``), and all three scanline encodings (new run-length, old run-length and
flat). Pixel values follow Greg Ward's ``rgbe.c`` (as OpenCV does): ``m * 2**(e - 136)``.
Every problem raises :class:`~relight.errors.InputError` naming the file.
"""
from __future__ import annotations

import re
from typing import BinaryIO, Iterator, Tuple

import numpy as np

from ..errors import InputError

MAX_HEADER_BYTES = 1 << 16
MAX_SIDE = 1 << 16  # the new RLE codes widths up to 32767; flat files could claim more
_RES_RE = re.compile(rb"^([-+])([XY]) +(\d{1,9}) +([-+])([XY]) +(\d{1,9})\s*$")
_BYTE = [bytes((i,)) for i in range(256)]
# CIE XYZ (D65) -> linear Rec.709
_XYZ_TO_709 = np.array([[3.2404542, -1.5371385, -0.4985314],
                        [-0.9692660, 1.8760108, 0.0415560],
                        [0.0556434, -0.2040259, 1.0572252]], np.float32)


class RadianceHeader:
    """What the header of a Radiance file says: size, orientation and pixel format."""

    def __init__(self, width: int, height: int, flip_y: bool, flip_x: bool, xyz: bool, data_offset: int):
        self.width = width
        self.height = height
        self.flip_y = flip_y  # rows are stored bottom to top (+Y)
        self.flip_x = flip_x  # columns are stored right to left (-X)
        self.xyz = xyz
        self.data_offset = data_offset


def read_header(f: BinaryIO, path) -> RadianceHeader:
    """Parse the header at the start of ``f`` (left positioned at the first scanline)."""
    head = f.read(MAX_HEADER_BYTES)
    if not head.startswith(b"#?"):
        raise InputError("not a Radiance HDR file (missing '#?' header)", path)
    pos = 0
    xyz = False
    seen_blank = False
    while True:
        end = head.find(b"\n", pos)
        if end < 0:
            if len(head) >= MAX_HEADER_BYTES:
                raise InputError("Radiance header is too long or has no resolution line", path)
            raise InputError("truncated Radiance HDR file (the header ends before the resolution line)", path)
        line = head[pos:end].rstrip(b"\r")
        pos = end + 1
        if not seen_blank:
            if line.strip() == b"":
                seen_blank = True
            elif line.startswith(b"FORMAT="):
                fmt = line[7:].strip().lower()
                if fmt == b"32-bit_rle_xyze":
                    xyz = True
                elif fmt != b"32-bit_rle_rgbe":
                    raise InputError(f"unsupported Radiance pixel format {fmt.decode('latin-1')[:40]!r}", path)
            continue
        m = _RES_RE.match(line)
        if m is None:
            raise InputError("bad Radiance resolution line (expected e.g. '-Y 1024 +X 2048')", path)
        s1, a1, n1, s2, a2, n2 = m.groups()
        if a1 != b"Y" or a2 != b"X":
            raise InputError("Radiance file stored column by column (transposed) is not supported; "
                             "re-save it with the standard '-Y H +X W' layout", path)
        height, width = int(n1), int(n2)
        if width < 1 or height < 1:
            raise InputError(f"Radiance file claims an empty image ({width}x{height})", path)
        if width > MAX_SIDE or height > MAX_SIDE:
            raise InputError(f"Radiance file claims an absurd size ({width}x{height})", path)
        return RadianceHeader(width, height, flip_y=s1 == b"+", flip_x=s2 == b"-", xyz=xyz, data_offset=pos)


class _Reader:
    """Buffered sequential byte reader over a file (only a window of it in memory)."""

    def __init__(self, f: BinaryIO, chunk: int):
        self._f = f
        self._chunk = chunk
        self.buf = b""
        self.pos = 0
        self.eof = False

    def ensure(self, n: int) -> int:
        """Make ``n`` bytes available from ``pos`` if the file has them; return how many are."""
        avail = len(self.buf) - self.pos
        if avail >= n or self.eof:
            return avail
        want = max(n - avail, self._chunk)
        more = self._f.read(want)
        if len(more) < want:
            self.eof = True
        self.buf = self.buf[self.pos:] + more
        self.pos = 0
        return len(self.buf)


def _decode_rle_scanline(buf: bytes, i: int, width: int, out: bytearray) -> int:
    """Decode one new-style RLE scanline (the 4-byte marker already consumed) from ``buf`` at
    ``i`` into ``out`` (4 planes of ``width`` bytes). Returns the position after it, or -1 when
    the data is bad, -2 when ``buf`` ends too early."""
    n = len(buf)
    byte = _BYTE
    for c in range(4):
        x = c * width
        end = x + width
        while x < end:
            if i >= n:
                return -2
            count = buf[i]
            i += 1
            if count > 128:
                count -= 128
                if count > end - x:
                    return -1
                if i >= n:
                    return -2
                out[x:x + count] = byte[buf[i]] * count
                i += 1
            else:
                if count == 0 or count > end - x:
                    return -1
                if i + count > n:
                    return -2
                out[x:x + count] = buf[i:i + count]
                i += count
            x += count
    return i


def _old_pixels(raw: np.ndarray, width: int, prev: "np.ndarray | None", stats: dict) -> Tuple[np.ndarray, int]:
    """Decode old-style pixels (flat, with optional (1, 1, 1, n) repeat codes) from ``raw``
    ((k, 4) uint8, k >= width) into one scanline; returns (scanline (width, 4), pixels used)."""
    marks = (raw[:, 0] == 1) & (raw[:, 1] == 1) & (raw[:, 2] == 1)
    if len(raw) >= width and not marks[:width].any():
        return raw[:width], width
    out = np.zeros((width, 4), np.uint8)
    x = used = 0
    shift = 0
    last = prev
    while x < width:
        if used >= len(raw):
            raise EOFError
        px = raw[used]
        used += 1
        if px[0] == 1 and px[1] == 1 and px[2] == 1:
            stats["repeats"] += 1
            count = int(px[3]) << shift
            shift = min(shift + 8, 24)
            if last is None or count == 0 or count > width - x:
                raise ValueError("bad repeat code")
            out[x:x + count] = last
            x += count
        else:
            out[x] = px
            last = px
            x += 1
            shift = 0
    return out, used


def iter_bands(path, band_rows: int = 64, stats: "dict | None" = None) -> Iterator[Tuple[int, np.ndarray]]:
    """Yield ``(y0, band)`` pairs covering the map in ``path``: ``band`` is float32
    (rows, width, 3) linear RGB in display order (top to bottom, left to right) starting at
    display row ``y0``. Bands come in file order, which is bottom to top for a ``+Y`` file.
    Memory: one band plus a read buffer, whatever the size. Raises InputError on any problem.
    ``stats``, if given, receives counts: ``rle`` (new run-length scanlines), ``old`` (flat or
    old run-length scanlines) and ``repeats`` (old-style repeat codes)."""
    with open(path, "rb") as f:
        hdr = read_header(f, path)
        f.seek(hdr.data_offset)
        batch = []
        y = 0  # scanlines read so far (file order)
        for row in _iter_rgbe_rows(f, hdr, path, stats if stats is not None else {}):
            batch.append(row)
            if len(batch) == band_rows:
                yield _band(batch, y, hdr)
                y += len(batch)
                batch = []
        if batch:
            yield _band(batch, y, hdr)


def _band(rows, y: int, hdr: RadianceHeader) -> Tuple[int, np.ndarray]:
    rgb = rgbe_to_float(np.stack(rows), hdr.xyz, hdr.flip_x)
    if hdr.flip_y:  # file row k is display row h - 1 - k
        return hdr.height - y - len(rows), np.ascontiguousarray(rgb[::-1])
    return y, rgb


def rgbe_to_float(rgbe: np.ndarray, xyz: bool = False, flip_x: bool = False) -> np.ndarray:
    """(rows, width, 4) uint8 RGBE -> float32 (rows, width, 3) (Ward's rgbe2float)."""
    e = rgbe[..., 3].astype(np.int32)
    scale = np.where(e > 0, np.ldexp(np.float32(1.0), e - 136), np.float32(0.0)).astype(np.float32)
    rgb = rgbe[..., :3].astype(np.float32) * scale[..., None]
    if xyz:  # in float64: XYZ near the float32 limit must not overflow to infinity
        rgb = np.clip(rgb.astype(np.float64) @ _XYZ_TO_709.T.astype(np.float64), 0.0, np.finfo(np.float32).max)
        rgb = rgb.astype(np.float32)
    if flip_x:
        rgb = rgb[:, ::-1]
    return np.ascontiguousarray(rgb)


def _iter_rgbe_rows(f: BinaryIO, hdr: RadianceHeader, path, stats: dict) -> Iterator[np.ndarray]:
    """Yield each scanline as uint8 (width, 4) RGBE, in file order.

    Like Radiance's own reader (``freadscan``), each scanline is either new run-length encoded
    (it starts with 2, 2 and its length) or old-style (flat RGBE pixels with optional
    (1, 1, 1, n) repeat codes); OpenCV (Ward's ``rgbe.c``) instead reads the whole rest of the
    file flat after the first scanline that is not run-length encoded."""
    for key in ("rle", "old", "repeats"):
        stats.setdefault(key, 0)
    w, h = hdr.width, hdr.height
    reader = _Reader(f, chunk=max(1 << 20, 8 * w + 16))
    new_rle_possible = 8 <= w <= 0x7FFF
    plane = bytearray(4 * w)
    prev = None
    for y in range(h):
        avail = reader.ensure(8 * w + 8)
        if avail < 4:
            raise InputError(f"truncated Radiance HDR file (the data ends at scanline {y} of {h})", path)
        buf, i = reader.buf, reader.pos
        if new_rle_possible and buf[i] == 2 and buf[i + 1] == 2 and not (buf[i + 2] & 0x80):
            if ((buf[i + 2] << 8) | buf[i + 3]) != w:
                raise InputError(f"corrupt Radiance HDR file (scanline {y} has the wrong length)", path)
            end = _decode_rle_scanline(buf, i + 4, w, plane)
            if end == -2:
                raise InputError(f"truncated Radiance HDR file (the data ends in scanline {y} of {h})", path)
            if end < 0:
                raise InputError(f"corrupt Radiance HDR file (bad run-length data in scanline {y})", path)
            reader.pos = end
            row = np.frombuffer(bytes(plane), np.uint8).reshape(4, w).T
            stats["rle"] += 1
        else:
            k = min(avail // 4, w)  # every old-style code makes at least one pixel
            raw = np.frombuffer(buf, np.uint8, count=k * 4, offset=i).reshape(k, 4)
            stats["old"] += 1
            try:
                row, used = _old_pixels(raw, w, prev, stats)
            except EOFError:
                raise InputError(f"truncated Radiance HDR file (the data ends in scanline {y} of {h})",
                                 path) from None
            except ValueError:
                raise InputError(f"corrupt Radiance HDR file (bad repeat code in scanline {y})", path) from None
            reader.pos = i + 4 * used
        prev = row[-1].copy()
        yield row
