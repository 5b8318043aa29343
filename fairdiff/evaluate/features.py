"""Feature extractors for generation metrics, and the per-group generation table from one extraction.

Extractors are injected, never hard-wired: the paper's InceptionV3 needs weights and a package
that cannot be installed offline on a CPU torch, and ImageNet features say little about fundus
photographs anyway. :class:`DomainEncoder` is a small CNN trained on the real train split
(before any generator is scored) to predict the clinical labels; its pooled features play the
role of Inception's pool3 features and its joint-label logits the role of the class logits.

The authors copied each group's images to a folder and re-ran Inception on it, once per metric.
:func:`generation_metrics` extracts every image once and slices the feature arrays by metadata
groups (see benchmarks/bench_eval_features.py for the speed-up); the metric arithmetic lives in
:mod:`fairdiff.evaluate.generation`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn

from fairdiff.errors import DataError
from fairdiff.evaluate import metrics as M
from fairdiff.evaluate.classifier import (InputAdapter, as_unit_float, batched, conv_trunk, default_device, device_of,
                                          image_batches, seeded, train_epoch)
from fairdiff.evaluate.generation import (ES_GROUP, GAP_GROUP, GENERATION_COLUMNS, MATCHED_ALL,  # noqa: F401
                                          generation_metrics_from_features)
from fairdiff.evaluate.groups import group_ids, group_masks, group_names
from fairdiff.io import atomic_dir
from fairdiff.schema import Schema

INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"


class FeatureExtractor(nn.Module):
    """What the metrics need from a network: ``name``, ``num_features``, and :meth:`embed`.

    ``embed`` maps one batch of [B, 3, H, W] images (float in [0, 1], or uint8) to
    (features [B, d], logits [B, C]). ``forward`` returns the features, which is the interface
    torchmetrics' ``FrechetInceptionDistance(feature=module)`` expects."""

    name: str
    num_features: int

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)[0]

    def features(self, images, batch_size: int = 256, num_workers: int = 0) -> torch.Tensor:
        return extract(self, images, batch_size, num_workers)[0]

    def logits(self, images, batch_size: int = 256, num_workers: int = 0) -> torch.Tensor:
        return extract(self, images, batch_size, num_workers)[1]


def extract(extractor: FeatureExtractor, images, batch_size: int = 256,
            num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, d], logits [N, C]) of an image set, in batches, eval mode, no gradients.

    ``images`` is any image source of :func:`fairdiff.evaluate.classifier.image_batches` (a
    tensor, a uint8 [N, H, W, 3] array or memory map, or a Dataset of image files decoded per
    batch by ``num_workers`` workers): only one batch of images is in memory at a time, and it
    stays uint8 until the extractor (on its own device) converts it."""
    was_training = extractor.training
    extractor.eval()
    try:
        return batched(extractor.embed, images, batch_size, device_of(extractor), num_workers)
    finally:
        extractor.train(was_training)


# ----------------------------------------------------------------------------- domain encoder
class DomainEncoder(FeatureExtractor):
    """Conv trunk -> pooled features (non-negative, like Inception's pool3) -> one linear head per target.

    Heads: each clinical label (optionally each attribute) and ``joint``, a softmax over the label
    combinations seen in training. The Inception Score needs one class distribution per image;
    the joint head gives it one over the clinical states a prompt can ask for, so IS rewards
    generated images that look like a confident, diverse mix of those states."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        self.name = config["name"]
        self.num_features = config["widths"][-1]
        self.adapt = InputAdapter(config["in_res"])
        self.trunk = conv_trunk(tuple(config["widths"]))
        self.heads = nn.ModuleDict({head: nn.Linear(self.num_features, n) for head, n in config["heads"].items()})

    def outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(self.adapt(images))
        return {"features": z, **{head: layer(z) for head, layer in self.heads.items()}}

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.outputs(images)
        return out["features"], out["joint"]

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``weights.pt`` (a state dict) atomically into ``directory``."""
        with atomic_dir(directory) as tmp:
            (tmp / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
            torch.save({k: v.cpu() for k, v in self.state_dict().items()}, tmp / "weights.pt")
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> "DomainEncoder":
        directory = Path(directory)
        for part in ("config.json", "weights.pt"):
            if not (directory / part).is_file():
                raise DataError(directory / part, None,
                                "a DomainEncoder saved with .save() (config.json + weights.pt)", "missing")
        encoder = cls(json.loads((directory / "config.json").read_text()))
        encoder.load_state_dict(torch.load(directory / "weights.pt", map_location="cpu", weights_only=True))
        return encoder.eval()


def _training_targets(meta: pd.DataFrame, schema: Schema,
                      include_attributes: bool) -> tuple[dict[str, np.ndarray], list]:
    """Per-head class ids (-1 = ignore) and the joint-label classes (label-id tuples seen in training)."""
    targets = {name: group_ids(meta, schema, name) for name in schema.label_names}
    if include_attributes:
        targets.update({name: group_ids(meta, schema, name) for name in schema.attribute_names})
    label_ids = np.stack([targets[name] for name in schema.label_names], axis=1)
    known = (label_ids >= 0).all(axis=1)
    combos = sorted({tuple(int(v) for v in row) for row in label_ids[known]})
    index = {combo: i for i, combo in enumerate(combos)}
    targets["joint"] = np.array([index[tuple(int(v) for v in row)] if ok else -1
                                 for row, ok in zip(label_ids, known)], dtype=np.int64)
    return targets, combos


def _fingerprint(meta: pd.DataFrame, images, config: dict) -> str:
    """A short hash of the training data (its ids, else its pixels as float32 in [0, 1], read batch
    by batch) and the config, to name the extractor."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    if "id" in meta.columns:
        digest.update("\n".join(sorted(meta["id"].astype(str))).encode())
    else:
        for batch in image_batches(images):
            digest.update(as_unit_float(batch).contiguous().numpy().tobytes())
    return digest.hexdigest()[:10]


def train_domain_encoder(images, meta: pd.DataFrame, schema: Schema, epochs: int = 10,
                         seed: int = 0, batch_size: int = 32, lr: float = 3e-3, in_res: int = 64,
                         widths: tuple[int, ...] = (16, 32, 64, 128), include_attributes: bool = False,
                         device: torch.device | str | None = None, num_workers: int = 0) -> DomainEncoder:
    """Train the domain feature encoder on REAL training images, multi-head cross-entropy, AdamW.

    Rows of the test split are refused: the test images are the FID reference, and an encoder
    that has seen them would measure closeness to its own training set. Labels of -1 are ignored
    by their head. Attribute heads (``include_attributes``) make the features see demographics,
    which makes per-group FID more sensitive to demographic drift; off by default, like Inception.
    Same seed, same weights (on the CPU). ``images`` is any image source (see :func:`extract`),
    read one batch at a time; batches move to ``device`` (default: the GPU when there is one) and
    the encoder stays there.
    Defaults (lr 3e-3, batch 32) from synthetic FairGenMed at 64 px, 8 epochs: label-head test
    AUCs 0.96 / 0.84 / 0.87 (glaucoma, md, cdr), against 0.88 / 0.72 / 0.77 with lr 1e-3, batch 64."""
    if len(meta) != len(images):
        raise ValueError(f"{len(images)} images but {len(meta)} metadata rows")
    if "split" in meta.columns and (meta["split"] == "test").any():
        raise DataError("metadata", "split", "train (or val) rows only: the test split is the FID reference",
                        int((meta["split"] == "test").sum()))
    targets, combos = _training_targets(meta, schema, include_attributes)
    if not combos:
        raise DataError("metadata", " | ".join(schema.label_names), "some rows with every label known (id >= 0)",
                        "none")
    heads = {name: len(combos) if name == "joint" else len(group_names(schema, name)) for name in targets}
    config = {"schema": schema.name, "in_res": in_res, "widths": list(widths), "heads": heads,
              "joint_classes": [list(c) for c in combos], "include_attributes": include_attributes,
              "epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr}
    config["name"] = f"domain-cnn-{_fingerprint(meta, images, config)}"
    tensors = {name: torch.tensor(t) for name, t in targets.items()}

    device = default_device(device)

    def batch_loss(rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = encoder.outputs(x.to(device))
        losses = [F.cross_entropy(out[name], t[rows].to(device), ignore_index=-1)
                  for name, t in tensors.items() if (t[rows] >= 0).any()]
        return torch.stack(losses).sum()

    with seeded(seed):
        encoder = DomainEncoder(config).to(device)
        optimizer = torch.optim.AdamW(encoder.parameters(), lr=lr)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            train_epoch(encoder, optimizer, batch_loss, len(images), batch_size, generator, images=images,
                        num_workers=num_workers)
    return encoder.eval()


# ----------------------------------------------------------------------------- inception
class InceptionExtractor(FeatureExtractor):
    """The paper's extractor: torchmetrics' InceptionV3 (2048-d pool features, unbiased logits).

    Needs the optional extra ``pip install 'fairdiff[inception]'`` (torch-fidelity, which pulls
    torchvision and a CUDA torch: several GB) and the FID weights file on disk; offline it cannot
    download them."""

    def __init__(self, weights_path: str | Path):
        super().__init__()
        path = Path(weights_path)
        if not path.is_file():
            raise DataError(path, None, f"the InceptionV3 FID weights file {INCEPTION_WEIGHTS} (torch-fidelity "
                            "release v0.2.0 on GitHub); download it on a machine with internet and put it here",
                            "missing")
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
        if not _TORCH_FIDELITY_AVAILABLE:
            raise ImportError("InceptionExtractor needs torch-fidelity, which is not installed: "
                              "pip install 'fairdiff[inception]' (pulls torchvision and a CUDA torch)")
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(path))
        self.name = "inception-v3-compat-2048"
        self.num_features = 2048

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        uint8 = images if images.dtype == torch.uint8 else (as_unit_float(images) * 255).byte()  # as torchmetrics
        features, logits = self.net._torch_fidelity_forward(uint8)
        return features.reshape(len(images), -1), logits.reshape(len(images), -1)


# ----------------------------------------------------------------------------- generation metrics
LOWER_IS_BETTER = {"fid": True, "fid_debiased": True, "kid": True, "mifid": True, "is": False}


def _blas_threads_for(dim: int) -> contextlib.AbstractContextManager:
    """One BLAS thread for small matrices, where threads cost more than they save (one sqrtm at
    d = 128: 9 ms on one thread, 290 ms on two, on the shared 2-core machine); Inception's
    2048-d matrices keep the default."""
    return threadpool_limits(limits=1, user_api="blas") if dim <= 512 else contextlib.nullcontext()


def generation_metrics(real_images: torch.Tensor, fake_images: torch.Tensor, real_meta: pd.DataFrame,
                       fake_meta: pd.DataFrame, schema: Schema, extractor: FeatureExtractor, n_boot: int = 100,
                       min_group_size: int = 50, seed: int = 0, attributes: list[str] | None = None,
                       splits: int = 10, mifid_eps: float | str = "calibrated", batch_size: int = 256,
                       train_images: torch.Tensor | None = None, kid_subset_size: int = 1000, kid_subsets: int = 100,
                       prdc_k: int = 5, size_matched_floor: int = 5, size_matched_repeats: int = 20,
                       jackknife_blocks: int = 20, copy_quantile: float = 0.01, ci: float = 0.95,
                       num_workers: int = 0) -> pd.DataFrame:
    """Image-set metrics of generated images overall and for every group, from one feature
    extraction per image set (real test, generated, and optionally real training images).

    A group's generated images are compared with that group's own real images (groups read from
    each set's metadata ids). Tidy output, one row per (attribute, group, metric), columns
    :data:`GENERATION_COLUMNS`: the sizes compared, ``small_group`` when either is below
    ``min_group_size``, ``size_matched`` for the equal-size rows, the value, and its interval:
    ``boot_lo``/``boot_hi`` at level ``ci``, ``boot_mean``/``boot_std`` the centre and standard
    error it is built from (for the bootstrap: mean and std over resamples, the authors' way),
    ``n_valid`` the replicates used, ``interval`` the method, ``note`` what a reader must know.

    Per group (and ``all``):
    - ``fid`` (plug-in, as torchmetrics) and ``fid_debiased`` (jackknife bias-corrected: the part
      of FID's small-sample bias linear in 1/n removed, comparable across group sizes); both with
      the two-sample delete-a-group jackknife (``jackknife_blocks`` blocks per set,
      :mod:`fairdiff.evaluate.intervals`): ``fid``'s interval contains it and covers the FID
      expected at these sizes, ``fid_debiased``'s covers the population distance;
    - ``kid`` (:mod:`fairdiff.evaluate.kid`, ``kid_subsets`` subsets of ``kid_subset_size`` capped at
      the group) with its jackknife interval, ``kid_std`` its spread over subsets;
    - ``mifid`` with ``mifid_eps`` a number or ``"calibrated"`` (the ``copy_quantile`` of real
      test-to-train cosine distances; without training images it falls back to 0.1), stated in
      ``note`` and in the row ``mifid_eps``;
    - ``precision``, ``recall``, ``density``, ``coverage`` (:mod:`fairdiff.evaluate.prdc`, ``prdc_k``);
    - ``is``, ``is_std`` (percentile bootstrap over ``n_boot`` resamples of the generated set; IS cuts
      a group into ``splits`` chunks, so fewer than ``splits`` images give IS = 1);
    - with ``train_images``: ``copy_share`` (generated images closer to a training image than the
      ``copy_quantile`` of held-out real test images are, Wilson interval; threshold in the row
      ``copy_threshold``) and ``nn_train_ratio`` (:mod:`fairdiff.evaluate.memorisation`).

    Size-matched (``size_matched`` True): per attribute, every group whose smaller side holds at least
    ``size_matched_floor`` images is compared at m = the smallest such size: ``fid_matched`` and
    ``kid_matched`` are means over ``size_matched_repeats`` subsamples of m images per side, and the
    group ``MATCHED_ALL`` holds the whole sets subsampled to the same m. Smaller groups get no
    matched value. Per attribute, group ``ES_GROUP`` holds ``es_fid``, ``es_fid_debiased``,
    ``es_kid``, ``es_fid_matched``, ``es_kid_matched`` (:func:`fairdiff.evaluate.metrics.equity_scaled`,
    OUR lower-is-better form), and group ``GAP_GROUP`` the largest minus smallest group value of the
    same metrics (``*_gap``), each with the jackknife over the whole sets, so they carry the
    dependence between the groups and the overall value."""
    for what, imgs, meta in (("real", real_images, real_meta), ("generated", fake_images, fake_meta)):
        if len(imgs) != len(meta):
            raise ValueError(f"{what}: {len(imgs)} images but {len(meta)} metadata rows")
    real_f = extract(extractor, real_images, batch_size, num_workers)[0].double().numpy()
    fake_f, fake_l = (t.double().numpy() for t in extract(extractor, fake_images, batch_size, num_workers))
    train_f = (None if train_images is None
               else extract(extractor, train_images, batch_size, num_workers)[0].double().numpy())
    with _blas_threads_for(extractor.num_features):
        return generation_metrics_from_features(
            real_f, fake_f, fake_l, group_masks(real_meta, schema, attributes),
            group_masks(fake_meta, schema, attributes), extractor.name, train_f, n_boot=n_boot,
            min_group_size=min_group_size, seed=seed, splits=splits, mifid_eps=mifid_eps, kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, prdc_k=prdc_k,
            size_matched_floor=size_matched_floor, size_matched_repeats=size_matched_repeats,
            jackknife_blocks=jackknife_blocks, copy_quantile=copy_quantile, ci=ci)


def equity_table(frame: pd.DataFrame, alpha: float = 1.0) -> pd.DataFrame:
    """Equity-scaled metrics per attribute from a :func:`generation_metrics` table.

    ES-IS uses the authors' higher-is-better form; ES-FID (plug-in and debiased), ES-KID and
    ES-MiFID use OUR lower-is-better definition, M * (1 + alpha * sum_g |M_g - M| / M) (see
    :func:`fairdiff.evaluate.metrics.equity_scaled`; the paper's formula was not available), computed
    here from the per-group rows. Groups whose value is NaN (fewer than 2 images) are left out and
    ``n_groups`` counts the rest; small groups are kept, as in the paper. Where the table holds
    the same summary with an interval (group ``ES_GROUP``) that interval is attached (alpha = 1);
    the size-matched summaries (``es_fid_matched``, ``es_kid_matched``) are taken from those rows,
    their overall value being the whole sets subsampled to the matched size."""
    columns = ["extractor", "attribute", "metric", "value", "boot_lo", "boot_hi", "overall", "n_groups",
               "higher_is_better"]
    rows = []
    has_group = "group" in frame.columns
    summaries = frame[frame["group"] == ES_GROUP] if has_group else frame.iloc[:0]
    intervals = summaries.set_index(["extractor", "attribute", "metric"])
    per_group = frame[~frame["group"].isin([ES_GROUP, GAP_GROUP, MATCHED_ALL])] if has_group else frame
    scored = per_group[per_group["metric"].isin(LOWER_IS_BETTER)]
    for (extractor, metric), part in scored.groupby(["extractor", "metric"], sort=False):
        overall = part.loc[part["attribute"] == "all", "value"].iloc[0]
        for attr, groups in part[part["attribute"] != "all"].groupby("attribute", sort=False):
            values = groups["value"].dropna()
            lo = hi = np.nan
            if alpha == 1.0 and (extractor, attr, f"es_{metric}") in intervals.index:
                lo, hi = intervals.loc[(extractor, attr, f"es_{metric}"), ["boot_lo", "boot_hi"]]
            rows.append({"extractor": extractor, "attribute": attr, "metric": f"es_{metric}",
                         "value": M.equity_scaled(overall, values.to_numpy(), not LOWER_IS_BETTER[metric], alpha),
                         "boot_lo": lo, "boot_hi": hi, "overall": overall, "n_groups": len(values),
                         "higher_is_better": not LOWER_IS_BETTER[metric]})
    if alpha == 1.0:
        for _, r in summaries[summaries["metric"].isin(["es_fid_matched", "es_kid_matched"])].iterrows():
            base = r["metric"][len("es_"):]
            part = per_group[(per_group["extractor"] == r["extractor"]) & (per_group["attribute"] == r["attribute"])
                             & (per_group["metric"] == base)]
            overall = frame[(frame["extractor"] == r["extractor"]) & (frame["attribute"] == r["attribute"])
                            & (frame["group"] == MATCHED_ALL) & (frame["metric"] == base)]["value"]
            rows.append({"extractor": r["extractor"], "attribute": r["attribute"], "metric": r["metric"],
                         "value": r["value"], "boot_lo": r["boot_lo"], "boot_hi": r["boot_hi"],
                         "overall": overall.iloc[0] if len(overall) else np.nan,
                         "n_groups": int(part["value"].notna().sum()), "higher_is_better": False})
    return pd.DataFrame(rows, columns=columns)
