"""Errors and rejection records for bad input.

Every message names the file, the field and what was expected, so a user with a broken
dataset folder can fix it without reading our code."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


class DataError(ValueError):
    """A problem with one file (or one field of one file) of a dataset."""

    def __init__(self, file: str | Path, field: str | None, expected: str, got: object = None):
        self.file, self.field, self.expected, self.got = str(file), field, expected, got
        where = f"{self.file}" + (f", field {field!r}" if field else "")
        tail = "" if got is None else f"; got {got!r}"
        super().__init__(f"{where}: expected {expected}{tail}")


@dataclass
class Rejection:
    id: str
    file: str
    field: str
    reason: str


class RejectionTable(pd.DataFrame):
    """The rejection table a loader stores in ``frame.attrs["rejections"]``.

    pandas compares the ``attrs`` of frames it concatenates with ``==``; a plain DataFrame there
    makes ``pd.concat`` of two slices of a loaded dataset fail ("truth value of a DataFrame is
    ambiguous"). This table compares as a whole (``equals``) against another frame; columns
    compare element-wise as usual."""

    @property
    def _constructor(self):
        return RejectionTable

    def __eq__(self, other):
        if isinstance(other, pd.DataFrame):
            return self.equals(other)
        return super().__eq__(other)

    __hash__ = None


class Rejections:
    """Collects skipped subjects in lenient mode; raises the first one in strict mode."""

    columns = ["id", "file", "field", "reason"]

    def __init__(self, strict: bool):
        self.strict = strict
        self.items: list[Rejection] = []

    def add(self, subject_id: str, err: DataError) -> None:
        if self.strict:
            raise err
        self.items.append(Rejection(str(subject_id), err.file, err.field or "", str(err)))

    def frame(self) -> RejectionTable:
        return RejectionTable([vars(r) for r in self.items], columns=self.columns)


class ConfigError(ValueError):
    """A profile, user profile or ``--set`` override that names an unknown key, has the wrong type
    or an impossible value. Raised before any work starts."""


class RunConflict(RuntimeError):
    """Finished or partial work whose settings differ from the current config. Nothing is deleted:
    the message lists the differing keys and how to proceed."""


class FolderInUse(RunConflict):
    """Another live process is working in this folder (training a run, sampling into it, or a
    notebook stage): the second one refuses before it changes anything (:mod:`fairdiff.locks`)."""


class MissingPackage(ImportError):
    """An optional package that a setting asks for is not installed; says which setting needs it
    and how to install it. Raised before the work that needs it starts."""

    def __init__(self, package: str, needed_for: str, install: str | None = None):
        self.package, self.needed_for = package, needed_for
        super().__init__(f"{needed_for} needs the package {package!r}, which is not installed: "
                         f"{install or f'pip install {package}'}", name=package)


class UsageError(ValueError):
    """Command-line arguments that do not go together (e.g. ``sample --run`` without ``--out``)."""


class CheckpointError(ValueError):
    """A training checkpoint that is damaged or does not fit the run resuming from it. Lists every
    problem, each naming its file, so the user can pick another checkpoint or delete this one."""

    def __init__(self, ckpt: str | Path, problems: list[str]):
        self.ckpt, self.problems = str(ckpt), list(problems)
        super().__init__(f"{self.ckpt}: cannot resume from this checkpoint: " + "; ".join(self.problems))


class PipelineNotFound(OSError):
    """``model.pretrained`` names no pipeline this machine can load
    (:func:`fairdiff.models.pipeline_not_found_message` says what was tried and what to do)."""


# What the command line reports in one line (exit status 2): problems of the user's input or
# machine, each message naming the file, setting or package. A missing file or folder is a path the
# user gave or a stage not yet run; ``--debug`` shows where it was looked for.
USER_ERRORS = (ConfigError, DataError, RunConflict, CheckpointError, PipelineNotFound, MissingPackage, UsageError,
               FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


def require_optional_packages(cfg: dict, evaluate: bool = True) -> None:
    """Refuse, before any work, settings whose optional package is not installed: a tracker
    (``train.report_to``) and, when ``evaluate``, torch-fidelity (``evaluate.inception_weights``)."""
    from fairdiff import tracking

    tracking.require_tracker(cfg)
    if evaluate and cfg["evaluate"]["inception_weights"]:
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

        if not _TORCH_FIDELITY_AVAILABLE:
            raise MissingPackage("torch-fidelity", "evaluate.inception_weights (InceptionV3 features)",
                                 "pip install 'fairdiff[inception]' (pulls torchvision and a CUDA torch)")
