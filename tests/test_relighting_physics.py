"""Known-answer tests of the physically based parts of the relighting (issue 3): dominant-light
extraction, sharp lights and cast shadows over a depth map, the geometry's depth and open lower
edges, materials (lips, hair, sheen), specular, eye catchlights, matte cleaning, edge
decontamination, and the video contact sheet.

Everything is synthesised here (envmap maths, analytic spheres and planes, MediaPipe's own
face-mesh topology); the end-to-end checks use the packaged public-domain portrait.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from relight.colour import luminance
from relight.envmap import pixel_grid, uv_to_direction
from relight.stages.composite import EDGE_FADE, EDGE_HI, EDGE_LO, decontaminate, solve_edge_pixels
from relight.stages.geometry import GeometryOptions, estimate_geometry, inflate_silhouette
from relight.stages.lighting import neutral_source
from relight.stages.perception import clean_coarse_matte, head_box
from relight.stages.render import (RenderOptions, TargetHDRI, extract_lights, hair_sheen,
                                   material_weights, prepare_target, render_person, shadow_map)
from relight.types import Geometry, Perception

from test_relighting import angle_deg, brute_irradiance, make_hdri, sphere, synthetic_face, synthetic_face_geometry

ASSET = Path(__file__).resolve().parents[1] / "src" / "relight" / "assets" / "astronaut.jpg"


def disc_solid_angle(radius_deg: float) -> float:
    return 2.0 * math.pi * (1.0 - math.cos(math.radians(radius_deg)))


# ----------------------------------------------------------------------------- light extraction
def test_extract_lights_finds_the_sun_and_keeps_the_irradiance():
    u0, v0, radius, level, ambient = 0.7, 0.3, 8.0, 60.0, 0.25
    hdri = make_hdri(u0, v0, width=256, ambient=(ambient,) * 3, light=(level,) * 3, radius_deg=radius)
    lights, residual = extract_lights(hdri)
    assert len(lights) == 1
    lt = lights[0]
    assert angle_deg(lt.direction(0.0), uv_to_direction(u0, v0)) < 3.0
    expected = (level - ambient) * disc_solid_angle(radius)
    assert float(luminance(lt.power.astype(np.float32))) == pytest.approx(expected, rel=0.15)
    assert math.radians(1.0) <= lt.radius < math.radians(radius)
    # the residual is the ambient where the light was
    assert float(residual.max()) < 2.0 * ambient
    # light + residual carry the same irradiance as the map
    n, matte = sphere(48, 20.0)
    normals = n[matte > 0]
    full = brute_irradiance(hdri, normals)
    split = brute_irradiance(residual, normals) + np.clip(normals @ lt.direction(0.0), 0, None)[:, None] * lt.power
    assert np.allclose(split, full, rtol=0.03, atol=0.02 * float(full.max()))


def test_overcast_map_has_no_lights():
    u, v = pixel_grid(128, 64)
    sky = (1.0 + 2.0 * np.clip(np.cos(np.pi * v), 0, None))[..., None] * np.array([0.8, 0.9, 1.0])
    lights, residual = extract_lights(sky.astype(np.float32))
    assert lights == []
    assert np.array_equal(residual, sky.astype(np.float32))


def test_target_lights_turn_with_the_pan():
    hdri = make_hdri(0.75, 0.4, width=128, light=(80.0,) * 3)
    th = TargetHDRI(hdri)
    assert len(th.lights) == 1
    for pan in (0.0, 90.0, 200.0):
        t = th.target(pan)
        d, power, radius = t.lights[0]
        assert angle_deg(d, uv_to_direction(0.75, 0.4, pan)) < 3.0
        assert t.residual_sh.shape == (9, 3) and t.glossy_maps
    assert th.target(0.0).lights[0][0][0] > 0.9  # u = 0.75 is the camera's right


# ----------------------------------------------------------------------------- shadows
def test_shadow_of_a_box_on_a_plane_has_the_right_side_and_length():
    depth = np.zeros((120, 120), np.float32)
    depth[50:70, 50:70] = 20.0  # a box 20 px high
    l = np.array([1.0, 0.0, 1.0]) / math.sqrt(2.0)  # from the right, 45 degrees up
    vis = shadow_map(depth, l, radius=0.01, reach=60, size=120)
    row = vis[60]
    assert row[40] < 0.1 and row[33] < 0.1  # in the shadow: left of the box, 20 px long
    assert row[26] > 0.9  # beyond its end
    assert row[85] > 0.9 and row[60] > 0.9  # the lit side and the box's top
    # a light along the view axis casts no shadow
    assert shadow_map(depth, np.array([0.0, 0.0, 1.0]), 0.01, 60, size=120).min() > 0.99
    # only the person occludes: with the box outside the person, rays pass
    inside = np.ones_like(depth, bool)
    inside[50:70, 50:70] = False
    assert shadow_map(depth, l, 0.01, 60, size=120, inside=inside)[60, 25:50].min() > 0.9


def test_cast_shadow_in_the_render_of_a_known_normal_map():
    """A flat wall (normals (0, 0, 1)) with a raised block, uniform albedo, lit by one sun from the
    upper right front and a dim ambient: in the block's shadow only the ambient is left, in the
    open the sun adds exactly albedo / pi * power * cos(angle)."""
    H = W = 96
    n = np.zeros((H, W, 3), np.float32)
    n[..., 2] = 1.0
    depth = np.zeros((H, W), np.float32)
    depth[40:56, 40:56] = 24.0
    matte = np.ones((H, W), np.float32)
    geo = Geometry(normals=n, face_mask=np.zeros((H, W), np.float32), work_normals=n, work_depth=depth)
    hdri = make_hdri(0.9, 0.25, width=256, ambient=(0.2,) * 3, light=(300.0,) * 3, radius_deg=3.0)
    tgt = prepare_target(hdri, 0.0)
    assert len(tgt.lights) == 1
    l, power, _ = tgt.lights[0]
    assert l[0] > 0.3 and l[1] > 0.5 and l[2] > 0.4  # right, up, in front
    albedo = 0.5
    img = np.full((H, W, 3), albedo, np.float32)
    out = render_person(img, Perception(matte=matte), geo, neutral_source(albedo, albedo), tgt, specular=0.0,
                        options=RenderOptions(shadow_size=W))
    g = out[..., 1]
    lit = g[10, 85]
    lxy = math.hypot(l[0], l[1])
    sx, sy = int(round(48 - 16 * l[0] / lxy)), int(round(48 + 16 * l[1] / lxy))  # away from the light
    assert not (40 <= sy < 56 and 40 <= sx < 56)
    shadowed = g[sy, sx]
    sun = albedo / math.pi * float(power[1]) * float(l[2])
    assert lit - shadowed == pytest.approx(sun, rel=0.08)
    assert g[10, 10] == pytest.approx(lit, rel=1e-3)  # open wall: the same everywhere
    # the shadow is as long as the block's height says: 24 * |l_xy| / l_z
    length = 24.0 * lxy / float(l[2])
    far_x, far_y = int(round(48 - (8 + length + 10) * l[0] / lxy)), int(round(48 + (8 + length + 10) * l[1] / lxy))
    if 0 <= far_x < W and 0 <= far_y < H:
        assert g[far_y, far_x] == pytest.approx(lit, rel=0.05)


def test_convex_sphere_with_depth_has_no_cast_shadows_and_matches_exact_irradiance():
    n, matte = sphere(96, 40.0)
    depth = (40.0 * n[..., 2] * matte).astype(np.float32)
    geo = Geometry(normals=n, face_mask=np.zeros_like(matte), work_normals=n, work_depth=depth)
    hdri = make_hdri(0.8, 0.35, width=256, light=(120.0,) * 3, radius_deg=6.0)
    tgt = prepare_target(hdri, 0.0)
    assert tgt.lights
    albedo = 0.4
    img = np.full(n.shape, albedo, np.float32) * matte[..., None]
    kw = dict(specular=0.0)
    with_sh = render_person(img, Perception(matte=matte), geo, neutral_source(albedo, albedo), tgt, **kw)
    no_sh = render_person(img, Perception(matte=matte), geo, neutral_source(albedo, albedo), tgt,
                          options=RenderOptions(shadows=False), **kw)
    inner = (np.linalg.norm(n[..., :2], axis=-1) < 0.9) & (matte > 0)
    assert np.abs(with_sh[inner] - no_sh[inner]).max() < 0.02 * float(no_sh[inner].max())
    exact = brute_irradiance(hdri, n)
    lit = inner & (exact[..., 1] > 0.3 * exact[..., 1].max())
    ratio = with_sh[lit][:, 1] / exact[lit][:, 1]
    assert ratio.std() / ratio.mean() < 0.04


def test_shadows_and_bright_side_move_with_the_pan():
    """The same sphere and map at pans 180 degrees apart: the lit side swaps."""
    n, matte = sphere(64, 26.0)
    geo = Geometry(normals=n, face_mask=np.zeros_like(matte), work_normals=n,
                   work_depth=(26.0 * n[..., 2] * matte).astype(np.float32))
    hdri = make_hdri(0.3, 0.4, width=128, light=(100.0,) * 3)  # left of the camera at pan 0
    img = np.full(n.shape, 0.4, np.float32)
    src = neutral_source(0.4, 0.4)
    left, right = (n[..., 0] < -0.4) & (matte > 0), (n[..., 0] > 0.4) & (matte > 0)
    a = render_person(img, Perception(matte=matte), geo, src, prepare_target(hdri, 0.0), specular=0.0)
    b = render_person(img, Perception(matte=matte), geo, src, prepare_target(hdri, 180.0), specular=0.0)
    assert a[left].mean() > 2.0 * a[right].mean()
    assert b[right].mean() > 2.0 * b[left].mean()


# ----------------------------------------------------------------------------- geometry
def test_geometry_depth_of_a_synthetic_face_follows_its_sphere():
    size = 160
    lm, c, R, yy, xx, matte, geo = synthetic_face_geometry(size)
    assert geo.work_depth is not None and geo.work_depth.shape == (size, size)
    r2 = (xx + 0.5 - c) ** 2 + (yy + 0.5 - c) ** 2
    face = (geo.full_face_mask() > 0.9) & (r2 < (0.8 * 55) ** 2)
    truth = np.sqrt(np.maximum(R * R - r2, 0.0))
    d = geo.work_depth[face]
    assert np.corrcoef(d, truth[face])[0, 1] > 0.97
    slope = np.polyfit(truth[face], d, 1)[0]
    assert 0.8 < slope < 1.2  # same units (working pixels) and scale
    assert np.isfinite(geo.work_depth).all() and geo.work_depth[matte > 0].min() >= -1.0


def test_lower_silhouette_edges_are_not_rims():
    """A floating head (nothing below it in the frame) is a cropped bust: its lower outline is
    not where the surface turns away from the camera, its upper outline is."""
    size = 160
    yy, xx = np.mgrid[0:size, 0:size]
    matte = (((xx - 80) / 40.0) ** 2 + ((yy - 70) / 50.0) ** 2 < 1).astype(np.float32)  # ends at row 120
    n = inflate_silhouette(matte, GeometryOptions(inflation_size=size))
    bottom = n[114:119, 70:91]
    top = n[22:26, 70:91]
    assert (bottom[..., 1] > -0.35).all()  # not tilted down
    assert top[..., 1].mean() > 0.6  # the top of the head is a rim
    closed = inflate_silhouette(matte, GeometryOptions(inflation_size=size, open_bottom=False))
    assert closed[114:119, 70:91, 1].mean() < -0.6  # (with the option off it would be)


def test_face_normals_are_antialiased():
    size = 160
    lm, c, R, yy, xx, matte, geo = synthetic_face_geometry(size)
    n = geo.work_normals
    d = np.degrees(np.arccos(np.clip((n[:, 1:] * n[:, :-1]).sum(-1), -1, 1)))
    assert np.percentile(d[matte[:, 1:] > 0], 99.5) < 6.0  # no pixel-sized steps


# ----------------------------------------------------------------------------- materials, specular
def _face_scene(size=160):
    lm, c, R = synthetic_face(size)
    yy, xx = np.mgrid[0:size, 0:size]
    matte = (((xx - c) / 75.0) ** 2 + ((yy - c + 15) / 90.0) ** 2 < 1).astype(np.float32)
    per = Perception(matte=matte, face_landmarks=[lm])
    geo = estimate_geometry(per, size, size, GeometryOptions(work_size=size))
    return lm, per, geo, matte


def test_materials_lips_skin_and_hair():
    size = 160
    lm, per, geo, matte = _face_scene(size)
    skin_rgb = np.array([0.45, 0.3, 0.22], np.float32)
    hair_rgb = np.array([0.04, 0.035, 0.03], np.float32)
    albedo = np.where((geo.full_face_mask() > 0.5)[..., None], skin_rgb, hair_rgb).astype(np.float32)
    m = material_weights(per, geo.full_face_mask(), matte, albedo, (size, size))
    from relight.models.mediapipe_backend import face_mesh_regions

    lip_xy = lm[face_mesh_regions()["lips"], :2].mean(axis=0)
    assert m.lips[int(lip_xy[1]), int(lip_xy[0])] > 0.5
    assert m.hair[geo.full_face_mask() > 0.9].max() < 0.05  # no hair on the face
    top = int(lm[:468, 1].min())  # above the forehead, inside the person: hair
    assert m.hair[max(0, top - 6), int(lm[:468, 0].mean())] > 0.5
    assert m.skin[int(lm[1, 1]), int(lm[1, 0])] > 0.9  # nose tip: skin
    # a bald scalp (skin-coloured above the forehead) is not hair
    bald = material_weights(per, geo.full_face_mask(), matte, np.broadcast_to(skin_rgb, albedo.shape), (size, size))
    assert bald.hair.max() < 0.2


def test_hair_sheen_is_what_lies_above_the_dark_floor():
    hair = np.zeros((60, 60), np.float32)
    hair[10:50, 10:50] = 1.0
    albedo = np.full((60, 60), 0.05, np.float32)
    albedo[28:32, 10:50] = 0.4  # a streak of reflected light
    s = hair_sheen(albedo, hair, face_px=100.0, floor=2.5)  # the floor is the darkest over ~10 px
    assert s[30, 30] == pytest.approx(1.0 - 2.5 * 0.05 / 0.4, abs=0.08)
    assert s[15, 30] < 0.02 and s[45, 30] < 0.02
    assert s[:, :8].max() == 0.0  # none outside the hair


def test_specular_is_scaled_by_the_setting_and_peaks_at_the_mirror_direction():
    n, matte = sphere(96, 40.0)
    face = np.ones_like(matte)  # all skin
    geo = Geometry(normals=n, face_mask=face, work_normals=n)
    hdri = make_hdri(0.125, 0.4, width=256, light=(400.0,) * 3, radius_deg=4.0)
    tgt = prepare_target(hdri, 0.0)
    img = np.full(n.shape, 0.3, np.float32)
    src = neutral_source(0.3, 0.3)
    outs = {k: render_person(img, Perception(matte=matte), geo, src, tgt, specular=k) for k in (0.0, 1.0, 2.0)}
    s1, s2 = outs[1.0] - outs[0.0], outs[2.0] - outs[0.0]
    assert (s1 >= -1e-5).all() and s1.max() > 0
    assert np.allclose(s2, 2.0 * s1, rtol=1e-3, atol=1e-4)
    light = np.asarray(tgt.lights[0][0])
    half = (light + [0, 0, 1.0]) / np.linalg.norm(light + [0, 0, 1.0])
    peak = np.unravel_index(np.argmax(s1[..., 1] * matte), matte.shape)
    assert angle_deg(n[peak], half) < 8.0


def _eye_face(size=200):
    """A synthetic face with refined iris landmarks: one iris of radius 6 px per eye, in an eye
    opening (the mesh's eye contour) 24 x 7 px, so the lids cover the iris' top and bottom."""
    from relight.models.mediapipe_backend import face_mesh_regions

    lm, c, R = synthetic_face(size, radius=70.0, sphere_r=80.0)
    lm = lm.copy()
    regions = face_mesh_regions()
    for centre, eye, (x, y) in ((468, "right_eye", (c - 25, c - 15)), (473, "left_eye", (c + 25, c - 15))):
        lm[centre] = (x, y, lm[centre, 2])
        for k, (dx, dy) in enumerate(((6, 0), (0, -6), (-6, 0), (0, 6))):
            lm[centre + 1 + k] = (x + dx, y + dy, lm[centre, 2])
        idx = regions[eye]
        ang = np.linspace(0, 2 * np.pi, len(idx), endpoint=False)
        lm[idx, 0], lm[idx, 1] = x + 12.0 * np.cos(ang), y + 3.5 * np.sin(ang)
    return lm, c


def test_catchlights_replace_the_old_ones_and_reflect_the_new_light():
    size = 200
    lm, c = _eye_face(size)
    matte = np.ones((size, size), np.float32)
    per = Perception(matte=matte, face_landmarks=[lm])
    geo = estimate_geometry(per, size, size, GeometryOptions(work_size=size))
    img = np.full((size, size, 3), 0.2, np.float32)
    ex, ey = int(c - 25), int(c - 15)
    img[ey - 2:ey, ex - 3:ex - 1] = 1.0  # the input's catchlight: upper left in the left iris
    hdri = make_hdri(0.875, 0.5, width=256, ambient=(0.0,) * 3, light=(800.0,) * 3, radius_deg=8.0)  # front right
    src = neutral_source(0.2, 0.2)
    tgt = prepare_target(hdri, 0.0)
    with_c = render_person(img, per, geo, src, tgt, specular=1.0)
    plain = render_person(img, per, geo, src, tgt, specular=1.0, options=RenderOptions(catchlights=False))
    added = luminance(with_c - plain)[ey - 7:ey + 8, ex - 7:ex + 8]
    yy, xx = np.mgrid[-7:8, -7:8]
    # the old catchlight is gone (brought down to the iris level) ...
    old = luminance(with_c)[ey - 2:ey, ex - 3:ex - 1]
    assert float(old.mean()) < 0.5 * float(luminance(plain)[ey - 2:ey, ex - 3:ex - 1].mean())
    # ... and the new one sits on the iris' right side (the light is at the camera's right)
    pos = added.clip(0, None)
    assert pos.sum() > 0
    assert (pos * xx).sum() / pos.sum() > 1.0
    # ... only where the cornea shows: nothing on the lids that cover the iris' top and bottom
    assert np.abs(luminance(with_c - plain)[ey - 6:ey - 4, ex - 7:ex + 8]).max() < 1e-6
    assert np.abs(luminance(with_c - plain)[ey + 4:ey + 6, ex - 7:ex + 8]).max() < 1e-6


def test_catchlights_add_no_veil_and_leave_the_white_of_the_eye():
    """Bright surroundings without a light in the mirror direction add nothing to the iris (its
    faint reflection of the source room is already in it: no grey disc is painted on), and the
    white of the eye that the landmark circle's rim overlaps stays white."""
    size = 200
    lm, c = _eye_face(size)
    per = Perception(matte=np.ones((size, size), np.float32), face_landmarks=[lm])
    geo = estimate_geometry(per, size, size, GeometryOptions(work_size=size))
    img = np.full((size, size, 3), 0.05, np.float32)  # a dark iris on a dark face
    ex, ey = int(c - 25), int(c - 15)
    img[ey - 1:ey + 1, ex + 5:ex + 7] = 0.8  # white of the eye under the rim of the iris circle (r = 6)
    hdri = make_hdri(0.5, 0.42, width=256, ambient=(2.0,) * 3, light=(400.0,) * 3, radius_deg=6.0)  # behind
    tgt = prepare_target(hdri, 0.0)
    assert tgt.lights  # the catchlight step runs ...
    src = neutral_source(0.05, 0.05)
    with_c = render_person(img, per, geo, src, tgt, specular=1.0)
    plain = render_person(img, per, geo, src, tgt, specular=1.0, options=RenderOptions(catchlights=False))
    # ... and changes nothing: not the iris, not the white of the eye
    assert np.abs(with_c - plain)[ey - 7:ey + 8, ex - 13:ex + 14].max() < 0.01 * float(plain[ey, ex].mean())


# ----------------------------------------------------------------------------- matte cleaning
def test_clean_coarse_matte_drops_stray_blobs_and_far_plateaus():
    h, w = 144, 256
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[...] = (40, 120, 40)  # green background
    p = np.zeros((h, w), np.float32)
    p[40:144, 100:160] = 1.0  # the person (to the bottom edge)
    rgb[40:144, 100:160] = (200, 150, 120)
    p[10:18, 20:28] = 1.0  # a stray blob far away
    p[60:100, 160:200] = 0.6  # a wide uncertain plateau beside the person
    out = clean_coarse_matte(p, rgb, heads=(), colour=0.0, min_blob=0.03, soft_reach=0.012, head_width=0.0)
    assert out[14, 24] == 0.0  # blob dropped
    assert out[80, 130] > 0.99  # person kept
    assert out[80, 162] > 0.3  # the soft edge right next to the person stays
    assert out[80, 195] < 0.05  # the far part of the plateau fades out
    # a blob holding a face is kept
    keep = clean_coarse_matte(p, rgb, heads=[(24.0, 14.0, 14.0, 8.0, 10.0)], colour=0.0, soft_reach=0.0, head_width=0.0)
    assert keep[14, 24] > 0.99


def test_clean_coarse_matte_colour_and_head_prior():
    h, w = 144, 256
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[...] = (200, 200, 210)  # a light wall
    p = np.zeros((h, w), np.float32)
    p[30:144, 100:160] = 1.0
    rgb[30:144, 100:160] = (120, 60, 40)  # the person: brown
    p[30:60, 60:100] = 0.7  # half-sure patch of wall-coloured "person" left of the head
    out = clean_coarse_matte(p, rgb, heads=(), colour=1.0, min_blob=0.0, soft_reach=0.0, head_width=0.0)
    assert out[45, 70] < 0.35  # the wall colour argues against it
    assert out[80, 130] > 0.99
    # head prior: eyes at row 60, face 40 px wide centred at x 130: confident "hair" 30 px
    # beyond the head's half-width above the eyes is cut, a confident hand far away is kept
    q = np.zeros((h, w), np.float32)
    q[20:144, 110:150] = 1.0
    q[25:40, 150:190] = 1.0  # attached to the head, outside it
    q[5:20, 230:250] = 1.0  # far away (a raised hand)
    lm = np.zeros((478, 3))
    lm[:, 0] = np.linspace(110.0, 150.0, 478)
    lm[:, 1] = np.linspace(50.0, 80.0, 478)
    lm[[33, 263], 1] = 65.0  # the eye corners
    lm[10, 1] = 50.0  # the forehead's top
    heads = [head_box(lm, 1.0, 1.0)]
    cx, cy, eyes, fw, up = heads[0]
    assert fw == pytest.approx(40.0) and eyes == pytest.approx(65.0)
    out = clean_coarse_matte(q, rgb, heads=heads, colour=0.0, min_blob=0.0, soft_reach=0.0, head_width=0.75)
    assert out[38, 165] < 0.05 and out[38, 130] > 0.99  # cut just outside the head
    assert out[12, 240] > 0.99


def test_decontaminate_recovers_the_foreground_colour():
    h, w = 60, 80
    F = np.array([0.6, 0.3, 0.2], np.float32)
    B = np.array([0.1, 0.5, 0.9], np.float32)
    a = np.clip((np.arange(w, dtype=np.float32) - 36.5) / 7.0, 0, 1)[None, :].repeat(h, 0)  # a 7 px soft edge
    img = (a[..., None] * F + (1 - a[..., None]) * B).astype(np.float32)
    out = decontaminate(img, a, work_size=80)
    sel = (a > 0.5) & (a < EDGE_FADE)
    assert np.allclose(out[sel], F, atol=0.02)
    solid = (a <= EDGE_LO) | (a >= EDGE_HI)
    assert np.array_equal(out[solid], img[solid])  # untouched outside the soft band
    # towards the opaque end the solved colour fades back to the pixel's own, so it does not
    # jump where the band ends: each channel lies between the two, closer to the pixel's as a
    # nears EDGE_HI
    fade = (a >= EDGE_FADE) & (a < EDGE_HI)
    assert fade.any()
    lo, hi = np.minimum(img[fade], F) - 0.02, np.maximum(img[fade], F) + 0.02
    assert ((out[fade] >= lo) & (out[fade] <= hi)).all()
    t = ((EDGE_HI - a[fade]) / (EDGE_HI - EDGE_FADE))[:, None]  # the share of the solved colour
    assert np.allclose(out[fade], t * F + (1 - t) * img[fade], atol=0.02)
    assert decontaminate(img, (a > 0.5).astype(np.float32)) is img  # a hard matte: nothing to do


def test_decontaminated_dark_strand_is_not_blacked_out():
    """A dark strand over a bright wall, its alpha a little too low: the exact solve
    (I - (1 - a) B) / a goes below 0 there, and clipping it to 0 made a black line that came
    and went with the matte's frame-to-frame errors. The solved colour stays at a quarter of
    the nearby person's colour or above."""
    F = np.array([0.012, 0.01, 0.008], np.float32)  # dark hair
    B = np.array([0.9, 0.9, 0.85], np.float32)  # bright wall
    px = (0.97 * F + 0.03 * B)[None, :]  # the strand covers 97% of the pixel
    for a in (0.90, 0.93, 0.95):  # the matte says less
        f = solve_edge_pixels(px, np.array([[a]], np.float32), B[None, :], F[None, :])[0]
        assert (f >= 0.25 * F - 1e-7).all(), (a, f)
    # where alpha is right and the band is fully decontaminated, F comes back
    px = (0.8 * F + 0.2 * B)[None, :]
    f = solve_edge_pixels(px, np.array([[0.8]], np.float32), B[None, :], F[None, :])[0]
    assert np.allclose(f, F, atol=1e-3)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory):
    if not ASSET.exists():
        pytest.skip("packaged astronaut portrait missing")
    img = cv2.imread(str(ASSET), cv2.IMREAD_COLOR)
    path = tmp_path_factory.mktemp("sheet") / "astronaut.png"
    cv2.imwrite(str(path), cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA))
    return str(path)


def test_light_from_left_or_right_lights_that_side_of_the_face(astronaut_png):
    from relight import RelightSettings, Relighter
    from relight.stages.perception import Perceiver

    rgb = cv2.cvtColor(cv2.imread(astronaut_png), cv2.COLOR_BGR2RGB)
    with Perceiver(video=False) as per:
        faces = per.process(rgb).face_landmarks
        assert faces
        lm = faces[0]
        cx = float(np.median(lm[:, 0]))
        fw = float(np.ptp(lm[:, 0]))
        y0, y1 = int(np.percentile(lm[:, 1], 20)), int(np.percentile(lm[:, 1], 70))
        means = {}
        for side in ("left", "right"):
            with Relighter(RelightSettings(hdri="studio", light_from=side, background="#000000"), video=False,
                           perceiver=per) as r:
                out = luminance(r.process(rgb).astype(np.float32))
            means[side] = (out[y0:y1, int(cx - 0.4 * fw):int(cx - 0.1 * fw)].mean(),
                           out[y0:y1, int(cx + 0.1 * fw):int(cx + 0.4 * fw)].mean())
    # the key light on the left makes the face's left half brighter relative to its right half
    # than the key light on the right does (the portrait itself is not symmetric)
    ratio_left = means["left"][0] / means["left"][1]
    ratio_right = means["right"][0] / means["right"][1]
    assert ratio_left > 1.25 * ratio_right


def test_video_sheet_command(astronaut_png, tmp_path):
    from relight.evaluate import main_eval, video_sheet

    res = video_sheet([astronaut_png], str(tmp_path / "sheet.png"), hdris=["studio"], pans=[0.0, 90.0],
                      tile_height=64, show_progress=False)
    sheet = cv2.imread(res["sheet"])
    assert sheet is not None and sheet.shape[0] == 64 and sheet.shape[1] == 4 * 64  # input, matte, 2 relit
    assert res["rows"] == 1 and res["tiles"] == 4
    out = tmp_path / "out"
    assert main_eval(["--video-sheet", astronaut_png, "--out", str(out), "--sheet-hdris", "sunset",
                      "--sheet-pans", "0", "--quiet"]) == 0
    assert (out / "video_sheet.png").exists()
    assert main_eval(["--out", str(out), "--quiet"]) == 2  # neither a set nor clips
