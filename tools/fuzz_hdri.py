"""Fuzz the HDRI readers (Radiance .hdr and OpenEXR .exr) with atheris, or without it.

    pip install atheris          # optional: NOT a dependency of relight
    python tools/fuzz_hdri.py --seconds 120 --format hdr
    python tools/fuzz_hdri.py --seconds 120 --format exr
    python tools/fuzz_hdri.py --seconds 60 --engine random     # no atheris: seeded byte mutations

Every input is written to a temporary file and given to :func:`relight.hdri.load_hdri`. The
only acceptable outcomes are a valid map (float32 (H, 2H, 3), finite, >= 0) or
:class:`relight.errors.InputError` with a one-line message naming the file; anything else
(another exception, a wrong map, a crash or a hang) is a finding, saved under
``--crash-dir``. For .hdr inputs that OpenCV also decodes, the streaming decoder
(:mod:`relight.io.radiance`) must give the very same pixels (``--differential``, on by default).

The seed corpus is generated here: small valid maps in every encoding the readers support
(RLE and flat .hdr, +Y/-X orientations, XYZE, half/float/tiled/RGBA/Y/layered .exr).
"""
from __future__ import annotations

import argparse
import atexit
import importlib
import importlib.util
import random
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from relight.errors import InputError, RelightWarning  # noqa: E402
from relight.hdri import load_hdri  # noqa: E402

TMP = Path(tempfile.mkdtemp(prefix="relight-fuzz-"))
atexit.register(shutil.rmtree, TMP, True)  # on a normal exit only: after a native crash it stays
STATS = {"inputs": 0, "ok": 0, "input_error": 0, "findings": 0, "differential": 0}
TARGET = {"name": "hdri"}  # or "image": the same bytes read as an input image / matte (read_exr, OpenCV)


# ------------------------------------------------------------------------------------------ seeds
def _hdr_bytes(img: np.ndarray, rle: bool = True, res: str = "-Y {h} +X {w}", fmt: str = "32-bit_rle_rgbe") -> bytes:
    """A Radiance file of ``img`` (H, W, 3) written here (so every layout can be produced)."""
    h, w = img.shape[:2]
    m = np.max(img, axis=2)
    e = np.zeros(m.shape, np.int32)
    nz = m > 1e-32
    mant, ex = np.frexp(m[nz])
    e[nz] = ex + 128
    scale = np.zeros(m.shape, np.float64)
    scale[nz] = 256.0 / np.ldexp(1.0, ex)
    rgbe = np.zeros((h, w, 4), np.uint8)
    rgbe[..., :3] = np.clip(img * scale[..., None], 0, 255).astype(np.uint8)
    rgbe[..., 3] = np.clip(e, 0, 255)
    out = bytearray(f"#?RADIANCE\nFORMAT={fmt}\n\n{res.format(h=h, w=w)}\n".encode())
    for y in range(h):
        row = rgbe[y]
        if not rle or not 8 <= w <= 0x7FFF:
            out += row.tobytes()
            continue
        out += bytes([2, 2, w >> 8, w & 255])
        for c in range(4):
            data = row[:, c].tobytes()
            i = 0
            while i < w:
                j = i
                while j < w and j - i < 127 and data[j] == data[i]:
                    j += 1
                if j - i >= 3:
                    out += bytes([128 + j - i, data[i]])
                    i = j
                else:
                    k = min(w, i + 128)
                    out += bytes([k - i]) + data[i:k]
                    i = k
    return bytes(out)


def _exr_bytes(channels: dict, **header) -> bytes:
    import OpenEXR

    path = TMP / "seed.exr"
    hdr = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    hdr.update(header)
    with OpenEXR.File(hdr, channels) as f:
        f.write(str(path))
    return path.read_bytes()


def seeds(fmt: str) -> list:
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 4, (8, 16, 3)).astype(np.float32)
    img[2, 3] = 500.0
    if fmt == "hdr":
        return [
            _hdr_bytes(img), _hdr_bytes(img, rle=False), _hdr_bytes(img, res="+Y {h} -X {w}"),
            _hdr_bytes(img, fmt="32-bit_rle_xyze"), _hdr_bytes(np.ones((1, 1, 3), np.float32)),
            _hdr_bytes(np.zeros((4, 40, 3), np.float32)),
            _hdr_bytes(rng.uniform(0, 1, (12, 12, 3)).astype(np.float32)),
        ]
    import OpenEXR

    td = OpenEXR.TileDescription()
    td.xSize, td.ySize, td.mode = 8, 8, OpenEXR.ONE_LEVEL
    return [
        _exr_bytes({"RGB": img}),
        _exr_bytes({"RGB": img.astype(np.float16)}),
        _exr_bytes({"RGBA": np.dstack([img, np.ones((8, 16), np.float32)])}),
        _exr_bytes({"Y": img[..., 0].copy()}),
        _exr_bytes({"sky.R": img[..., 0].copy(), "sky.G": img[..., 1].copy(), "sky.B": img[..., 2].copy()}),
        _exr_bytes({"RGB": img}, compression=OpenEXR.PIZ_COMPRESSION),
        _exr_bytes({"RGB": img}, compression=OpenEXR.NO_COMPRESSION),
        _exr_bytes({"RGB": img}, type=OpenEXR.tiledimage, tiles=td),
    ]


# ------------------------------------------------------------------------------------------ target
class Finding(Exception):
    pass


def check_one(data: bytes, ext: str, differential: bool = True) -> None:
    """Load ``data`` as an HDRI; raise Finding when the outcome is not acceptable."""
    STATS["inputs"] += 1
    path = TMP / f"input{ext}"
    path.write_bytes(data)
    if TARGET["name"] == "image":
        return _check_image(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RelightWarning)
            hdri = load_hdri(str(path))
    except InputError as exc:
        STATS["input_error"] += 1
        text = str(exc)
        if "\n" in text or str(path) not in text:
            raise Finding(f"InputError message is not one line naming the file: {text!r}")
        return
    except Exception as exc:  # anything else is a bug
        raise Finding(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}") from None
    px = hdri.pixels
    if not (px.ndim == 3 and px.shape[2] == 3 and px.shape[1] == 2 * px.shape[0] and px.dtype == np.float32):
        raise Finding(f"bad map shape/dtype {px.shape} {px.dtype}")
    if not (np.isfinite(px).all() and px.min() >= 0.0):
        raise Finding("map has non-finite or negative values")
    STATS["ok"] += 1
    if differential and ext == ".hdr":
        _compare_with_opencv(path)


def _check_image(path: Path) -> None:
    """The input-image and matte readers on the same bytes (EXR through OpenEXR's full read)."""
    from relight.stages import decode
    from relight.types import MediaInfo

    for read in (decode.read_image_rgb,
                 lambda p: decode.open_matte(p, MediaInfo(path="x", width=0, height=0, is_video=False))):
        try:
            img = read(str(path))
        except InputError as exc:
            STATS["input_error"] += 1
            if "\n" in str(exc) or str(path) not in str(exc):
                raise Finding(f"InputError message is not one line naming the file: {exc!s}")
            continue
        except Exception as exc:
            raise Finding(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}") from None
        STATS["ok"] += 1
        if isinstance(img, np.ndarray) and not (img.ndim == 3 and img.shape[2] == 3 and np.isfinite(img).all()):
            raise Finding(f"bad image {img.shape} {img.dtype}")


def _compare_with_opencv(path: Path) -> None:
    import cv2

    from relight.io.radiance import iter_bands, read_header

    level = cv2.getLogLevel()
    cv2.setLogLevel(0)
    try:
        ref = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        ref = None
    finally:
        cv2.setLogLevel(level)
    if ref is None or ref.dtype != np.float32 or ref.ndim != 3:
        return
    with open(path, "rb") as f:
        hdr = read_header(f, path)
    if hdr.xyz or hdr.flip_x or hdr.flip_y or (hdr.width, hdr.height) != (ref.shape[1], ref.shape[0]):
        return  # OpenCV reads only the plain '-Y H +X W' RGBE layout
    if hdr.width * hdr.height > 1 << 20:
        return
    out = np.zeros((hdr.height, hdr.width, 3), np.float32)
    stats: dict = {}
    try:
        for y0, band in iter_bands(path, stats=stats):
            out[y0:y0 + len(band)] = band
    except InputError:
        return  # OpenCV is laxer (it accepts some truncated files); refusing is fine
    if stats["old"] and (stats["rle"] or stats["repeats"]):
        return  # mixed or old run-length scanlines: Radiance's rules, which OpenCV does not follow
    STATS["differential"] += 1
    if not np.array_equal(out, ref[..., ::-1]):
        bad = np.argwhere(out != ref[..., ::-1])[:3].tolist()
        raise Finding(f"decoded pixels differ from OpenCV's at {bad}")


def save_finding(data: bytes, ext: str, message: str, crash_dir: Path) -> None:
    crash_dir.mkdir(parents=True, exist_ok=True)
    name = f"finding-{STATS['findings']:03d}{ext}"
    (crash_dir / name).write_bytes(data)
    (crash_dir / (name + ".txt")).write_text(message)
    STATS["findings"] += 1
    print(f"FINDING {name}: {message.splitlines()[0][:200]}", flush=True)


# ------------------------------------------------------------------------------------------ engines
def mutate(data: bytes, rnd: random.Random, pool: list) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 8)):
        op = rnd.randrange(7)
        if op == 0 and b:  # flip bytes
            for _ in range(rnd.randint(1, 4)):
                b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
        elif op == 1 and b:  # interesting value
            i = rnd.randrange(len(b))
            b[i] = rnd.choice([0, 1, 2, 127, 128, 129, 255, 0x80, 0x7F])
        elif op == 2:  # truncate
            b = b[:rnd.randrange(len(b) + 1)]
        elif op == 3 and b:  # duplicate a chunk
            i = rnd.randrange(len(b))
            j = min(len(b), i + rnd.randint(1, 64))
            b[i:i] = b[i:j]
        elif op == 4 and b:  # delete a chunk
            i = rnd.randrange(len(b))
            del b[i:i + rnd.randint(1, 64)]
        elif op == 5:  # splice with another seed
            other = rnd.choice(pool)
            cut = rnd.randrange(len(other) + 1)
            b = b[:rnd.randrange(len(b) + 1)] + other[cut:]
        elif op == 6 and len(b) >= 4:  # overwrite a 32-bit integer (EXR sizes and offsets)
            i = rnd.randrange(len(b) - 3)
            b[i:i + 4] = rnd.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000, rnd.getrandbits(32)]).to_bytes(4, "little")
    return bytes(b)


def run_random(fmt: str, seconds: float, crash_dir: Path, differential: bool, seed: int) -> None:
    ext = "." + fmt
    pool = seeds(fmt)
    rnd = random.Random(seed)
    for s in pool:
        _run_case(s, ext, crash_dir, differential)
    end = time.time() + seconds
    while time.time() < end:
        data = mutate(rnd.choice(pool), rnd, pool)
        if _run_case(data, ext, crash_dir, differential) == "ok" and len(pool) < 500:
            pool.append(data)  # keep inputs that still parse: they reach deeper code


def _run_case(data: bytes, ext: str, crash_dir: Path, differential: bool) -> str:
    before = STATS["ok"]
    t = time.time()
    try:
        check_one(data, ext, differential)
    except Finding as f:
        save_finding(data, ext, str(f), crash_dir)
        return "finding"
    if time.time() - t > 10:
        save_finding(data, ext, f"slow input: {time.time() - t:.1f} s", crash_dir)
    return "ok" if STATS["ok"] > before else "error"


def run_atheris(fmt: str, seconds: float, crash_dir: Path, differential: bool, extra: list) -> None:
    import atheris

    ext = "." + fmt
    corpus = TMP / "corpus"
    corpus.mkdir(exist_ok=True)
    for i, s in enumerate(seeds(fmt)):
        (corpus / f"seed{i}").write_bytes(s)

    def target(data: bytes) -> None:
        try:
            check_one(data, ext, differential)
        except Finding as f:
            save_finding(data, ext, str(f), crash_dir)
            raise

    argv = [sys.argv[0], str(corpus), f"-max_total_time={int(seconds)}", "-timeout=20", "-rss_limit_mb=3072",
            "-max_len=65536", f"-artifact_prefix={crash_dir}/", "-print_final_stats=1"] + extra
    crash_dir.mkdir(parents=True, exist_ok=True)
    atheris.Setup(argv, target)
    try:
        atheris.Fuzz()
    except SystemExit:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", choices=("hdr", "exr"), default="hdr")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--engine", choices=("atheris", "random", "auto"), default="auto")
    ap.add_argument("--crash-dir", default=str(ROOT / "fuzz-findings"))
    ap.add_argument("--no-differential", action="store_true", help="skip the comparison with OpenCV")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", choices=("hdri", "image"), default="hdri",
                    help="hdri: relight.hdri.load_hdri (default); image: the input-image and matte readers")
    ap.add_argument("--replay", nargs="*", default=None, help="run these files once and report")
    args, extra = ap.parse_known_args()
    crash_dir = Path(args.crash_dir)
    TARGET["name"] = args.target
    differential = not args.no_differential
    if args.replay is not None:
        for p in args.replay:
            data = Path(p).read_bytes()
            try:
                check_one(data, "." + args.format, differential)
                print(f"{p}: ok")
            except Finding as f:
                print(f"{p}: FINDING {f}")
        return 0
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if importlib.util.find_spec("atheris") else "random"
    start = time.time()
    print(f"[{args.format}] engine={engine}; the input being tried is {TMP}/input.{args.format} "
          "(after a native crash, that file is the crashing input)", flush=True)
    if engine == "atheris":
        atexit.register(lambda: print(f"[{args.format}] {STATS} in {time.time() - start:.0f} s", flush=True))
        import atheris

        for module in ("relight.io.exr", "relight.io.radiance"):
            importlib.import_module(module)
        atheris.instrument_all()  # coverage feedback from every Python function loaded so far
        run_atheris(args.format, args.seconds, crash_dir, differential, extra)
    else:
        run_random(args.format, args.seconds, crash_dir, differential, args.seed)
    print(f"[{args.format}] engine={engine} {STATS} in {time.time() - start:.0f} s", flush=True)
    return 1 if STATS["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
