"""`relight bench` on a tiny generated clip (a few seconds), its report, and its usage errors."""
from __future__ import annotations

import json

import av
import pytest

from relight.bench import (check_targets, format_report, make_bench_clip, measure_decode, measure_floor,
                           parse_sizes)
from relight.cli import main
from relight.errors import UsageError


def test_parse_sizes():
    assert parse_sizes("360p,720p,1080p,4k") == [("360p", 640, 360), ("720p", 1280, 720),
                                                ("1080p", 1920, 1080), ("4k", 3840, 2160)]
    assert parse_sizes(" 4K , 160x90,360p,360p") == [("4k", 3840, 2160), ("160x90", 160, 90), ("360p", 640, 360)]
    for bad in ("8k", "", "161x90", "160x90x2", "32x32", "360p,,720p"):
        with pytest.raises(UsageError):
            parse_sizes(bad)


@pytest.mark.parametrize("args, words", [(["--sizes", "360p,8k"], "unknown size '8k'"),
                                         (["--sizes", "641x360"], "must be even"),
                                         (["--frames", "1"], "at least 2"),
                                         (["--frames", "x"], "invalid int")])
def test_usage_errors_exit_2_with_one_line(capsys, args, words):
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("relight: error: ") and err.count("\n") == 1 and words in err


def test_clip_decode_and_floor(tmp_path):
    clip = make_bench_clip(tmp_path / "clip.mp4", 5, 160, 90)
    with av.open(clip) as c:
        v = c.streams.video[0]
        assert (v.codec_context.name, v.codec_context.width, v.codec_context.height) == ("h264", 160, 90)
        assert float(v.average_rate) == 30
        assert sum(1 for _ in c.decode(v)) == 5
    dec = measure_decode(clip)
    floor = measure_floor(clip, str(tmp_path / "floor.mp4"))
    assert dec["frames"] == floor["frames"] == 5
    assert dec["fps"] > 0 and floor["fps"] > 0 and floor["seconds"] > 0
    with av.open(str(tmp_path / "floor.mp4")) as c:
        v = c.streams.video[0]
        assert v.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in c.decode(v)) == 5


def test_bench_end_to_end_tiny(tmp_path, capsys):
    """The whole command at 160x90, 5 frames, one relight run in a child process."""
    work = tmp_path / "work"
    assert main(["bench", "--sizes", "160x90", "--frames", "5", "--no-source", "--json", "--quiet",
                 "--work-dir", str(work)]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert out.err == ""
    assert report["machine"]["cpus"] >= 1 and report["hdri"] == "studio"
    (row,) = report["results"]
    assert (row["size"], row["width"], row["height"], row["frames"]) == ("160x90", 160, 90, 5)
    assert row["decode"]["fps"] > 0 and row["floor"]["fps"] > 0
    assert list(row["runs"]) == ["hdri"]
    run = row["runs"]["hdri"]
    assert run["frames"] == 5 and run["fps"] > 0 and run["setup_s"] > 0
    # (x_floor is rounded to 4 decimals: at this tiny size it is ~0.03)
    assert run["x_floor"] == pytest.approx(run["fps"] / row["floor"]["fps"], rel=1e-3, abs=5.1e-5)
    assert 0 < run["x_floor"] < 100
    assert 30 < run["peak_mib"] < 4096  # a real process with the models loaded, MiB not KiB
    assert run["stages_ms"] and all(v >= 0 for v in run["stages_ms"].values())
    assert sum(run["stages_ms"].values()) > 0
    assert [p.name for p in work.iterdir()] == ["bench_160x90_5f_v1.mp4"]  # the clip is kept, outputs are not
    text = format_report(report)
    assert "decode fps" in text and "floor fps" in text and "160x90" in text and "x floor" in text
    assert "720p >= 30 fps" in text and "not measured" in text


def test_targets_and_table_from_a_report():
    def run(fps, x, peak):
        return {"fps": fps, "x_floor": x, "setup_s": 1.0, "peak_mib": peak, "stages_ms": {"perception": 10.0},
                "stages_exclude_first_frame": True}

    results = [
        {"size": "720p", "frames": 90, "decode": {"fps": 500.0}, "floor": {"fps": 100.0},
         "runs": {"hdri": run(31.0, 0.31, 900.0), "source": run(35.0, 0.35, 880.0)}},
        {"size": "1080p", "frames": 90, "decode": {"fps": 200.0}, "floor": {"fps": 50.0},
         "runs": {"hdri": run(10.0, 0.2, 1200.0)}},
        {"size": "4k", "frames": 30, "decode": {"fps": 50.0}, "floor": {"fps": 12.0},
         "runs": {"hdri": run(4.5, 0.375, 3100.0)}},
    ]
    targets = check_targets(results)
    assert [t["met"] for t in targets] == [True, False, True, False]
    # an fps target is also given at the floor it was set against, by the run's ratio to its floor
    assert targets[0]["at_reference_floor"] == pytest.approx(0.31 * 108.0)
    assert targets[2]["at_reference_floor"] == pytest.approx(0.375 * 14.0)
    assert "at_reference_floor" not in targets[1] and "at_reference_floor" not in targets[3]
    report = {"machine": {"cpus": 2, "usable_cpus": 2, "cpu_model": "test", "python": "3", "relight": "0"},
              "hdri": "studio", "clip_fps": 30, "floor": "f", "results": results, "targets": targets}
    text = format_report(report)
    assert "NOT met (measured 0.2)" in text and "4K < 3 GiB" in text
    assert "this run's: 100.0), the same ratio to the floor gives 33.48 fps" in text
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("720p ") and "500.0" in line)
    assert row.split()[1:] == ["90", "500.0", "100.0", "31.00", "0.310", "1.0", "900", "35.00", "0.350", "880"]
    assert any(line.startswith("1080p hdri") and line.split()[-1] == "10.0" for line in lines)
