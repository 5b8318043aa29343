"""Dataset schemas: what differs between FairGenMed, HAM10000 and CheXpert.

A schema names the sensitive attributes (with their group words, in id order), the clinical
labels (with their class words, in id order) and the prompt template. Loaders, the trainer,
the sampler and the evaluation read these instead of hard-coding a dataset, so adding a dataset
means adding a schema, not copying code.

Conventions shared by every loader's DataFrame (one row per image):
- ``id`` (str), ``split`` (``train`` | ``val`` | ``test``), ``image_path`` (absolute str),
  ``prompt`` (str);
- one int column per attribute, holding the group id, ``-1`` for unknown;
- one int column per label, holding the class id.
"""
from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Attribute:
    """A sensitive attribute; ``groups`` are the words used in prompts, in id order."""

    name: str
    groups: tuple[str, ...]

    @property
    def n_groups(self) -> int:
        return len(self.groups)


@dataclass(frozen=True)
class Label:
    """A clinical label; ``classes`` are readable class names in id order and ``prompt_words``
    the phrase each class contributes to the prompt."""

    name: str
    classes: tuple[str, ...]
    prompt_words: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class Schema:
    name: str
    attributes: tuple[Attribute, ...]
    labels: tuple[Label, ...]
    template: str  # str.format template over attribute and label names (their prompt words)
    classifier_tasks: tuple[str, ...] = field(default=())  # labels a downstream classifier predicts
    image_kind: str = "rgb"  # "rgb" or "gray": what the images are, for preprocessing and plots
    rotate: bool = False  # paper: fundus images are rotated 90 deg clockwise for training

    @property
    def attribute_names(self) -> list[str]:
        return [a.name for a in self.attributes]

    @property
    def label_names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    @property
    def n_groups(self) -> list[int]:
        return [a.n_groups for a in self.attributes]

    def attribute(self, name: str) -> Attribute:
        return next(a for a in self.attributes if a.name == name)

    def label(self, name: str) -> Label:
        return next(lab for lab in self.labels if lab.name == name)

    def prompt(self, **ids: int) -> str:
        """The paper's prompt for one subject from its attribute and label ids.

        An unknown attribute (id -1) leaves its word out (the paper drops such subjects; we keep
        them, see docs/method.md §4.4), so the prompt never invents a group."""
        words = {}
        for a in self.attributes:
            g = int(ids[a.name])
            if not -1 <= g < a.n_groups:
                raise ValueError(f"{self.name}: attribute {a.name!r} has id {g}; expected -1 (unknown) or 0..{a.n_groups - 1}")
            words[a.name] = a.groups[g] if g >= 0 else ""
        for lab in self.labels:
            c = int(ids[lab.name])
            if not 0 <= c < lab.n_classes:
                raise ValueError(f"{self.name}: label {lab.name!r} has id {c}; expected 0..{lab.n_classes - 1}")
            words[lab.name] = lab.prompt_words[c]
        return " ".join(self.template.format(**words).split())


FAIRGENMED = Schema(
    name="fairgenmed",
    attributes=(
        Attribute("race", ("Asian", "Black", "White")),
        Attribute("gender", ("Female", "Male")),
        Attribute("ethnicity", ("Non-Hispanic", "Hispanic")),
    ),
    labels=(
        Label("glaucoma", ("no", "yes"), ("non-glaucoma", "glaucoma")),
        Label("md_severity", ("normal", "mild", "moderate", "severe"),
              ("normal vision", "mild vision loss", "moderate vision loss", "severe vision loss")),
        Label("cdr_status", ("normal", "borderline", "abnormal"),
              ("normal cup-disc ratio", "borderline cup-disc ratio", "abnormal cup-disc ratio")),
        Label("refraction", ("positive", "neutral", "negative"), ("positive", "neutral", "negative")),
    ),
    template=("SLO fundus image of a {race} {gender} {ethnicity} patient with the following "
              "conditions: {glaucoma}, {md_severity}, {cdr_status}, {refraction}"),
    classifier_tasks=("glaucoma", "md_severity", "cdr_status", "refraction"),
    image_kind="rgb",
    rotate=True,
)

HAM10000 = Schema(
    name="ham10000",
    attributes=(
        Attribute("sex", ("Male", "Female")),
        Attribute("age", ("Age under 60", "Age equal 60 or older")),
    ),
    labels=(Label("malignant", ("benign", "malignant"), ("benign", "malignant")),),
    template=("Dermoscopic image of a {sex} {age} patient with the following diagnostic "
              "category: {malignant}"),
    classifier_tasks=("malignant",),
    image_kind="rgb",
    rotate=False,
)

CHEXPERT = Schema(
    name="chexpert",
    attributes=(
        Attribute("sex", ("Male", "Female")),
        Attribute("race", ("Asian", "Black", "White")),
    ),
    labels=(Label("pleural_effusion", ("negative", "positive"),
                  ("non Pleural Effusion", "Pleural Effusion")),),
    template="Chest Radiography image of a {sex} {race} patient diagnosed with {pleural_effusion}",
    classifier_tasks=("pleural_effusion",),
    image_kind="gray",
    rotate=False,
)

SCHEMAS = {s.name: s for s in (FAIRGENMED, HAM10000, CHEXPERT)}


def get_schema(name: str) -> Schema:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(SCHEMAS)}") from None
