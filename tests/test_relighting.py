"""Known-answer tests of the relighting stages: perception, geometry, lighting estimate, render.

Everything is synthesised here with the envmap / SH maths (no ../shared data): a Lambertian
sphere with analytic normals lit by synthetic HDRIs, a face mesh laid out from MediaPipe's own
topology, a disc matte. One smoke test runs MediaPipe on the packaged astronaut portrait.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from relight.envmap import eval_sh, irradiance_sh, pixel_grid, project_sh, solid_angles, uv_to_direction
from relight.stages.geometry import GeometryOptions, estimate_geometry, inflate_silhouette, rasterize_faces
from relight.stages.lighting import LightingOptions, dominant_direction, estimate_source_lighting
from relight.stages.render import EXPOSURE_TARGET, RenderOptions, auto_exposure, prepare_target, render_person
from relight.types import Geometry, Perception, SourceLighting, TargetLighting

ASSET = Path(__file__).resolve().parents[1] / "src" / "relight" / "assets" / "astronaut.jpg"


# ----------------------------------------------------------------------------- synthetic scenes
def make_hdri(light_u: float, light_v: float = 0.42, width: int = 128, ambient=(0.25, 0.25, 0.25),
              light=(40.0, 40.0, 40.0), radius_deg: float = 10.0) -> np.ndarray:
    """Uniform ambient plus one bright disc light centred at (u, v)."""
    u, v = pixel_grid(width, width // 2)
    d = uv_to_direction(u, v)
    c = uv_to_direction(light_u, light_v)
    img = np.empty((width // 2, width, 3), np.float32)
    img[:] = ambient
    img[d @ c > math.cos(math.radians(radius_deg))] = light
    return img


def sphere(size: int = 96, radius: float = 40.0):
    """Analytic normals (size, size, 3) and matte of a sphere centred in the image."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    x, y = (xx - c) / radius, -(yy - c) / radius  # image down = camera -y
    r2 = x * x + y * y
    inside = r2 < 1.0
    z = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    n = np.stack([x, y, z], -1)
    n[~inside] = (0.0, 0.0, 1.0)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return n.astype(np.float32), inside.astype(np.float32)


def lambert(normals, albedo, hdri, pan=0.0):
    E = eval_sh(irradiance_sh(project_sh(hdri, pan)).astype(np.float32), normals)
    return (np.asarray(albedo, np.float32) / math.pi * E).astype(np.float32)


def angle_deg(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    c = np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


# the estimator with its face-oriented priors switched off (a sphere shows every normal, so the
# priors only bias it): what the exactness tests use
PLAIN_FIT = LightingOptions(ridge_band1=0.002, ridge_band2=0.008, prior_up=0.0)


def brute_irradiance(hdri, normals, pan=0.0):
    """E(n) = sum over the map's pixels of L max(0, n.w) dOmega: the exact irradiance (no SH)."""
    h, w = hdri.shape[:2]
    u, v = pixel_grid(w, h)
    d = uv_to_direction(u, v, pan).reshape(-1, 3)
    omega = np.broadcast_to(solid_angles(w, h), (h, w)).reshape(-1)
    L = hdri.reshape(-1, 3) * omega[:, None]
    cos = np.clip(normals.reshape(-1, 3) @ d.T, 0.0, None)
    return (cos @ L).reshape(normals.shape[:-1] + (3,)).astype(np.float32)


def sphere_scene(hdri, albedo=(0.5, 0.5, 0.5)):
    n, matte = sphere()
    img = lambert(n, albedo, hdri) * matte[..., None]
    per = Perception(matte=matte)
    geo = Geometry(normals=n, face_mask=np.zeros_like(matte), work_normals=n)
    return img, per, geo, n, matte


# ----------------------------------------------------------------------------- lighting + render
def test_relit_sphere_matches_direct_render_and_bright_side_flips():
    hdri_a = make_hdri(0.25)  # light from the camera's left (-x)
    hdri_b = make_hdri(0.75)  # light from the right (+x)
    img_a, per, geo, n, matte = sphere_scene(hdri_a)
    src = estimate_source_lighting(img_a, per, geo, PLAIN_FIT)
    # the physical render (no fill floor under the shadow side)
    relit = render_person(img_a, per, geo, src, prepare_target(hdri_b, 0.0), specular=0.0,
                          options=RenderOptions(fill=0.0))
    # the target's light is rendered as a light (sharp terminator), not as order-2 SH: the
    # reference is the exact irradiance of hdri_b
    direct_b = 0.5 / math.pi * brute_irradiance(hdri_b, n)

    assert relit.shape == img_a.shape and relit.dtype == np.float32
    assert np.isfinite(relit).all()
    inner = (np.linalg.norm(n[..., :2], axis=-1) < 0.95) & (matte > 0)
    scale = np.median(direct_b[inner] / np.maximum(relit[inner], 1e-9))
    rel_err = np.abs(scale * relit[inner] - direct_b[inner]) / direct_b[inner]
    assert np.median(rel_err) < 0.02
    lit = inner & (direct_b[..., 1] > 0.3 * direct_b[..., 1].max())  # away from the (softened) terminator
    assert np.percentile(rel_err[lit[inner]], 95) < 0.06
    # and much closer to the exact irradiance than the order-2 SH render is
    sh_b = lambert(n, (0.5, 0.5, 0.5), hdri_b)
    k_sh = np.median(direct_b[inner] / sh_b[inner])
    assert np.median(rel_err) < 0.5 * np.median(np.abs(k_sh * sh_b[inner] - direct_b[inner]) / direct_b[inner])

    left = inner & (n[..., 0] < -0.3)
    right = inner & (n[..., 0] > 0.3)
    assert img_a[left].mean() > 1.5 * img_a[right].mean()  # input: lit from the left
    assert relit[right].mean() > 1.5 * relit[left].mean()  # relit: lit from the right


def test_fill_lifts_only_the_shadow_side_of_a_hard_key():
    """A hard key with a black fill (no ambient): the default fill floor keeps the unlit side of
    the sphere readable (at least about ``fill`` x the mean frontal level) and leaves the lit
    side as it was."""
    hdri_a = make_hdri(0.5, 0.45, ambient=(0.3, 0.3, 0.3))
    img_a, per, geo, n, matte = sphere_scene(hdri_a)
    src = estimate_source_lighting(img_a, per, geo, PLAIN_FIT)
    hdri_b = make_hdri(0.75, ambient=(0.0, 0.0, 0.0))  # key from the right, nothing else
    target = prepare_target(hdri_b, 0.0)
    plain = render_person(img_a, per, geo, src, target, specular=0.0, options=RenderOptions(fill=0.0))
    filled = render_person(img_a, per, geo, src, target, specular=0.0, options=RenderOptions(fill=0.2))
    inner = (np.linalg.norm(n[..., :2], axis=-1) < 0.9) & (matte > 0)
    dark = inner & (n[..., 0] < -0.5)  # facing away from the key
    lit = inner & (n @ np.array([0.9, 0.15, 0.4], np.float32) > 0.8)
    front = float(plain[inner].mean())
    assert plain[dark].mean() < 0.02 * front  # a black fill: the shadow side is crushed
    assert filled[dark].mean() > 0.1 * front  # lifted
    assert filled[lit].mean() == pytest.approx(plain[lit].mean(), rel=0.03)  # the key side is unchanged


def test_relit_sphere_plausible_absolute_albedo():
    hdri_a = make_hdri(0.25)
    img_a, per, geo, n, matte = sphere_scene(hdri_a)
    img_a *= 3.0  # an unknown camera exposure must not change the relit result
    src = estimate_source_lighting(img_a, per, geo)
    hdri_b = make_hdri(0.6)
    relit = render_person(img_a, per, geo, src, prepare_target(hdri_b, 0.0), specular=0.0)
    albedo = relit / np.maximum(lambert(n, 1.0, hdri_b), 1e-9)
    med = float(np.median(albedo[matte > 0]))
    assert 0.2 < med < 0.5  # a plausible absolute albedo, whatever the input exposure


@pytest.mark.parametrize("light_u", [0.25, 0.125, 0.875, 0.0])
def test_source_estimate_recovers_light_direction(light_u):
    hdri = make_hdri(light_u, 0.35)
    img, per, geo, n, matte = sphere_scene(hdri, albedo=(0.6, 0.45, 0.35))
    true_dir = uv_to_direction(light_u, 0.35)
    # with the natural-light priors (tuned for faces: shrunk, and towards light from above)
    # the direction is still roughly right, and pulled up, never down ...
    src = estimate_source_lighting(img, per, geo)
    assert isinstance(src, SourceLighting) and src.sh.shape == (9, 3)
    est = dominant_direction(src.sh)
    assert angle_deg(est, true_dir) < 30.0
    assert est[1] >= true_dir[1] - 0.05
    # ... and with them off, exact
    src = estimate_source_lighting(img, per, geo, PLAIN_FIT)
    assert angle_deg(dominant_direction(src.sh), true_dir) < 8.0
    # and the estimate is proportional to the truth over the visible normals
    E_true = eval_sh(irradiance_sh(project_sh(hdri)).astype(np.float32), n[matte > 0])[:, 1]
    E_est = eval_sh(src.sh, n[matte > 0])[:, 1]
    ratio = E_est / E_true
    assert ratio.std() / ratio.mean() < 0.02


@pytest.mark.parametrize("albedo", [(0.5, 0.5, 0.5), (0.6, 0.36, 0.24)])
def test_source_estimate_uses_clipped_pixels(monkeypatch, albedo):
    """An overexposed side light: 40% of a grey sphere clips at 1 in every channel, or a
    skin-coloured one clips in red first (on 40%, in green on about 20%). Clipped pixels still
    count: a clipped red or blue is rebuilt from green, a clipped green makes the pixel a lower
    bound. The estimate stays near the one from the same image unclipped, nearer than when the
    clipped pixels are left out (the lit side missing, the light read as frontal)."""
    from relight.stages import lighting

    hdri = make_hdri(0.7, 0.4)
    img, per, geo, n, matte = sphere_scene(hdri, albedo=albedo)
    img = img / np.percentile(img[matte > 0].max(-1), 60)
    clipped = np.minimum(img, 1.0)
    assert 0.35 < (clipped[matte > 0].max(-1) >= 1.0).mean() < 0.45

    def direction(image, opts):
        return dominant_direction(estimate_source_lighting(image, per, geo, opts).sh)

    fit = lighting._robust_fit

    def left_out(N, I, pw, opts, censored=None, mirror=None):  # every sample with a clipped channel dropped
        return fit(N, I, np.where((I >= opts.clip_level).any(axis=1), 0.0, pw), opts, None, mirror)

    for opts in (PLAIN_FIT, LightingOptions()):
        ref = direction(img / img.max(), opts)  # nothing clipped
        err = angle_deg(direction(clipped, opts), ref)
        monkeypatch.setattr(lighting, "_robust_fit", left_out)
        err_left_out = angle_deg(direction(clipped, opts), ref)
        monkeypatch.setattr(lighting, "_robust_fit", fit)
        # (grey: 14 against 18 degrees without the priors, 21 against 40 with them; skin: 7 and 9)
        assert err < 25.0 and err < 0.85 * err_left_out, (err, err_left_out)


def test_mirror_pairs_hold_the_side_light_against_symmetric_albedo(monkeypatch):
    """A sphere with a symmetric albedo (darker towards both sides and the bottom, as stubble and
    hairline are) under a side light: with the face mesh's mirror pairs on it (at mirror-image
    points, on the skin) the estimated direction is nearer the truth than without them; with a
    uniform albedo they change little."""
    from relight.models.mediapipe_backend import face_mesh_mirror_pairs
    from relight.stages import lighting

    monkeypatch.setattr(lighting, "_feature_mask", lambda faces, h, w, scale: np.zeros((h, w), bool))
    n, matte = sphere()
    c, r = (matte.shape[0] - 1) / 2.0, 40.0
    rng = np.random.default_rng(0)
    lm = np.zeros((478, 3), np.float32)
    for i, j in face_mesh_mirror_pairs():
        x, y = 0.0, 1.0
        while x * x + y * y > 0.8:
            x, y = rng.uniform(0.05, 0.85), rng.uniform(-0.8, 0.8)
        lm[i] = (c + x * r, c - y * r, 0.0)
        lm[j] = (c - x * r, c - y * r, 0.0)
    per = Perception(matte=matte, face_landmarks=[lm])
    geo = Geometry(normals=n, face_mask=matte.copy(), work_normals=n)
    patterned = 0.5 * (1.0 - 0.5 * np.abs(n[..., 0]) ** 1.5) * (1.0 - 0.3 * (n[..., 1] < -0.3))
    for light_u in (0.3, 0.7):
        hdri = make_hdri(light_u, 0.4)
        truth = dominant_direction(irradiance_sh(project_sh(hdri)))
        errors = {}
        for name, albedo in (("patterned", patterned), ("uniform", np.full_like(patterned, 0.5))):
            img = lambert(n, np.repeat(albedo[..., None], 3, -1), hdri) * matte[..., None]
            for sym in (0.0, 0.3):
                est = estimate_source_lighting(img, per, geo, LightingOptions(symmetry=sym))
                errors[name, sym] = angle_deg(dominant_direction(est.sh), truth)
        # (26.5 -> 23.2 degrees, patterned)
        assert errors["patterned", 0.3] < errors["patterned", 0.0] - 2.5, errors
        assert errors["uniform", 0.3] < errors["uniform", 0.0] + 1.0, errors


def test_source_estimate_never_near_zero_and_neutral_without_person():
    # a hard light with no ambient: the raw fit would go to ~0 on the dark side
    hdri = make_hdri(0.25, ambient=(0.0, 0.0, 0.0), light=(100.0, 100.0, 100.0))
    img, per, geo, n, matte = sphere_scene(hdri)
    src = estimate_source_lighting(img, per, geo)
    g = np.linspace(-1, 1, 41)
    x, y = np.meshgrid(g, g)
    ok = x * x + y * y <= 1
    front = np.stack([x[ok], y[ok], np.sqrt(np.clip(1 - x[ok] ** 2 - y[ok] ** 2, 0, 1))], -1).astype(np.float32)
    E = eval_sh(src.sh, front)
    assert (E.min(axis=0) > 0.1 * E.mean(axis=0)).all()

    empty = Perception(matte=np.zeros((32, 48), np.float32))
    geo0 = Geometry(normals=np.dstack([np.zeros((32, 48, 2)), np.ones((32, 48))]).astype(np.float32),
                    face_mask=np.zeros((32, 48), np.float32))
    frame = np.full((32, 48, 3), 0.2, np.float32)
    neutral = estimate_source_lighting(frame, empty, geo0)
    assert np.isfinite(neutral.sh).all() and neutral.albedo_scale > 0
    assert np.allclose(neutral.sh[1:], 0.0) and (neutral.sh[0] > 0).all()
    out = render_person(frame, empty, geo0, neutral, prepare_target(make_hdri(0.5), 0.0))
    assert out.shape == frame.shape and np.isfinite(out).all()


def test_specular_adds_a_highlight_towards_the_light():
    hdri_a = make_hdri(0.0, 0.5)  # light from behind the camera: frontal
    img, per, geo, n, matte = sphere_scene(hdri_a)
    src = estimate_source_lighting(img, per, geo)
    hdri_b = make_hdri(0.125, 0.4, light=(400.0, 400.0, 400.0), radius_deg=5)
    tgt = prepare_target(hdri_b, 0.0)
    assert isinstance(tgt, TargetLighting) and tgt.sh.shape == (9, 3) and tgt.specular_map.ndim == 3
    diffuse = render_person(img, per, geo, src, tgt, specular=0.0)
    glossy = render_person(img, per, geo, src, tgt, specular=1.0)
    extra = (glossy - diffuse)[..., 1]
    assert (extra >= -1e-6).all()
    # the mirror direction of the light (half-way between view +z and the light) gets the most
    light = uv_to_direction(0.125, 0.4)
    half = (light + np.array([0, 0, 1.0])) / np.linalg.norm(light + np.array([0, 0, 1.0]))
    peak = np.unravel_index(np.argmax(extra), extra.shape)
    assert angle_deg(n[peak], half) < 12.0


def test_prepare_target_pan_rotates_lighting():
    hdri = make_hdri(0.75)  # light on the camera's right at pan 0
    e0 = dominant_direction(prepare_target(hdri, 0.0).sh)
    e90 = dominant_direction(prepare_target(hdri, 90.0).sh)  # camera turned right: light now in front of it
    assert e0[0] > 0.9
    assert e90[2] < -0.9  # light ahead of the camera, i.e. behind the subject (-z)


# ----------------------------------------------------------------------------- exposure
def test_auto_exposure_rotation_invariant_and_inverse_to_brightness():
    hdri = make_hdri(0.3, 0.3, ambient=(0.1, 0.12, 0.15))
    k = auto_exposure(hdri, None)
    for shift in (16, 40, 77):
        assert auto_exposure(np.roll(hdri, shift, axis=1), None) == pytest.approx(k, rel=1e-5)
    assert auto_exposure(hdri * 4.0, None) == pytest.approx(k / 4.0, rel=1e-5)
    assert auto_exposure(hdri * 4.0, 30.0) == pytest.approx(auto_exposure(hdri, 30.0) / 4.0, rel=1e-5)
    # with a pan: rolling the map right by 1/4 turn is the same as panning 90 degrees further
    assert auto_exposure(np.roll(hdri, 32, axis=1), 90.0) == pytest.approx(auto_exposure(hdri, 0.0), rel=1e-3)
    # a face lit by the sun from the front is exposed darker than one with the sun behind
    assert auto_exposure(hdri, 360 * (0.3 - 0.5)) > auto_exposure(hdri, 360 * (0.3 - 0.0))
    # the level lands where it should: albedo 0.4 under uniform radiance L -> 0.4 L
    uniform = np.full((64, 128, 3), 2.0, np.float32)
    assert auto_exposure(uniform, None) * 0.4 * 2.0 == pytest.approx(EXPOSURE_TARGET, rel=1e-3)
    assert auto_exposure(uniform, None, target=0.2) * 0.4 * 2.0 == pytest.approx(0.2, rel=1e-3)


# ----------------------------------------------------------------------------- geometry
def synthetic_face(size: int = 160, radius: float = 55.0, sphere_r: float = 62.0):
    """478 landmarks (pixels, MediaPipe convention) of the real face-mesh topology laid out in the
    image by a Tutte embedding inside a circle, lifted onto a sphere facing the camera."""
    from relight.models.mediapipe_backend import NUM_FACE_LANDMARKS, NUM_MESH_LANDMARKS, face_mesh_regions, face_mesh_triangles

    tris = face_mesh_triangles()
    ring = face_mesh_regions()["oval_path"]
    n = NUM_MESH_LANDMARKS
    A = np.zeros((n, n))
    for t in tris:
        for i in range(3):
            a, b = t[i], t[(i + 1) % 3]
            A[a, b] = A[b, a] = 1.0
    L = np.diag(A.sum(1)) - A
    fixed = np.zeros(n, bool)
    fixed[ring] = True
    ang = np.linspace(0, 2 * np.pi, len(ring), endpoint=False)
    c = size / 2.0
    pos = np.zeros((n, 2))
    pos[ring, 0] = c + radius * np.cos(ang)
    pos[ring, 1] = c + radius * np.sin(ang)
    free = ~fixed
    rhs = -L[np.ix_(free, fixed)] @ pos[fixed]
    pos[free] = np.linalg.solve(L[np.ix_(free, free)], rhs)
    # orient it like a face: the mesh's forehead (landmark 10) at the top, chin (152) at the bottom
    if pos[10, 1] > pos[152, 1]:
        pos[:, 1] = 2 * c - pos[:, 1]
    r2 = ((pos - c) ** 2).sum(1)
    z = -np.sqrt(np.maximum(sphere_r ** 2 - r2, 0.0))  # MediaPipe: nearer = more negative
    lm = np.zeros((NUM_FACE_LANDMARKS, 3), np.float32)
    lm[:n, :2] = pos
    lm[:n, 2] = z
    lm[n:] = lm[[468 % n] * (NUM_FACE_LANDMARKS - n)]
    return lm, c, sphere_r


def synthetic_face_geometry(size: int = 160):
    """The synthetic face inside an oval person matte, and its estimated geometry at full
    resolution: (landmarks, centre, sphere radius, yy, xx, matte, geometry)."""
    lm, c, R = synthetic_face(size)
    yy, xx = np.mgrid[0:size, 0:size]
    matte = (((xx - c) / 70.0) ** 2 + ((yy - c) / 75.0) ** 2 < 1).astype(np.float32)
    geo = estimate_geometry(Perception(matte=matte, face_landmarks=[lm]), size, size, GeometryOptions(work_size=size))
    return lm, c, R, yy, xx, matte, geo


def test_face_mesh_rasteriser_normals():
    size = 160
    lm, c, R = synthetic_face(size)
    normals, cov = rasterize_faces([lm], size, size, 1.0)
    assert normals.shape == (size, size, 3) and cov.shape == (size, size)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    x, y = (xx - c) / R, -(yy - c) / R
    expected = np.stack([x, y, np.sqrt(np.clip(1 - x * x - y * y, 0, 1))], -1)
    inner = (cov > 0) & ((xx - c) ** 2 + (yy - c) ** 2 < (0.8 * 55) ** 2)
    assert inner.sum() > 3000
    err = angle_deg(normals[inner], expected[inner])
    assert np.median(err) < 3.0 and np.percentile(err, 95) < 8.0
    centre = normals[int(c) - 3:int(c) + 3, int(c) - 3:int(c) + 3].reshape(-1, 3)
    assert (centre[:, 2] > 0.97).all()
    left = (cov > 0) & (xx < c - 40) & (np.abs(yy - c) < 10)
    right = (cov > 0) & (xx > c + 40) & (np.abs(yy - c) < 10)
    top = (cov > 0) & (yy < c - 40) & (np.abs(xx - c) < 10)
    assert (normals[left][:, 0] < -0.4).all() and (normals[right][:, 0] > 0.4).all()
    assert (normals[top][:, 1] > 0.4).all()  # forehead tilts up (camera +y)


def test_face_mesh_fill_kernel_matches_opencv(monkeypatch):
    """The face mesh's triangles painted in one compiled pass (kernels.paint_triangles) against
    one cv2.fillConvexPoly per triangle: the same pixels covered, the same normals."""
    from relight import kernels

    if not kernels.available():
        pytest.skip("numba is not installed")
    size = 160
    lm, c, R = synthetic_face(size)
    fast_n, fast_cov = rasterize_faces([lm], size, size, 1.0)
    monkeypatch.setattr(kernels, "available", lambda: False)
    ref_n, ref_cov = rasterize_faces([lm], size, size, 1.0)
    covered = (ref_cov > 0) | (fast_cov > 0)
    assert covered.sum() > 5000
    assert np.abs(fast_cov - ref_cov).mean() < 0.005  # edges: at most a few boundary pixels differ
    both = (ref_cov > 0.99) & (fast_cov > 0.99)
    err = angle_deg(fast_n[both], ref_n[both])
    assert np.median(err) < 0.1 and np.percentile(err, 99) < 3.0


def test_geometry_blends_face_and_body_without_seams():
    size = 160
    lm, c, R, yy, xx, matte, geo = synthetic_face_geometry(size)
    assert geo.full_normals().shape == (size, size, 3) and geo.full_face_mask().shape == (size, size)
    assert geo.work_normals is not None
    assert np.allclose(np.linalg.norm(geo.full_normals(), axis=-1), 1.0, atol=0.03)
    assert geo.full_face_mask()[int(c), int(c)] > 0.99 and geo.full_face_mask()[5, 5] == 0.0
    # no seam: where face and body normals are blended, neighbours differ by a few degrees only
    blend = cv2.dilate(((geo.full_face_mask() > 0.001) & (geo.full_face_mask() < 0.999)).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert blend.sum() > 500
    dx = angle_deg(geo.full_normals()[:, 1:], geo.full_normals()[:, :-1])[blend[:, 1:] & blend[:, :-1]]
    dy = angle_deg(geo.full_normals()[1:], geo.full_normals()[:-1])[blend[1:] & blend[:-1]]
    assert max(dx.max(), dy.max()) < 5.0


def test_silhouette_inflation_of_a_disc_points_outward():
    size, R = 200, 70.0
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    r = np.hypot(xx - c, yy - c)
    matte = (r < R).astype(np.float32)
    # a floating disc: lower edges counted as silhouette too (by default they are not, see
    # test_lower_silhouette_edges_are_not_rims)
    n = inflate_silhouette(matte, GeometryOptions(inflation_size=size, open_bottom=False))
    assert n.shape == (size, size, 3)
    assert np.allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-3)
    outward = np.stack([(xx - c) / np.maximum(r, 1e-9), -(yy - c) / np.maximum(r, 1e-9)], -1)
    rim = (r > 0.88 * R) & (r < 0.98 * R)
    nxy = n[rim][:, :2]
    cos = (nxy * outward[rim]).sum(-1) / np.maximum(np.linalg.norm(nxy, axis=-1), 1e-9)
    assert np.percentile(cos, 5) > 0.9
    assert n[rim][:, 2].mean() < 0.6  # tilted well into the image plane at the silhouette
    assert n[r < 0.1 * R][:, 2].min() > 0.95  # facing the camera in the middle
    # monotonic: the tilt grows towards the rim
    nz_mid = n[(r > 0.45 * R) & (r < 0.55 * R)][:, 2].mean()
    assert n[r < 0.1 * R][:, 2].mean() > nz_mid > n[rim][:, 2].mean()


def test_inflation_ignores_image_borders():
    # a person cut off by the bottom edge: no rim normals along that edge
    size = 120
    yy, xx = np.mgrid[0:size, 0:size]
    matte = ((np.abs(xx - 60) < 40) & (yy > 30)).astype(np.float32)
    n = inflate_silhouette(matte, GeometryOptions(inflation_size=size))
    bottom = n[size - 2, 40:81]
    assert (bottom[:, 1] > -0.3).all()  # not tilted downwards at the frame edge
    assert n[32, 60, 1] > 0.5  # but tilted up at the real top edge


# ----------------------------------------------------------------------------- mediapipe smoke test
@pytest.fixture(scope="module")
def astronaut():
    if not ASSET.exists():
        pytest.skip("packaged astronaut portrait missing")
    bgr = cv2.imread(str(ASSET), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_face_mesh_mirror_pairs_are_mirror_images_on_a_real_face(astronaut):
    """On the built-in (near-frontal) portrait, each listed pair lies on opposite sides of the
    face's midline at about the same height and the same distance from it."""
    from relight.models.mediapipe_backend import face_mesh_mirror_pairs
    from relight.stages.perception import Perceiver

    with Perceiver(video=False) as p:
        lm = np.asarray(p.process(astronaut).face_landmarks[0], np.float64)
    pairs = face_mesh_mirror_pairs()
    assert pairs.shape[1] == 2 and len(pairs) >= 150 and (pairs[:, 0] < pairs[:, 1]).all()
    assert len(np.unique(pairs)) == pairs.size  # each landmark in one pair at most
    width = np.ptp(lm[:468, 0])
    mid_x = np.median(lm[[10, 168, 4, 1, 0, 17, 152], 0])  # forehead, nose, lips, chin
    a, b = lm[pairs[:, 0]], lm[pairs[:, 1]]
    opposite = (a[:, 0] - mid_x) * (b[:, 0] - mid_x) < 0
    level = np.abs(a[:, 1] - b[:, 1]) < 0.06 * width
    even = np.abs(np.abs(a[:, 0] - mid_x) - np.abs(b[:, 0] - mid_x)) < 0.08 * width
    assert (opposite & level & even).mean() > 0.9


def test_mediapipe_perception_on_real_face(astronaut):
    from relight.stages.perception import Perceiver

    H, W = astronaut.shape[:2]
    with Perceiver(video=False) as p:
        per = p.process(astronaut)
    assert per.matte.shape == (H, W) and per.matte.dtype == np.float32
    assert 0.0 <= per.matte.min() and per.matte.max() <= 1.0
    assert len(per.face_landmarks) == 1
    lm = per.face_landmarks[0]
    assert lm.shape == (478, 3)
    cx, cy = np.median(lm[:, 0]), np.median(lm[:, 1])
    assert 0 < cx < W and 0 < cy < H
    assert per.matte[int(cy), int(cx)] > 0.9  # face centre is person
    for y, x in ((3, 3), (3, W - 4)):  # top corners are background
        assert per.matte[y, x] < 0.1

    geo = estimate_geometry(per, H, W)
    face = geo.full_face_mask() > 0.9
    assert face.sum() > 0.02 * H * W
    assert np.median(geo.full_normals()[face][:, 2]) > 0.8  # a frontal face faces the camera
    x0 = np.percentile(lm[:, 0], 50)
    left = face & (np.arange(W)[None, :] < x0 - 0.3 * np.ptp(lm[:, 0]))
    right = face & (np.arange(W)[None, :] > x0 + 0.3 * np.ptp(lm[:, 0]))
    assert np.median(geo.full_normals()[left][:, 0]) < -0.2 and np.median(geo.full_normals()[right][:, 0]) > 0.2

    from relight.colour import to_linear

    lin = to_linear(astronaut)
    src = estimate_source_lighting(lin, per, geo)
    out = render_person(lin, per, geo, src, prepare_target(make_hdri(0.75), 0.0))
    assert out.shape == (H, W, 3) and np.isfinite(out).all()


def test_external_matte_is_used(astronaut):
    from relight.stages.perception import Perceiver

    H, W = astronaut.shape[:2]
    matte = np.zeros((H, W), np.uint8)
    matte[H // 4:, W // 4: 3 * W // 4] = 255
    with Perceiver(use_segmentation=False) as p:
        per = p.process(astronaut, external_matte=matte)
    assert np.array_equal(per.matte, matte.astype(np.float32) / 255.0)
    assert len(per.face_landmarks) == 1


class _NoFaceDetector:
    """A MediaPipe backend without the full-range face detector (a backend may lack it)."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        if name == "face_boxes":
            raise AttributeError(name)
        return getattr(self._backend, name)


@pytest.mark.parametrize("video,detector", [(False, True), (True, True), (True, False)])
def test_small_face_is_found_around_the_head(astronaut, video, detector):
    """A face too small for the face mesh's whole-frame detector (a medium shot) is found in a
    square around it (from the full-range face detector, or else the top of the person's matte),
    with its landmarks where the face is, and in a video followed there from frame to frame."""
    from relight.models.mediapipe_backend import MediaPipeBackend
    from relight.stages.perception import Perceiver

    with Perceiver(video=False) as p:
        ref = p.process(astronaut).face_landmarks[0]  # the face found at full size
    H, W, n = 1080, 1920, 700
    k, ox, oy = n / astronaut.shape[0], 560, H - n  # the bust, 700 px high, at the bottom
    small = cv2.resize(astronaut, (n, n), interpolation=cv2.INTER_AREA)
    frame = np.full((H, W, 3), 90, np.uint8)
    frame[oy:oy + n, ox:ox + n] = small
    expected = ref[:, :2] * k + np.array([ox, oy], np.float32)
    face_w = np.ptp(expected[:, 0])
    assert face_w < W / 12  # small enough to be missed in the whole frame (checked below)
    backend = MediaPipeBackend(video=video)
    with Perceiver(video=video, backend=backend if detector else _NoFaceDetector(backend)) as p:
        assert not p.backend.face_landmarks(cv2.resize(frame, (640, 360), interpolation=cv2.INTER_AREA))
        for _ in range(3 if video else 1):
            faces = p.process(frame).face_landmarks
            assert len(faces) == 1
            err = np.median(np.linalg.norm(faces[0][:, :2] - expected, axis=1))
            assert err < 0.1 * face_w, err
            assert np.ptp(faces[0][:, 2]) > 0.2 * face_w  # depth in frame pixels, like x
        assert (p._face_box is not None) == video


def _fake_face(cx: float, cy: float, size: float) -> np.ndarray:
    """(478, 3) normalised landmarks: a disc of points of diameter ``size`` around (cx, cy)."""
    rng = np.random.default_rng(0)
    a, r = rng.uniform(0, 2 * np.pi, 478), 0.5 * size * np.sqrt(rng.uniform(0, 1, 478))
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a), np.zeros(478)], axis=1).astype(np.float32)


class _CountingBackend:
    """A backend whose person fills the left half of the frame: the whole-frame face mesh finds
    ``faces`` (normalised to the frame); the one-face tracker finds the face in the middle of
    the square it is given."""

    def __init__(self, faces):
        self.faces, self.whole, self.follow = list(faces), 0, 0

    def face_landmarks(self, rgb):
        self.whole += 1
        return [f.copy() for f in self.faces]

    def follow_face_landmarks(self, rgb):
        self.follow += 1
        return [_fake_face(0.5, 0.5, 0.4)]

    def segment(self, rgb):
        m = np.zeros(rgb.shape[:2], np.float32)
        m[:, : rgb.shape[1] // 2] = 1.0
        return m

    def close(self):
        pass


def test_faces_off_the_person_are_dropped():
    """A face the face mesh finds where the segmentation sees no person (a pattern in a blurred
    background) is not a face of the person: it is dropped, the person's face kept."""
    from relight.stages.perception import Perceiver

    person, background = _fake_face(0.25, 0.4, 0.15), _fake_face(0.75, 0.4, 0.15)
    frame = np.full((180, 320, 3), 120, np.uint8)
    with Perceiver(video=False, backend=_CountingBackend([person, background])) as p:
        faces = p.process(frame).face_landmarks
    assert len(faces) == 1
    assert np.allclose(faces[0][:, :2], person[:, :2] * (320, 180), atol=1e-3)


def test_a_lone_face_is_followed_and_the_frame_looked_at_every_tenth_frame():
    """In a video, a face alone in the frame is followed by the one-face tracker (the
    whole-frame one would run its detector on every frame); the whole frame is looked at again
    every tenth frame, and when it then shows two faces (a second person came in), both are
    tracked in the whole frame."""
    from relight.stages.perception import Perceiver

    backend = _CountingBackend([_fake_face(0.25, 0.4, 0.15)])
    frame = np.full((180, 320, 3), 120, np.uint8)
    with Perceiver(video=True, backend=backend) as p:
        for _ in range(10):
            assert len(p.process(frame).face_landmarks) == 1
        assert (backend.whole, backend.follow) == (1, 9)
        faces = p.process(frame).face_landmarks  # frame 10: the whole frame is looked at
        assert len(faces) == 1 and (backend.whole, backend.follow) == (2, 10)
        backend.faces.append(_fake_face(0.4, 0.6, 0.12))  # someone else, on the person's side
        for _ in range(10):
            p.process(frame)
        assert (backend.whole, backend.follow) == (3, 20)  # seen at the next look (frame 20)
        assert len(p.process(frame).face_landmarks) == 2  # then both, in the whole frame
        assert (backend.whole, backend.follow) == (4, 20)


def test_small_face_search_backs_off_without_a_face():
    """In a video where a person shows no face (seen from behind), the extra search for a small
    face runs every fifth frame, not on every frame (it costs up to two more model runs)."""
    from relight.pipeline import Relighter
    from relight.settings import RelightSettings
    from relight.stages.perception import Perceiver

    class Backend:
        searches = 0

        def face_landmarks(self, rgb):
            return []

        def face_boxes(self, rgb):
            Backend.searches += 1
            return []

        def segment(self, rgb):
            m = np.zeros(rgb.shape[:2], np.float32)
            m[rgb.shape[0] // 3:, rgb.shape[1] // 3: 2 * rgb.shape[1] // 3] = 1.0
            return m

        def close(self):
            pass

    frame = np.full((90, 160, 3), 120, np.uint8)
    with Perceiver(video=True, backend=Backend()) as p:
        for _ in range(12):
            assert p.process(frame).face_landmarks == []
        assert Backend.searches == 3  # frames 0, 5 and 10
        # a Relighter's reset (a new clip) starts the search afresh, as a fresh Relighter would
        with Relighter(RelightSettings(), perceiver=p) as r:
            r.process(frame, time=0.0)
            assert Backend.searches == 3  # (frame 12: the wait goes on)
            r.reset()
            r.process(frame, time=0.0)
            assert Backend.searches == 4
