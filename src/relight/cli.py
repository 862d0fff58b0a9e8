"""The ``relight`` command line.

    relight run INPUT --hdri HDRI --output OUTPUT [options]
    relight demo [--output-dir DIR]
    relight presets
    relight eval DIR
    relight eval-video INPUT [OUTPUT]
    relight bench [--sizes 360p,720p,1080p,4k] [--frames N] [--hdri HDRI] [--no-source] [--json]

Exit codes: 0 ok, 2 usage error, 3 bad input, 4 output problem, 5 internal error, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from typing import Optional, Sequence

from . import __version__
from .errors import RelightError, UsageError
from .settings import LIGHT_FROM, RANGES, RelightSettings, default_of

EXIT_INTERNAL = 5
EXIT_INTERRUPTED = 130


def _range_type(name: str):
    lo, hi, _ = RANGES[name]
    flag = "--" + name.replace("_", "-")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects a number, got {text!r}") from None
        if not (lo <= value <= hi):
            raise argparse.ArgumentTypeError(f"{flag} must be in {lo:g}..{hi:g}, got {text}")
        return value

    return parse


def _add_relight_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("lighting")
    g.add_argument("--hdri", default=default_of("hdri"), metavar="HDRI",
                   help="target lighting: a .hdr or .exr equirectangular (2:1) map, or a built-in preset name "
                        "(see `relight presets`). Default: %(default)s")
    for name, metavar in (("pan", "DEG"), ("autorotate", "DEG_PER_S")):
        lo, hi, text = RANGES[name]
        g.add_argument("--" + name, type=_range_type(name), default=default_of(name), metavar=metavar,
                       help=f"{text}. Range {lo:g}..{hi:g}, default %(default)s")
    g.add_argument("--light-from", choices=LIGHT_FROM, default=None,
                   help="pick the pan that puts the HDRI's brightest direction on this side of the subject "
                        "(left/right as seen in the frame; front = from the camera; back = rim light). "
                        "Overrides --pan. Default: off")
    g = p.add_argument_group("look")
    for name in ("fg_gain", "bg_gain", "blur", "specular", "fill", "strength", "vfov"):
        lo, hi, text = RANGES[name]
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=_range_type(name), default=default_of(name),
                       metavar="DEG" if name == "vfov" else "X",
                       help=f"{text}. Range {lo:g}..{hi:g}, default %(default)s")
    g.add_argument("--background", default=default_of("background"), metavar="BG",
                   help="source (keep the original background), source-blur (blur it), hdri (the HDRI through "
                        "the virtual camera: --pan, --vfov, --bg-gain), transparent (write alpha: .mov ProRes "
                        "4444, .webm VP9, .png, .exr), a colour #RRGGBB, or an image or video file (scaled to "
                        "cover the frame, videos loop). Default: %(default)s")
    g.add_argument("--matte", default=None, metavar="FILE",
                   help="external matte (white = person) used instead of the built-in segmentation: a video or "
                        "image of the same size, or an image sequence pattern like matte_%%04d.png. Default: none")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit code 2)."""

    def error(self, message):
        self.exit(2, f"relight: error: {message} (see `{self.prog} --help`)\n")


def _options_epilog() -> str:
    lines = ["options of `relight run` (see `relight run --help`):"]
    for name, (lo, hi, text) in RANGES.items():
        lines.append(f"  --{name.replace('_', '-'):<11} {lo:g}..{hi:g}, default {default_of(name):g}: {text}")
    lines.append(f"  --hdri        preset or .hdr/.exr file, default {default_of('hdri')}")
    lines.append(f"  --background  source|source-blur|hdri|transparent|#RRGGBB|IMAGE|VIDEO, default "
                 f"{default_of('background')}")
    lines.append("  --light-from  front|left|right|back, default off; --matte FILE, default none")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="relight",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_options_epilog(),
        description="Relight the people in a video or image so they look lit by a 360-degree HDR environment "
                    "map, and composite them over a background. Exit codes: 0 ok, 2 usage error, 3 bad input, "
                    "4 output problem, 5 internal error, 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"relight {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="relight a video or image file",
                         description="Relight INPUT (a video: mp4/mov/mkv/webm/avi, or an image: png/jpg/exr) to "
                                     "an HDRI and write OUTPUT. Audio is kept. The output appears only when the "
                                     "run completes.")
    run.add_argument("input", metavar="INPUT", help="video or image to relight")
    run.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                     help="output file; the extension picks the format: .mp4/.mov/.mkv/.webm video, .png/.jpg "
                          "image, .exr scene-linear float (no tone mapping); for a video input a pattern such as "
                          "frames_%%04d.png or .exr writes an image sequence")
    _add_relight_options(run)
    _add_output_options(run)
    _add_common_options(run)

    demo = sub.add_parser("demo", help="relight a built-in clip (no files needed) and say where the result is",
                          description="Make a short clip from a public-domain portrait (NASA), relight it to a "
                                      "built-in HDRI preset and write the result and a preview PNG.")
    demo.add_argument("--output-dir", default="relight-demo", metavar="DIR",
                      help="where to write the demo files. Default: %(default)s")
    demo.add_argument("--hdri", default="sunset", help="preset or HDRI file to use. Default: %(default)s")
    _add_common_options(demo)

    from .evaluate import add_eval_parser

    add_eval_parser(sub)

    from .evaluate_video import add_eval_video_parser

    add_eval_video_parser(sub)

    from .bench import add_bench_parser

    add_bench_parser(sub)

    presets = sub.add_parser("presets", help="list the built-in HDRI presets",
                             description="List the built-in HDRI presets (CC0 maps shipped with relight).")
    presets.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists. Default: refuse")
    g.add_argument("--codec", default=None,
                   help="video codec (e.g. libx264, libx265, libvpx-vp9, prores_ks). Default: libx264 for "
                        ".mp4/.mkv/.mov, libvpx-vp9 for .webm, ProRes 4444 / VP9 with alpha for transparent")
    g.add_argument("--crf", type=int, default=18, choices=range(0, 64), metavar="0..63",
                   help="video quality, lower is better (x264/x265/VP9). Default: %(default)s")
    g.add_argument("--preset", default="veryfast",
                   help="x264/x265 speed preset (ultrafast..veryslow). Default: %(default)s")


def _add_common_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reporting")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bar or messages")
    g.add_argument("--json", action="store_true", help="print a machine-readable summary (frames, seconds, fps, "
                                                       "output) on stdout at the end")
    g.add_argument("--debug", action="store_true", help="show a full traceback on errors")


def settings_from_args(args: argparse.Namespace) -> RelightSettings:
    return RelightSettings(hdri=args.hdri, pan=args.pan, autorotate=args.autorotate, light_from=args.light_from,
                           vfov=args.vfov, fg_gain=args.fg_gain, bg_gain=args.bg_gain, blur=args.blur,
                           specular=args.specular, fill=args.fill, strength=args.strength,
                           background=args.background)


def _cmd_run(args) -> int:
    from .pipeline import relight_file

    summary = relight_file(args.input, args.output, settings_from_args(args), matte=args.matte,
                           overwrite=args.overwrite, codec=args.codec, crf=args.crf, preset=args.preset,
                           show_progress=not args.quiet)
    _report(args, summary, f"wrote {summary['output']} ({summary['frames']} frames, {summary['fps']:.1f} fps)")
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    summary = run_demo(args.output_dir, hdri=args.hdri, show_progress=not args.quiet)
    _report(args, summary, f"demo: relit clip {summary['output']}\n"
                           f"demo: input clip {summary['input']}\n"
                           f"demo: preview frame {summary['preview']}")
    return 0


def _cmd_eval(args) -> int:
    from .evaluate import cmd_eval

    return cmd_eval(args)


def _cmd_eval_video(args) -> int:
    from .evaluate_video import cmd_eval_video

    return cmd_eval_video(args)


def _cmd_bench(args) -> int:
    from .bench import cmd_bench

    return cmd_bench(args)


def _cmd_presets(args) -> int:
    from .hdri import list_presets

    rows = list_presets()
    if args.json:
        print(json.dumps([{"name": n, "description": d, "credit": c} for n, d, c in rows], indent=1))
    else:
        width = max(len(n) for n, _, _ in rows)
        for name, desc, credit in rows:
            print(f"{name:<{width}}  {desc}  ({credit})")
    return 0


def _report(args, summary: dict, text: str) -> None:
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        print(text)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"relight: warning: {message}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed a one-line usage error (exit 2) or help (0)
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        print("relight: error: no command given: run, demo, presets, eval, eval-video or bench "
              "(see `relight --help`)", file=sys.stderr)
        return 2
    warnings.showwarning = _show_warning
    if getattr(args, "quiet", False):
        warnings.simplefilter("ignore")
    from .stages.encode import install_signal_handlers

    install_signal_handlers()  # SIGTERM/SIGHUP end the run like Ctrl-C: no partial output
    handler = {"run": _cmd_run, "demo": _cmd_demo, "presets": _cmd_presets, "eval": _cmd_eval, "eval-video": _cmd_eval_video,
               "bench": _cmd_bench}[args.command]
    debug = getattr(args, "debug", False)
    try:
        return handler(args)
    except RelightError as exc:
        if debug:
            traceback.print_exc()
        print(f"relight: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\nrelight: interrupted; no partial output was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        if debug:
            traceback.print_exc()
        print("relight: error: out of memory; nothing was written (try a smaller input, see README "
              "'Resource use')", file=sys.stderr)
        return EXIT_INTERNAL
    except BrokenPipeError:  # e.g. `relight presets | head`: the reader went away
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except Exception as exc:  # a bug: one line unless --debug
        if debug:
            traceback.print_exc()
        print(f"relight: internal error: {type(exc).__name__}: {exc} (run with --debug for details)", file=sys.stderr)
        return EXIT_INTERNAL


def exit_process(code: int) -> None:
    """End the process with ``code``; the ``python -m`` entry points call this with main()'s result.

    An interruption must end with exit status 130 (the run has cleaned up by then). ``sys.exit``
    cannot promise that under ``python -m``: if the KeyboardInterrupt was raised while CPython
    ran code from a string (mediapipe builds a namedtuple, i.e. an ``eval``, on every frame), the
    interpreter marks it "unhandled" even though main() caught it, and after a ``-m`` run it then
    kills itself with SIGINT instead of exiting 130. So flush and leave directly."""
    if code == EXIT_INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    exit_process(main())
