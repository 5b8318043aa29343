"""Feature extractors for generation metrics, and FID / MiFID / IS per group from one extraction.

Extractors are injected, never hard-wired: the paper's InceptionV3 needs weights and a package
that cannot be installed offline on a CPU torch, and ImageNet features say little about fundus
photographs anyway. :class:`DomainEncoder` is a small CNN trained on the real train split
(before any generator is scored) to predict the clinical labels; its pooled features play the
role of Inception's pool3 features and its joint-label logits the role of the class logits.

The authors copied each group's images to a folder and re-ran Inception on it, once per metric.
:func:`generation_metrics` extracts every image once and slices the feature arrays by metadata
groups (see benchmarks/bench_eval_features.py for the speed-up).
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
GENERATION_COLUMNS = ["extractor", "attribute", "group", "n_real", "n_fake", "small_group", "metric", "value",
                      "boot_mean", "boot_lo", "boot_hi", "n_valid"]
LOWER_IS_BETTER = {"fid": True, "mifid": True, "is": False}


def _blas_threads_for(dim: int) -> contextlib.AbstractContextManager:
    """One BLAS thread for small matrices, where threads cost more than they save (one sqrtm at
    d = 128: 9 ms on one thread, 290 ms on two, on the shared 2-core machine); Inception's
    2048-d matrices keep the default."""
    return threadpool_limits(limits=1, user_api="blas") if dim <= 512 else contextlib.nullcontext()


def _set_metrics(real_f: np.ndarray, fake_f: np.ndarray, fake_l: np.ndarray, n_boot: int, seed: int,
                 splits: int, cosine_eps: float) -> dict[str, dict]:
    """FID, MiFID and IS of one (real, generated) pair of feature sets, each with its bootstrap."""
    nan = {"point": np.nan, "mean": np.nan, "lo": np.nan, "hi": np.nan, "n_valid": 0}
    out = {"fid": nan, "mifid": nan, "is": nan, "is_std": nan}

    def fid_mifid(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
        fid = M.fid_from_features(real, fake)
        return np.array([fid, M.mifid_from_fid(fid, M.memorization_distance(real, fake, cosine_eps))])

    if len(real_f) >= 2 and len(fake_f) >= 2:
        b = M.bootstrap(fid_mifid, real_f, fake_f, n=n_boot, seed=seed, paired=False)
        for i, metric in enumerate(("fid", "mifid")):
            out[metric] = {k: v[i] for k, v in b.items()}
    if len(fake_l) >= 1:
        out["is"] = M.bootstrap(lambda lg: M.inception_score_from_logits(lg, splits, seed)[0], fake_l,
                                n=n_boot, seed=seed)
        out["is_std"] = {**nan, "point": M.inception_score_from_logits(fake_l, splits, seed)[1]}
    return out


ES_GROUP = "(equity-scaled)"


def _equity_fid_bootstrap(real_f: np.ndarray, fake_f: np.ndarray, real_masks: dict, fake_masks: dict, n_boot: int,
                          seed: int) -> dict[str, dict]:
    """ES-FID of every attribute with a joint bootstrap: each resample draws the whole real and
    generated sets once and recomputes the overall FID and every group's FID from those rows, so
    the interval carries the dependence between the overall and group values. Groups with fewer
    than 2 images in a resample are left out of that resample's ES, as in :func:`equity_table`."""
    attributes = list(dict.fromkeys(a for a, _ in real_masks))

    def es_per_attribute(ri: np.ndarray, fi: np.ndarray) -> np.ndarray:
        real, fake = real_f[ri], fake_f[fi]
        overall = M.fid_from_features(real, fake) if len(ri) >= 2 and len(fi) >= 2 else np.nan
        out = []
        for attr in attributes:
            fids = []
            for (a, group), real_mask in real_masks.items():
                if a == attr:
                    r, f = real[real_mask[ri]], fake[fake_masks[(a, group)][fi]]
                    if len(r) >= 2 and len(f) >= 2:
                        fids.append(M.fid_from_features(r, f))
            out.append(M.equity_scaled(overall, fids, higher_is_better=False) if fids else np.nan)
        return np.array(out)

    b = M.bootstrap(es_per_attribute, np.arange(len(real_f)), np.arange(len(fake_f)), n=n_boot, seed=seed,
                    paired=False)
    return {attr: {k: (float(v[i]) if k != "n_valid" else int(v[i])) for k, v in b.items()}
            for i, attr in enumerate(attributes)}


def generation_metrics(real_images: torch.Tensor, fake_images: torch.Tensor, real_meta: pd.DataFrame,
                       fake_meta: pd.DataFrame, schema: Schema, extractor: FeatureExtractor, n_boot: int = 100,
                       min_group_size: int = 50, seed: int = 0, attributes: list[str] | None = None,
                       splits: int = 10, cosine_eps: float = 0.1, batch_size: int = 256) -> pd.DataFrame:
    """FID, MiFID and IS overall and for every group, from one feature extraction per image set.

    A group's generated images are compared with that group's own real images (groups read from
    each set's metadata ids). Tidy output, one row per (group, metric), columns
    :data:`GENERATION_COLUMNS`: the group sizes, ``small_group`` when either side has fewer than
    ``min_group_size`` images (FID is biased upward and noisy there; with fewer than 2 images it is
    NaN), the point value, and a percentile bootstrap (real and generated sets resampled
    independently). ``is_std`` is IS's spread over its splits, without a bootstrap. Per attribute,
    one more row (group ``ES_GROUP``, metric ``es_fid``) holds ES-FID with a joint bootstrap over
    the whole sets (see :func:`_equity_fid_bootstrap`); :func:`equity_table` reports it.

    Read with care (measured on synthetic FairGenMed, 64 px, domain encoder):
    - resampled sets hold duplicates, so bootstrap FIDs sit above the point value (overall: 1.13,
      interval 0.83-4.7): the interval shows spread, it is not centred on the estimate;
    - IS cuts a group into ``splits`` chunks of ceil(n / splits) images; a group of fewer than
      ``splits`` generated images gets one-image chunks and IS = 1 exactly;
    - ``cosine_eps`` = 0.1 was tuned for Inception features. Domain features of two disjoint real
      sets are already 0.006 apart, so MiFID = FID / distance for any generator; calibrate it, e.g.
      from ``metrics.memorization_distance(real_a, real_b, cosine_eps=1.0)``."""
    for what, imgs, meta in (("real", real_images, real_meta), ("generated", fake_images, fake_meta)):
        if len(imgs) != len(meta):
            raise ValueError(f"{what}: {len(imgs)} images but {len(meta)} metadata rows")
    real_f = extract(extractor, real_images, batch_size)[0].double().numpy()
    fake_f, fake_l = (t.double().numpy() for t in extract(extractor, fake_images, batch_size))
    real_masks = group_masks(real_meta, schema, attributes)
    fake_masks = group_masks(fake_meta, schema, attributes)
    selections = [("all", "all", np.ones(len(real_f), bool), np.ones(len(fake_f), bool))]
    selections += [(attr, group, real_masks[(attr, group)], fake_masks[(attr, group)]) for attr, group in real_masks]

    rows = []
    with _blas_threads_for(extractor.num_features):
        es = _equity_fid_bootstrap(real_f, fake_f, real_masks, fake_masks, n_boot, seed)
    for attr, r in es.items():
        rows.append({"extractor": extractor.name, "attribute": attr, "group": ES_GROUP, "n_real": len(real_f),
                     "n_fake": len(fake_f), "small_group": False, "metric": "es_fid", "value": r["point"],
                     "boot_mean": r["mean"], "boot_lo": r["lo"], "boot_hi": r["hi"], "n_valid": r["n_valid"]})
    for attr, group, real_sel, fake_sel in selections:
        n_real, n_fake = int(real_sel.sum()), int(fake_sel.sum())
        with _blas_threads_for(extractor.num_features):
            results = _set_metrics(real_f[real_sel], fake_f[fake_sel], fake_l[fake_sel], n_boot, seed, splits,
                                   cosine_eps)
        for metric, r in results.items():
            rows.append({"extractor": extractor.name, "attribute": attr, "group": group, "n_real": n_real,
                         "n_fake": n_fake, "small_group": min(n_real, n_fake) < min_group_size, "metric": metric,
                         "value": float(r["point"]), "boot_mean": float(r["mean"]), "boot_lo": float(r["lo"]),
                         "boot_hi": float(r["hi"]), "n_valid": int(r["n_valid"])})
    return pd.DataFrame(rows, columns=GENERATION_COLUMNS)


def equity_table(frame: pd.DataFrame, alpha: float = 1.0) -> pd.DataFrame:
    """ES-FID, ES-MiFID and ES-IS per attribute from a :func:`generation_metrics` table.

    ES-IS uses the authors' higher-is-better form; ES-FID / ES-MiFID use OUR lower-is-better
    definition, FID * (1 + alpha * sum_g |FID_g - FID| / FID) (see
    :func:`fairdiff.evaluate.metrics.equity_scaled`; the paper's formula was not available).
    Groups whose value is NaN (fewer than 2 images) are left out and ``n_groups`` counts the rest;
    small groups are kept, as in the paper. ES-FID carries the bootstrap interval that
    :func:`generation_metrics` computed (``boot_lo``/``boot_hi``; NaN for the others)."""
    rows = []
    es_boot = frame[frame["metric"] == "es_fid"].set_index(["extractor", "attribute"])
    scored = frame[frame["metric"].isin(LOWER_IS_BETTER)]
    for (extractor, metric), part in scored.groupby(["extractor", "metric"], sort=False):
        overall = part.loc[part["attribute"] == "all", "value"].iloc[0]
        for attr, groups in part[part["attribute"] != "all"].groupby("attribute", sort=False):
            values = groups["value"].dropna()
            lo = hi = np.nan
            if metric == "fid" and alpha == 1.0 and (extractor, attr) in es_boot.index:
                lo, hi = es_boot.loc[(extractor, attr), ["boot_lo", "boot_hi"]]
            rows.append({"extractor": extractor, "attribute": attr, "metric": f"es_{metric}",
                         "value": M.equity_scaled(overall, values.to_numpy(), not LOWER_IS_BETTER[metric], alpha),
                         "boot_lo": lo, "boot_hi": hi, "overall": overall, "n_groups": len(values),
                         "higher_is_better": not LOWER_IS_BETTER[metric]})
    return pd.DataFrame(rows, columns=["extractor", "attribute", "metric", "value", "boot_lo", "boot_hi", "overall",
                                       "n_groups", "higher_is_better"])
