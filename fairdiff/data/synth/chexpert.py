"""Procedural chest radiographs written in the exact on-disk format of CheXpert-v1.0-small.

Layout written (the Stanford AIMI release plus the demographics table, converted to CSV)::

    <out>/CheXpert-v1.0-small/train.csv     Path, Sex, Age, Frontal/Lateral, AP/PA, 14 observations
    <out>/CheXpert-v1.0-small/valid.csv     same columns; labels 0/1 only (radiologist consensus)
    <out>/CheXpert-v1.0-small/{train,valid}/patientNNNNN/studyN/viewN_{frontal,lateral}.jpg
    <out>/chexpert_demo.csv                 PATIENT, GENDER, AGE_AT_CXR, PRIMARY_RACE, ETHNICITY
    <out>/synth_params.json                 generator, version, seed, n and every parameter

``Path`` is relative to ``<out>`` (the parent of the CSV folder), as in the real release.
Observation values are 1.0 (positive), 0.0 (negative), -1.0 (uncertain) or blank.

Images: grayscale, 320 x 384 by default (CheXpert-small images are ~320-390 px a side). A
frontal film shows the body outline, lung fields, ribs (posterior and faint anterior),
clavicles, spine, mediastinum and heart (slightly left), the diaphragm domes (right higher) with
sharp costophrenic angles and a gastric bubble; AP films carry an L/R marker. What the labels
change: Pleural Effusion is a homogeneous basal opacity with a meniscus that blunts the angle,
on one or both sides (uncertain labels show a small one half of the time); Cardiomegaly
enlarges the heart; Support Devices draws tubes, lines, a pacemaker or ECG leads. The other
observations are drawn at CheXpert's rates but not rendered. Lateral films are simpler (spine,
heart, one lung field, posterior effusion). Female patients get breast shadows over the lower
zones.

Groups: sex ~ 59 % male, race among the three FairDiffusion groups about 78 % White, 15 % Asian,
7 % Black (Glocker et al. 2023, after their filter), plus a share of other / unknown race strings
that the loader maps to -1. Race is not visible in a radiograph; ``difficulty`` adds a small
per-race intensity, contrast and noise shift (a known, subtle confounder, Burns et al. 2023).

Determinism: patient ``p`` is drawn from ``default_rng([seed, 0, p])``, its study ``s`` from
``default_rng([seed, 1, p, s])`` and each film from ``default_rng([seed, 2, p, s, view])``, so a
film never depends on ``n``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from fairdiff.data.synth.render import (add_grain, bezier, check_output_dir, coords, params_json, smooth_noise,
                                        soft, to_pixels, upsample)
from fairdiff.io import atomic_dir, write_csv, write_text

GENERATOR = "fairdiff.data.synth.chexpert"
VERSION = 1

DATASET_DIR = "CheXpert-v1.0-small"
DEMO_FILE = "chexpert_demo.csv"
OBSERVATIONS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                "Pleural Other", "Fracture", "Support Devices")
CSV_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS)
DEMO_COLUMNS = ("PATIENT", "GENDER", "AGE_AT_CXR", "PRIMARY_RACE", "ETHNICITY")

# Free-text PRIMARY_RACE values as they appear in CHEXPERT DEMO.xlsx, per group.
RACE_STRINGS = {
    0: ("Asian", "Asian, non-Hispanic", "Asian, Hispanic", "Asian - Historical Conv"),
    1: ("Black or African American", "Black, non-Hispanic", "Black, Hispanic"),
    2: ("White", "White, non-Hispanic", "White, Hispanic", "White or Caucasian"),
    -1: ("Other", "Other, non-Hispanic", "Other, Hispanic", "Unknown", "Patient Refused",
         "Race and Ethnicity Unknown", "Native Hawaiian or Other Pacific Islander",
         "American Indian or Alaska Native", "Pacific Islander, non-Hispanic", "Native American, non-Hispanic"),
}
ETHNICITY_STRINGS = ("Non-Hispanic/Non-Latino", "Hispanic/Latino", "Unknown", "Patient Refused")

# Positive rates of the observations that are not rendered (CheXpert frontal films, approximate).
UNRENDERED_RATES = {"Enlarged Cardiomediastinum": 0.05, "Lung Opacity": 0.49, "Lung Lesion": 0.04,
                    "Edema": 0.26, "Consolidation": 0.07, "Pneumonia": 0.025, "Atelectasis": 0.15,
                    "Pneumothorax": 0.09, "Pleural Other": 0.015, "Fracture": 0.04}


@dataclass(frozen=True)
class ChestXraySynthParams:
    """Knobs of the synthetic CheXpert. Defaults follow the real dataset where it is documented
    (docs/datasets.md §3.1: measured on the real train.csv); race shares are approximate.

    Group priors
      p_female, p_sex_unknown: sex shares (CheXpert: 40.6 % female, a handful unknown).
      race_prior: shares of Asian, Black, White among patients of those three groups.
      p_race_other: share of patients whose PRIMARY_RACE is another or unknown value (loader: -1).
      p_hispanic, p_ethnicity_unknown: ETHNICITY shares.
      age_mean, age_sd: patient age ~ N(mean, sd) clipped to 18..90 (CheXpert 60.4, 17.8).
    Studies and labels
      p_more_studies: each patient has 1 + Geometric(1 - this) studies.
      p_lateral: a study adds a lateral film (CheXpert: 85.5 % of films are frontal).
      p_ap: a frontal film is AP rather than PA (CheXpert: 72 % AP, 13 % PA).
      p_effusion, p_effusion_uncertain, p_effusion_negative: Pleural Effusion 1.0 / -1.0 / 0.0
        (the rest is blank); CheXpert frontal: 40.3 / 5.0 / 13.2 / 41.5 %.
      p_support_devices, p_cardiomegaly: rates of those rendered observations (56 %, 12 %).
      valid_fraction: share of patients written to valid.csv (the real one holds 200 patients; more
        here so that small synthetic sets have a test split).
    Group-dependent difficulty
      difficulty: global scale of the per-race shifts below; 0 = identical image statistics.
      race_brightness, race_contrast, race_noise: per race (Asian, Black, White): added to the
        intensity, multiplying the contrast around mid-grey, multiplying the grain.
    Acquisition
      grain: film noise standard deviation (0..255 units); image_size (width, height);
      render_scale: smooth fields are painted at image_size / render_scale; jpeg_quality."""

    p_female: float = 0.406
    p_sex_unknown: float = 0.0
    race_prior: tuple[float, float, float] = (0.15, 0.07, 0.78)
    p_race_other: float = 0.15
    p_hispanic: float = 0.10
    p_ethnicity_unknown: float = 0.05
    age_mean: float = 60.4
    age_sd: float = 17.8
    p_more_studies: float = 0.5
    p_lateral: float = 0.17
    p_ap: float = 0.85
    p_effusion: float = 0.403
    p_effusion_uncertain: float = 0.05
    p_effusion_negative: float = 0.132
    p_support_devices: float = 0.56
    p_cardiomegaly: float = 0.12
    valid_fraction: float = 0.2
    difficulty: float = 1.0
    race_brightness: tuple[float, float, float] = (0.02, -0.04, 0.0)
    race_contrast: tuple[float, float, float] = (1.0, 0.88, 1.0)
    race_noise: tuple[float, float, float] = (1.0, 1.5, 1.0)
    grain: float = 4.0
    image_size: tuple[int, int] = (320, 384)
    render_scale: int = 4
    jpeg_quality: int = 90

    def __post_init__(self):
        if len(self.race_prior) != 3 or not np.isclose(sum(self.race_prior), 1.0) or min(self.race_prior) < 0:
            raise ValueError(f"ChestXraySynthParams.race_prior must be 3 non-negative shares summing to 1; got {self.race_prior}")
        if self.p_effusion + self.p_effusion_uncertain + self.p_effusion_negative > 1:
            raise ValueError("ChestXraySynthParams: effusion shares exceed 1")


# ----------------------------------------------------------------------------- metadata
def _label(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def sample_metadata(n: int, seed: int = 0, params: ChestXraySynthParams | None = None) -> pd.DataFrame:
    """One row per film for ``n`` films, without rendering (fast: use it for prior checks).

    Columns: ``CSV_COLUMNS``, then ``source`` (train | valid), the demographics columns, and the
    hidden truth the renderer uses: ``patient_index``, ``study_index``, ``view_index``, ``race_group``
    (-1 other), ``effusion_size`` (0 none .. 1 large), ``effusion_side`` (left | right | both),
    ``devices`` (comma-separated) and ``cardiomegaly`` (bool)."""
    params = params or ChestXraySynthParams()
    rows: list[dict] = []
    p = 0
    while len(rows) < n:
        prng = np.random.default_rng([seed, 0, p])
        u = prng.random()
        sex = "Unknown" if u < params.p_sex_unknown else ("Female" if u < params.p_sex_unknown + params.p_female else "Male")
        group = -1 if prng.random() < params.p_race_other else int(prng.choice(3, p=params.race_prior))
        e = prng.random()
        ethnicity = (ETHNICITY_STRINGS[1] if e < params.p_hispanic else
                     ETHNICITY_STRINGS[2 + int(prng.integers(2))] if e < params.p_hispanic + params.p_ethnicity_unknown
                     else ETHNICITY_STRINGS[0])
        hispanic = ethnicity == ETHNICITY_STRINGS[1]
        # The race text must not contradict the ethnicity ("White, Hispanic" only for Hispanic patients).
        texts = [t for t in RACE_STRINGS[group] if not (", Hispanic" in t and not hispanic or "non-Hispanic" in t and hispanic)]
        race_text = texts[prng.integers(len(texts))]
        base_age = float(np.clip(prng.normal(params.age_mean, params.age_sd), 18, 89))
        valid = prng.random() < params.valid_fraction
        n_studies = 1 if valid else int(prng.geometric(1 - params.p_more_studies))
        source = "valid" if valid else "train"
        for s in range(n_studies):
            srng = np.random.default_rng([seed, 1, p, s])
            age = int(min(90, base_age + s * srng.uniform(0, 1.5)))
            study = _sample_study(srng, params, age, valid)
            views = [("Frontal", "AP" if srng.random() < params.p_ap else "PA")]
            if srng.random() < params.p_lateral:
                views.append(("Lateral", ""))
            for v, (fl, appa) in enumerate(views):
                if len(rows) == n:
                    break
                path = f"{DATASET_DIR}/{source}/patient{p + 1:05d}/study{s + 1}/view{v + 1}_{fl.lower()}.jpg"
                rows.append(dict(Path=path, Sex=sex, Age=age, **{"Frontal/Lateral": fl, "AP/PA": appa},
                                 **study["labels"], source=source, PATIENT=f"patient{p + 1:05d}",
                                 GENDER=sex, AGE_AT_CXR=int(base_age), PRIMARY_RACE=race_text, ETHNICITY=ethnicity,
                                 patient_index=p, study_index=s, view_index=v, race_group=group,
                                 **study["truth"]))
        p += 1
    return pd.DataFrame(rows)


def _sample_study(rng: np.random.Generator, params: ChestXraySynthParams, age: int, valid: bool) -> dict:
    """Labels and the findings the renderer draws, for one study."""
    older = np.clip((age - 40) / 40, 0, 1)  # effusion, devices and cardiomegaly rise with age
    u = rng.random() / (0.8 + 0.4 * older)
    if u < params.p_effusion:
        effusion, size = 1.0, rng.uniform(0.15, 1.0)
    elif u < params.p_effusion + params.p_effusion_uncertain:
        effusion, size = -1.0, (rng.uniform(0.05, 0.2) if rng.random() < 0.5 else 0.0)
    elif u < params.p_effusion + params.p_effusion_uncertain + params.p_effusion_negative:
        effusion, size = 0.0, 0.0
    else:
        effusion, size = None, 0.0
    side = ("left", "right", "both")[rng.choice(3, p=(0.3, 0.3, 0.4))] if size > 0 else ""
    devices = rng.random() < params.p_support_devices * (0.8 + 0.4 * older)
    device_list = ",".join(sorted(rng.choice(["et_tube", "ng_tube", "central_line", "pacemaker", "ecg"],
                                             size=rng.integers(1, 4), replace=False))) if devices else ""
    cardiomegaly = rng.random() < params.p_cardiomegaly * (0.6 + 0.8 * older)
    labels = {obs: None for obs in OBSERVATIONS}
    labels["Pleural Effusion"] = effusion
    labels["Support Devices"] = 1.0 if devices else (0.0 if rng.random() < 0.05 else None)
    labels["Cardiomegaly"] = 1.0 if cardiomegaly else (0.0 if rng.random() < 0.1 else None)
    u_pos, u_unc = rng.random((2, len(UNRENDERED_RATES)))  # one draw for all unrendered observations
    for (obs, rate), up, uu in zip(UNRENDERED_RATES.items(), u_pos.tolist(), u_unc.tolist()):
        labels[obs] = 1.0 if up < rate else (-1.0 if uu < 0.05 else None)
    if not any(labels[o] == 1.0 for o in OBSERVATIONS if o not in ("No Finding", "Support Devices")):
        labels["No Finding"] = 1.0
    if valid:  # valid.csv holds radiologist consensus: 0/1 only, no blanks; a drawn effusion is positive
        labels = {k: 1.0 if x == 1.0 else 0.0 for k, x in labels.items()}
        labels["Pleural Effusion"] = 1.0 if size > 0 else 0.0
    return {"labels": {k: _label(x) for k, x in labels.items()},
            "truth": dict(effusion_size=float(size), effusion_side=side, devices=device_list, cardiomegaly=bool(cardiomegaly))}


# ----------------------------------------------------------------------------- rendering
def render_chest(rng: np.random.Generator, frontal: bool, ap: bool, female: bool, race_group: int,
                 effusion_size: float = 0.0, effusion_side: str = "", devices: str = "",
                 cardiomegaly: bool = False, params: ChestXraySynthParams | None = None) -> Image.Image:
    """One grayscale radiograph (PIL mode L) with the given findings; ``rng`` fixes the rest."""
    params = params or ChestXraySynthParams()
    size = params.image_size
    h, w = size[1] // params.render_scale, size[0] // params.render_scale
    x0, y0 = coords(h, w)
    # Patient positioning: a small shift, tilt and magnification (AP portables vary more).
    # Python floats (not numpy scalars) keep the pixel arithmetic in float32.
    tilt = rng.normal(0, 0.05 if ap else 0.02)
    mag = rng.uniform(0.93, 1.05) * (1.05 if ap else 1.0)
    dx, dy = rng.normal(0, 0.04, 2).tolist()
    ct, st = math.cos(tilt), math.sin(tilt)
    x = ((x0 - dx) * ct + (y0 - dy) * st) / mag
    y = (-(x0 - dx) * st + (y0 - dy) * ct) / mag

    painter = _frontal if frontal else _lateral
    img = painter(rng, x, y, ap, female, effusion_size, effusion_side, cardiomegaly)

    # Exposure, then the per-race shift (difficulty), then to 8 bits.
    g = race_group
    shift = params.difficulty * (params.race_brightness[g] if g >= 0 else 0.0)
    contrast = 1.0 + params.difficulty * ((params.race_contrast[g] if g >= 0 else 1.0) - 1.0)
    img = np.clip(img, 0, 1) ** rng.uniform(0.85, 1.15)
    img = (img - 0.45) * contrast * rng.uniform(0.9, 1.1) + 0.45 + shift + rng.normal(0, 0.02)
    out = upsample(img, size)

    draw = ImageDraw.Draw(out)
    pose = (dx, dy, tilt, mag)
    if frontal:
        for device in filter(None, devices.split(",")):
            DEVICE_PAINTERS[device](draw, rng, size, pose)
        if ap:
            _draw_marker(draw, rng, size)
    noise = 1.0 + params.difficulty * ((params.race_noise[g] if g >= 0 else 1.0) - 1.0)
    return add_grain(out, rng, params.grain * noise)


def _frontal(rng, x, y, ap: bool, female: bool, effusion_size: float, effusion_side: str,
             cardiomegaly: bool) -> np.ndarray:
    """Frontal film: intensities ~ attenuation (air 0.03, soft tissue 0.45, lung ~0.15, bone +)."""
    h, w = x.shape
    ax = np.abs(x)
    # Body: soft tissue filling the frame but for air beside the lower flanks.
    body = soft(0.97 - ax + 0.08 * np.clip(-y, 0, 1), 0.06)
    img = 0.03 + 0.42 * body

    # Heart and mediastinum (heart left of centre, larger on AP and with cardiomegaly).
    heart_w = rng.uniform(0.40, 0.45) * (1.25 if cardiomegaly else 1.0) * (1.07 if ap else 1.0)
    hx, hy = x - 0.12, y - 0.10  # long axis tilted ~35 degrees, apex down and to the patient's left
    heart = soft(1.0 - np.hypot((hx * 0.82 + hy * 0.57) / heart_w, (-hx * 0.57 + hy * 0.82) / 0.30), 0.1)
    medi = soft(0.12 + 0.03 * np.clip(-y, 0, 1) - np.abs(x - 0.02), 0.04) * soft(0.2 - y, 0.1)
    knob = soft(1.0 - np.hypot((x - 0.13) / 0.09, (y + 0.36) / 0.07), 0.3)  # aortic knob
    centre = np.maximum(np.maximum(heart, medi), knob)

    # Diaphragm domes (right, image left, higher) and the lung fields above them.
    top = {-1: rng.uniform(0.14, 0.24), 1: rng.uniform(0.24, 0.34)}
    lungs = np.zeros_like(x)
    below = np.zeros_like(x)
    domes = {}
    for side in (-1, 1):
        t = side * x  # distance towards this side's chest wall
        dome = top[side] + 0.30 * ((t - 0.38) / 0.5) ** 2
        reach = np.sqrt(np.clip((y + 0.97) / 0.75, 0, 1))
        lateral = 0.35 + 0.49 * reach
        medial = 0.35 - 0.27 * np.sqrt(np.clip((y + 0.97) / 0.3, 0, 1))
        lungs += soft(lateral - t, 0.04) * soft(t - medial, 0.04) * soft(dome - y, 0.04) * soft(y + 0.97, 0.04) * (t > 0)
        below += soft(y - dome, 0.04) * (t > 0)
        domes[side] = dome
    lungs *= 1 - centre
    hilum = np.exp(-((ax - 0.22) ** 2 + 0.5 * (y + 0.08) ** 2) / 0.03)
    vessels = (0.5 + 0.5 * smooth_noise(rng, h, w, cells=12)) * np.exp(-np.hypot(ax - 0.2, y + 0.1) / 0.35)
    img = img - lungs * (0.30 - 0.10 * vessels - 0.08 * hilum - 0.04 * np.clip(y, 0, 1))
    img = img + 0.12 * centre + 0.04 * soft(0.05 - ax, 0.02) * soft(0.3 - y, 0.2)  # spine, faint through the heart
    img = img - 0.10 * soft(0.035 - np.abs(x - 0.01), 0.015) * soft(-0.45 - y, 0.05)  # trachea (air)
    img = img + 0.10 * below * body * (1 - heart)
    if rng.random() < 0.7:  # gastric bubble under the left dome
        bubble = soft(1.0 - np.hypot((x - 0.45) / 0.11, (y - top[1] - 0.16) / 0.06), 0.3)
        img = img - 0.14 * bubble * body

    # Bones: posterior ribs (one cosine draws all of them), fainter anterior ribs, clavicles.
    cage = soft(0.88 * np.sqrt(np.clip((y + 1.05) / 0.65, 0, 1)) - ax, 0.04) * soft(0.55 - y, 0.08)
    posterior = np.cos(np.pi * (y + 0.10 * ax - 0.45 * ax * ax) / 0.135) ** 10
    anterior = np.cos(np.pi * (y + 0.30 * ax) / 0.17) ** 10
    img = img + cage * soft(ax - 0.07, 0.03) * (0.025 + 0.05 * lungs) * (posterior + 0.4 * anterior * soft(0.1 - y, 0.2))
    d = np.clip(ax, 0.06, 0.7)
    clavicle = np.exp(-((y + 0.80 + 0.20 * (d - 0.06) - 0.30 * (d - 0.06) ** 2) / 0.045) ** 2)
    img = img + 0.10 * clavicle * soft(0.62 - ax, 0.04) * soft(ax - 0.06, 0.03)

    if female:  # breast shadows over the lower zones, sharpest along the lower edge
        for side in (-1, 1):
            r = np.hypot((x - side * 0.5) / 0.38, (y - 0.30) / 0.30)
            img = img + 0.06 * soft(1.0 - r, 0.4) * soft(y - 0.05, 0.5)

    if effusion_size > 0:  # basal opacity; its meniscus climbs the lateral chest wall
        for side in {"left": (1,), "right": (-1,), "both": (-1, 1)}[effusion_side]:
            t = side * x
            level = top[side] + 0.12 - 0.6 * effusion_size
            meniscus = level - (0.12 + 0.30 * effusion_size) * np.clip((t - 0.15) / 0.7, 0, 1.2) ** 2
            # Fluid lies on the diaphragm, in the chest: lateral to the heart, above the dome.
            fluid = soft(y - meniscus, 0.07) * soft(0.86 - t, 0.04) * soft(domes[side] + 0.04 - y, 0.04) * (t > 0.05) * (1 - centre)
            img = img * (1 - fluid) + (0.47 + 0.10 * np.clip(y - meniscus, 0, 0.5)) * fluid
    return img


def _lateral(rng, x, y, ap: bool, female: bool, effusion_size: float, effusion_side: str,
             cardiomegaly: bool) -> np.ndarray:
    """Lateral film, patient facing image left: sternum left, spine right."""
    body = soft(1.0 - np.hypot(x / 0.92, y / 1.35), 0.06)
    img = 0.03 + 0.42 * body
    dome = 0.42 + 0.12 * x - 0.12 * (1 - x * x)
    lung = soft(1.0 - np.hypot((x - 0.08) / 0.66, (y + 0.12) / 0.9), 0.08) * soft(dome - y, 0.04)
    heart_r = 0.32 * (1.25 if cardiomegaly else 1.0)
    heart = soft(1.0 - np.hypot((x + 0.28) / heart_r, (y - 0.18) / 0.27), 0.15)
    img = img - 0.24 * lung * (1 - heart) + 0.10 * heart * body
    spine = soft(0.11 - np.abs(x - 0.66 - 0.06 * y), 0.03) * body
    img = img + 0.20 * spine * (0.4 + 0.6 * np.cos(np.pi * y / 0.14) ** 6)
    img = img + 0.10 * soft(-0.5 - y, 0.25) * body  # arms and shoulders over the apices
    if effusion_size > 0:  # fluid fills the posterior costophrenic sulcus first
        meniscus = dome - 0.05 - 0.45 * effusion_size * (0.5 + np.clip(x, 0, 1))
        fluid = soft(y - meniscus, 0.05) * lung * (1 - heart)
        img = img * (1 - fluid) + 0.47 * fluid
    return img


# Support devices, drawn at full resolution in patient coordinates moved by the film's pose.
def _pt(x: float, y: float, size, pose) -> tuple[float, float]:
    dx, dy, tilt, mag = pose
    xx, yy = x * mag, y * mag
    return to_pixels(dx + xx * math.cos(tilt) - yy * math.sin(tilt), dy + xx * math.sin(tilt) + yy * math.cos(tilt), size)


def _et_tube(draw, rng, size, pose):
    tip = rng.uniform(-0.65, -0.45)
    draw.line([_pt(0.02, -1.3, size, pose), _pt(0.0, tip, size, pose)], fill=235, width=4)


def _ng_tube(draw, rng, size, pose):
    pts = bezier(_pt(-0.02, -1.3, size, pose), _pt(0.05, 0.4, size, pose), _pt(0.42, 0.55, size, pose), 20)
    draw.line(pts, fill=225, width=2)


def _central_line(draw, rng, size, pose):
    side = rng.choice([-1, 1])
    pts = bezier(_pt(side * 0.7, -0.95, size, pose), _pt(side * 0.1, -0.8, size, pose),
                 _pt(-0.06, rng.uniform(-0.45, -0.25), size, pose), 16)
    draw.line(pts, fill=240, width=2)


def _pacemaker(draw, rng, size, pose):
    cx, cy = _pt(0.55, -0.72, size, pose)
    s = min(size) * 0.06
    draw.rounded_rectangle((cx - s, cy - 0.7 * s, cx + s, cy + 0.7 * s), radius=s * 0.3, fill=250)
    for end in ((0.05, 0.25), (-0.05, 0.05)):
        draw.line(bezier((cx, cy), _pt(0.3, -0.5, size, pose), _pt(*end, size, pose), 16), fill=245, width=2)


def _ecg(draw, rng, size, pose):
    for _ in range(rng.integers(2, 5)):
        x, y = _pt(rng.uniform(-0.8, 0.8), rng.uniform(-0.9, 0.2), size, pose)
        r = min(size) * 0.018
        draw.ellipse((x - r, y - r, x + r, y + r), outline=240, width=2)
        end = (x + rng.normal(0, 60), -5.0)
        draw.line(bezier((x, y), (x + rng.normal(0, 40), y - 40), end, 12), fill=215, width=1)


DEVICE_PAINTERS = {"et_tube": _et_tube, "ng_tube": _ng_tube, "central_line": _central_line,
                   "pacemaker": _pacemaker, "ecg": _ecg}


@lru_cache(maxsize=1)
def _marker_font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=14)  # loading it per film would cost as much as painting one


def _draw_marker(draw, rng, size):
    """The radiographer's L/R lead marker in an upper corner (AP portables)."""
    w, _ = size
    letter = "L" if rng.random() < 0.5 else "R"
    x = w * (0.85 if letter == "L" else 0.06)
    draw.text((x, size[1] * 0.05), letter, fill=250, font=_marker_font())


def render_row(row, seed: int, params: ChestXraySynthParams) -> Image.Image:
    """Render the film of one row of :func:`sample_metadata`."""
    rng = np.random.default_rng([seed, 2, int(row["patient_index"]), int(row["study_index"]), int(row["view_index"])])
    return render_chest(rng, row["Frontal/Lateral"] == "Frontal", row["AP/PA"] == "AP", row["Sex"] == "Female",
                        int(row["race_group"]), float(row["effusion_size"]), row["effusion_side"], row["devices"],
                        bool(row["cardiomegaly"]), params)


# ----------------------------------------------------------------------------- writer
def generate_chexpert(out: str | Path, n: int, seed: int = 0, params: ChestXraySynthParams | None = None,
                      progress: bool = True, overwrite: bool = False) -> pd.DataFrame:
    """Write a synthetic CheXpert of ``n`` films to ``out``; return :func:`sample_metadata`'s table.

    Built in a temporary folder beside ``out`` and renamed into place when complete, so an
    interrupted run leaves nothing half-written. Refuses to replace a folder it did not make."""
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}")
    params = params or ChestXraySynthParams()
    out = check_output_dir(out, GENERATOR, overwrite)
    meta = sample_metadata(n, seed, params)
    with atomic_dir(out) as tmp:
        for row in tqdm(meta.to_dict("records"), desc="CheXpert films", disable=not progress):
            path = tmp / row["Path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            render_row(row, seed, params).save(path, quality=params.jpeg_quality)
        for source in ("train", "valid"):
            write_csv(tmp / DATASET_DIR / f"{source}.csv", meta.loc[meta["source"] == source, list(CSV_COLUMNS)])
        demo = meta[list(DEMO_COLUMNS)].drop_duplicates("PATIENT")
        write_csv(tmp / DEMO_FILE, demo)
        write_text(tmp / "synth_params.json", params_json(GENERATOR, VERSION, seed, n, params))
    return meta
