"""Semantic correlation: classifiers trained on generated images and tested on real ones.

If a generator renders the clinical signs a prompt asks for, a classifier trained only on its
images should recognise those signs in real images, and equally well for every group. This
module trains such a classifier (selecting the epoch by real-validation AUC, as the authors did)
and scores it on real test images: AUC, accuracy, their equity-scaled versions, per-group AUC,
DPD/EOD and between-group disparity, each with a bootstrap interval and the bootstrap mean and
standard deviation (the authors' form).

Images stream: every function here takes an *image source*, read one batch at a time and kept
uint8 until the model (see :func:`image_batches`), so memory is bounded by the batch whatever the
size of the set; models run on the GPU when there is one.

The seeded training helpers here (:func:`seeded`, :func:`train_epoch`, :func:`batched`,
:class:`InputAdapter`, :func:`conv_trunk`, :func:`image_batches`) are also used by the domain
feature encoder.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fairdiff.errors import ConfigError, DataError
from fairdiff.evaluate import metrics as M
from fairdiff.evaluate.groups import group_ids, group_names
from fairdiff.schema import Schema

# The paper's backbones, built with transformers (timm needs torchvision, which does not import
# beside the CPU torch): the hub id of the ImageNet weights, the model class and the config.
PAPER_BACKBONES = {
    "efficientnet_b1": {
        "hub_id": "google/efficientnet-b1", "model": "EfficientNetForImageClassification",
        "config": "EfficientNetConfig", "image_size": 200,
        # EfficientNet-B1's compound scaling (width 1.0, depth 1.1), head and padding as google/efficientnet-b1.
        "settings": dict(width_coefficient=1.0, depth_coefficient=1.1, hidden_dim=1280, dropout_rate=0.2,
                         depthwise_padding=[16])},
    "vit_b16": {
        "hub_id": "google/vit-base-patch16-224", "model": "ViTForImageClassification", "config": "ViTConfig",
        "image_size": 224,
        "settings": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                         patch_size=16)},
}
ARCHS = ("small_cnn", *PAPER_BACKBONES)


# ----------------------------------------------------------------------------- shared torch helpers
@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def default_device(device: torch.device | str | None = None) -> torch.device:
    """``device`` if given, else the GPU when there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def as_unit_float(images: torch.Tensor) -> torch.Tensor:
    """float32 images in [0, 1] from float or uint8 input (torchmetrics' IS feeds uint8 0..255)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected a [N, 3, H, W] tensor, got shape {tuple(images.shape)}")
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


class InputAdapter(nn.Module):
    """Accept any image size and float/uint8 input; resize to the network's square resolution.

    Real and generated images may come at different sizes; resizing inside the model keeps every
    caller free of preprocessing and the comparison fair (antialiased bilinear, no normalisation,
    as in the authors' classifiers)."""

    def __init__(self, in_res: int):
        super().__init__()
        self.in_res = in_res

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = as_unit_float(images)
        if x.shape[-2:] != (self.in_res, self.in_res):
            x = F.interpolate(x, size=(self.in_res, self.in_res), mode="bilinear", align_corners=False, antialias=True)
        return x


def conv_trunk(widths: tuple[int, ...]) -> nn.Sequential:
    """Conv3x3-BN-ReLU blocks, each halving the resolution, then global average pooling to [N, widths[-1]]."""
    layers: list[nn.Module] = []
    in_ch = 3
    for width in widths:
        layers += [nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        in_ch = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


def minibatches(n_rows: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled row indices in batches (the last one may be smaller)."""
    order = torch.randperm(n_rows, generator=generator)
    yield from order.split(batch_size)


# ----------------------------------------------------------------------------- image sources
def _item_pixels(item) -> torch.Tensor:
    return item["pixel_values"] if isinstance(item, dict) else item


def _stack_items(items) -> torch.Tensor:
    return torch.stack([_item_pixels(item) for item in items])


def image_batches(images, batch_size: int = 256, rows: Iterable | None = None,
                  num_workers: int = 0) -> Iterator[torch.Tensor]:
    """[B, 3, H, W] batches of an image source, in the dtype it stores (uint8 stays uint8).

    A source is one of:
    - a torch tensor [N, 3, H, W] (float in [0, 1] or uint8), sliced in memory;
    - an array [N, H, W, 3] of uint8 pixels (numpy, a memory map, or
      :class:`fairdiff.arrays.NpyRows`, which reads only the rows asked for);
    - a torch ``Dataset`` whose items are [3, H, W] tensors or dicts with ``pixel_values``
      (e.g. :class:`fairdiff.imagesets.RealImages`, :class:`fairdiff.imagesets.GeneratedImages`),
      decoded per batch by ``num_workers`` DataLoader workers.
    ``rows`` gives the batches' row indices (default: consecutive rows, ``batch_size`` at a time).
    Arrays and Datasets give contiguous [B, 3, H, W] batches, tensors their own layout (a
    convolution's last bits can depend on the memory layout, so one source type always feeds one)."""
    n = len(images)
    batches = [torch.as_tensor(r, dtype=torch.long) for r in rows] if rows is not None else \
        list(torch.arange(n).split(batch_size))
    if isinstance(images, torch.Tensor):
        for r in batches:
            yield images[r]
    elif isinstance(images, Dataset):
        loader = DataLoader(images, batch_sampler=[r.tolist() for r in batches], num_workers=num_workers,
                            collate_fn=_stack_items)
        yield from loader
    else:
        if len(getattr(images, "shape", ())) != 4 or images.shape[-1] != 3:
            raise ValueError(f"images: expected a [N, 3, H, W] tensor, a [N, H, W, 3] uint8 array or a Dataset; "
                             f"got {type(images).__name__} of shape {getattr(images, 'shape', None)}")
        for r in batches:
            chunk = images[r.numpy()]
            yield (chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.asarray(chunk))
                   ).permute(0, 3, 1, 2).contiguous()


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batch_loss: Callable[..., torch.Tensor],
                n_rows: int, batch_size: int, generator: torch.Generator, images=None,
                num_workers: int = 0) -> float:
    """One pass over shuffled rows; returns the mean loss.

    ``batch_loss(rows)`` returns the loss of those rows; with an image source ``images``, it is
    called as ``batch_loss(rows, batch)`` with those rows' images, read ahead by ``num_workers``
    workers for a Dataset. The shuffle is the same either way."""
    model.train()
    total, seen = 0.0, 0
    batches = list(minibatches(n_rows, batch_size, generator))
    fetched = image_batches(images, rows=batches, num_workers=num_workers) if images is not None else None
    for rows in batches:
        loss = batch_loss(rows, next(fetched)) if fetched is not None else batch_loss(rows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(rows)
        seen += len(rows)
    return total / max(seen, 1)


def device_of(module: nn.Module) -> torch.device:
    """Where a module's weights live (CPU for a module without any)."""
    return next(module.parameters(), torch.empty(0)).device


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on a GPU (as the authors' AMP), nothing on the CPU (float32, reproducible)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def batched(fn: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]], x, batch_size: int = 256,
            device: torch.device | str = "cpu", num_workers: int = 0) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Apply ``fn`` to an image source (see :func:`image_batches`) in batches on ``device``, without
    gradients; the outputs (tuples element-wise) are gathered on the CPU.

    Only one batch of images is in memory besides the outputs, which are written into tensors
    allocated once after the first batch: many small outputs kept between large transient
    batches would fragment the heap, and resident memory would then grow with the number of
    images (measured: +60 KiB per 128 px image)."""
    n, filled, outputs = len(x), 0, None
    for chunk in image_batches(x, batch_size, num_workers=num_workers):
        out = fn(chunk.to(device))
        parts = out if isinstance(out, tuple) else (out,)
        if outputs is None:
            outputs = tuple(torch.empty((n, *p.shape[1:]), dtype=p.dtype) for p in parts)
        for target, part in zip(outputs, parts):
            target[filled:filled + len(part)] = part
        filled += len(parts[0])
    if outputs is None:
        raise ValueError("batched: the image source is empty")
    return outputs if isinstance(out, tuple) else outputs[0]


def predict_proba(model: nn.Module, images, batch_size: int = 256, num_workers: int = 0) -> np.ndarray:
    """Class probabilities [N, C] in eval mode (float64 numpy), for any image source."""
    model.eval()
    device = device_of(model)

    def logits(x: torch.Tensor) -> torch.Tensor:
        with autocast_for(device):
            return model(x).float()

    out = batched(logits, images, batch_size, device, num_workers)
    return torch.softmax(out.double(), dim=1).numpy()


# ----------------------------------------------------------------------------- models
class SmallCNN(nn.Module):
    """The default classifier: four conv blocks and a linear head.

    Trains in about a minute on 2 CPU cores (800 images at 64 px, 10 epochs: 65 s measured)."""

    def __init__(self, n_classes: int, in_res: int = 64, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        self.adapt = InputAdapter(in_res)
        self.trunk = conv_trunk(widths)
        self.head = nn.Linear(widths[-1], n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(self.adapt(images)))


class HFBackbone(nn.Module):
    """A transformers image classifier as a plain module: images in, logits out."""

    def __init__(self, net: nn.Module, interpolate_pos_encoding: bool = False):
        super().__init__()
        self.net = net
        self.interpolate_pos_encoding = interpolate_pos_encoding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = {"interpolate_pos_encoding": True} if self.interpolate_pos_encoding else {}
        return self.net(pixel_values=x, **extra).logits


def missing_weights_error(arch: str, path: Path, what: str) -> DataError:
    """The error for a configured weights path that holds no usable weights: names the file and how to get it."""
    spec = PAPER_BACKBONES[arch]
    return DataError(path, None, (
        f"the ImageNet weights of {arch} ({spec['hub_id']}): a folder written by {spec['model']}.save_pretrained "
        f"(config.json + model.safetensors). They cannot be downloaded here; "
        f"on a machine with internet run `from transformers import {spec['model']}; "
        f"{spec['model']}.from_pretrained('{spec['hub_id']}').save_pretrained('{path}')` and copy the folder to "
        f"this path (or set weights: null to train from random initialisation)"), what)


def _transformers_backbone(arch: str, n_classes: int, in_res: int, weights_path: str | Path | None,
                           overrides: dict | None) -> tuple[nn.Module, str]:
    """(network, how it was initialised) for a paper backbone, from local weights or at random."""
    import transformers

    spec = PAPER_BACKBONES[arch]
    model_cls, config_cls = getattr(transformers, spec["model"]), getattr(transformers, spec["config"])
    settings = {**spec["settings"], "image_size": in_res, **(overrides or {})}
    if weights_path is None:
        return model_cls(config_cls(**settings, num_labels=n_classes)), "random initialisation (no weights configured)"
    path = Path(weights_path)
    if path.is_file() and (path.parent / "config.json").is_file():  # the weights file of a save_pretrained folder
        path = path.parent
    if not path.exists():
        raise missing_weights_error(arch, path, "missing")
    if not (path / "config.json").is_file():
        raise missing_weights_error(arch, path, "a file or folder without a config.json beside the weights")
    net = model_cls.from_pretrained(path, num_labels=n_classes, ignore_mismatched_sizes=True, local_files_only=True,
                                    **(overrides or {}))
    return net, f"pretrained weights from {path} (new {n_classes}-class head)"


def build_classifier(arch: str, n_classes: int, in_res: int = 64, weights_path: str | Path | None = None,
                     config_overrides: dict | None = None) -> nn.Module:
    """``small_cnn`` (built in), or the paper's ``efficientnet_b1`` (200 px) / ``vit_b16`` (224 px).

    The paper's backbones are transformers models with EfficientNet-B1's or ViT-B/16's sizes,
    ImageNet-initialised from a local ``weights_path`` (a ``save_pretrained`` folder of
    google/efficientnet-b1 or google/vit-base-patch16-224, or the weights file in it; the
    1000-class head is replaced) or randomly initialised when it is None; ``config_overrides``
    changes their config (tests build tiny ones). The model takes images of any size (uint8 or
    float in [0, 1], resized to ``in_res`` inside, no normalisation: the authors' input) and
    records how it was initialised in ``model.init``."""
    if arch == "small_cnn":
        if weights_path is not None or config_overrides:
            raise ConfigError("small_cnn has no pretrained weights or config; weights and config overrides are for "
                              f"{' and '.join(PAPER_BACKBONES)}")
        model = SmallCNN(n_classes, in_res)
        model.init = "random initialisation"
        return model
    if arch not in PAPER_BACKBONES:
        raise ConfigError(f"unknown classifier arch {arch!r}; expected one of {list(ARCHS)}")
    net, init = _transformers_backbone(arch, n_classes, in_res, weights_path, config_overrides)
    interpolate = arch == "vit_b16" and in_res != net.config.image_size
    model = nn.Sequential(InputAdapter(in_res), HFBackbone(net, interpolate))
    model.init = init
    return model


CLASSIFIER_KEYS = ("arch", "image_size", "lr", "epochs", "batch_size", "weights")


def classifier_settings(entry: dict, resolution: int, where: str = "evaluate.classifiers") -> dict:
    """:func:`train_classifier`'s keyword arguments from one ``evaluate.classifiers`` entry
    ({arch, image_size (None: the data resolution), lr, epochs, batch_size, weights})."""
    unknown, missing = sorted(set(entry) - set(CLASSIFIER_KEYS)), [k for k in CLASSIFIER_KEYS if k not in entry]
    if unknown or missing:
        raise ConfigError(f"{where}: entry {entry!r} has unknown keys {unknown} / lacks {missing}; "
                          f"expected exactly {list(CLASSIFIER_KEYS)}")
    if entry["arch"] not in ARCHS:
        raise ConfigError(f"{where}.arch: expected one of {list(ARCHS)}; got {entry['arch']!r}")
    return {"arch": entry["arch"], "in_res": int(entry["image_size"] or resolution), "lr": float(entry["lr"]),
            "epochs": int(entry["epochs"]), "batch_size": int(entry["batch_size"]),
            "weights_path": entry["weights"]}


# ----------------------------------------------------------------------------- training
def train_classifier(train_x, train_y: np.ndarray | torch.Tensor, val_x, val_y: np.ndarray | torch.Tensor,
                     n_classes: int, epochs: int = 10, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                     arch: str = "small_cnn", in_res: int = 64, weights_path: str | Path | None = None,
                     weight_decay: float = 0.01, device: torch.device | str | None = None, num_workers: int = 0,
                     config_overrides: dict | None = None) -> tuple[nn.Module, pd.DataFrame]:
    """Train with cross-entropy (AdamW) and keep the epoch with the best validation AUC.

    ``train_x`` and ``val_x`` are image sources (:func:`image_batches`: tensors, uint8 arrays or
    Datasets read per batch by ``num_workers`` workers); batches move to ``device`` (default: the
    GPU when there is one, with bf16 autocast) as uint8 and become floats inside the model.
    :func:`classifier_settings` turns a config entry into ``arch``, ``in_res``, ``lr``, ``epochs``,
    ``batch_size`` and ``weights_path``.

    Returns the model (in eval mode, holding the selected epoch's weights) and a per-epoch
    history (epoch, train_loss, val_auc, val_acc, selected, arch, init). The epoch with the
    highest val AUC wins, ties (common once AUC reaches 1 on an easy task) going to the higher
    val accuracy, then to the earlier epoch; an undefined AUC (one class in val) ranks last. Same
    seed, same model (on the CPU; GPU kernels need not be deterministic). Defaults (lr 3e-3,
    batch 32) from synthetic FairGenMed at 64 px, 8 epochs: glaucoma test AUC 0.97, against 0.85
    with lr 1e-3 and batch 64. Not reproduced from the authors' recipes: ViT's warm-up, cosine
    schedule and layer-wise lr decay, and EfficientNet's AdamW betas (0.0, 0.1)."""
    train_y = torch.tensor(np.asarray(train_y), dtype=torch.long)
    val_y = np.asarray(val_y, dtype=np.int64)
    if len(train_y) != len(train_x) or len(val_y) != len(val_x):
        raise ValueError(f"images and labels differ in length: train {len(train_x)} vs {len(train_y)}, "
                         f"val {len(val_x)} vs {len(val_y)}")
    device = default_device(device)
    with seeded(seed):
        model = build_classifier(arch, n_classes, in_res, weights_path, config_overrides).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        generator = torch.Generator().manual_seed(seed)

        def batch_loss(rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            with autocast_for(device):
                logits = model(x.to(device))
            return F.cross_entropy(logits.float(), train_y[rows].to(device))

        rows, best_state, best_key = [], None, (-np.inf, -np.inf)
        for epoch in range(1, epochs + 1):
            loss = train_epoch(model, optimizer, batch_loss, len(train_x), batch_size, generator, images=train_x,
                               num_workers=num_workers)
            proba = predict_proba(model, val_x, batch_size=256, num_workers=num_workers)
            val_auc, val_acc = M.auc(val_y, proba, n_classes), M.accuracy(val_y, proba.argmax(1))
            rows.append({"epoch": epoch, "train_loss": loss, "val_auc": val_auc, "val_acc": val_acc})
            key = tuple(v if np.isfinite(v) else -np.inf for v in (val_auc, val_acc))
            if best_state is None or key > best_key:
                best_key, best_epoch = key, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    history = pd.DataFrame(rows)
    history["selected"] = history["epoch"] == best_epoch
    history["arch"], history["init"] = arch, model.init
    return model, history


# ----------------------------------------------------------------------------- evaluation
SEMANTIC_COLUMNS = ["task", "attribute", "group", "n", "metric", "value", "boot_mean", "boot_std", "boot_lo",
                    "boot_hi", "n_valid"]


def semantic_evaluation(model: nn.Module, test_x, test_y: np.ndarray | torch.Tensor,
                        test_meta: pd.DataFrame, schema: Schema, task: str, n_boot: int = 100, seed: int = 0,
                        attributes: list[str] | None = None, alpha: float = 1.0,
                        batch_size: int = 256, num_workers: int = 0) -> pd.DataFrame:
    """Score a classifier on real test images (any image source), overall and per sensitive attribute.

    A tidy frame, one row per value (columns :data:`SEMANTIC_COLUMNS`):
    - attribute ``all``: ``auc``, ``acc``;
    - per attribute and group: ``auc``, ``acc`` (with the group's size ``n``);
    - per attribute (group ``""``): ``es_auc``, ``es_acc``, ``dpd``, ``eod``, ``std_disparity``,
      ``max_disparity`` (AUC-based, as the authors).
    Groups come from the metadata ids (unknown -1 rows count overall, in no group); a group with
    no test rows is left out of the attribute's summaries. Bootstrap: the test rows are resampled
    jointly ``n_boot`` times and every metric recomputed on each resample: ``boot_lo``/``boot_hi``
    are our percentile interval, ``boot_mean`` and ``boot_std`` the authors' report (mean and
    population standard deviation, numpy's default, over the valid resamples)."""
    n_classes = schema.label(task).n_classes
    y = np.asarray(test_y, dtype=np.int64)
    if len(y) != len(test_x) or len(test_meta) != len(test_x):
        raise ValueError(f"test images ({len(test_x)}), labels ({len(y)}) and metadata ({len(test_meta)}) "
                         "differ in length")
    attributes = schema.attribute_names if attributes is None else attributes
    group_matrix = np.stack([group_ids(test_meta, schema, a) for a in attributes], axis=1)
    proba = predict_proba(model, test_x, batch_size, num_workers)
    present = {a: [g for g in range(len(group_names(schema, a))) if (group_matrix[:, j] == g).any()]
               for j, a in enumerate(attributes)}

    keys: list[tuple[str, str, str, int]] = [("all", "", "auc", len(y)), ("all", "", "acc", len(y))]  # + row count
    for j, a in enumerate(attributes):
        ids = group_matrix[:, j]
        keys += [(a, group_names(schema, a)[g], m, int((ids == g).sum())) for g in present[a] for m in ("auc", "acc")]
        keys += [(a, "", m, int((ids >= 0).sum()))
                 for m in ("es_auc", "es_acc", "dpd", "eod", "std_disparity", "max_disparity")]

    def all_metrics(y_: np.ndarray, proba_: np.ndarray, groups_: np.ndarray) -> np.ndarray:
        pred = proba_.argmax(1)
        overall_auc, overall_acc = M.auc(y_, proba_, n_classes), M.accuracy(y_, pred)
        out = [overall_auc, overall_acc]
        for j, a in enumerate(attributes):
            g_ids = groups_[:, j]
            in_sample = [g for g in present[a] if (g_ids == g).any()]
            aucs = {g: M.auc(y_[g_ids == g], proba_[g_ids == g], n_classes) for g in in_sample}
            accs = {g: M.accuracy(y_[g_ids == g], pred[g_ids == g]) for g in in_sample}
            for g in present[a]:
                out += [aucs.get(g, np.nan), accs.get(g, np.nan)]
            out += [M.equity_scaled(overall_auc, aucs, higher_is_better=True, alpha=alpha),
                    M.equity_scaled(overall_acc, accs, higher_is_better=True, alpha=alpha),
                    *M.fairness_differences(y_, pred, g_ids, n_classes),
                    *M.between_group_disparity(overall_auc, aucs)]
        return np.asarray(out, dtype=np.float64)

    values: list[np.ndarray] = []  # the point estimate, then one row per resample

    def recorded(*arrays) -> np.ndarray:
        values.append(all_metrics(*arrays))
        return values[-1]

    boot = M.bootstrap(recorded, y, proba, group_matrix, n=n_boot, seed=seed, paired=True)
    if len(values) != n_boot + 1:
        raise RuntimeError(f"bootstrap evaluated the metrics {len(values)} times, expected {n_boot + 1}")
    boot_std = _nanstd(np.array(values[1:]).reshape(n_boot, len(keys)))
    rows = [{"task": task, "attribute": attribute, "group": group, "n": n, "metric": metric,
             "value": boot["point"][i], "boot_mean": boot["mean"][i], "boot_std": boot_std[i],
             "boot_lo": boot["lo"][i], "boot_hi": boot["hi"][i], "n_valid": int(boot["n_valid"][i])}
            for i, (attribute, group, metric, n) in enumerate(keys)]
    return pd.DataFrame(rows, columns=SEMANTIC_COLUMNS)


def _nanstd(replicates: np.ndarray) -> np.ndarray:
    """Population standard deviation per column over the finite resamples (NaN where there are none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: the answer is NaN
        return np.nanstd(replicates, axis=0)
