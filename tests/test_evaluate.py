"""``relight eval``: metrics, pair rule and the command, on a tiny synthetic light-stage set made
here (a Lambertian sphere rendered with the SH maths of :mod:`relight.envmap`)."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from relight import envmap
from relight.colour import linear_to_srgb8, luminance
from relight.errors import InputError, UsageError
from relight.evaluate import (
    LightStage, Render, Truth, coverage_mask, evaluate, light_direction, main_eval, make_method, score, select_pairs,
    si_rmse)
from relight.io.exr import write_exr

SIZE = 48
RADIUS = 19.0
ALBEDO = np.array([0.5, 0.4, 0.3], np.float32)


def _sun_hdri(u: float, v: float = 0.5, colour=(40.0, 36.0, 30.0), width: int = 64) -> np.ndarray:
    uu, vv = envmap.pixel_grid(width, width // 2)
    d = envmap.uv_to_direction(uu, vv)
    img = np.zeros((width // 2, width, 3), np.float32)
    img[:] = (0.03, 0.035, 0.04)
    img[d @ envmap.uv_to_direction(u, v) > np.cos(np.radians(15))] = colour
    return img


def _sphere(size: int = SIZE, radius: float = RADIUS, ss: int = 4):
    """Coverage (supersampled) and camera-frame normals at the pixel centres (z to the camera)."""
    c = (size - 1) / 2.0
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cov = np.zeros((size, size))
    for oy in offs:
        for ox in offs:
            cov += ((xx + ox - c) ** 2 + (yy + oy - c) ** 2) <= radius ** 2
    cov /= ss * ss
    x = np.clip((xx - c) / radius, -1, 1)
    y = np.clip(-(yy - c) / radius, -1, 1)
    r2 = x * x + y * y
    scale = np.where(r2 > 1, 1 / np.sqrt(np.maximum(r2, 1e-12)), 1.0)
    x, y = x * scale, y * scale
    n = np.stack([x, y, np.sqrt(np.clip(1 - x * x - y * y, 0, 1))], -1).astype(np.float32)
    n[cov <= 0] = 0
    return cov.astype(np.float32), n


def _shade(hdri: np.ndarray, pan: float, normals: np.ndarray) -> np.ndarray:
    e = envmap.eval_sh(envmap.irradiance_sh(envmap.project_sh(hdri, pan)), normals)
    return ALBEDO * np.maximum(e, 0.0)


HDRIS = {"sun_px": _sun_hdri(0.75), "sun_mx": _sun_hdri(0.25, colour=(30.0, 34.0, 44.0))}


def make_lightstage(root: Path, hdris=HDRIS, pans=(0.0,), poses=(0,)) -> Path:
    """A light-stage set in the dev set's layout: <pose>/<hdri>_pan<deg>/{img.png, linear.exr},
    <pose>/{alpha.png, normal.exr, albedo.png}, hdri/<name>.exr and manifest.json."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "hdri").mkdir(exist_ok=True)
    for name, px in hdris.items():
        write_exr(root / "hdri" / f"{name}.exr", px, half=False)
    cov, n = _sphere()
    renders, frames = [], []
    for pose in poses:
        pdir = f"yaw{pose:+03d}"
        (root / pdir).mkdir(exist_ok=True)
        cv2.imwrite(str(root / pdir / "alpha.png"), np.round(cov * 255).astype(np.uint8))
        write_exr(root / pdir / "normal.exr", n, half=True)
        alb = np.where(cov[..., None] > 0, ALBEDO, 0.0).astype(np.float32)
        cv2.imwrite(str(root / pdir / "albedo.png"), cv2.cvtColor(linear_to_srgb8(alb), cv2.COLOR_RGB2BGR))
        for name, px in hdris.items():
            for pan in pans:
                person = _shade(px, pan, n)
                bg = envmap.reproject(px, SIZE, SIZE, 25.0, pan)
                frames.append(cov[..., None] * person + (1 - cov[..., None]) * bg)
                d = f"{pdir}/{name}_pan{pan:g}"
                renders.append({
                    "dir": d, "hdri": name, "hdri_path": f"hdri/{name}.exr", "pan_deg": pan, "pose_yaw_deg": pose,
                    "width": SIZE, "height": SIZE,
                    "files": {"img": f"{d}/img.png", "linear": f"{d}/linear.exr", "alpha": f"{pdir}/alpha.png",
                              "normal": f"{pdir}/normal.exr", "albedo": f"{pdir}/albedo.png"}})
    exposure = 0.8 / max(float(f[cov > 0.99].max()) for f in frames)  # the person stays below 1 in img.png
    for r, f in zip(renders, frames):
        (root / r["dir"]).mkdir(parents=True, exist_ok=True)
        lin = (f * exposure).astype(np.float32)
        write_exr(root / r["files"]["linear"], lin, half=False)
        cv2.imwrite(str(root / r["files"]["img"]), cv2.cvtColor(linear_to_srgb8(lin), cv2.COLOR_RGB2BGR))
        r["exposure_scale"] = exposure
    (root / "manifest.json").write_text(json.dumps({"name": "synthetic sphere", "renders": renders}, indent=1))
    return root


@pytest.fixture(scope="module")
def lightstage(tmp_path_factory) -> Path:
    return make_lightstage(tmp_path_factory.mktemp("lightstage"))


def _truth(hdri: np.ndarray) -> Truth:
    cov, n = _sphere()
    return Truth(linear=_shade(hdri, 0.0, n).astype(np.float32), mask=coverage_mask(cov), normals=n,
                 albedo_lum=np.where(cov > 0, luminance(ALBEDO[None, None]), 0.0).astype(np.float32))


# ----------------------------------------------------------------------------- metrics
def test_metrics_of_the_ground_truth_itself():
    truth = _truth(HDRIS["sun_px"])
    r = score(truth.linear, truth)
    assert r["si_rmse"] == pytest.approx(0.0, abs=1e-6)
    assert r["si_rmse_rgb"] == pytest.approx(0.0, abs=1e-6)
    assert r["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert r["light_dir_err"] == pytest.approx(0.0, abs=1e-3)
    assert r["scale"] == pytest.approx(1.0, rel=1e-6)


def test_scale_invariance():
    truth = _truth(HDRIS["sun_px"])
    out = _truth(HDRIS["sun_mx"]).linear * np.float32(0.9) + np.float32(0.01)
    a, b = score(out, truth), score(out * np.float32(7.3), truth)
    for k in ("si_rmse", "si_rmse_rgb", "ssim", "light_dir_err"):
        assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k
    assert b["scale"] == pytest.approx(a["scale"] / 7.3, rel=1e-5)
    assert a["si_rmse"] > 0.1 and a["ssim"] < 0.999


def test_si_rmse_definition():
    mask = np.ones((4, 4), bool)
    g = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    assert si_rmse(np.zeros_like(g), g, mask) == pytest.approx(1.0)  # nothing = 100% of the GT's RMS
    o = g + np.float32(1.0)
    s = float((o * g).sum() / (o * o).sum())
    expect = np.sqrt(np.mean((s * o - g) ** 2)) / np.sqrt(np.mean(g ** 2))
    assert si_rmse(o, g, mask) == pytest.approx(expect, rel=1e-6)
    rgb = np.stack([g, 2 * g, 3 * g], -1)  # per-channel scales: a colour cast costs nothing
    assert si_rmse(rgb * np.array([1.0, 0.5, 2.0], np.float32), rgb, mask) == pytest.approx(0.0, abs=1e-6)


def test_light_direction_left_vs_right():
    # a purely order-1 shading field (1 + 0.6 n.L): the fit recovers L exactly
    truth = _truth(HDRIS["sun_px"])
    mask, n, alb = truth.mask, truth.normals, truth.albedo_lum

    def lit(direction):
        shading = 1.0 + 0.6 * (n @ np.asarray(direction, np.float32))
        return (alb * shading).astype(np.float32)

    plus = light_direction(lit((1, 0, 0)), alb, n, mask)
    assert plus == pytest.approx([1.0, 0.0, 0.0], abs=1e-4)
    lin = lambda d: np.repeat(lit(d)[..., None], 3, axis=2)  # noqa: E731
    gt = Truth(linear=lin((1, 0, 0)), mask=mask, normals=n, albedo_lum=alb)
    assert score(lin((-1, 0, 0)), gt)["light_dir_err"] == pytest.approx(180.0, abs=0.1)
    assert score(lin((1, 0, 0)) * np.float32(3.0), gt)["light_dir_err"] == pytest.approx(0.0, abs=1e-3)
    assert score(lin((0, 1, 0)), gt)["light_dir_err"] == pytest.approx(90.0, abs=0.1)

    # a sun at +x / -x (clamped cosine): the order-1 fit over the visible hemisphere is pulled
    # toward -z by the order-2 terms, symmetrically, so the two directions mirror each other in x
    px, mx = truth, _truth(HDRIS["sun_mx"])
    assert px.direction[0] > 0.7 and mx.direction[0] < -0.7
    assert mx.direction == pytest.approx(px.direction * np.array([-1, 1, 1]), abs=0.01)
    assert score(mx.linear, px)["light_dir_err"] == pytest.approx(
        np.degrees(np.arccos(px.direction @ mx.direction)), abs=0.01)
    assert score(px.linear * np.float32(3.0), px)["light_dir_err"] == pytest.approx(0.0, abs=1e-3)
    # no light direction in a uniform field: NaN, not a crash
    assert light_direction(np.ones(mask.shape, np.float32), alb, n, mask) is None
    assert np.isnan(score(np.ones_like(px.linear), px)["light_dir_err"])


# ----------------------------------------------------------------------------- pair rule
def _grid(n_poses=3, n_hdris=13, pans=(0.0, 120.0)):
    out, i = [], 0
    for q in range(n_poses):
        for h in range(n_hdris):
            for p in pans:
                out.append(Render(i, f"p{q}/h{h:02d}_{p:g}", f"h{h:02d}", "x.exr", p, float(q * 25 - 25), {}))
                i += 1
    return out


def test_pair_rule_on_the_dev_layout():
    renders = _grid()
    pairs = select_pairs(renders)
    assert len(pairs) == 60
    assert select_pairs(list(reversed(renders))) == pairs  # independent of the manifest order
    assert all(s.pose == d.pose and s.hdri != d.hdri for s, d in pairs)
    assert Counter(s.pose for s, _ in pairs) == {-25.0: 20, 0.0: 20, 25.0: 20}
    assert Counter((s.pan, d.pan) for s, d in pairs) == {(0.0, 0.0): 15, (0.0, 120.0): 15,
                                                         (120.0, 0.0): 15, (120.0, 120.0): 15}
    assert len({(s.index, d.index) for s, d in pairs}) == 60
    assert [s.pose for s, _ in pairs[:3]] == [-25.0, 0.0, 25.0]  # round-robin: max_pairs keeps every pose
    assert max(Counter(d.hdri for _, d in pairs).values()) <= 6


def test_pair_rule_small_sets():
    pairs = select_pairs(_grid(1, 2, (0.0,)))
    assert sorted((s.hdri, d.hdri) for s, d in pairs) == [("h00", "h01"), ("h01", "h00")]
    pairs = select_pairs(_grid(1, 1, (0.0, 90.0)))  # one HDRI: the pan must differ
    assert pairs and all(s.pan != d.pan for s, d in pairs)


# ----------------------------------------------------------------------------- on a data set
def test_identity_and_oracle_on_the_synthetic_set(lightstage, tmp_path):
    res = evaluate(lightstage, out_dir=tmp_path / "out", methods=("identity", "gain", "oracle"),
                   show_progress=False)
    assert res["pairs_evaluated"] == 2
    manifest = json.loads((lightstage / "manifest.json").read_text())
    by_dir = {r["dir"]: r for r in manifest["renders"]}
    from relight.io.exr import read_exr

    alpha = cv2.imread(str(lightstage / "yaw+00" / "alpha.png"), cv2.IMREAD_UNCHANGED) / 255.0
    mask = coverage_mask(alpha)
    for pair, row in zip(res["pairs"], res["results"]["identity"]["pairs"]):
        src = luminance(read_exr(lightstage / by_dir[pair["source"]]["files"]["linear"]))
        dst = luminance(read_exr(lightstage / by_dir[pair["target"]]["files"]["linear"]))
        expect = si_rmse(src, dst, mask)  # the float renders; identity reads the 8-bit img.png
        assert expect > 0.3
        assert row["si_rmse"] == pytest.approx(expect, abs=0.01)
        d_src = light_direction(src, luminance(ALBEDO[None, None]) * (mask > 0), _sphere()[1], mask)
        d_dst = light_direction(dst, luminance(ALBEDO[None, None]) * (mask > 0), _sphere()[1], mask)
        assert d_src[0] * d_dst[0] < 0  # suns on opposite sides
        assert row["light_dir_err"] == pytest.approx(np.degrees(np.arccos(d_src @ d_dst)), abs=2.0)
        assert row["ssim"] < 0.95
    ident = res["results"]["identity"]["mean"]
    oracle = res["results"]["oracle"]["mean"]  # the set is ideal diffuse: the oracle is ~exact
    assert oracle["si_rmse"] < 0.02 and oracle["ssim"] > 0.99 and oracle["light_dir_err"] < 2.0
    assert ident["si_rmse"] > 10 * oracle["si_rmse"]
    # gain changes the colour only: luminance errors stay close to identity's
    assert res["results"]["gain"]["mean"]["light_dir_err"] == pytest.approx(ident["light_dir_err"], abs=2.0)
    assert set(res["results"]["identity"]["per_target_hdri"]) == {"sun_px", "sun_mx"}


def test_command_writes_table_json_and_sheet(lightstage, tmp_path, capsys):
    out = tmp_path / "eval-out"
    assert main_eval([str(lightstage), "--out", str(out), "--methods", "identity,gain", "--max-pairs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "si-RMSE(lum)" in printed and "identity" in printed and "gain" in printed and "sun_" in printed
    data = json.loads((out / "eval.json").read_text())
    assert data["pairs_evaluated"] == 1 and data["methods"] == ["identity", "gain"]
    row = data["results"]["identity"]["pairs"][0]
    assert {"si_rmse", "si_rmse_rgb", "ssim", "light_dir_err"} <= set(row)
    assert data["results"]["identity"]["mean"]["si_rmse"] == pytest.approx(row["si_rmse"])
    assert "si-RMSE(lum)" in (out / "table.txt").read_text()
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[1] == 4 * 192 and sheet.shape[0] > 2 * 192


def test_relight_method_runs(lightstage, tmp_path):
    pytest.importorskip("mediapipe")
    res = evaluate(lightstage, out_dir=None, methods=("relight",), max_pairs=1, show_progress=False)
    row = res["results"]["relight"]["pairs"][0]
    assert row["si_rmse"] is not None and 0.0 <= row["si_rmse"] < 2.0
    assert res["normals"]["renders"] == 1 and res["normals"]["mean_angle_deg"] is not None


def test_relight_method_takes_the_fill_setting(lightstage, tmp_path, capsys):
    """``relight eval --fill X`` relights with that fill (a floor under the target's diffuse
    light: it only lifts, and lifts the shadow side), says so in the table and eval.json, and
    refuses a value out of range."""
    pytest.importorskip("mediapipe")
    data = LightStage(lightstage)
    src, dst = select_pairs(data.renders)[0]
    lum = {}
    for fill in (0.0, 0.5):
        method = make_method("relight", fill=fill)
        try:
            lum[fill] = luminance(method(data, src, dst))[data.mask(src)]
        finally:
            method.close()
    assert np.mean(lum[0.5] >= lum[0.0] - 1e-4) > 0.99
    assert np.percentile(lum[0.5], 10) > 1.2 * np.percentile(lum[0.0], 10)
    out = tmp_path / "o"
    args = [str(lightstage), "--out", str(out), "--methods", "relight", "--max-pairs", "1", "--no-normals"]
    assert main_eval(args + ["--fill", "0"]) == 0
    assert "--fill 0" in capsys.readouterr().out.splitlines()[0]
    assert json.loads((out / "eval.json").read_text())["settings"] == {"fill": 0.0}
    assert main_eval(args + ["--fill", "1.5", "--quiet"]) == 2
    assert "--fill must be in 0..1" in capsys.readouterr().err


def test_bad_dataset_dirs(tmp_path, lightstage):
    with pytest.raises(InputError, match="manifest.json") as exc:
        evaluate(tmp_path, out_dir=None, methods=("identity",))
    assert exc.value.path == str(tmp_path)
    assert main_eval([str(tmp_path / "nowhere"), "--quiet", "--out", str(tmp_path / "o")]) == 3

    broken = make_lightstage(tmp_path / "broken")
    os.remove(broken / "yaw+00" / "normal.exr")
    with pytest.raises(InputError, match="missing file") as exc:
        evaluate(broken, out_dir=None, methods=("identity",))
    assert exc.value.path.endswith("normal.exr")

    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "manifest.json").write_text("{not json")
    with pytest.raises(InputError):
        evaluate(tmp_path / "badjson", out_dir=None)
    with pytest.raises(UsageError):
        evaluate(lightstage, out_dir=None, methods=("identity", "magic"))
