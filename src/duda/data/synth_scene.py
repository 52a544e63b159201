"""Scene model of the procedural street benchmark: a pinhole camera over a straight street.

World coordinates in metres: X to the right, Y up from the road surface, Z forward from the
camera. Everything is drawn with filled polygons (OpenCV) in painter's order, far to near:
sky, ground bands (road, sidewalks, verges), a far skyline, roadside blocks (buildings,
vegetation, walls, fences), then the objects on and beside the road sorted by depth.
Label, image and (for fog) depth are painted by the same calls, so they always agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from duda.data.synth_style import (
    CLOTHES,
    GAME_CAR_COLOURS,
    SIGN_COLOURS,
    DomainStyle,
    class_colour,
)

ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)
IGNORE = 255

Z_FAR = 160.0  # end of the street (metres)
Z_MIN = 0.4  # near clipping distance for ground polygons
FAR_DEPTH = 1000.0  # depth of the sky, for fog

Light = tuple[float, float, float, tuple[float, float, float]]


@dataclass
class Camera:
    """Pinhole camera at height ``height`` looking along +Z with a level horizon at row ``cy``."""

    f: float
    cx: float
    cy: float
    height: float

    def project(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """World points (arrays of equal shape) to pixel coordinates, shape (..., 2), float."""
        z = np.maximum(z, 1e-3)
        out = np.empty((*np.shape(z), 2))
        out[..., 0] = self.cx + self.f * x / z
        out[..., 1] = self.cy + self.f * (self.height - y) / z
        return out


def _polys_int(polys: list[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """Polygons as OpenCV wants them; a stacked (N, K, 2) array is converted in one go (fast)."""
    if isinstance(polys, np.ndarray):
        return list(_ipts(polys))
    return [_ipts(p) for p in polys]


def _ipts(pts: np.ndarray) -> np.ndarray:
    """Float pixel coordinates to the int32 polygon format of OpenCV (clipped to a safe range)."""
    # np.minimum/np.maximum: far cheaper per call than np.clip for these tiny arrays
    return np.minimum(np.maximum(np.rint(pts), -30000.0), 30000.0).astype(np.int32)


@dataclass
class Canvas:
    """Image (uint8: drawing is 3x faster than in float), label and optional depth painted together.

    Also collects the light sources of night scenes.
    """

    img: np.ndarray
    label: np.ndarray
    depth: np.ndarray | None
    style: DomainStyle
    lights: list[Light] = field(default_factory=list)

    def colour(self, cls: int, rgb: tuple[float, float, float] | None = None, gain: float = 1.0) -> tuple:
        """Domain colour of a class (or of an instance colour of it), scaled by ``gain``."""
        return tuple(min(255.0, c * gain) for c in class_colour(self.style.base, cls, rgb))

    def fill(self, polys: list[np.ndarray] | np.ndarray, cls: int, colour: tuple, z: float) -> None:
        """Paint polygons with a class label, an image colour and a depth."""
        polys = _polys_int(polys)
        cv2.fillPoly(self.label, polys, int(cls))
        cv2.fillPoly(self.img, polys, colour)
        if self.depth is not None:
            cv2.fillPoly(self.depth, polys, float(z))

    def paint(self, polys: list[np.ndarray] | np.ndarray, colour: tuple) -> None:
        """Paint appearance only (windows, markings): the label stays what is underneath."""
        cv2.fillPoly(self.img, _polys_int(polys), colour)


@dataclass
class Street:
    """Lateral layout of the street (metres) and the camera."""

    cam: Camera
    road_left: float
    road_right: float
    lane_width: float
    lanes: int
    walk_left: float  # outer edge of the left sidewalk (negative X)
    walk_right: float
    face_left: float  # building line
    face_right: float
    min_px: float  # thinnest width drawn for thin objects (poles, sign edges, wheels)


def draw_camera(style: DomainStyle, rng: np.random.Generator, height: int, width: int) -> Camera:
    """Camera of a domain: field of view, height, horizon row and a small yaw (vanishing point shift)."""
    fov = math.radians(rng.uniform(*style.fov_deg))
    f = (width / 2) / math.tan(fov / 2)
    cy = height * rng.uniform(*style.horizon)
    cx = width / 2 + rng.uniform(-0.06, 0.06) * width
    return Camera(f=f, cx=cx, cy=cy, height=float(rng.uniform(*style.cam_height)))


def draw_street(style: DomainStyle, rng: np.random.Generator, cam: Camera, width: int) -> Street:
    """Lanes, sidewalks and building lines; the camera drives in one of the right-hand lanes."""
    lanes = int(rng.integers(style.lanes[0], style.lanes[1] + 1))
    lw = float(rng.uniform(*style.lane_width))
    own = int(rng.integers(lanes // 2, lanes))  # drive on the right
    left = -(own + 0.5) * lw
    right = left + lanes * lw
    walk_l = left - rng.uniform(*style.sidewalk_width)
    walk_r = right + rng.uniform(*style.sidewalk_width)
    set_l = 0.0 if rng.random() < 0.6 else rng.uniform(1.0, 6.0)
    set_r = 0.0 if rng.random() < 0.6 else rng.uniform(1.0, 6.0)
    return Street(
        cam=cam,
        road_left=left,
        road_right=right,
        lane_width=lw,
        lanes=lanes,
        walk_left=walk_l,
        walk_right=walk_r,
        face_left=walk_l - set_l,
        face_right=walk_r + set_r,
        min_px=max(2.0, 3.0 * width / 512.0),
    )


# --- primitives -------------------------------------------------------------------------------


def ground_band(cam: Camera, x0: float, x1: float, z0: float = Z_MIN, z1: float = Z_FAR) -> np.ndarray:
    """Polygon of the road-surface rectangle X in [x0, x1], Z in [z0, z1]."""
    xs = np.array([x0, x1, x1, x0])
    zs = np.array([z0, z0, z1, z1])
    return cam.project(xs, np.zeros(4), zs)


def side_plane(cam: Camera, x: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
    """Polygon of a vertical rectangle parallel to the street at X = ``x``."""
    return cam.project(np.full(4, x), np.array([y0, y1, y1, y0]), np.array([z0, z0, z1, z1]))


def front_rect(cam: Camera, x0: float, x1: float, y0: float, y1: float, z: float) -> np.ndarray:
    """Polygon of a vertical rectangle facing the camera at depth ``z``."""
    return cam.project(np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1]), np.full(4, z))


def thin_rect(cam: Camera, x: float, w: float, y0: float, y1: float, z: float, min_px: float) -> np.ndarray:
    """A thin upright bar (pole, trunk) at least ``min_px`` pixels wide, so it can be learned."""
    half = max(w * cam.f / z, min_px) / 2 * z / cam.f
    return front_rect(cam, x - half, x + half, y0, y1, z)


# Corner selectors of a box: (x, y, z) index bits of its 8 corners.
_BOX_X = np.array([0, 0, 0, 0, 1, 1, 1, 1])
_BOX_Y = np.array([0, 0, 1, 1, 0, 0, 1, 1], bool)
_BOX_Z = np.array([0, 1, 0, 1, 0, 1, 0, 1])


def box_parts(
    cam: Camera, x: float, w: float, y0: float, h: float, z: float, length: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Silhouette, top face and near face of an axis-aligned box (x is its centre)."""
    xs = np.array([x - w / 2, x + w / 2])
    zs = np.array([z, z + length])
    pts = cam.project(xs[_BOX_X], np.where(_BOX_Y, y0 + h, y0), zs[_BOX_Z]).astype(np.float32)
    hull = cv2.convexHull(pts)[:, 0, :]
    top = cam.project(
        np.array([xs[0], xs[1], xs[1], xs[0]]), np.full(4, y0 + h), np.array([z, z, zs[1], zs[1]])
    )
    near = front_rect(cam, xs[0], xs[1], y0, y0 + h, z)
    return hull, top, near


def ellipse_poly(cx: float, cy: float, rx: float, ry: float, n: int = 16) -> np.ndarray:
    """Polygon approximating an ellipse in pixels."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=-1)


def ring_polys(cx: float, cy: float, r: float, thickness: float, n: int = 14) -> list[np.ndarray]:
    """Quads forming a ring (a wheel seen from the side), ``thickness`` pixels wide."""
    t = np.linspace(0, 2 * np.pi, n + 1)
    ro, ri = r + thickness / 2, max(r - thickness / 2, 0.0)
    cos, sin = np.cos(t), np.sin(t)
    outer = np.stack([cx + ro * cos, cy + ro * sin], axis=-1)
    inner = np.stack([cx + ri * cos, cy + ri * sin], axis=-1)
    quads = np.stack([outer[:-1], outer[1:], inner[1:], inner[:-1]], axis=1)
    return list(quads)


def segment_poly(p: tuple[float, float], q: tuple[float, float], width: float) -> np.ndarray:
    """A thick line segment between two pixel points as a quad."""
    dx, dy = q[0] - p[0], q[1] - p[1]
    n = math.hypot(dx, dy) or 1.0
    ox, oy = -dy / n * width / 2, dx / n * width / 2
    return np.array(
        [[p[0] + ox, p[1] + oy], [q[0] + ox, q[1] + oy], [q[0] - ox, q[1] - oy], [p[0] - ox, p[1] - oy]]
    )


# --- background layers ------------------------------------------------------------------------


def draw_sky_and_ground(cv: Canvas, st: Street, rng: np.random.Generator) -> None:
    """Sky gradient, verges, sidewalks, road and lane markings."""
    h, w = cv.label.shape
    cam = st.cam
    sky = np.array(cv.colour(SKY), np.float32)
    rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    cv.img[:] = np.clip(sky * (0.85 + 0.3 * rows), 0, 255).astype(np.uint8)  # lighter towards the horizon
    cv.label[:] = SKY
    if cv.depth is not None:
        cv.depth[:] = FAR_DEPTH
        v = np.arange(h, dtype=np.float32)
        below = v > cam.cy + 0.5
        zrow = np.where(below, cam.f * cam.height / np.maximum(v - cam.cy, 0.5), FAR_DEPTH)
        ground_depth = np.broadcast_to(zrow[:, None], (h, w))
    for side, walk, face in ((-1, st.walk_left, st.face_left), (1, st.walk_right, st.face_right)):
        verge = TERRAIN if rng.random() < 0.45 else SIDEWALK
        outer = face + side * 60.0
        band = ground_band(cam, min(walk, outer), max(walk, outer))
        cv.fill([band], verge, cv.colour(verge, gain=rng.uniform(0.85, 1.05)), 0.0)
        inner = st.road_left if side < 0 else st.road_right
        band = ground_band(cam, min(walk, inner), max(walk, inner))
        cv.fill([band], SIDEWALK, cv.colour(SIDEWALK, gain=rng.uniform(0.9, 1.1)), 0.0)
        kerb = ground_band(cam, inner - 0.15, inner + 0.15)
        cv.paint([kerb], cv.colour(SIDEWALK, gain=1.25))
    road = ground_band(cam, st.road_left, st.road_right)
    cv.fill([road], ROAD, cv.colour(ROAD, gain=rng.uniform(0.85, 1.1)), 0.0)
    if cv.depth is not None:
        ground = cv.label != SKY
        cv.depth[ground] = ground_depth[ground]
    if st.lanes > 1:  # dashed lane markings, all projected at once
        dash = rng.uniform(2.0, 4.0)
        xs = st.road_left + st.lane_width * np.arange(1, st.lanes)
        zs = np.arange(rng.uniform(1, 6), 80.0, 3 * dash)
        gx, gz = (a.ravel() for a in np.meshgrid(xs, zs, indexing="ij"))
        px = gx[:, None] + np.array([-0.08, 0.08, 0.08, -0.08])
        pz = gz[:, None] + np.array([0.0, 0.0, dash, dash])
        cv.paint(cam.project(px, np.zeros_like(px), pz), cv.colour(SIDEWALK, (235, 235, 235), gain=0.95))


def draw_skyline(cv: Canvas, st: Street, rng: np.random.Generator) -> None:
    """Far buildings and trees closing the street at Z_FAR."""
    x = -120.0
    while x < 120.0:
        wd = rng.uniform(6.0, 25.0)
        cls = VEGETATION if rng.random() < 0.35 else BUILDING
        ht = rng.uniform(4.0, 12.0) if cls == VEGETATION else rng.uniform(6.0, 35.0)
        cv.fill(
            [front_rect(st.cam, x, x + wd, 0.0, ht, Z_FAR)],
            cls,
            cv.colour(cls, gain=rng.uniform(0.7, 1.0)),
            Z_FAR,
        )
        x += wd


def _facade_windows(
    cam: Camera, x: float, ht: float, z0: float, z1: float, rng: np.random.Generator
) -> np.ndarray:
    """Corner points (N, 4, 2) of a regular window grid on a facade at X = x."""
    floor = rng.uniform(2.8, 3.6)
    step = rng.uniform(2.5, 4.0)
    ww, wh = step * rng.uniform(0.35, 0.6), floor * rng.uniform(0.35, 0.55)
    ys = np.arange(1.2, ht - 1.0, floor)
    zs = np.arange(z0 + 0.8, z1 - ww, step)
    if len(ys) == 0 or len(zs) == 0:
        return np.zeros((0, 4, 2))
    gy, gz = np.meshgrid(ys, zs, indexing="ij")
    gy, gz = gy.ravel(), gz.ravel()
    cy = np.stack([gy, gy + wh, gy + wh, gy], axis=1)
    cz = np.stack([gz, gz, gz + ww, gz + ww], axis=1)
    return cam.project(np.full_like(cy, x), cy, cz)


def draw_roadside(cv: Canvas, st: Street, rng: np.random.Generator) -> None:
    """Blocks along both sides (buildings with windows, vegetation, gaps) and walls/fences."""
    cam = st.cam
    items: list[tuple[float, Callable[[], None]]] = []
    for side, face, walk in ((-1, st.face_left, st.walk_left), (1, st.face_right, st.walk_right)):
        z = rng.uniform(0.5, 8.0)
        while z < Z_FAR:
            length = rng.uniform(8.0, 30.0)
            z1 = min(z + length, Z_FAR)
            r = rng.random()
            if r < cv.style.veg_block_prob:
                items.append((z, _veg_block(cv, cam, face, z, z1, rng)))
            elif r < 0.92:
                items.append((z, _building(cv, cam, side, face, z, z1, rng)))
            if rng.random() < 0.22:
                cls = WALL if rng.random() < 0.45 else FENCE
                items.append((z - 0.1, _barrier(cv, cam, cls, walk, z, min(z1, z + rng.uniform(5, 20)), rng)))
            z = z1
    for _z, draw in sorted(items, key=lambda t: -t[0]):
        draw()


def _slices(z0: float, z1: float, step: float = 5.0) -> list[tuple[float, float]]:
    """Depth slices of a long surface: fog needs depth to vary along it."""
    edges = list(np.arange(z0, z1, step)) + [z1]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _fill_side(
    cv: Canvas, cam: Camera, x: float, y0: float, y1: float, z0: float, z1: float, cls, col
) -> None:
    """Fill a side plane; with a depth buffer, slice by depth so haze grows along it."""
    if cv.depth is None:
        cv.fill([side_plane(cam, x, y0, y1, z0, z1)], cls, col, z0)
        return
    for a, b in _slices(z0, z1):
        cv.fill([side_plane(cam, x, y0, y1, a, b)], cls, col, (a + b) / 2)


def _building(cv, cam, side, face, z0, z1, rng) -> Callable[[], None]:
    ht = rng.uniform(*cv.style.building_height)
    gain = rng.uniform(0.75, 1.1)
    depth_out = 12.0

    def draw() -> None:
        front = front_rect(
            cam, min(face, face + side * depth_out), max(face, face + side * depth_out), 0, ht, z0
        )
        cv.fill([front], BUILDING, cv.colour(BUILDING, gain=gain * 1.1), z0)
        _fill_side(cv, cam, face, 0.0, ht, z0, z1, BUILDING, cv.colour(BUILDING, gain=gain * 0.85))
        wins = _facade_windows(cam, face, ht, z0, z1, rng)
        if len(wins):
            glass = cv.colour(SKY, (60, 70, 90), gain=1.0) if cv.style.base == "real" else (150, 190, 220)
            cv.paint(wins, glass)
            if cv.style.night:
                lit = rng.random(len(wins)) < 0.15
                for q in wins[lit]:
                    c = q.mean(axis=0)
                    r = 0.5 * float(np.abs(q[2, 0] - q[0, 0]))
                    cv.lights.append((float(c[0]), float(c[1]), max(r, 1.5), (150.0, 120.0, 60.0)))

    return draw


def _veg_block(cv, cam, face, z0, z1, rng) -> Callable[[], None]:
    ht = rng.uniform(2.0, 9.0)
    gain = rng.uniform(0.75, 1.05)

    def draw() -> None:
        zs = np.linspace(z0, z1, max(3, int((z1 - z0) / 1.5)))
        tops = ht * (1.0 + 0.25 * rng.standard_normal(len(zs))).clip(0.5, 1.6)
        xs = np.full(len(zs), face)
        top = cam.project(xs, tops, zs)
        bottom = cam.project(xs[::-1], np.zeros(len(zs)), zs[::-1])
        cv.fill([np.concatenate([top, bottom])], VEGETATION, cv.colour(VEGETATION, gain=gain), (z0 + z1) / 2)

    return draw


def _barrier(cv, cam, cls, x, z0, z1, rng) -> Callable[[], None]:
    ht = rng.uniform(1.0, 2.5) if cls == WALL else rng.uniform(1.0, 1.8)
    gain = rng.uniform(0.8, 1.1)

    def draw() -> None:
        col = cv.colour(cls, gain=gain)
        _fill_side(cv, cam, x, 0.0, ht, z0, z1, cls, col)
        if cls == FENCE:  # a lattice of darker bars: a shape cue shared by all domains
            zs = np.arange(z0, z1, 0.5)[:, None] + np.array([0.0, 0.0, 0.06, 0.06])
            ys = np.broadcast_to(np.array([0.0, ht, ht, 0.0]), zs.shape)
            bars = cam.project(np.full(zs.shape, x), ys, zs)
            rails = np.stack([side_plane(cam, x, y, y + 0.08, z0, z1) for y in (0.15, ht - 0.1)])
            cv.paint(np.concatenate([bars, rails]), cv.colour(cls, gain=gain * 0.55))

    return draw


# --- objects ----------------------------------------------------------------------------------


def _car_like(cv, cam, cls, x, z, w, h, length, rgb, facing_us, rng) -> Callable[[], None]:
    """Car, truck, bus or train as body box (+ cabin for cars) with windows and lights."""
    gain = rng.uniform(0.85, 1.1)

    def draw() -> None:
        col = cv.colour(cls, rgb, gain)
        side = tuple(c * 0.8 for c in col)
        top_col = tuple(min(255.0, c * 1.1) for c in col)
        lower_h = h * 0.55 if cls == CAR else h
        hull, top, near = box_parts(cam, x, w, 0.25, lower_h - 0.25, z, length)
        wheels = box_parts(cam, x, w * 0.95, 0.0, 0.45, z + 0.3, length - 0.6)[0]
        cv.fill([wheels], cls, (25.0, 25.0, 28.0), z)
        cv.fill([hull], cls, side, z)
        cv.fill([top], cls, top_col, z)
        cv.fill([near], cls, col, z)
        s = cam.f / z
        u, v0 = cam.project(np.array(x), np.array(0.0), np.array(z))
        glass = (40.0, 50.0, 60.0)
        if cls == CAR:
            cab = box_parts(cam, x, w * 0.85, lower_h, h - lower_h, z + length * 0.25, length * 0.5)
            cv.fill([cab[0]], cls, side, z + 1)
            cv.paint(
                [front_rect(cam, x - w * 0.38, x + w * 0.38, lower_h + 0.05, h - 0.08, z + length * 0.25)],
                glass,
            )
        else:  # window band of trucks, buses, trams
            y0 = h * (0.55 if cls != TRUCK else 0.6)
            cv.paint([front_rect(cam, x - w * 0.42, x + w * 0.42, y0, h - 0.3, z)], glass)
        if cv.style.night:
            lc = (255.0, 240.0, 200.0) if facing_us else (200.0, 20.0, 10.0)
            r = (0.35 if facing_us else 0.2) * s
            for dx in (-w * 0.38, w * 0.38):
                cv.lights.append((float(u + dx * s), float(v0 - 0.7 * s), max(r, 1.5), lc))

    return draw


def _person(
    cv, cam, x, z, rng, cls: int = PERSON, seated: bool = False, height: float = 1.0
) -> Callable[[], None]:
    """Upright (or seated) person facing the camera: legs, torso, arms, head."""
    ht = rng.uniform(1.6, 1.9) * height
    top_rgb = CLOTHES[int(rng.integers(len(CLOTHES)))]
    leg_rgb = CLOTHES[int(rng.integers(len(CLOTHES)))]
    base_y = 0.55 if seated else 0.0

    def draw() -> None:
        s = cam.f / z
        u, vg = cam.project(np.array(x), np.array(base_y), np.array(z))
        legs_h = 0.47 * ht if not seated else 0.3 * ht
        torso_h = 0.35 * ht
        w = 0.42 * s
        mp = max(cam.f * 0.14 / z, 0.6 * 3)
        leg_w = max(0.15 * s, mp)
        hip = vg - legs_h * s
        sh = hip - torso_h * s
        head_r = max(0.11 * ht * s, 1.5)
        legs = [
            segment_poly((u - 0.1 * s, vg), (u - 0.08 * s, hip), leg_w),
            segment_poly((u + 0.1 * s, vg), (u + 0.08 * s, hip), leg_w),
        ]
        torso = np.array([[u - w / 2, hip], [u + w / 2, hip], [u + w / 2 * 1.05, sh], [u - w / 2 * 1.05, sh]])
        arms = [
            segment_poly((u - w / 2, sh + 2), (u - w / 2 - 0.05 * s, hip), leg_w * 0.8),
            segment_poly((u + w / 2, sh + 2), (u + w / 2 + 0.05 * s, hip), leg_w * 0.8),
        ]
        head = ellipse_poly(u, sh - head_r, head_r * 0.85, head_r, 10)
        cv.fill(legs, cls, cv.colour(cls, leg_rgb, 0.8), z)
        cv.fill([torso, *arms], cls, cv.colour(cls, top_rgb), z)
        cv.fill([head], cls, cv.colour(cls, (205, 160, 130)), z)

    return draw


def _two_wheeler(cv, cam, cls, x, z, rng, min_px) -> Callable[[], None]:
    """Bicycle or motorcycle seen from the side: two wheels and a frame (motorcycle: a body)."""
    rgb = (20, 150, 150) if cls == BICYCLE else (30, 30, 40)
    flip = 1 if rng.random() < 0.5 else -1

    def draw() -> None:
        s = cam.f / z
        u, vg = cam.project(np.array(x), np.array(0.0), np.array(z))
        r = (0.34 if cls == BICYCLE else 0.32) * s
        base = 1.1 if cls == BICYCLE else 1.4
        a = (u - flip * base / 2 * s, vg - r)
        b = (u + flip * base / 2 * s, vg - r)
        th = max(0.07 * s, min_px)
        col = cv.colour(cls, rgb)
        polys = ring_polys(*a, r, th) + ring_polys(*b, r, th)
        seat = (u - flip * 0.15 * s, vg - 0.95 * s)
        bar = (u + flip * 0.4 * s, vg - 1.0 * s)
        if cls == BICYCLE:
            crank = (u, vg - r)
            polys += [segment_poly(a, crank, th), segment_poly(crank, seat, th), segment_poly(seat, bar, th)]
            polys += [segment_poly(bar, b, th), segment_poly(a, seat, th)]
        else:
            polys += [
                ellipse_poly(u, vg - r * 1.6, 0.6 * s, 0.3 * s, 12),
                ellipse_poly(*a, r, r),
                ellipse_poly(*b, r, r),
            ]
            polys += [segment_poly(bar, b, th * 1.5)]
        cv.fill(polys, cls, col, z)
        if cls == MOTORCYCLE and cv.style.night:
            cv.lights.append((float(b[0]), float(b[1] - r), max(0.2 * s, 1.5), (255.0, 240.0, 200.0)))

    return draw


def _pole(cv, st, x, z, rng, kind: str) -> Callable[[], None]:
    """Pole with optionally a traffic sign, a traffic light or a street lamp arm."""
    cam = st.cam
    ht = rng.uniform(3.5, 5.0) if kind != "lamp" else rng.uniform(6.0, 9.0)
    sign_rgb = SIGN_COLOURS[int(rng.integers(len(SIGN_COLOURS)))]
    shape = int(rng.integers(3))
    toward = 1.0 if x < 0 else -1.0  # arms reach over the road

    def draw() -> None:
        s = cam.f / z
        cv.fill([thin_rect(cam, x, 0.18, 0.0, ht, z, st.min_px)], POLE, cv.colour(POLE), z)
        if kind == "sign":
            size = 0.75
            cyy = ht - 0.5
            u, v = cam.project(np.array(x), np.array(cyy), np.array(z))
            r = max(size / 2 * s, st.min_px)
            if shape == 0:
                poly = ellipse_poly(u, v, r, r, 12)
            elif shape == 1:
                poly = np.array([[u - r, v - r], [u + r, v - r], [u + r, v + r], [u - r, v + r]])
            else:
                poly = np.array([[u, v - r * 1.1], [u + r * 1.1, v + r * 0.8], [u - r * 1.1, v + r * 0.8]])
            cv.fill([poly], SIGN, cv.colour(SIGN, sign_rgb), z - 0.05)
            cv.paint([ellipse_poly(u, v, r * 0.55, r * 0.55, 10)], cv.colour(SIGN, (235, 235, 235)))
        elif kind == "light":
            arm = rng.random() < 0.5
            lx = x + toward * rng.uniform(2.0, 4.0) if arm else x
            if arm:
                bar = front_rect(cam, min(x, lx), max(x, lx), ht - 0.15, ht, z)
                cv.fill([bar], POLE, cv.colour(POLE), z)
            box = front_rect(cam, lx - 0.2, lx + 0.2, ht - 1.1 - (0 if arm else 0.0), ht - 0.1, z - 0.05)
            cv.fill([box], LIGHT, cv.colour(LIGHT), z - 0.05)
            state = int(rng.integers(3))
            lamp_rgb = [(255, 40, 30), (255, 190, 20), (40, 255, 90)][state]
            u, v = cam.project(np.array(lx), np.array(ht - 0.3 - 0.33 * state), np.array(z - 0.05))
            rl = max(0.11 * s, 1.0)
            cv.paint([ellipse_poly(u, v, rl, rl, 8)], tuple(float(c) for c in lamp_rgb))
            if cv.style.night:
                cv.lights.append(
                    (float(u), float(v), max(0.3 * s, 2.0), tuple(0.9 * float(c) for c in lamp_rgb))
                )
        elif kind == "lamp":
            lx = x + toward * 1.5
            cv.fill([front_rect(cam, min(x, lx), max(x, lx), ht - 0.12, ht, z)], POLE, cv.colour(POLE), z)
            if cv.style.night:
                u, v = cam.project(np.array(lx), np.array(ht - 0.3), np.array(z))
                cv.lights.append((float(u), float(v), max(0.8 * s, 3.0), (255.0, 200.0, 120.0)))

    return draw


def _tree(cv, st, x, z, rng) -> Callable[[], None]:
    cam = st.cam
    trunk_h = rng.uniform(1.8, 3.0)
    crown = rng.uniform(1.4, 3.0)
    gain = rng.uniform(0.75, 1.05)

    def draw() -> None:
        s = cam.f / z
        col = cv.colour(VEGETATION, gain=gain)
        trunk = thin_rect(cam, x, 0.3, 0.0, trunk_h + crown * 0.5, z, st.min_px)
        u, v = cam.project(np.array(x), np.array(trunk_h + crown * 0.8), np.array(z))
        blob = ellipse_poly(u, v, crown * s, crown * 0.9 * s, 18)
        blob += rng.uniform(-0.12, 0.12, blob.shape) * crown * s  # ragged outline
        cv.fill([trunk], VEGETATION, tuple(c * 0.6 for c in col), z)
        cv.fill([blob], VEGETATION, col, z)

    return draw


def place_objects(cv: Canvas, st: Street, rng: np.random.Generator) -> list[tuple[float, Callable[[], None]]]:
    """Draw the random traffic and street furniture; returns (depth, draw) items.

    The parts draw from ``rng`` in a fixed order (traffic, roadside, people): the scene of a seed
    depends on it."""
    items: list[tuple[float, Callable[[], None]]] = []
    _place_traffic(cv, st, rng, items)
    _place_roadside(cv, st, rng, items)
    _place_people(cv, st, rng, items)
    return items


def _place_traffic(cv: Canvas, st: Street, rng: np.random.Generator, items: list) -> None:
    """Cars, a truck, a bus and a tram in the lanes, not overlapping in a lane."""
    style = cv.style
    cam = st.cam
    lanes_x = [st.road_left + (k + 0.5) * st.lane_width for k in range(st.lanes)]
    occupied: list[tuple[int, float, float]] = []  # (lane, z0, z1)

    def free(lane: int, z0: float, z1: float) -> bool:
        return all(not (ln == lane and z0 < b + 2.0 and a < z1 + 2.0) for ln, a, b in occupied)

    def vehicle(cls: int, w: float, h: float, length: float, rgb, zr: tuple[float, float]) -> None:
        for _ in range(4):
            lane = int(rng.integers(st.lanes))
            z = rng.uniform(*zr)
            if free(lane, z, z + length):
                occupied.append((lane, z, z + length))
                x = lanes_x[lane] + rng.uniform(-0.3, 0.3)
                facing = x < -st.lane_width / 2  # oncoming traffic on the left lanes
                items.append((z, _car_like(cv, cam, cls, x, z, w, h, length, rgb, facing, rng)))
                return

    for _ in range(int(rng.poisson(style.cars_mean))):
        rgb = GAME_CAR_COLOURS[int(rng.integers(len(GAME_CAR_COLOURS)))]
        vehicle(CAR, rng.uniform(1.7, 1.9), rng.uniform(1.4, 1.6), rng.uniform(4.0, 4.8), rgb, (5.0, 70.0))
    if rng.random() < 0.22:
        vehicle(TRUCK, 2.5, rng.uniform(3.0, 3.6), rng.uniform(6.0, 9.0), (230, 230, 220), (8.0, 50.0))
    if rng.random() < 0.18:
        vehicle(BUS, 2.55, 3.1, 12.0, (230, 180, 30), (8.0, 50.0))
    if rng.random() < 0.06:  # a tram on the road: rare, as trains in Cityscapes
        vehicle(TRAIN, 2.65, 3.6, 30.0, (200, 40, 40), (7.0, 30.0))


def _place_roadside(cv: Canvas, st: Street, rng: np.random.Generator, items: list) -> None:
    """Parked cars, poles and trees on both sides, and perhaps a junction's traffic lights."""
    style = cv.style
    cam = st.cam
    for side, kerb in ((-1, st.road_left), (1, st.road_right)):
        for z in np.arange(rng.uniform(4.0, 9.0), 55.0, 6.0):
            if rng.random() < style.parked_prob:
                rgb = GAME_CAR_COLOURS[int(rng.integers(len(GAME_CAR_COLOURS)))]
                x = kerb - side * 1.1
                items.append((z, _car_like(cv, cam, CAR, x, z, 1.8, 1.5, 4.4, rgb, False, rng)))
        walk = st.walk_left if side < 0 else st.walk_right
        z = rng.uniform(3.0, 15.0)
        while z < 70.0:
            kind = ["plain", "sign", "lamp"][int(rng.choice(3, p=[0.3, 0.3, 0.4]))]
            items.append((z, _pole(cv, st, kerb + side * 0.5, z, rng, kind)))
            z += rng.uniform(12.0, 30.0)
        for z in np.arange(rng.uniform(3.0, 12.0), 60.0, rng.uniform(8.0, 14.0)):
            if rng.random() < style.tree_prob:
                x = kerb + side * rng.uniform(1.2, max(1.3, abs(walk - kerb) - 0.5))
                items.append((z + 0.2, _tree(cv, st, x, z + 0.2, rng)))
    if rng.random() < 0.5:  # a junction with traffic lights on both sides
        z = rng.uniform(10.0, 40.0)
        items.append((z, _pole(cv, st, st.road_left - 0.5, z, rng, "light")))
        items.append((z, _pole(cv, st, st.road_right + 0.5, z, rng, "light")))


def _place_people(cv: Canvas, st: Street, rng: np.random.Generator, items: list) -> None:
    """Pedestrians, riders on two-wheelers near the kerb, parked bicycles on the sidewalk."""
    cam = st.cam
    for _ in range(int(rng.poisson(cv.style.persons_mean))):
        z = rng.uniform(4.0, 40.0)
        if rng.random() < 0.15:
            x = rng.uniform(st.road_left, st.road_right)
        elif rng.random() < 0.5:
            x = rng.uniform(st.walk_left + 0.3, st.road_left - 0.3)
        else:
            x = rng.uniform(st.road_right + 0.3, st.walk_right - 0.3)
        items.append((z, _person(cv, cam, x, z, rng)))
    for _ in range(int(rng.poisson(0.5))):  # riders, mostly on bicycles, near the kerb
        cls = BICYCLE if rng.random() < 0.65 else MOTORCYCLE
        z = rng.uniform(4.0, 30.0)
        side = -1 if rng.random() < 0.5 else 1
        x = (st.road_left + 0.8) if side < 0 else (st.road_right - 0.8)
        items.append((z, _two_wheeler(cv, cam, cls, x, z, rng, st.min_px)))
        items.append((z - 0.01, _person(cv, cam, x, z - 0.01, rng, cls=RIDER, seated=True)))
    for _ in range(int(rng.poisson(0.3))):  # parked bicycles on the sidewalk
        z = rng.uniform(4.0, 25.0)
        x = (
            rng.uniform(st.road_right + 0.5, st.walk_right - 0.3)
            if rng.random() < 0.5
            else rng.uniform(st.walk_left + 0.3, st.road_left - 0.5)
        )
        items.append((z, _two_wheeler(cv, cam, BICYCLE, x, z, rng, st.min_px)))


def draw_hood(cv: Canvas, rng: np.random.Generator) -> None:
    """Ego-vehicle bonnet at the bottom edge, labelled ignore (as Cityscapes' 'ego vehicle')."""
    h, w = cv.label.shape
    rise = h * rng.uniform(0.05, 0.09)
    poly = ellipse_poly(w / 2 + rng.uniform(-0.05, 0.05) * w, h + h * 0.3, w * 0.75, h * 0.3 + rise, 32)
    cv.fill([poly], IGNORE, (35.0, 35.0, 40.0), 1.0)
