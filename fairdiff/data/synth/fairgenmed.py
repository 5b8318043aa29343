"""Synthetic FairGenMed: procedural SLO fundus subjects written in the real dataset's on-disk format.

A tool written for the real FairGenMed reads this folder unchanged::

    <out>/data_summary.csv          one row per subject (columns: SUMMARY_COLUMNS)
    <out>/train|val|test/           70 / 10 / 20 % of the subjects (exact counts, seeded)
        data_<ID>.npz               0-d int64 glaucoma, race, male, hispanic, maritalstatus, language;
                                    0-d float32 md, age; slo_fundus: 200 x 200 x 3 uint8
        slo_fundus_<ID>.jpg         512 wide x 664 high, 3 channels, JPEG quality 90
    <out>/synth_params.json         generator, version, seed, n and every parameter
    <out>/synth_subjects.csv        the ground truth behind each image (continuous CDR, refraction,
                                    RNFL, laterality, group difficulty, ...); not part of the real format

``<ID>`` is 5 digits, zero-padded, starting at 00001. A subject takes about 190 KB on disk (JPG ~65 KB,
npz ~120 KB, stored uncompressed: deflating it would about double the time per subject).

Orientation: the anatomical image is 664 wide x 512 high (superior up, disc near the centre, macula
to the temporal side). The stored JPG, and the npz copy, are that image rotated 90 degrees
counter-clockwise (PIL ``ROTATE_90``), hence 512 x 664; the paper's preprocessing rotates it 90
degrees clockwise, which brings the anatomical view back. :func:`to_stored_frame` and
:func:`to_anatomical_frame` are the two directions.

Population (``FundusSynthParams``; defaults follow the source hospital, see docs/datasets.md §4.1):
race, gender, ethnicity (with an "unknown" share written as -1), language, marital status and age
are drawn per subject. Glaucoma is logistic in age and race, with the intercept solved so that the
expected prevalence equals ``glaucoma_prevalence``. The clinical labels follow the clinic's rules:

- md (visual-field mean deviation, dB): non-glaucoma ~ N(0, 1) reflected at -1 dB (so MD >= -1);
  glaucoma = -3 dB minus an exponential loss (mean ``glaucoma_md_loss``), floored at -32 dB.
- md_severity: ``normal`` for non-glaucoma; for glaucoma ``mild`` MD > -6, ``moderate`` -12..-6,
  ``severe`` MD < -12 (Hodapp-Parrish-Anderson).
- cdr (vertical cup-to-disc ratio) = 0.36 + 0.6 (disc size - 1) + glaucoma (0.18 + 0.02 min(loss, 15))
  + N(0, 0.07), clipped to 0.1..0.92, loss = -3 - MD: larger discs have larger cups, damage
  enlarges the cup.
  cdr_status: ``normal`` < 0.5 <= ``borderline`` <= 0.7 < ``abnormal``.
- se (spherical equivalent, dioptres, in 0.25 D steps) ~ N(-0.25 + 0.03 (age - 59) + race shift, 2):
  near_vision_refraction_stage ``positive`` > +0.5 D, ``negative`` < -0.5 D, else ``neutral``.
- rnfl (µm) = 96 - 0.2 (age - 59) - glaucoma (10 + 2.5 loss) + N(0, 8), clipped to 35..130:
  rnflt_status ``low`` < 80 <= ``medium`` < 95 <= ``high``.

Group differences in the images (all scaled by ``inequality``; at 0, the image given the labels has
the same distribution in every group, although label priors such as glaucoma prevalence or myopia
may still differ by group through their own knobs):
- anatomy: larger discs in Black and Asian eyes (so larger physiological cups), more melanin (a darker,
  more mottled fundus with less visible choroid);
- difficulty: each group's difficulty (race + gender + ethnicity terms) adds speckle, blur, loses
  contrast (especially of the cup) and widens the spread of nuisance anatomy, so a model trained on
  the data can show group gaps.

Every subject is drawn from its own generators, ``default_rng([seed, number, stream])``, so a
subject's labels and image depend on the seed and its number only, not on ``n``. That is what
:func:`generate_group_pool` uses: subjects numbered after a dataset's, kept while their group is short,
make a group-balanced pool of the same population sharing no subject with the dataset.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from PIL import Image
from scipy.special import expit, ndtri
from tqdm.auto import tqdm

from fairdiff.data.synth.render import PARAMS_FILE, check_output_dir, params_json
from fairdiff.data.synth.fundus import EyeLook, refraction_amounts, render_fundus, slo_rgb, slo_rgb_array
from fairdiff.io import atomic_dir, write_csv, write_text

GENERATOR = "fairdiff.data.synth.fairgenmed"
GENERATOR_VERSION = "1"
SUMMARY_FILE = "data_summary.csv"
SUBJECTS_FILE = "synth_subjects.csv"

SPLIT_DIRS = {"train": "training", "val": "validation", "test": "test"}  # folder -> `use` value
RACES = ("asian", "black", "white")  # npz race codes 0, 1, 2
GENDERS = ("female", "male")  # npz male 0, 1
ETHNICITIES = ("non-hispanic", "hispanic")  # npz hispanic 0, 1; -1 is "unknown"
LANGUAGES = ("english", "spanish", "other")
MARITAL_STATUSES = ("married or partnered", "single", "divorced", "widowed", "legally separated")  # -1 unknown
UNKNOWN = "unknown"

SUMMARY_COLUMNS = ("filename", "use", "age", "gender", "race", "ethnicity", "language", "maritalstatus",
                   "md", "glaucoma", "md_severity", "cdr_status", "near_vision_refraction_stage",
                   "rnflt_status")
JPEG_QUALITY = 90
NPZ_SIZE = (200, 200)

_SUBJECT_STREAM, _IMAGE_STREAM = 0, 1
_LOOK_FIELDS = tuple(f.name for f in fields(EyeLook))


@dataclass(frozen=True)
class FundusSynthParams:
    """Every knob of the synthetic population; the defaults give a modest, visible group disparity.

    Population priors (probabilities; tuples are in the order of RACES, GENDERS, ...):
    race_prior: Asian, Black, White shares.
    female_prior: share of female patients.
    hispanic_prior: share of Hispanic patients (of all patients).
    unknown_ethnicity_prior: share with unknown ethnicity, written as hispanic = -1 / "unknown".
    language_prior: English, Spanish, other, for non-Hispanic (and unknown) patients.
    language_prior_hispanic: English, Spanish, other, for Hispanic patients.
    marital_prior: married or partnered, single, divorced, widowed, legally separated, unknown (-1).
    age_mean, age_sd, age_range: age ~ N(age_mean, age_sd) clipped to age_range, years.

    Labels:
    glaucoma_prevalence: expected share of glaucoma over the whole population.
    glaucoma_age_log_odds: glaucoma log-odds per age_sd of age (older: more glaucoma; mild).
    glaucoma_race_log_odds: glaucoma log-odds offset per race (Black patients more often affected).
    glaucoma_md_loss: mean visual-field loss below -3 dB in glaucoma, dB (sets the severity mix).
    race_se_shift: mean refraction shift per race, dioptres (East Asian myopia).

    Splits:
    split_fractions: train, val, test shares; counts are rounded, test takes the rest.

    Group inequality in the images (everything here is multiplied by ``inequality``):
    inequality: 0 = images drawn the same way for every group; 1 = the defaults; > 1 exaggerates.
    race_disc_scale: relative disc-size increase per race (White = reference 0).
    race_pigment: melanin added per race on a 0..1 scale (darker, more mottled fundus).
    race_difficulty, gender_difficulty, ethnicity_difficulty: per-group image difficulty, summed over
        the three attributes (unknown ethnicity adds 0). Difficulty d makes speckle (1 + 0.8 d) times
        stronger, contrast 1 / (1 + 0.4 d) and cup contrast 1 / (1 + 0.6 d) times weaker, adds
        1.2 d px of defocus blur and widens the spread of nuisance anatomy (1 + d) times.
    """

    race_prior: tuple[float, float, float] = (0.08, 0.12, 0.80)
    female_prior: float = 0.58
    hispanic_prior: float = 0.04
    unknown_ethnicity_prior: float = 0.05
    language_prior: tuple[float, float, float] = (0.94, 0.005, 0.055)
    language_prior_hispanic: tuple[float, float, float] = (0.55, 0.40, 0.05)
    marital_prior: tuple[float, float, float, float, float, float] = (0.58, 0.28, 0.066, 0.045, 0.007, 0.022)
    age_mean: float = 59.0
    age_sd: float = 16.0
    age_range: tuple[float, float] = (12.0, 96.0)

    glaucoma_prevalence: float = 0.5
    glaucoma_age_log_odds: float = 0.35
    glaucoma_race_log_odds: tuple[float, float, float] = (0.2, 0.6, 0.0)
    glaucoma_md_loss: float = 5.5
    race_se_shift: tuple[float, float, float] = (-1.0, 0.0, 0.0)

    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)

    inequality: float = 1.0
    race_disc_scale: tuple[float, float, float] = (0.06, 0.12, 0.0)
    race_pigment: tuple[float, float, float] = (0.25, 0.45, 0.0)
    race_difficulty: tuple[float, float, float] = (0.3, 0.5, 0.0)
    gender_difficulty: tuple[float, float] = (0.0, 0.0)
    ethnicity_difficulty: tuple[float, float] = (0.0, 0.3)

    def __post_init__(self) -> None:
        for name in ("race_prior", "language_prior", "language_prior_hispanic", "marital_prior", "split_fractions"):
            probs = np.asarray(getattr(self, name), dtype=float)
            if probs.min() < 0 or abs(probs.sum() - 1.0) > 1e-6:
                raise ValueError(f"FundusSynthParams.{name}: expected non-negative shares summing to 1, got {probs.tolist()}")
        for name in ("female_prior", "hispanic_prior", "unknown_ethnicity_prior"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"FundusSynthParams.{name}: expected a probability in [0, 1], got {getattr(self, name)!r}")
        if self.hispanic_prior + self.unknown_ethnicity_prior > 1.0:
            raise ValueError("FundusSynthParams: hispanic_prior + unknown_ethnicity_prior must not exceed 1")
        if not 0.0 < self.glaucoma_prevalence < 1.0:
            raise ValueError(f"FundusSynthParams.glaucoma_prevalence: expected a share in (0, 1), got {self.glaucoma_prevalence!r}")
        if self.age_range[0] >= self.age_range[1] or self.age_sd <= 0:
            raise ValueError(f"FundusSynthParams: expected age_range low < high and age_sd > 0, got {self.age_range}, {self.age_sd}")
        if self.inequality < 0 or self.glaucoma_md_loss <= 0:
            raise ValueError("FundusSynthParams: inequality must be >= 0 and glaucoma_md_loss > 0")
        for name, size in (("race_disc_scale", 3), ("race_pigment", 3), ("race_difficulty", 3),
                           ("glaucoma_race_log_odds", 3), ("race_se_shift", 3),
                           ("gender_difficulty", 2), ("ethnicity_difficulty", 2)):
            if len(getattr(self, name)) != size:
                raise ValueError(f"FundusSynthParams.{name}: expected {size} values, got {getattr(self, name)!r}")


# ---------------------------------------------------------------------------------------------
# label rules (the clinic's cut-offs, see the module docstring)

def classify_md(md: float, glaucoma: int) -> str:
    """md_severity from MD (dB): normal (non-glaucoma), mild > -6, moderate -12..-6, severe < -12."""
    if not glaucoma:
        return "normal"
    return "mild" if md > -6 else ("moderate" if md >= -12 else "severe")


def classify_cdr(cdr: float) -> str:
    """cdr_status from the vertical cup-to-disc ratio: normal < 0.5 <= borderline <= 0.7 < abnormal."""
    return "normal" if cdr < 0.5 else ("borderline" if cdr <= 0.7 else "abnormal")


def classify_refraction(se: float) -> str:
    """near_vision_refraction_stage from the spherical equivalent: positive > +0.5 D, negative < -0.5 D."""
    return "positive" if se > 0.5 else ("negative" if se < -0.5 else "neutral")


def classify_rnfl(rnfl: float) -> str:
    """rnflt_status from RNFL thickness (µm): low < 80 <= medium < 95 <= high."""
    return "low" if rnfl < 80 else ("medium" if rnfl < 95 else "high")


# ---------------------------------------------------------------------------------------------
# subjects

def draw_subjects(n: int, seed: int = 0, params: FundusSynthParams | None = None) -> pd.DataFrame:
    """The subject table (labels, split and image look) without rendering anything.

    One row per subject, in id order; ``number`` (1-based) keys the subject's random streams."""
    n, seed = _check_count(n, "n", minimum=1), _check_count(seed, "seed", minimum=0)
    params = params or FundusSynthParams()
    intercept = _glaucoma_intercept(params)
    rows = [_draw_subject(number, seed, params, intercept) for number in range(1, n + 1)]
    table = pd.DataFrame(rows)
    table.insert(2, "split", _assign_splits(table.pop("split_key").to_numpy(), params.split_fractions))
    table.insert(3, "use", table["split"].map(SPLIT_DIRS))
    return table


def summary_frame(subjects: pd.DataFrame) -> pd.DataFrame:
    """The real data_summary.csv columns, as text labels, from a subject table."""
    return pd.DataFrame({
        "filename": subjects["filename"],
        "use": subjects["use"],
        "age": subjects["age"],
        "gender": [GENDERS[m] for m in subjects["male"]],
        "race": [RACES[r] for r in subjects["race"]],
        "ethnicity": [ETHNICITIES[h] if h >= 0 else UNKNOWN for h in subjects["hispanic"]],
        "language": [LANGUAGES[lang] for lang in subjects["language"]],
        "maritalstatus": [MARITAL_STATUSES[m] if m >= 0 else UNKNOWN for m in subjects["maritalstatus"]],
        "md": subjects["md"],
        "glaucoma": np.where(subjects["glaucoma"] == 1, "yes", "no"),
        "md_severity": subjects["md_severity"],
        "cdr_status": subjects["cdr_status"],
        "near_vision_refraction_stage": subjects["near_vision_refraction_stage"],
        "rnflt_status": subjects["rnflt_status"],
    }, columns=list(SUMMARY_COLUMNS))


def subject_look(subject: Mapping) -> EyeLook:
    """The renderer's view of one subject-table row."""
    return EyeLook(**{name: (str(subject[name]) if name == "laterality" else float(subject[name]))
                      for name in _LOOK_FIELDS})


def render_subject(subject: Mapping, seed: int, stored_frame: bool = True) -> Image.Image:
    """One subject's grey image, deterministic in (seed, number): in the stored frame (512 x 664) by
    default, else in the anatomical frame (664 x 512)."""
    rng = _rng(seed, int(subject["number"]), _IMAGE_STREAM)
    return render_fundus(subject_look(subject), rng, rotate_ccw=stored_frame)


def to_stored_frame(anatomical: Image.Image) -> Image.Image:
    """Anatomical frame (664 x 512) -> stored frame (512 x 664): 90 degrees counter-clockwise."""
    return anatomical.transpose(Image.Transpose.ROTATE_90)


def to_anatomical_frame(stored: Image.Image) -> Image.Image:
    """Stored frame (512 x 664) -> anatomical frame (664 x 512): 90 degrees clockwise."""
    return stored.transpose(Image.Transpose.ROTATE_270)


def _draw_subject(number: int, seed: int, p: FundusSynthParams, intercept: float) -> dict:
    rng = _rng(seed, number, _SUBJECT_STREAM)
    race = int(rng.choice(3, p=p.race_prior))
    male = int(rng.random() >= p.female_prior)
    u = rng.random()
    hispanic = -1 if u < p.unknown_ethnicity_prior else int(u < p.unknown_ethnicity_prior + p.hispanic_prior)
    language = int(rng.choice(3, p=p.language_prior_hispanic if hispanic == 1 else p.language_prior))
    marital = int(rng.choice(6, p=p.marital_prior))
    maritalstatus = -1 if marital == 5 else marital
    age = float(np.clip(rng.normal(p.age_mean, p.age_sd), *p.age_range))
    age_z = (age - p.age_mean) / p.age_sd

    logit = intercept + p.glaucoma_age_log_odds * age_z + p.glaucoma_race_log_odds[race]
    glaucoma = int(rng.random() < 1.0 / (1.0 + math.exp(-logit)))
    if glaucoma:
        md = round(max(-32.0, -3.01 - rng.exponential(p.glaucoma_md_loss)), 2)
    else:
        md = rng.normal(0.0, 1.0)
        md = round(md if md >= -1.0 else -2.0 - md, 2)  # reflected at -1 dB: non-glaucoma MD >= -1
    loss = max(0.0, -3.0 - md) if glaucoma else 0.0

    se = float(np.clip(round(4 * rng.normal(-0.25 + 0.03 * (age - 59.0) + p.race_se_shift[race], 2.0)) / 4, -12, 8))
    myopia, hyperopia = refraction_amounts(se)

    inequality = p.inequality
    difficulty = inequality * (p.race_difficulty[race] + p.gender_difficulty[male]
                               + (p.ethnicity_difficulty[hispanic] if hispanic >= 0 else 0.0))
    variability = 1.0 + difficulty
    disc_scale = ((1.0 + inequality * p.race_disc_scale[race]) * math.exp(rng.normal(0, 0.08 * variability))
                  * (1.0 - 0.08 * hyperopia + 0.05 * myopia))
    cdr = round(float(np.clip(0.36 + 0.6 * (disc_scale - 1.0) + glaucoma * (0.18 + 0.02 * min(loss, 15.0))
                              + rng.normal(0, 0.07), 0.1, 0.92)), 2)
    notch = glaucoma * float(np.clip(0.25 + 0.04 * loss + rng.normal(0, 0.15), 0.0, 1.0))
    rnfl = round(float(np.clip(96.0 - 0.2 * (age - 59.0) - glaucoma * (10.0 + 2.5 * loss) + rng.normal(0, 8),
                               35.0, 130.0)), 1)
    pigment = float(np.clip(0.2 + inequality * p.race_pigment[race] + rng.normal(0, 0.08 * variability), 0.0, 1.0))
    noise = 0.04 * (1.0 + 0.8 * difficulty) * math.exp(rng.normal(0, 0.25))  # individual image quality
    blur = 1.2 * difficulty + max(0.0, rng.normal(-0.3, 0.6))  # about a third of eyes slightly defocused
    return {
        "number": number,
        "filename": f"data_{number:05d}.npz",
        "split_key": rng.random(),
        "age": round(age, 2), "male": male, "race": race, "hispanic": hispanic,
        "language": language, "maritalstatus": maritalstatus,
        "glaucoma": glaucoma, "md": md, "md_severity": classify_md(md, glaucoma),
        "cdr": cdr, "cdr_status": classify_cdr(cdr),
        "se": se, "near_vision_refraction_stage": classify_refraction(se),
        "rnfl": rnfl, "rnflt_status": classify_rnfl(rnfl),
        "difficulty": round(difficulty, 6),
        "laterality": "OD" if rng.random() < 0.5 else "OS",
        "disc_scale": disc_scale, "notch": notch, "pigment": pigment,
        "noise": noise, "contrast": 1.0 / (1.0 + 0.4 * difficulty), "cup_contrast": 1.0 / (1.0 + 0.6 * difficulty),
        "blur": blur, "variability": variability,
    }


def _glaucoma_intercept(p: FundusSynthParams) -> float:
    """The logistic intercept that makes the expected glaucoma share equal ``glaucoma_prevalence``.

    The expectation runs over the race prior and 201 age quantiles of the clipped age distribution."""
    ages = np.clip(p.age_mean + p.age_sd * ndtri((np.arange(201) + 0.5) / 201), *p.age_range)
    offsets = (p.glaucoma_age_log_odds * (ages[:, None] - p.age_mean) / p.age_sd
               + np.asarray(p.glaucoma_race_log_odds)[None, :])
    weights = np.asarray(p.race_prior)[None, :] / len(ages)
    low, high = -20.0, 20.0
    for _ in range(80):  # bisection: the prevalence grows monotonically with the intercept
        mid = (low + high) / 2
        low, high = (mid, high) if (weights * expit(mid + offsets)).sum() < p.glaucoma_prevalence else (low, mid)
    return (low + high) / 2


def _assign_splits(keys: np.ndarray, fractions: tuple[float, float, float]) -> list[str]:
    """Exact split counts (rounded; test takes the rest), assigned by the rank of each subject's key."""
    n = len(keys)
    n_train = int(round(fractions[0] * n))
    n_val = min(n - n_train, int(round(fractions[1] * n)))
    rank = np.empty(n, dtype=int)
    rank[np.argsort(keys, kind="stable")] = np.arange(n)
    return ["train" if r < n_train else ("val" if r < n_train + n_val else "test") for r in rank]


def _rng(seed: int, number: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, number, stream])


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# writing

def generate_fairgenmed(out: str | Path, n: int, seed: int = 0, params: FundusSynthParams | None = None,
                        progress: bool = True, overwrite: bool = False) -> pd.DataFrame:
    """Write a synthetic FairGenMed of ``n`` subjects to ``out``; return the data_summary frame written.

    The folder is built next to ``out`` and renamed into place when complete, so a killed run leaves
    no half dataset. An existing non-empty ``out`` is replaced only if this generator made it and
    ``overwrite`` is true."""
    params = params or FundusSynthParams()
    return _write_folder(out, draw_subjects(n, seed, params), seed, n, params, progress, overwrite)


def _write_folder(out: str | Path, subjects: pd.DataFrame, seed: int, n: int, params: FundusSynthParams,
                  progress: bool, overwrite: bool, extra: dict[str, str] | None = None) -> pd.DataFrame:
    """Write ``subjects`` (a subject table) as a dataset folder, atomically; ``extra`` names more
    text files to put in it. Returns the data_summary frame written."""
    out = Path(out)
    check_output_dir(out, GENERATOR, overwrite)
    summary = summary_frame(subjects)
    with atomic_dir(out) as tmp:
        for split in SPLIT_DIRS:
            (tmp / split).mkdir()
        for row in tqdm(subjects.to_dict("records"), desc="synthetic FairGenMed", unit="subject",
                        disable=not progress):
            write_subject(tmp / row["split"], row, seed)
        write_csv(tmp / SUMMARY_FILE, summary)
        write_csv(tmp / SUBJECTS_FILE, subjects)
        write_text(tmp / PARAMS_FILE, params_json(GENERATOR, GENERATOR_VERSION, seed, n, params))
        for name, text in (extra or {}).items():
            write_text(tmp / name, text)
    return summary


# ---------------------------------------------------------------------------------------------
# a group-balanced pool of the same population (the per-group evaluation reference)

POOL_FILE = "reference_pool.json"
# The subject-table column that holds each schema attribute's group id (same order as the schema's groups).
ATTRIBUTE_COLUMNS = {"race": "race", "gender": "male", "ethnicity": "hispanic"}


def draw_group_pool(attribute: str, per_group: int, seed: int = 0, params: FundusSynthParams | None = None,
                    first: int = 1, max_draws: int = 200_000) -> pd.DataFrame:
    """Subjects ``first``, ``first + 1``, ... of the population of (``seed``, ``params``), each kept
    while its group of ``attribute`` holds fewer than ``per_group``: ``per_group`` subjects of every
    group, all in the test split, in number order.

    Each kept subject is an ordinary draw of the population that happens to be in its group, so a
    group's pool follows that group's own distribution of labels and look (every knob of
    ``params``, planted group differences included), as its test images do; only the group shares
    change. With ``first`` = n + 1 no subject (number, id or random stream) is one of a dataset of
    n subjects drawn with the same seed. Unknown ethnicity (-1) belongs to no group."""
    if attribute not in ATTRIBUTE_COLUMNS:
        raise ValueError(f"attribute: expected one of {sorted(ATTRIBUTE_COLUMNS)}, got {attribute!r}")
    per_group, seed = _check_count(per_group, "per_group", minimum=1), _check_count(seed, "seed", minimum=0)
    first = _check_count(first, "first", minimum=1)
    params = params or FundusSynthParams()
    intercept = _glaucoma_intercept(params)
    n_groups = {"race": len(RACES), "gender": len(GENDERS), "ethnicity": len(ETHNICITIES)}[attribute]
    counts, rows = [0] * n_groups, []
    number = first
    while min(counts) < per_group:
        if number - first >= max_draws:
            raise ValueError(f"draw_group_pool: {max_draws} subjects drawn and {attribute} groups still short of "
                             f"{per_group}: {dict(zip(range(n_groups), counts))} (a group with a share near 0?)")
        row = _draw_subject(number, seed, params, intercept)
        group = row[ATTRIBUTE_COLUMNS[attribute]]
        if group >= 0 and counts[group] < per_group:
            counts[group] += 1
            rows.append(row)
        number += 1
    table = pd.DataFrame(rows)
    table.pop("split_key")
    table.insert(2, "split", "test")
    table.insert(3, "use", SPLIT_DIRS["test"])
    return table


def generate_group_pool(out: str | Path, attribute: str, per_group: int, seed: int = 0,
                        params: FundusSynthParams | None = None, first: int = 1, progress: bool = True,
                        overwrite: bool = False) -> pd.DataFrame:
    """Write :func:`draw_group_pool` as a FairGenMed folder (every subject in ``test/``), with
    ``reference_pool.json`` saying how it was drawn; returns the data_summary frame written."""
    params = params or FundusSynthParams()
    subjects = draw_group_pool(attribute, per_group, seed, params, first)
    pool = {"attribute": attribute, "per_group": per_group, "first": first,
            "drawn": int(subjects["number"].max()) - first + 1}
    return _write_folder(out, subjects, seed, len(subjects), params, progress, overwrite,
                         {POOL_FILE: json.dumps(pool, indent=2, sort_keys=True) + "\n"})


def write_subject(folder: Path, subject: Mapping, seed: int) -> None:
    """Render one subject-table row and write its JPG (stored frame) and npz into ``folder``."""
    stored = render_subject(subject, seed)
    slo_rgb(stored).save(folder / f"slo_fundus_{subject['number']:05d}.jpg", quality=JPEG_QUALITY)
    small = np.asarray(stored.resize(NPZ_SIZE, Image.BILINEAR))
    ints = {key: np.int64(subject[key]) for key in ("glaucoma", "race", "male", "hispanic", "maritalstatus", "language")}
    np.savez(folder / subject["filename"], **ints, md=np.float32(subject["md"]), age=np.float32(subject["age"]),
             slo_fundus=slo_rgb_array(small))  # uncompressed: see the module docstring
