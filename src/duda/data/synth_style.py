"""Appearance of the procedural benchmark: per-domain palettes, cameras, layout statistics, effects.

Everything here is part of the frozen benchmark design (see ``docs/benchmark.md``): changing a
number changes the benchmark, so ``GENERATOR_VERSION`` in ``duda.data.synth`` must be bumped.

The domains share shapes and layout *rules*; they differ in
- colours: "real" shifts every class's hue, saturation and brightness moderately (not a full
  palette change, which in a prototype made every model fail and self-training useless);
- rendering: "game" is flat-shaded, "real" adds texture, sensor noise, blur, vignetting and a
  per-image colour cast; "night" and "fog" start from "real" and add darkness with light sources
  or depth-dependent haze;
- camera and layout statistics (camera height, field of view, horizon, lane and sidewalk widths,
  traffic density).
"""

from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass

import cv2
import numpy as np

# Fixed seed of the shared texture and noise banks: part of the design, independent of the user seed.
BANK_SEED = 20250417

# trainId -> base RGB of the clean "game" source (saturated, GTA-like flat colours).
GAME_PALETTE: dict[int, tuple[int, int, int]] = {
    0: (92, 88, 96),  # road: asphalt grey, slightly violet
    1: (176, 160, 150),  # sidewalk: warm pale paving
    2: (150, 110, 80),  # building: brick / sandstone
    3: (170, 170, 150),  # wall: concrete
    4: (120, 95, 60),  # fence: wood / rust
    5: (110, 110, 118),  # pole: galvanised metal
    6: (40, 40, 40),  # traffic light housing (lamps drawn on top)
    7: (30, 90, 210),  # traffic sign: blue plate (some red/yellow variants)
    8: (50, 140, 40),  # vegetation: saturated leaf green
    9: (130, 150, 60),  # terrain: grass / dry soil
    10: (100, 170, 240),  # sky: clear blue
    11: (200, 80, 80),  # person: clothes (varied per instance)
    12: (220, 160, 40),  # rider: jacket (varied per instance)
    13: (40, 80, 200),  # car: body (varied per instance)
    14: (230, 230, 220),  # truck: white box
    15: (230, 180, 30),  # bus: yellow
    16: (200, 40, 40),  # train / tram: red
    17: (30, 30, 40),  # motorcycle: dark
    18: (20, 150, 150),  # bicycle: teal frame
}

# Per-class (hue shift in degrees, saturation factor, brightness factor) from game to "real".
# Moderate and class-specific, so that a colour-only classifier trained on "game" is partly wrong.
# Generator v2: every deviation from identity of v1 scaled by 1.5 (docs/benchmark.md, round 2).
REAL_SHIFT: dict[int, tuple[float, float, float]] = {
    0: (18.0, 0.70, 0.88),
    1: (-12.0, 0.67, 0.92),
    2: (-9.0, 0.62, 0.85),
    3: (15.0, 0.70, 0.85),
    4: (13.5, 0.70, 0.82),
    5: (22.5, 0.77, 0.88),
    6: (0.0, 1.00, 1.15),
    7: (-7.5, 0.82, 0.88),
    8: (21.0, 0.67, 0.77),
    9: (-13.5, 0.62, 0.88),
    10: (-7.5, 0.52, 1.00),
    11: (12.0, 0.70, 0.85),
    12: (-12.0, 0.70, 0.85),
    13: (15.0, 0.67, 0.85),
    14: (0.0, 0.85, 0.88),
    15: (-15.0, 0.70, 0.88),
    16: (12.0, 0.70, 0.85),
    17: (0.0, 1.00, 1.22),
    18: (18.0, 0.70, 0.85),
}

# Instance colour choices for classes whose members differ in colour (cars, clothes, signs).
GAME_CAR_COLOURS = [
    (40, 80, 200),
    (200, 30, 30),
    (230, 230, 230),
    (30, 30, 30),
    (150, 150, 160),
    (30, 150, 60),
]
CLOTHES = [(200, 80, 80), (40, 60, 140), (30, 30, 30), (220, 200, 60), (90, 160, 90), (180, 180, 190)]
SIGN_COLOURS = [(30, 90, 210), (210, 30, 30), (240, 200, 20)]


@dataclass(frozen=True)
class DomainStyle:
    """Camera, layout statistics and rendering of one domain (all ranges are uniform draws)."""

    base: str  # "game" or "real": which palette and layout the domain starts from
    fov_deg: tuple[float, float]  # horizontal field of view
    cam_height: tuple[float, float]  # metres above the road
    horizon: tuple[float, float]  # horizon row as a fraction of the image height
    lane_width: tuple[float, float]
    lanes: tuple[int, int]  # inclusive
    sidewalk_width: tuple[float, float]
    cars_mean: float  # Poisson mean of moving cars
    parked_prob: float  # chance per kerb slot of a parked car
    persons_mean: float
    tree_prob: float  # chance of a kerb tree per slot
    veg_block_prob: float  # chance that a roadside block is vegetation instead of a building
    building_height: tuple[float, float]
    texture: float  # amplitude of the texture field (0 = flat shading)
    noise: float  # sensor noise std in 0-255 units
    blur: float  # Gaussian blur sigma in pixels at 512 px width (0 = none)
    cast: float  # strength of the per-image colour cast
    hood: bool  # ego-vehicle hood at the bottom (ignore label), as in Cityscapes
    night: bool = False
    fog: bool = False


GAME = DomainStyle(
    base="game",
    fov_deg=(72.0, 82.0),
    cam_height=(1.6, 2.0),
    horizon=(0.36, 0.44),
    lane_width=(3.4, 3.8),
    lanes=(2, 4),
    sidewalk_width=(1.8, 3.5),
    cars_mean=3.5,
    parked_prob=0.15,
    persons_mean=1.5,
    tree_prob=0.25,
    veg_block_prob=0.3,
    building_height=(8.0, 30.0),
    texture=0.0,
    noise=0.0,
    blur=0.0,
    cast=0.0,
    hood=False,
)

REAL = DomainStyle(
    base="real",
    fov_deg=(56.0, 64.0),
    cam_height=(1.15, 1.35),
    horizon=(0.43, 0.50),
    lane_width=(3.0, 3.4),
    lanes=(2, 3),
    sidewalk_width=(3.0, 6.0),
    cars_mean=3.0,
    parked_prob=0.25,
    persons_mean=2.5,
    tree_prob=0.4,
    veg_block_prob=0.35,
    building_height=(6.0, 22.0),
    texture=18.0,
    noise=4.0,
    blur=0.8,
    cast=0.08,
    hood=True,
)

NIGHT = DomainStyle(**{**REAL.__dict__, "noise": 7.0, "night": True})
FOG = DomainStyle(**{**REAL.__dict__, "fog": True})

STYLES: dict[str, DomainStyle] = {"game": GAME, "real": REAL, "night": NIGHT, "fog": FOG}


def shift_colour(rgb: tuple[float, float, float], shift: tuple[float, float, float]) -> tuple[float, ...]:
    """Apply a (hue degrees, saturation factor, value factor) shift to an RGB colour in 0-255."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))
    h = (h + shift[0] / 360.0) % 1.0
    s = min(1.0, s * shift[1])
    v = min(1.0, v * shift[2])
    return tuple(255.0 * c for c in colorsys.hsv_to_rgb(h, s, v))


@functools.lru_cache(maxsize=1024)
def class_colour(base: str, cls: int, rgb: tuple[float, float, float] | None = None) -> tuple[float, ...]:
    """The colour of class ``cls`` (or of an instance colour ``rgb`` of it) in palette ``base``."""
    colour = GAME_PALETTE[cls] if rgb is None else rgb
    if base == "game":
        return tuple(float(c) for c in colour)
    return shift_colour(colour, REAL_SHIFT[cls])


@functools.lru_cache(maxsize=8)
def texture_bank(height: int, width: int) -> np.ndarray:
    """Multi-scale smooth noise in about [-1, 1], a little larger than the image (fixed seed)."""
    rng = np.random.default_rng(BANK_SEED)
    h, w = height + 64, width + 64
    out = np.zeros((h, w), np.float32)
    for cell, amp in ((2, 0.5), (6, 0.3), (24, 0.2)):
        grid = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)[:h, :w]
    out /= np.abs(out).max() + 1e-6
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8)
def noise_bank(height: int, width: int, std: float) -> np.ndarray:
    """White Gaussian noise per channel, a little larger than the image (fixed seed)."""
    rng = np.random.default_rng(BANK_SEED + 1)
    out = (std * rng.standard_normal((height + 64, width + 64, 3))).astype(np.float32)
    out.setflags(write=False)
    return out


def bank_crop(bank: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random window of a bank; the offset is the only per-sample randomness (fast)."""
    y = int(rng.integers(0, bank.shape[0] - height + 1))
    x = int(rng.integers(0, bank.shape[1] - width + 1))
    return bank[y : y + height, x : x + width]


# Per-class texture amplitude factors in the "real" rendering (rough surfaces vary more).
TEXTURE_GAIN = np.ones(256, np.float32)
for _cls, _gain in {0: 0.8, 1: 0.7, 2: 1.0, 8: 1.6, 9: 1.3, 10: 0.25, 13: 0.3, 14: 0.3, 15: 0.3}.items():
    TEXTURE_GAIN[_cls] = _gain


def finish_real(
    img: np.ndarray, label: np.ndarray, style: DomainStyle, rng: np.random.Generator
) -> np.ndarray:
    """Texture, vignetting, colour cast and blur of a camera image.

    Takes the drawn uint8 image, returns float32 (0-255, unclipped). Full-image passes are the
    cost here, so per-pixel terms are combined at H×W before touching the three channels.
    """
    h, w = label.shape
    out = img.astype(np.float32)
    if style.texture > 0:
        tex = bank_crop(texture_bank(h, w), rng, h, w)
        out += (style.texture * TEXTURE_GAIN[label] * tex)[..., None]
    cast = (1.0 + rng.uniform(-style.cast, style.cast, 3)).astype(np.float32)
    out *= vignette(h, w, 0.25)[..., None] * cast
    if style.blur > 0:
        sigma = style.blur * w / 512.0 * float(rng.uniform(0.7, 1.3))
        cv2.GaussianBlur(out, (0, 0), sigma, dst=out)
    return out


def add_sensor_noise(img: np.ndarray, style: DomainStyle, rng: np.random.Generator) -> np.ndarray:
    """Add white sensor noise (last, so that night noise is not darkened with the scene)."""
    if style.noise > 0:
        h, w = img.shape[:2]
        img += bank_crop(noise_bank(h, w, style.noise), rng, h, w)
    return img


@functools.lru_cache(maxsize=8)
def vignette(height: int, width: int, strength: float) -> np.ndarray:
    """Radial brightness fall-off, 1 at the centre and ``1 - strength`` in the corners."""
    ys = (np.arange(height, dtype=np.float32) - height / 2) / (height / 2)
    xs = (np.arange(width, dtype=np.float32) - width / 2) / (width / 2)
    out = 1.0 - strength * (ys[:, None] ** 2 * 0.5 + xs[None, :] ** 2 * 0.5)
    out.setflags(write=False)
    return out


def apply_night(
    img: np.ndarray,
    lights: list[tuple[float, float, float, tuple[float, float, float]]],
    rng: np.random.Generator,
) -> np.ndarray:
    """Darken to a low-contrast night image and add glows of the given light sources.

    ``lights`` holds (x, y, radius px, RGB intensity) of street lamps, head/tail lights, windows.
    Glows are drawn at quarter resolution and blurred: cheap, and soft like real halos.
    """
    h, w = img.shape[:2]
    ambient = float(rng.uniform(0.12, 0.22))
    img *= ambient
    img += np.array([6.0, 8.0, 16.0], np.float32)  # blue-ish sky glow lifts the blacks: low contrast
    small = np.zeros((h // 4 + 1, w // 4 + 1, 3), np.float32)
    for x, y, r, col in lights:
        cv2.circle(small, (int(x / 4), int(y / 4)), max(1, int(r / 4)), col, -1)
    glow = cv2.GaussianBlur(small, (0, 0), max(1.0, w / 256.0))
    img += cv2.resize(glow, (w, h), interpolation=cv2.INTER_LINEAR)
    return img


def apply_fog(img: np.ndarray, depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blend to grey airlight with transmission exp(-depth / visibility) (Koschmieder's law)."""
    visibility = float(rng.uniform(25.0, 60.0))
    air = np.float32(rng.uniform(170.0, 215.0))
    t = np.exp(-depth / visibility).astype(np.float32)[..., None]
    img *= t
    img += air * (1.0 - t)
    return img
