"""Procedural dermoscopy images written in the exact on-disk format of HAM10000.

Layout written (the official Harvard Dataverse / ISIC release)::

    <out>/HAM10000_metadata.csv         lesion_id, image_id, dx, dx_type, age, sex, localization
    <out>/HAM10000_images_part_1/ISIC_XXXXXXX.jpg   600 x 450 RGB
    <out>/HAM10000_images_part_2/ISIC_XXXXXXX.jpg
    <out>/synth_params.json             generator, version, seed, n and every parameter

Image ids count up from ISIC_0024306, the first real one. One difference, on purpose: part 1
holds the first half of the images rather than the first 5,000, so that small datasets
exercise both folders.

What is simulated (docs/datasets.md §4.2): a lesion per lesion_id, photographed 1-3 times (HAM holds
about 1.34 images per lesion) at a different rotation, zoom and position each time; the
diagnosis drawn with the HAM prior and drawn in its typical look (nv: round, uniform brown,
regular network; mel: large, asymmetric, irregular border, several colours, blue-white veil and
irregular dots; bkl: tan, sharply demarcated, milia-like cysts; bcc: pink,
translucent, blue-grey nests and arborising vessels; akiec: red, scaly, white follicular dots;
vasc: red-purple lacunae; df: central white scar with a faint peripheral network), on skin of
Fitzpatrick type I-VI (HAM is almost all light skin), with hair, gel bubbles, uneven light and
the dark circular vignette of older dermoscopes.

Groups (sex x age at 60, the FairDiffusion attributes) follow HAM's metadata: about 54 % male,
and age drawn per diagnosis (malignant lesions in older patients). ``difficulty`` makes the groups
differ in the images the way the real ones plausibly do: patients of 60 or older get
sun-damaged background skin (lentigines) and lower lesion contrast, men get more hair. With
``difficulty=0`` the image statistics do not depend on the group.

Determinism: lesion ``k`` is drawn from ``default_rng([seed, 0, k])`` (metadata),
``default_rng([seed, 1, k])`` (its look) and image ``i`` from ``default_rng([seed, 2, i])`` (the
photograph), so an image never depends on ``n`` or on the images before it."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from fairdiff.data.synth.render import (add_grain, bezier, check_output_dir, coords, fourier_noise,
                                        params_json, pixel_noise, rgb255, soft, to_pixels,
                                        upsample, upsample_field, wave_params)
from fairdiff.io import atomic_dir, write_csv, write_text

GENERATOR = "fairdiff.data.synth.ham10000"
VERSION = 1

METADATA_FILE = "HAM10000_metadata.csv"
IMAGE_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
FIRST_IMAGE_NUMBER = 24306  # the real release starts at ISIC_0024306

DX_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
HAM_DX_COUNTS = (327, 514, 1099, 115, 1113, 6705, 142)  # Tschandl et al. 2018

# How the diagnosis was confirmed, per dx (approximate shares; HAM: histopathology > 50 %).
DX_TYPES = ("histo", "follow_up", "consensus", "confocal")
DX_TYPE_PRIOR = {
    "akiec": (0.85, 0.0, 0.05, 0.10), "bcc": (1.0, 0.0, 0.0, 0.0), "bkl": (0.50, 0.0, 0.30, 0.20),
    "df": (0.40, 0.0, 0.60, 0.0), "mel": (1.0, 0.0, 0.0, 0.0), "nv": (0.37, 0.55, 0.08, 0.0),
    "vasc": (0.45, 0.0, 0.55, 0.0),
}
LOCALIZATIONS = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest",
                 "foot", "unknown", "neck", "scalp", "hand", "ear", "genital", "acral")
LOCALIZATION_PRIOR = (0.22, 0.21, 0.14, 0.11, 0.10, 0.07, 0.04, 0.03, 0.02, 0.02, 0.01, 0.01,
                      0.005, 0.005, 0.001)

# Dermoscopic skin colour per Fitzpatrick type I..VI (pinkish under polarised light).
SKIN_TONES = ((0.93, 0.76, 0.70), (0.88, 0.69, 0.60), (0.80, 0.60, 0.49),
              (0.66, 0.47, 0.36), (0.48, 0.33, 0.24), (0.32, 0.22, 0.17))


@dataclass(frozen=True)
class DermoscopySynthParams:
    """Knobs of the synthetic HAM10000. Defaults follow the real dataset where it is documented.

    Group priors and labels
      dx_prior: probability of each class of ``DX_CLASSES`` (default: HAM's counts).
      p_female, p_sex_unknown: sex shares (HAM: 45.5 % female, 0.6 % unknown).
      age_mean_by_dx, age_sd: age in years ~ N(mean[dx], sd), rounded to HAM's 5-year steps,
        clipped to 0..85 (approximate HAM means: malignant and keratinocytic lesions older).
        Raising the means raises the share of the ">= 60" group.
      p_age_missing: share of blank ages (HAM: 57 of 10,015).
      images_per_lesion: P(1), P(2), P(3) photographs of one lesion (HAM: ~1.34 per lesion).
      skin_type_prior: Fitzpatrick I..VI shares (HAM is almost all light skin).
    Group-dependent difficulty (how the groups differ in the images)
      difficulty: global scale of every group effect below; 0 = identical image statistics.
      old_contrast_drop: lesion opacity is multiplied by (1 - difficulty * this) for age >= 60.
      old_sun_damage: probability (x difficulty) that a >= 60 patient's skin shows lentigines.
      male_hair: hair count multiplier for men is 1 + difficulty * (male_hair - 1).
    Acquisition
      hair_rate: mean number of hairs (women; over-dispersed: most images have none).
      p_vignette, p_bubbles: share of images with the dark dermoscope circle / gel bubbles.
      texture: relative amplitude of pixel noise painted at render resolution (skin surface).
      grain: full-resolution sensor noise standard deviation (0..255 units; off by default, as
        HAM's images are downsampled photographs).
      image_size: (width, height) written; render_scale: smooth fields are painted at
        image_size / render_scale and upsampled (speed); jpeg_quality: JPEG quality."""

    dx_prior: tuple[float, ...] = tuple(c / sum(HAM_DX_COUNTS) for c in HAM_DX_COUNTS)
    p_female: float = 0.455
    p_sex_unknown: float = 0.006
    age_mean_by_dx: tuple[float, ...] = (66.0, 66.0, 62.0, 52.0, 60.0, 45.0, 50.0)
    age_sd: float = 15.0
    p_age_missing: float = 0.006
    images_per_lesion: tuple[float, float, float] = (0.76, 0.17, 0.07)
    skin_type_prior: tuple[float, ...] = (0.30, 0.45, 0.18, 0.05, 0.015, 0.005)
    difficulty: float = 1.0
    old_contrast_drop: float = 0.3
    old_sun_damage: float = 0.6
    male_hair: float = 2.0
    hair_rate: float = 3.0
    p_vignette: float = 0.35
    p_bubbles: float = 0.15
    texture: float = 0.02
    grain: float = 0.0
    image_size: tuple[int, int] = (600, 450)
    render_scale: int = 4
    jpeg_quality: int = 90

    def __post_init__(self):
        for name in ("dx_prior", "images_per_lesion", "skin_type_prior"):
            p = np.asarray(getattr(self, name), dtype=float)
            if (p < 0).any() or not np.isclose(p.sum(), 1.0):
                raise ValueError(f"DermoscopySynthParams.{name} must be non-negative and sum to 1; got {p.tolist()}")
        if len(self.dx_prior) != len(DX_CLASSES) or len(self.age_mean_by_dx) != len(DX_CLASSES):
            raise ValueError(f"dx_prior and age_mean_by_dx need one value per class of {DX_CLASSES}")
        if len(self.skin_type_prior) != len(SKIN_TONES):
            raise ValueError("skin_type_prior needs one value per Fitzpatrick type (6)")


@dataclass(frozen=True)
class LesionLook:
    """How one diagnosis looks: shape ranges, palette and structures (docs/datasets.md §4.2)."""

    radius: tuple[float, float]       # in units of half the short image side, at zoom 1
    irregularity: float               # amplitude of the border's harmonics
    elongation: tuple[float, float]   # axis ratio range
    edge: float                       # border softness, fraction of the radius
    colours: tuple[tuple[float, float, float], ...]
    variegation: float                # 0 = one colour, 1 = sharp patches of every colour
    opacity: float
    network: float                    # pigment network darkness (0 = none)
    network_jitter: float             # 0 = regular mesh, 1 = atypical
    dots: tuple[int, tuple[float, float, float]]  # mean count and colour of dots / globules


BROWN, DARK_BROWN, TAN = (0.55, 0.36, 0.24), (0.33, 0.20, 0.13), (0.70, 0.52, 0.38)
BLACK, BLUE_GREY, WHITE = (0.13, 0.10, 0.10), (0.42, 0.46, 0.56), (0.90, 0.86, 0.86)
PINK, RED, PURPLE = (0.90, 0.60, 0.60), (0.72, 0.18, 0.22), (0.45, 0.15, 0.33)
LENTIGO = (0.68, 0.47, 0.33)  # sun-damage spots on older skin

LOOKS = {
    "nv": LesionLook((0.30, 0.60), 0.04, (1.0, 1.25), 0.18, (BROWN, (0.62, 0.42, 0.29)), 0.25, 0.80,
                     0.30, 0.15, (6, DARK_BROWN)),
    "mel": LesionLook((0.40, 0.75), 0.16, (1.1, 1.6), 0.08, (DARK_BROWN, BLACK, BROWN, BLUE_GREY, WHITE),
                      0.85, 0.90, 0.35, 0.9, (14, BLACK)),
    "bkl": LesionLook((0.30, 0.60), 0.08, (1.0, 1.5), 0.05, (TAN, BROWN, (0.60, 0.45, 0.33)), 0.45, 0.75,
                      0.0, 0.5, (10, (0.95, 0.92, 0.80))),
    "bcc": LesionLook((0.30, 0.55), 0.10, (1.0, 1.5), 0.20, (PINK, (0.82, 0.55, 0.56)), 0.35, 0.55,
                      0.0, 0.5, (4, BLUE_GREY)),
    "akiec": LesionLook((0.25, 0.50), 0.10, (1.0, 1.4), 0.25, ((0.86, 0.48, 0.45), (0.80, 0.40, 0.38), WHITE),
                        0.60, 0.70, 0.0, 0.5, (18, (0.97, 0.95, 0.93))),
    "vasc": LesionLook((0.25, 0.45), 0.05, (1.0, 1.3), 0.10, ((0.80, 0.45, 0.48),), 0.0, 0.70,
                       0.0, 0.3, (9, RED)),
    "df": LesionLook((0.20, 0.40), 0.05, (1.0, 1.3), 0.30, ((0.66, 0.48, 0.38), (0.60, 0.42, 0.33)), 0.2, 0.65,
                     0.25, 0.3, (0, BROWN)),
}


# ----------------------------------------------------------------------------- metadata
def sample_metadata(n: int, seed: int = 0, params: DermoscopySynthParams | None = None) -> pd.DataFrame:
    """The metadata table of ``n`` images, without rendering (fast: use it for prior checks).

    Columns: the official ``METADATA_COLUMNS`` plus ``lesion_index``, ``image_index`` and
    ``skin_type`` (0..5) used by the renderer. Lesions are drawn in order until ``n`` images
    exist; the last lesion may lose photographs to the cut."""
    params = params or DermoscopySynthParams()
    rows: list[dict] = []
    k = 0
    while len(rows) < n:
        rng = np.random.default_rng([seed, 0, k])
        dx = DX_CLASSES[rng.choice(len(DX_CLASSES), p=params.dx_prior)]
        u = rng.random()
        sex = "unknown" if u < params.p_sex_unknown else ("female" if u < params.p_sex_unknown + params.p_female else "male")
        age = float(np.clip(5 * np.round(rng.normal(params.age_mean_by_dx[DX_CLASSES.index(dx)], params.age_sd) / 5), 0, 85))
        if rng.random() < params.p_age_missing:
            age = float("nan")
        dx_type = DX_TYPES[rng.choice(len(DX_TYPES), p=DX_TYPE_PRIOR[dx])]
        localization = LOCALIZATIONS[rng.choice(len(LOCALIZATIONS), p=np.divide(LOCALIZATION_PRIOR, sum(LOCALIZATION_PRIOR)))]
        n_images = 1 + rng.choice(3, p=params.images_per_lesion)
        skin_type = int(rng.choice(len(SKIN_TONES), p=params.skin_type_prior))
        for _ in range(min(n_images, n - len(rows))):
            i = len(rows)
            rows.append(dict(lesion_id=f"HAM_{k:07d}", image_id=f"ISIC_{FIRST_IMAGE_NUMBER + i:07d}", dx=dx,
                             dx_type=dx_type, age=age, sex=sex, localization=localization,
                             lesion_index=k, image_index=i, skin_type=skin_type))
        k += 1
    return pd.DataFrame(rows, columns=[*METADATA_COLUMNS, "lesion_index", "image_index", "skin_type"])


# ----------------------------------------------------------------------------- rendering
BORDER_LUT = 256  # the border radius is tabulated over this many angles (a cos per pixel is too slow)
# Indices of a lesion's smooth fields: ragged border, palette weights (up to 5), veil or scale,
# network warp (2), network patches.
FIELD_RAGGED, FIELD_PALETTE, FIELD_VEIL, FIELD_WARP, FIELD_PATCHES = 0, 1, 6, 7, 9


class _Lesion:
    """One lesion's look, drawn once from its own rng and shared by all its photographs."""

    def __init__(self, rng: np.random.Generator, look: LesionLook):
        self.look = look
        self.radius = rng.uniform(*look.radius)
        self.elongation = rng.uniform(*look.elongation)
        self.stretch = math.sqrt(self.elongation)  # Python float: keeps pixel arithmetic in float32
        ks = np.arange(2, 10)
        amp = look.irregularity * rng.uniform(0.2, 1.0, ks.size) / np.sqrt(ks - 1)
        phase = rng.uniform(0, 2 * np.pi, ks.size)
        angles = np.linspace(-np.pi, np.pi, BORDER_LUT, endpoint=False)
        wobble = (amp[:, None] * np.cos(ks[:, None] * angles[None] + phase[:, None])).sum(0)
        self.border_lut = (self.radius * (1.0 + wobble)).astype(np.float32)
        self.mesh_angle = rng.uniform(0, np.pi / 3)
        # Plane waves of the lesion's smooth fields (see the FIELD_* indices); drawn once,
        # evaluated in every view.
        freqs = (8.0, 3.0, 3.0, 3.0, 3.0, 3.0, 4.5, 10.0, 10.0, 3.0)
        self.waves = wave_params(rng, freq=freqs)
        n_dots = max(1, rng.poisson(look.dots[0])) if look.dots[0] else 0
        self.dots = rng.uniform(-1, 1, (n_dots, 2))

    def border(self, theta: np.ndarray) -> np.ndarray:
        """Border radius at angle ``theta`` (lesion frame, before elongation)."""
        idx = ((theta + np.pi) * (BORDER_LUT / (2 * np.pi))).astype(np.int32) % BORDER_LUT
        return self.border_lut[idx]

    def field(self, i: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Smooth field number ``i`` of this lesion, at lesion coordinates (u, v)."""
        return fourier_noise(self.waves[i], u, v)

    def colour(self, u: np.ndarray, v: np.ndarray, dx: str) -> np.ndarray:
        """The lesion's colour (h, w, 3): palette patches mixed by smooth fields, plus the
        diagnosis' large structures (veil, scar, scale). Smooth: computed on a coarse grid."""
        look = self.look
        cols = np.asarray(look.colours, np.float32)
        if len(cols) == 1:
            colour = np.broadcast_to(cols[0], (*u.shape, 3)).copy()
        else:
            sharp = 1.0 + 5.0 * look.variegation
            # Later palette entries need a higher field value to show: the first colour dominates.
            logits = np.stack([(self.field(FIELD_PALETTE + j, u, v) - 0.6 * j) * sharp for j in range(len(cols))], axis=-1)
            weights = np.exp(logits - logits.max(-1, keepdims=True))
            colour = weights @ cols / weights.sum(-1, keepdims=True)
        if dx == "mel":  # blue-white veil
            tint, amount = BLUE_GREY, soft(self.field(FIELD_VEIL, u, v) - 0.8, 0.5) * 0.5
        elif dx == "df":  # central white scar
            rho = np.hypot(u / self.stretch, v * self.stretch)
            tint, amount = WHITE, 0.85 * np.exp(-(rho / (0.45 * self.radius)) ** 2)
        elif dx == "akiec":  # white scale
            tint, amount = WHITE, 0.7 * soft(self.field(FIELD_VEIL, u, v) - 0.6, 0.4)
        else:
            return colour
        amount = amount[..., None]
        return colour * (1 - amount) + np.asarray(tint, np.float32) * amount


def _lesion_box(lesion: _Lesion, pose, h: int, w: int) -> tuple[slice, slice]:
    """Pixel rows and columns that can hold any of the lesion (its farthest ragged border)."""
    ox, oy, _, _, zoom = pose
    look = lesion.look
    reach = (float(lesion.border_lut.max()) + lesion.radius * (look.irregularity + look.edge)) \
        * lesion.stretch * zoom
    s = min(h, w) / 2.0
    rows = (max(0, int((oy - reach) * s + h / 2.0) - 1), min(h, int((oy + reach) * s + h / 2.0) + 2))
    cols = (max(0, int((ox - reach) * s + w / 2.0) - 1), min(w, int((ox + reach) * s + w / 2.0) + 2))
    return slice(rows[0], max(rows)), slice(cols[0], max(cols))


def render_dermoscopy(lesion_rng: np.random.Generator, view_rng: np.random.Generator, dx: str,
                      skin_type: int, male: bool, old: bool,
                      params: DermoscopySynthParams | None = None) -> Image.Image:
    """One dermoscopic photograph; ``lesion_rng`` fixes the lesion, ``view_rng`` the photograph.

    Fields are painted at ``image_size / render_scale``; smooth ones on a grid 4x coarser still."""
    params = params or DermoscopySynthParams()
    look = LOOKS[dx]
    lesion = _Lesion(lesion_rng, look)
    size = params.image_size
    h, w = size[1] // params.render_scale, size[0] // params.render_scale
    rng = view_rng

    # The photograph: where the lesion sits, how it is turned and magnified.
    angle, zoom = rng.uniform(0, 2 * np.pi), rng.uniform(0.9, 1.4)
    ox, oy = rng.uniform(-0.15, 0.15, 2)
    pose = (float(ox), float(oy), float(np.cos(angle)), float(np.sin(angle)), float(zoom))

    def lesion_frame(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ox, oy, ca, sa, zoom = pose
        return ((x - ox) * ca + (y - oy) * sa) / zoom, (-(x - ox) * sa + (y - oy) * ca) / zoom

    x, y = coords(h, w)
    u, v = lesion_frame(x, y)
    cx, cy = coords(max(8, h // 4), max(8, w // 4))  # smooth fields live on this coarse grid
    cu, cv = lesion_frame(cx, cy)

    # Skin (tone, blotchy redness, sun damage for older patients) and light (exposure, fall-off,
    # a gradient) are smooth: both are computed coarse and multiplied into the colours.
    tone = np.asarray(SKIN_TONES[skin_type], np.float32) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    blotch = fourier_noise(wave_params(rng, 4, 2.0), cx, cy)
    skin = tone * (1 + 0.04 * blotch[..., None])
    skin[..., 1:] -= 0.03 * np.clip(blotch, 0, None)[..., None]
    # Draw the same random numbers whatever the group, so difficulty=0 renders groups identically.
    sun_damage, spots_waves = rng.random(), wave_params(rng, 8, 14.0)
    if old and sun_damage < params.difficulty * params.old_sun_damage:
        spots = soft(fourier_noise(spots_waves, cx, cy) - 1.3, 0.5)[..., None]
        skin = skin * (1 - 0.35 * spots) + np.asarray(LENTIGO, np.float32) * 0.35 * spots
    light = ((1.0 - 0.10 * (cx * cx + cy * cy) + 0.05 * rng.uniform(-1, 1) * cx) * rng.uniform(0.92, 1.06))[..., None]
    skin = upsample_field(skin * light, h, w)

    # Lesion shape: deformed, elongated circle in the lesion frame, ragged by a fine field. Only
    # the lesion's bounding box is painted: outside it the lesion is fully transparent.
    box = _lesion_box(lesion, pose, h, w)
    u, v, ragged = u[box], v[box], upsample_field(lesion.field(FIELD_RAGGED, cu, cv), h, w, box)
    ue, ve = u / lesion.stretch, v * lesion.stretch
    inside = (lesion.border(np.arctan2(ve, ue)) - np.hypot(ue, ve)) / lesion.radius  # 0 at the border, ~1 inside
    alpha = soft(inside + 0.5 * look.irregularity * ragged, look.edge)
    shade = 1 - 0.15 * np.clip(inside, 0, 1)  # pigment is denser towards the centre

    if look.network:  # pigment network: a warped honeycomb of dark lines, patchy if atypical
        jit = look.network_jitter
        wu = u + (0.02 + 0.05 * jit) * upsample_field(lesion.field(FIELD_WARP, cu, cv), h, w, box)
        wv = v + (0.02 + 0.05 * jit) * upsample_field(lesion.field(FIELD_WARP + 1, cu, cv), h, w, box)
        honey = sum(np.cos(wu * (90.0 * math.cos(a)) + wv * (90.0 * math.sin(a)))
                    for a in (lesion.mesh_angle, lesion.mesh_angle + 2 * np.pi / 3, lesion.mesh_angle + 4 * np.pi / 3))
        lines = soft(-0.6 - honey, 1.2)  # honey ranges -1.5..3; its minima form a hexagonal mesh
        if jit > 0.3:
            lines = lines * soft(upsample_field(lesion.field(FIELD_PATCHES, cu, cv), h, w, box) + 1.0 - 1.5 * jit, 0.8)
        shade = shade * (1 - look.network * lines * np.clip(inside * 4, 0, 1))

    opacity = look.opacity * ((1 - params.difficulty * params.old_contrast_drop) if old else 1.0)
    colour = upsample_field(lesion.colour(cu, cv, dx) * light, h, w, box)
    img = skin
    img[box] += (alpha * opacity)[..., None] * (colour * shade[..., None] - skin[box])
    factor = 1 + params.texture * pixel_noise(rng, h, w)  # skin surface texture
    if rng.random() < params.p_vignette:  # the dermoscope's dark circle
        factor = factor * soft(rng.uniform(1.0, 1.35) - np.hypot(x, y), 0.06)[..., None]
    img *= factor
    out = upsample(img, size)

    draw = ImageDraw.Draw(out)
    _draw_structures(draw, lesion, dx, pose, size, rng, opacity, tone)
    hair_mult = 1.0 + params.difficulty * (params.male_hair - 1.0) if male else 1.0
    _draw_hair(draw, rng, size, rng.poisson(params.hair_rate * hair_mult * rng.gamma(0.5, 2.0)))
    if rng.random() < params.p_bubbles:
        _draw_bubbles(draw, rng, size)
    return add_grain(out, rng, params.grain)


def _draw_structures(draw: ImageDraw.ImageDraw, lesion: _Lesion, dx: str, pose, size, rng, opacity: float,
                     skin_tone: np.ndarray) -> None:
    """Dots, globules, cysts, nests, lacunae and vessels, at full resolution, faded into the skin
    colour as much as the lesion itself is (``opacity``)."""
    ox, oy, ca, sa, zoom = pose
    scale = min(size) / 2.0

    def to_image(uu: float, vv: float) -> tuple[float, float]:
        xx = ox + zoom * (uu * ca - vv * sa)
        yy = oy + zoom * (uu * sa + vv * ca)
        return to_pixels(xx, yy, size)

    colour = lesion.look.dots[1]
    if len(lesion.dots):
        # Dots sit inside the lesion: their radial position is a fraction of the border radius.
        du, dv = lesion.dots[:, 0], lesion.dots[:, 1]
        theta = np.arctan2(dv, du)
        reach = {"mel": 0.95, "akiec": 0.8}.get(dx, 0.7)
        r = lesion.border(theta) * reach * np.sqrt(np.minimum(1.0, np.hypot(du, dv)))
        uu, vv = r * np.cos(theta) / lesion.stretch, r * np.sin(theta) * lesion.stretch
        xs, ys = to_pixels(ox + zoom * (uu * ca - vv * sa), oy + zoom * (uu * sa + vv * ca), size)
        rads = scale * zoom * lesion.radius * {"vasc": 0.22, "bcc": 0.18}.get(dx, 0.04) * rng.uniform(0.5, 1.3, len(xs))
        squash = rng.uniform(0.7, 1.0, len(xs))
        purple = rng.random(len(xs)) < (0.5 if dx == "vasc" else 0.0)
        fills = {False: rgb255(np.asarray(colour) * opacity + skin_tone * (1 - opacity)),
                 True: rgb255(np.asarray(PURPLE) * opacity + skin_tone * (1 - opacity))}
        for cx, cy, rad, sq, pu in zip(xs.tolist(), ys.tolist(), rads.tolist(), squash.tolist(), purple.tolist()):
            draw.ellipse((cx - rad, cy - rad * sq, cx + rad, cy + rad), fill=fills[pu])
    if dx == "bcc":  # arborising vessels: branching red lines, thinner at each split
        for _ in range(rng.integers(2, 5)):
            t0 = rng.uniform(0, 2 * np.pi)
            start = to_image(*(0.8 * lesion.radius * np.array([np.cos(t0), np.sin(t0)]) * rng.uniform(0.2, 0.9)))
            vessel = min(1.0, opacity + 0.3)  # vessels show through the translucent tumour
            _branch(draw, rng, start, rng.uniform(0, 2 * np.pi), scale * zoom * lesion.radius * 0.5, 3, 3,
                    rgb255(np.asarray(RED) * vessel + skin_tone * (1 - vessel)))


def _branch(draw: ImageDraw.ImageDraw, rng, start, heading: float, length: float, width: int, depth: int,
            colour: tuple[int, int, int]) -> None:
    end = (start[0] + length * np.cos(heading), start[1] + length * np.sin(heading))
    bend = (0.5 * (start[0] + end[0]) + rng.normal(0, length * 0.2), 0.5 * (start[1] + end[1]) + rng.normal(0, length * 0.2))
    draw.line(bezier(start, bend, end, 8), fill=colour, width=max(1, width))
    if depth > 1:
        for turn in (-1, 1):
            _branch(draw, rng, end, heading + turn * rng.uniform(0.3, 0.9), length * 0.6, width - 1, depth - 1, colour)


def _draw_hair(draw: ImageDraw.ImageDraw, rng, size, count: int) -> None:
    """Dark curved hairs crossing the field, 1-3 px wide."""
    if count == 0:
        return
    w, h = size
    x0, y0 = rng.uniform(-0.2, 1.2, count) * w, rng.uniform(-0.2, 1.2, count) * h
    heading, length = rng.uniform(0, 2 * np.pi, count), rng.uniform(0.3, 0.9, count) * w
    x2, y2 = x0 + length * np.cos(heading), y0 + length * np.sin(heading)
    bend = rng.normal(0, 0.1 * w, (2, count))
    shade, width = rng.uniform(0.05, 0.25, count), rng.integers(1, 4, count)
    for k in range(count):
        mid = (0.5 * (x0[k] + x2[k]) + bend[0, k], 0.5 * (y0[k] + y2[k]) + bend[1, k])
        draw.line(bezier((x0[k], y0[k]), mid, (x2[k], y2[k]), 16),
                  fill=rgb255((shade[k], shade[k] * 0.8, shade[k] * 0.7)), width=int(width[k]))


def _draw_bubbles(draw: ImageDraw.ImageDraw, rng, size) -> None:
    w, h = size
    for _ in range(rng.integers(1, 6)):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.01, 0.05) * w
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(235, 235, 235), width=1)


def render_row(row, seed: int, params: DermoscopySynthParams) -> Image.Image:
    """Render the image of one row of :func:`sample_metadata`."""
    age = row["age"]
    return render_dermoscopy(np.random.default_rng([seed, 1, int(row["lesion_index"])]),
                             np.random.default_rng([seed, 2, int(row["image_index"])]),
                             row["dx"], int(row["skin_type"]), row["sex"] == "male",
                             bool(age == age and age >= 60), params)


# ----------------------------------------------------------------------------- writer
def generate_ham10000(out: str | Path, n: int, seed: int = 0, params: DermoscopySynthParams | None = None,
                      progress: bool = True, overwrite: bool = False) -> pd.DataFrame:
    """Write a synthetic HAM10000 of ``n`` images to ``out``; return the metadata table written.

    Built in a temporary folder beside ``out`` and renamed into place when complete, so an
    interrupted run leaves nothing half-written. Refuses to replace a folder it did not make."""
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}")
    params = params or DermoscopySynthParams()
    out = check_output_dir(out, GENERATOR, overwrite)
    meta = sample_metadata(n, seed, params)
    half = (n + 1) // 2
    with atomic_dir(out) as tmp:
        for d in IMAGE_DIRS:
            (tmp / d).mkdir()
        for row in tqdm(meta.to_dict("records"), desc="HAM10000 images", disable=not progress):
            folder = IMAGE_DIRS[0] if row["image_index"] < half else IMAGE_DIRS[1]
            render_row(row, seed, params).save(tmp / folder / f"{row['image_id']}.jpg", quality=params.jpeg_quality)
        write_csv(tmp / METADATA_FILE, meta[list(METADATA_COLUMNS)])
        write_text(tmp / "synth_params.json", params_json(GENERATOR, VERSION, seed, n, params))
    return meta[list(METADATA_COLUMNS)].copy()
