#!/usr/bin/env python
"""Temporal evaluation (``relight eval-video``) over a grid of clips x HDRIs x autorotate rates.

    python tools/temporal_sweep.py CLIPS... [--hdris sunset,studio,forest] [--autorotate 0,30]
                                   [--max-frames N] [--jobs N] [--json FILE] [--out FILE.md]

CLIPS are video files or directories (every .mp4/.mov/.mkv directly inside). Each cell
(clip, HDRI, autorotate) relights the clip in memory with
:func:`relight.evaluate_video.evaluate_relight` (the same measurement as
``relight eval-video CLIP --hdri H --autorotate A``: frames measured before encoding) and
gives one row of a markdown table: frames, warp-error ratio, flicker ratio (second order: a steady
--autorotate rotation cancels in it; informational), detail SSIM (face), exposure
pumping of input and output (%/frame) and PASS/FAIL against the targets

    warp-error ratio <= 1.10,  detail SSIM >= 0.80,  output pumping <= input pumping

followed by a summary line (cells passing, worst ratio, lowest SSIM). The table goes to stdout
(and to ``--out``), one progress line per finished cell to stderr, all metrics to ``--json``.

The full grid is slow (every cell relights the whole clip): use ``--max-frames`` for a quick
look. ``--jobs N`` runs N cells at a time in separate processes (default 1). Every cell uses a
fresh Relighter and StabilityMeter, as ``relight eval-video`` does (evaluate_relight takes no
shared Perceiver), so the numbers equal those of the command; within one process the libraries
are imported once. Exit status: 0 when every cell passes, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv")
DEFAULT_HDRIS = "sunset,studio,forest"
DEFAULT_AUTOROTATE = "0,30"
# targets (as in relight.evaluate_video.format_table)
MAX_RATIO = 1.10
MIN_SSIM = 0.80


# ============================================================================= one cell
def run_cell(clip: str, hdri: str, autorotate: float, max_frames: Optional[int], flow_size: int) -> dict:
    """Evaluate one cell; never raises (an error is returned in ``error``)."""
    t0 = time.perf_counter()
    cell = {"clip": clip, "hdri": hdri, "autorotate": autorotate, "result": None, "error": None}
    try:
        from relight.evaluate_video import evaluate_relight
        from relight.settings import RelightSettings

        settings = RelightSettings(hdri=hdri, autorotate=autorotate)
        cell["result"] = evaluate_relight(clip, settings, max_frames=max_frames, flow_size=flow_size,
                                          show_progress=False)
    except Exception as exc:  # one failed cell must not lose the rest of the grid
        cell["error"] = f"{type(exc).__name__}: {exc}"
        cell["traceback"] = traceback.format_exc()
    cell["seconds"] = time.perf_counter() - t0
    return cell


def _run_cell_args(args) -> dict:
    return run_cell(*args)


def judge(cell: dict) -> dict:
    """Add the target checks to a cell: ``checks`` (name -> bool) and ``passed``."""
    r = cell.get("result")
    if r is None:
        cell["checks"] = {}
        cell["passed"] = False
        return cell
    ratio, ssim = r["warp_error_ratio"], r["detail_ssim"]
    pin, pout = r["input"]["pumping_pct"], r["output"]["pumping_pct"]
    # NaN (nothing measured) fails every comparison
    cell["checks"] = {"ratio": bool(ratio <= MAX_RATIO), "ssim": bool(ssim >= MIN_SSIM), "pumping": bool(pout <= pin)}
    cell["passed"] = all(cell["checks"].values())
    return cell


# ============================================================================= report
def _num(x, nd: int = 3) -> str:
    return "n/a" if x is None or not isinstance(x, (int, float)) or not math.isfinite(x) else f"{x:.{nd}f}"


def verdict(cell: dict) -> str:
    if cell.get("error"):
        return "ERROR"
    if cell["passed"]:
        return "PASS"
    return "FAIL (" + ", ".join(k for k, ok in cell["checks"].items() if not ok) + ")"


def cell_name(cell: dict) -> str:
    return f"{Path(cell['clip']).name} / {cell['hdri']} / {cell['autorotate']:g} deg/s"


def progress_line(k: int, n: int, cell: dict) -> str:
    head = f"[{k}/{n}] {cell_name(cell)}: "
    if cell.get("error"):
        return head + f"ERROR {cell['error']} ({cell['seconds']:.0f} s)"
    r = cell["result"]
    return head + (f"{r['frames']} frames, ratio {_num(r['warp_error_ratio'])}, SSIM {_num(r['detail_ssim'])}, "
                   f"pumping {_num(r['input']['pumping_pct'])} -> {_num(r['output']['pumping_pct'])} %/frame: "
                   f"{verdict(cell)} ({cell['seconds']:.0f} s)")


def format_markdown(cells: Sequence[dict]) -> str:
    lines = ["| clip | hdri | autorotate (deg/s) | frames | warp-error ratio | flicker ratio | detail SSIM "
             "| pumping in (%/frame) | pumping out (%/frame) | result |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for c in cells:
        r = c.get("result")
        if r is None:
            vals = ["", "", "", "", "", ""]
        else:
            vals = [str(r["frames"]), _num(r["warp_error_ratio"]), _num(r.get("flicker_ratio")), _num(r["detail_ssim"]),
                    _num(r["input"]["pumping_pct"]), _num(r["output"]["pumping_pct"])]
        lines.append(f"| {Path(c['clip']).name} | {c['hdri']} | {c['autorotate']:g} | " + " | ".join(vals)
                     + f" | {verdict(c)} |")
    lines.append("")
    lines.append(summary_line(cells))
    return "\n".join(lines)


def summary(cells: Sequence[dict]) -> dict:
    def finite(x):
        return isinstance(x, (int, float)) and math.isfinite(x)

    measured = [c for c in cells if c.get("result") is not None]
    ratios = [c for c in measured if finite(c["result"]["warp_error_ratio"])]
    ssims = [c for c in measured if finite(c["result"]["detail_ssim"])]
    worst = max(ratios, key=lambda c: c["result"]["warp_error_ratio"], default=None)
    lowest = min(ssims, key=lambda c: c["result"]["detail_ssim"], default=None)
    return {
        "cells": len(cells),
        "passed": sum(1 for c in cells if c.get("passed")),
        "errors": sum(1 for c in cells if c.get("error")),
        "worst_ratio": worst["result"]["warp_error_ratio"] if worst else None,
        "worst_ratio_cell": cell_name(worst) if worst else None,
        "lowest_ssim": lowest["result"]["detail_ssim"] if lowest else None,
        "lowest_ssim_cell": cell_name(lowest) if lowest else None,
    }


def summary_line(cells: Sequence[dict]) -> str:
    s = summary(cells)
    text = f"**Summary:** {s['passed']}/{s['cells']} cells pass"
    if s["errors"]:
        text += f" ({s['errors']} errors)"
    text += f"; worst warp-error ratio {_num(s['worst_ratio'])}"
    if s["worst_ratio_cell"]:
        text += f" ({s['worst_ratio_cell']})"
    text += f"; lowest detail SSIM {_num(s['lowest_ssim'])}"
    if s["lowest_ssim_cell"]:
        text += f" ({s['lowest_ssim_cell']})"
    text += (f". Targets: ratio <= {MAX_RATIO:.2f}, detail SSIM >= {MIN_SSIM:.2f}, "
             "output pumping <= input pumping.")
    return text


# ============================================================================= command line
def find_clips(items: Sequence[str]) -> List[str]:
    clips: List[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise SystemExit(f"temporal_sweep: error: no {'/'.join(VIDEO_EXTENSIONS)} files in {item}")
            clips.extend(found)
        elif p.is_file():
            clips.append(str(p))
        else:
            raise SystemExit(f"temporal_sweep: error: {item}: no such file or directory")
    return clips


def parse_list(text: str, what: str) -> List[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise SystemExit(f"temporal_sweep: error: {what} is empty")
    return items


def check_hdris(hdris: Sequence[str]) -> None:
    from relight.hdri import PRESETS

    for h in hdris:
        if h not in PRESETS and not Path(h).is_file():
            raise SystemExit(f"temporal_sweep: error: --hdris: {h!r} is neither a preset "
                             f"({', '.join(PRESETS)}) nor a file")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="temporal_sweep.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("clips", nargs="+", metavar="CLIPS",
                   help="video files, or directories (every .mp4/.mov/.mkv directly inside)")
    p.add_argument("--hdris", default=DEFAULT_HDRIS,
                   help="comma-separated HDRI presets or files. Default: %(default)s")
    p.add_argument("--autorotate", default=DEFAULT_AUTOROTATE, metavar="DEG_PER_S,...",
                   help="comma-separated autorotate rates (degrees per second). Default: %(default)s")
    p.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="evaluate at most N frames of each clip (at least 2). Default: all frames")
    p.add_argument("--flow-size", type=int, default=None, metavar="PX",
                   help="longest side of the optical flow (as relight eval-video). Default: its default")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="cells evaluated at once, in separate processes. Default: 1")
    p.add_argument("--json", default=None, metavar="FILE", help="write all metrics of all cells to FILE")
    p.add_argument("--out", default=None, metavar="FILE.md", help="also write the markdown table to FILE.md")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_frames is not None and args.max_frames < 2:
        raise SystemExit(f"temporal_sweep: error: --max-frames must be at least 2, got {args.max_frames}")
    if args.jobs < 1:
        raise SystemExit(f"temporal_sweep: error: --jobs must be at least 1, got {args.jobs}")
    clips = find_clips(args.clips)
    hdris = parse_list(args.hdris, "--hdris")
    try:
        rates = [float(a) for a in parse_list(args.autorotate, "--autorotate")]
    except ValueError:
        raise SystemExit(f"temporal_sweep: error: --autorotate must be comma-separated numbers, got {args.autorotate!r}")
    check_hdris(hdris)
    from relight.evaluate_video import FLOW_SIZE, _json_safe

    flow_size = FLOW_SIZE if args.flow_size is None else args.flow_size
    if not 32 <= flow_size <= 4096:
        raise SystemExit(f"temporal_sweep: error: --flow-size must be in 32..4096, got {flow_size}")

    grid = [(clip, h, a, args.max_frames, flow_size) for clip in clips for h in hdris for a in rates]
    n = len(grid)
    print(f"temporal_sweep: {n} cells ({len(clips)} clips x {len(hdris)} HDRIs x {len(rates)} autorotate), "
          f"max frames {args.max_frames or 'all'}, jobs {args.jobs}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    done: dict = {}
    if args.jobs == 1:
        for k, cell_args in enumerate(grid):
            cell = judge(run_cell(*cell_args))
            done[k] = cell
            print(progress_line(len(done), n, cell), file=sys.stderr, flush=True)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: MediaPipe/TFLite and OpenCV threads do not survive fork reliably
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(args.jobs, n), mp_context=ctx) as pool:
            futures = {pool.submit(_run_cell_args, cell_args): k for k, cell_args in enumerate(grid)}
            for fut in as_completed(futures):
                cell = judge(fut.result())
                done[futures[fut]] = cell
                print(progress_line(len(done), n, cell), file=sys.stderr, flush=True)
    cells = [done[k] for k in range(n)]  # grid order
    print(f"temporal_sweep: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    for c in cells:
        if c.get("error"):
            print(f"--- {cell_name(c)}\n{c.get('traceback', c['error'])}", file=sys.stderr)

    table = format_markdown(cells)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    if args.json:
        payload = {"args": {"clips": clips, "hdris": hdris, "autorotate": rates, "max_frames": args.max_frames,
                            "flow_size": flow_size},
                   "targets": {"warp_error_ratio_max": MAX_RATIO, "detail_ssim_min": MIN_SSIM,
                               "pumping": "output <= input"},
                   "summary": summary(cells), "cells": cells}
        Path(args.json).write_text(json.dumps(_json_safe(payload), indent=2) + "\n")
    return 0 if all(c.get("passed") for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
