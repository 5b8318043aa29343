"""Procedural SLO (scanning-laser ophthalmoscope) fundus renderer.

Draws a near-infrared, disc-centred en-face fundus in the *anatomical* frame: 664 wide x 512
high, superior up. Every eye is drawn as a right eye (optic disc right of centre, macula towards
the left, temporal, edge) and mirrored for a left eye. How the image is stored on disk (rotated)
is the dataset writer's business, not this module's.

What is drawn, and which :class:`EyeLook` field it shows:
- background reflectance, darker with more melanin (``pigment``), with an illumination gradient,
  vignetting, a darker macula temporal to the disc and a mottled pigment texture;
- choroidal tessellation (a tigroid network), stronger in lightly pigmented and in myopic eyes;
- the optic disc: a bright vertical ellipse (size ``disc_scale``) with a brighter cup whose vertical
  radius is exactly ``cdr`` times the disc's, so the cup-to-disc ratio can be read off the image;
  ``notch`` squares the cup towards the poles (focal rim loss in glaucoma);
- refraction (``se``, dioptres): myopia tilts and narrows the disc and adds a temporal
  peripapillary-atrophy crescent and tessellation; hyperopia blurs the disc margin (crowded disc);
- a peripapillary nerve-fibre glow above and below the disc, scaled by ``rnfl`` and cut by a dark
  wedge defect where the rim is notched;
- vessel arcades: an artery and a vein per quadrant, the temporal ones curving around the macula,
  branching and tapering (veins wider and darker, arteries with a central light reflex), none at
  the fovea;
- image quality: speckle (``noise``), scan-line noise, flattened ``contrast``, defocus ``blur``,
  fine full-resolution grain.

Speed: smooth fields are computed at quarter resolution, the disc in a small window at half
resolution, textures and noise are windows cut at random offsets from cached tiles, vessels are
drawn with ``ImageDraw``, and PIL does the upsampling; one eye costs a few milliseconds. Every
random choice comes from the ``rng`` argument (the cached tiles come from a fixed seed), so the
same generator state gives the same image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw
from scipy.ndimage import gaussian_filter

WIDTH, HEIGHT = 664, 512  # anatomical frame, PIL size order (width, height)
DISC_RADIUS = 55.0  # vertical semi-axis of an average disc in pixels: the disc is ~1/6 of the width
FOVEA_DISTANCE = 2.5  # disc diameters from the disc centre to the fovea
TINT = (1.0, 0.97, 0.92)  # SLO images are grey; stored as 3-channel JPGs with a faint warm tint
_TILE = 1024  # side of the cached noise and texture tiles
_TILE_SEED = 20_241_227  # fixed: the tiles belong to the renderer, not to a subject
_TILE_SMOOTHING = {"speckle": (0.6, 0.6), "mottle": (2.5, 2.5), "choroid": (5.0, 9.0)}  # Gaussian sigma (rows, cols), half-res px


@dataclass(frozen=True)
class EyeLook:
    """Everything about one eye that the image shows; the defaults give an average healthy eye.

    laterality: ``"OD"`` (right eye) or ``"OS"`` (left eye, drawn mirrored).
    disc_scale: disc diameter relative to an average disc (1.0 = 110 px tall).
    cdr: vertical cup-to-disc ratio in (0, 1); the cup's vertical radius is ``cdr`` x the disc's.
    notch: 0..1 focal loss of the superior/inferior rim (glaucoma), with a nerve-fibre wedge defect.
    se: spherical-equivalent refraction in dioptres (negative = myopic, positive = hyperopic).
    rnfl: peripapillary nerve-fibre layer thickness in micrometres (~95 healthy); sets the glow.
    pigment: 0..1 fundus melanin: darker background, more mottling, less visible choroid.
    noise: standard deviation of the multiplicative speckle (0.05 = typical).
    contrast: multiplier on the image's contrast around its mean (1 = typical).
    cup_contrast: multiplier on how much brighter the cup is than the rim (1 = typical).
    blur: extra defocus, Gaussian sigma in full-resolution pixels, beyond the ~1 px softness that
        rendering at half resolution already gives.
    variability: multiplier on the spread of nuisance anatomy and illumination (1 = typical).
    """

    laterality: str = "OD"
    disc_scale: float = 1.0
    cdr: float = 0.35
    notch: float = 0.0
    se: float = 0.0
    rnfl: float = 95.0
    pigment: float = 0.3
    noise: float = 0.05
    contrast: float = 1.0
    cup_contrast: float = 1.0
    blur: float = 0.0
    variability: float = 1.0

    def __post_init__(self) -> None:
        if self.laterality not in ("OD", "OS"):
            raise ValueError(f"EyeLook.laterality: expected 'OD' or 'OS', got {self.laterality!r}")
        if not 0.0 < self.cdr < 1.0:
            raise ValueError(f"EyeLook.cdr: expected a ratio in (0, 1), got {self.cdr!r}")
        if not 0.2 < self.disc_scale < 3.0:
            raise ValueError(f"EyeLook.disc_scale: expected a relative size in (0.2, 3), got {self.disc_scale!r}")


@dataclass(frozen=True)
class _Layout:
    """Where things are in this eye, in full-resolution pixels of the right-eye frame."""

    disc: tuple[float, float]
    fovea: tuple[float, float]
    ry: float  # disc vertical semi-axis
    rx: float  # disc horizontal semi-axis
    tilt: float  # disc rotation, radians
    myopia: float  # 0..1
    hyperopia: float  # 0..1


def render_fundus(look: EyeLook, rng: np.random.Generator, rotate_ccw: bool = False) -> Image.Image:
    """Render one grey SLO fundus: PIL mode ``L``, size (664, 512), anatomical frame.

    ``rotate_ccw`` returns it rotated 90 degrees counter-clockwise instead, size (512, 664): the same
    pixels as ``transpose(ROTATE_90)`` of the anatomical image, but rotated at half resolution, which
    is cheaper than rotating the full-size image."""
    lay = _layout(look, rng)
    img = _upsample(_smooth_background(look, rng, lay), 2)
    _add_textures(img, look, rng, lay)
    vessels = _vessel_opacity(rng, lay, look.variability)
    _paint_disc(img, vessels, look, rng, lay)
    img *= 1.0 - vessels

    if look.contrast != 1.0:
        mean = float(img.mean())
        img = mean + look.contrast * (img - mean)
    if look.blur > 0.2:  # most eyes skip this: the half-resolution render is already ~1 px soft
        img = gaussian_filter(img, look.blur / 2, mode="nearest", truncate=2.5)
    img *= 1.0 + look.noise * _tile_window(rng, "speckle", img.shape)
    img += rng.normal(0, 0.004 + 0.06 * look.noise, (img.shape[0], 1)).astype(np.float32)  # scan lines
    img *= 255.0
    img += 0.5
    pixels = np.clip(img, 0, 255, out=img).astype(np.uint8)
    if look.laterality == "OS":
        pixels = pixels[:, ::-1]
    size = (WIDTH, HEIGHT)
    if rotate_ccw:
        pixels, size = np.rot90(pixels), (HEIGHT, WIDTH)
    half = Image.fromarray(np.ascontiguousarray(pixels), "L")
    full = half.resize(size, Image.BILINEAR)
    x0, y0 = (int(v) for v in rng.integers(0, (_TILE - size[0], _TILE - size[1])))
    grain = _grain_tile().crop((x0, y0, x0 + size[0], y0 + size[1]))
    return ImageChops.add(full, grain, scale=1.0, offset=-128)


def slo_rgb(gray: Image.Image) -> Image.Image:
    """The grey image as a faintly tinted 3-channel image, as SLO JPGs are stored."""
    return Image.merge("RGB", [gray if t == 1.0 else gray.point(lut) for t, lut in zip(TINT, _tint_luts())])


def slo_rgb_array(gray: np.ndarray) -> np.ndarray:
    """:func:`slo_rgb` for a uint8 array: (H, W) -> (H, W, 3) uint8."""
    return np.stack([np.asarray(lut, dtype=np.uint8)[gray] for lut in _tint_luts()], axis=-1)


# ---------------------------------------------------------------------------------------------
# geometry and cached tiles

def refraction_amounts(se: float) -> tuple[float, float]:
    """How myopic and how hyperopic (each 0..1) an eye of spherical equivalent ``se`` dioptres looks:
    myopic features grow from -0.5 D to full at -6.5 D, hyperopic ones from +0.5 D to full at +4.5 D."""
    return _clip01(-(se + 0.5) / 6.0), _clip01((se - 0.5) / 4.0)


def _layout(look: EyeLook, rng: np.random.Generator) -> _Layout:
    jitter = look.variability
    myopia, hyperopia = refraction_amounts(look.se)
    ry = DISC_RADIUS * look.disc_scale
    disc = (0.56 * WIDTH + rng.normal(0, 10) * jitter, 0.50 * HEIGHT + rng.normal(0, 10) * jitter)
    fovea = (disc[0] - FOVEA_DISTANCE * 2 * DISC_RADIUS * (1 + rng.normal(0, 0.05) * jitter),
             disc[1] + 0.6 * ry + rng.normal(0, 6) * jitter)
    tilt = math.radians(rng.normal(0, 4) * jitter + 12 * myopia * rng.choice((-1, 1)))
    return _Layout(disc, fovea, ry, ry * (0.92 - 0.18 * myopia), tilt, myopia, hyperopia)


@lru_cache(maxsize=None)
def _grid(scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres of a 1/scale-resolution grid, in full-resolution coordinates (read-only)."""
    xs = (np.arange(WIDTH // scale, dtype=np.float32) + 0.5) * scale
    ys = (np.arange(HEIGHT // scale, dtype=np.float32) + 0.5) * scale
    X, Y = np.meshgrid(xs, ys)
    X.flags.writeable = Y.flags.writeable = False
    return X, Y


@lru_cache(maxsize=None)
def _tile(kind: str) -> np.ndarray:
    """A fixed, smoothed, unit-variance noise tile; ``choroid`` is turned into a tigroid network."""
    rng = np.random.default_rng([_TILE_SEED, sorted(_TILE_SMOOTHING).index(kind)])
    tile = gaussian_filter(rng.standard_normal((_TILE, _TILE)).astype(np.float32), _TILE_SMOOTHING[kind])
    tile /= tile.std()
    if kind == "choroid":  # thin lines along the zero crossings, zero mean
        tile = np.exp(-(tile / 0.5) ** 2)
        tile -= tile.mean()
    tile.flags.writeable = False
    return tile


@lru_cache(maxsize=1)
def _grain_tile() -> Image.Image:
    """Full-resolution sensor grain centred on 128, for ``ImageChops.add(..., offset=-128)``."""
    rng = np.random.default_rng([_TILE_SEED, len(_TILE_SMOOTHING)])
    return Image.fromarray(np.clip(128 + 3.0 * rng.standard_normal((_TILE, _TILE)), 0, 255).astype(np.uint8), "L")


@lru_cache(maxsize=1)
def _tint_luts() -> tuple[list[int], ...]:
    return tuple([min(255, round(v * t)) for v in range(256)] for t in TINT)


def _tile_window(rng: np.random.Generator, kind: str, shape: tuple[int, int]) -> np.ndarray:
    """A random window of a cached tile, randomly flipped: fresh-looking texture at no cost."""
    h, w = shape
    y0, x0 = (int(v) for v in rng.integers(0, (_TILE - h, _TILE - w)))
    window = _tile(kind)[y0:y0 + h, x0:x0 + w]
    return window[::-1] if rng.random() < 0.5 else window


def _upsample(field: np.ndarray, factor: int) -> np.ndarray:
    h, w = field.shape
    resized = Image.fromarray(field, "F").resize((w * factor, h * factor), Image.BILINEAR)
    return np.array(resized)  # a writable copy


def _clip01(v: float) -> float:
    return min(1.0, max(0.0, float(v)))


def _inside(signed_distance: np.ndarray, edge_width: float) -> np.ndarray:
    """1 inside (distance < 0), 0 outside, with a linear ramp ``edge_width`` wide."""
    return np.clip(0.5 - signed_distance / edge_width, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# layers

def _smooth_background(look: EyeLook, rng: np.random.Generator, lay: _Layout) -> np.ndarray:
    """Quarter-resolution reflectance: level, illumination ramp, vignetting, macula, nerve fibres."""
    X, Y = _grid(4)
    jitter = look.variability
    level = 0.50 - 0.16 * look.pigment + rng.normal(0, 0.03) * jitter
    angle = rng.uniform(0, 2 * math.pi)
    strength = abs(rng.normal(0.12, 0.05)) * jitter
    ramp = (math.cos(angle) * (X / WIDTH - 0.5) + math.sin(angle) * (Y / HEIGHT - 0.5)) * strength
    r2 = ((X - WIDTH / 2) / (WIDTH / 2)) ** 2 + ((Y - HEIGHT / 2) / (HEIGHT / 2)) ** 2
    vignette = 1.0 - (0.22 + 0.08 * rng.random() * jitter) * r2 * np.sqrt(r2)
    fx, fy = lay.fovea
    macula = np.exp(-((X - fx) ** 2 + (Y - fy) ** 2) / (2 * (1.6 * lay.ry) ** 2))
    img = level * (1.0 + ramp) * vignette * (1.0 - (0.3 + 0.05 * rng.normal() * jitter) * macula)
    return img + _nerve_fibre_glow(look, X, Y, lay)


def _nerve_fibre_glow(look: EyeLook, X: np.ndarray, Y: np.ndarray, lay: _Layout) -> np.ndarray:
    """Bright arcuate nerve-fibre bundles above and below the disc; a dark wedge where notched."""
    dx, dy = X - lay.disc[0], Y - lay.disc[1]
    r = np.sqrt(dx * dx + dy * dy) + 1e-3
    vertical = (dy / r) ** 2  # 1 above and below the disc, 0 beside it
    ring = np.exp(-(((r - 2.2 * lay.ry) / (1.6 * lay.ry)) ** 2))
    glow = (0.07 * _clip01((look.rnfl - 40.0) / 70.0)) * ring * vertical * vertical
    if look.notch > 0:
        # Wedge defect, inferotemporal (below, towards the macula): the commonest site.
        direction = math.radians(115.0)  # y grows downwards: 90 degrees is straight down
        cos_dev = (dx * math.cos(direction) + dy * math.sin(direction)) / r
        wedge = np.clip((cos_dev - 0.9) / 0.05, 0, 1) * np.exp(-(((r - 2.4 * lay.ry) / (2.0 * lay.ry)) ** 2))
        glow -= (0.08 * look.notch) * wedge
    return glow


def _add_textures(img: np.ndarray, look: EyeLook, rng: np.random.Generator, lay: _Layout) -> None:
    """Choroidal tessellation (light or myopic fundi) and pigment mottling, in place."""
    level = float(img.mean())
    tessellation = _clip01(0.8 * lay.myopia + 0.35 * (1.0 - look.pigment) - 0.1
                           + 0.05 * rng.normal() * look.variability)
    img += (0.18 * tessellation * level) * _tile_window(rng, "choroid", img.shape)
    img += (0.01 + 0.025 * look.pigment) * _tile_window(rng, "mottle", img.shape)


def _paint_disc(img: np.ndarray, vessels: np.ndarray, look: EyeLook, rng: np.random.Generator,
                lay: _Layout) -> None:
    """Paint peripapillary atrophy, rim and cup into a window of ``img``; vessels dive in the cup."""
    ppa_width = lay.ry * (0.06 + 0.45 * lay.myopia + 0.25 * look.notch)
    reach = 1.2 * lay.ry + ppa_width + 8
    X, Y = _grid(2)
    rows, cols = _window_slices(lay.disc, reach, X.shape)
    dx, dy = X[rows, cols] - lay.disc[0], Y[rows, cols] - lay.disc[1]
    cos_t, sin_t = math.cos(lay.tilt), math.sin(lay.tilt)
    u, v = dx * cos_t + dy * sin_t, -dx * sin_t + dy * cos_t  # disc-aligned; -u is temporal
    patch = img[rows, cols]
    background = float(np.median(patch))

    rho = np.sqrt((u / lay.rx) ** 2 + (v / lay.ry) ** 2)
    disc = _inside(rho - 1.0, (5.0 + 9.0 * lay.hyperopia) / lay.ry)
    if ppa_width > 2:  # a temporal crescent (the disc outline shifted temporally), bright sclera
        rho_ppa = np.sqrt(((u + ppa_width) / lay.rx) ** 2 + (v / (1.05 * lay.ry)) ** 2)
        crescent = _inside(rho_ppa - 1.0, 4.0 / lay.ry) * (1.0 - disc)
        patch += crescent * ((0.12 + 0.03 * rng.normal()) * (1.0 - 0.4 * look.pigment))
    rim_level = background + 0.18 + 0.03 * rng.normal() * look.variability
    patch += disc * (rim_level - patch)

    # Cup: vertical radius exactly cdr * ry, sitting slightly temporal; a notch squares it at the poles.
    cy = look.cdr * lay.ry
    cx = min(cy * (0.85 - 0.1 * look.notch), 0.9 * lay.rx)
    power = 2.0 + 1.5 * look.notch
    rho_cup = (np.abs((u + 0.1 * lay.rx) / cx) ** power + np.abs(v / cy) ** power) ** (1.0 / power)
    cup = _inside(rho_cup - 1.0, 2.5 / cy) * disc
    patch += cup * (0.16 * look.cup_contrast)
    vessels[rows, cols] *= 1.0 - 0.7 * cup  # vessels dive into the cup


def _window_slices(center: tuple[float, float], reach: float, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Half-resolution index ranges covering ``reach`` full-resolution pixels around ``center``."""
    x, y = center[0] / 2, center[1] / 2
    r = reach / 2
    return (slice(max(0, int(y - r)), min(shape[0], int(y + r) + 1)),
            slice(max(0, int(x - r)), min(shape[1], int(x + r) + 1)))


# ---------------------------------------------------------------------------------------------
# vessels

_STEP = 10.0  # full-resolution pixels between samples along a vessel
_OPACITY = {"vein": 120, "artery": 95}  # x 255: veins darker than arteries
_REFLEX = 45  # the arterial light reflex removes this much opacity along the centre line
_TAPER = 0.975  # calibre kept per step
_BRANCH_CHANCE = (0.08, 0.045, 0.0)  # per step, for main vessels, their branches, and twigs


@dataclass
class _Vessels:
    """One generation of vessels, grown together (arrays of length m)."""

    start: np.ndarray  # complex x + iy
    heading: np.ndarray  # radians at the start
    turn: np.ndarray  # total smooth bend, radians
    bend: np.ndarray  # arc length over which most of the bend happens, pixels
    length: np.ndarray  # maximal arc length, pixels
    width: np.ndarray  # calibre at the start, pixels
    vein: np.ndarray  # bool
    toward_macula: np.ndarray  # -1, 0, +1: which side (relative to the heading) the macula lies on


def _vessel_opacity(rng: np.random.Generator, lay: _Layout, jitter: float) -> np.ndarray:
    """Opacity (0..~0.5) of the retinal vessels on the half-resolution grid, right-eye frame.

    Per quadrant an artery and a vein leave the disc vertically; the temporal pair bends towards
    the macula (left) and arches around it, the nasal pair fans out towards the nasal edge. Each
    generation of vessels (main vessels, branches, twigs) is grown at once with array operations."""
    canvas = Image.new("L", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(canvas)
    strokes = []
    generation = _main_vessels(rng, lay, jitter)
    faz = (complex(*lay.fovea), 0.35 * 2 * DISC_RADIUS)
    for depth in range(3):
        strokes.append(_grow(rng, generation, depth, faz))
        generation = strokes[-1][4]
        if depth == 0:
            generation = _concat(generation, _small_disc_vessels(rng, lay))
    for grown in reversed(strokes):  # finer vessels first: parents are drawn on top
        _stroke(draw, *grown[:4])
    return np.asarray(canvas.reduce(2), dtype=np.float32) * (1.0 / 255.0)  # anti-aliased by the reduction


def _main_vessels(rng: np.random.Generator, lay: _Layout, jitter: float) -> _Vessels:
    cx, cy = lay.disc
    D = 2 * lay.ry
    rows = []
    for sign in (-1, 1):  # superior (-1, up: y grows downwards) and inferior (+1, down)
        for vein, width in ((True, 9.5), (False, 7.0)):
            start = complex(cx + rng.normal(0, 0.06 * D), cy + sign * 0.1 * D)
            width *= rng.uniform(0.9, 1.1)
            # Temporal: arches ~1.5 D above (below) the disc at the fovea's column, then runs temporally.
            rows.append((start, sign * (math.pi / 2 + 0.2 + rng.normal(0, 0.08) * jitter),
                         sign * (math.radians(88) + rng.normal(0, 0.12) * jitter),
                         1.7 * D * math.exp(rng.normal(0, 0.12) * jitter), 1000.0, width, vein, -sign))
            # Nasal: fans out towards the nasal edge.
            rows.append((start, sign * (math.pi / 2 - 0.45 + rng.normal(0, 0.12) * jitter),
                         -sign * rng.uniform(0.1, 0.5), 1.5 * D, 1000.0, width, vein, 0))
    return _Vessels(*(np.array(column) for column in zip(*rows)))


def _small_disc_vessels(rng: np.random.Generator, lay: _Layout) -> _Vessels:
    """Two to four small vessels leaving the disc sideways."""
    m = int(rng.integers(2, 5))
    heading = np.where(rng.random(m) < 0.5, 0.0, math.pi) + rng.normal(0, 0.35, m)
    start = complex(*lay.disc) + 0.6 * lay.ry * np.exp(1j * heading)
    return _Vessels(start, heading, rng.normal(0, 0.4, m), np.full(m, 2 * lay.ry), rng.uniform(60, 160, m),
                    rng.uniform(2.5, 4.0, m), rng.random(m) < 0.5, np.zeros(m))


def _concat(a: _Vessels, b: _Vessels) -> _Vessels:
    return _Vessels(*(np.concatenate([getattr(a, f.name), getattr(b, f.name)]) for f in fields(_Vessels)))


def _grow(rng: np.random.Generator, v: _Vessels, depth: int, faz: tuple[complex, float]):
    """Grow one generation; return its paths (complex, m x points), widths, point counts, vein flags
    and the next generation.

    Headings bend smoothly by ``turn`` over about ``bend`` pixels, plus a small random drift and
    tortuosity. A vessel ends where it leaves the frame, enters the foveal avascular zone, grows
    too thin or reaches its length. A branch takes ~0.7 of the calibre and the parent keeps ~0.85
    (roughly Murray's cube law); branches lean towards the macula more often than away."""
    m = len(v.start)
    if m == 0:
        return np.zeros((0, 1), complex), np.zeros((0, 1)), np.zeros(0, int), v.vein, v
    steps = int(min(v.length.max(), 1000.0) // _STEP)
    arc = np.arange(steps + 1) * _STEP
    drift, tortuosity = rng.standard_normal((2, m, steps))
    headings = (v.heading[:, None] + v.turn[:, None] * (1.0 - np.exp(-arc[1:] / v.bend[:, None]))
                + 0.03 * np.cumsum(drift, axis=1) + 0.08 * tortuosity)
    paths = np.empty((m, steps + 1), dtype=complex)
    paths[:, 0] = v.start
    np.cumsum(_STEP * np.exp(1j * headings), axis=1, out=paths[:, 1:])
    paths[:, 1:] += v.start[:, None]
    branch = rng.random((m, steps + 1)) < _BRANCH_CHANCE[depth]
    branch[:, :2] = False
    widths = v.width[:, None] * _TAPER ** (arc / _STEP)
    widths *= 0.85 ** (np.cumsum(branch, axis=1) - branch)
    fovea, faz_radius = faz
    stop = ((np.abs(paths.real - WIDTH / 2) > WIDTH / 2 + 20) | (np.abs(paths.imag - HEIGHT / 2) > HEIGHT / 2 + 20)
            | (widths < 1.0) | (np.abs(paths - fovea) < faz_radius) | (arc > v.length[:, None]))
    stop[:, -1] = True
    ends = np.argmax(stop, axis=1) + 1  # points kept per vessel
    kept = np.arange(steps + 1) < ends[:, None]
    rows, cols = np.nonzero(branch & kept & (widths > 2.2))
    k = len(rows)
    toward = v.toward_macula[rows]
    side = np.where((toward != 0) & (rng.random(k) < 0.6), toward, np.where(rng.random(k) < 0.5, 1.0, -1.0))
    children = _Vessels(paths[rows, cols], headings[rows, cols - 1] + side * rng.uniform(0.6, 1.2, k),
                        rng.normal(0, 0.3, k), np.full(k, 100.0), rng.uniform(70, 180, k) * (1.5 - 0.3 * depth),
                        widths[rows, cols] * 0.7, v.vein[rows], np.zeros(k))
    return paths, widths, ends, v.vein, children


def _stroke(draw: ImageDraw.ImageDraw, paths: np.ndarray, widths: np.ndarray, ends: np.ndarray,
            vein: np.ndarray) -> None:
    """Draw a generation of tapering vessels, veins first so that arteries cross over them;
    arteries get a central light reflex.

    A vessel is drawn as runs of equal whole-pixel width; the opacity of a run carries the
    fraction (a 0.6 px twig is a faint 1 px line). Array work is done for the whole generation at
    once: per-call overhead, not pixels, is what costs here."""
    rounded = np.maximum(1, np.rint(widths)).astype(int)
    strength = np.clip(widths / rounded, 0.5, 1.25)
    last = ends - 1
    rows, cols = np.nonzero((rounded[:, 1:] != rounded[:, :-1]) & (np.arange(rounded.shape[1] - 1) < last[:, None] - 1))
    cuts = [[0] for _ in range(len(paths))]
    for r, c in zip(rows.tolist(), cols.tolist()):
        cuts[r].append(c + 1)
    xy = np.stack([paths.real, paths.imag], axis=-1).tolist()
    rounded, strength, last = rounded.tolist(), strength.tolist(), last.tolist()
    for i in np.argsort(~vein, kind="stable").tolist():
        opacity = _OPACITY["vein" if vein[i] else "artery"]
        bounds = cuts[i] + [last[i]]
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b <= a:
                continue
            segment, w = xy[i][a:b + 1], rounded[i][a]
            draw.line(segment, fill=round(opacity * strength[i][a]), width=w)
            if not vein[i] and w >= 5:
                draw.line(segment, fill=round((opacity - _REFLEX) * strength[i][a]), width=max(1, round(w / 4)))
