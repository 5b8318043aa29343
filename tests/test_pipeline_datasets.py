"""HAM10000 and CheXpert through the same pipeline: synthesise -> train -> sample -> evaluate.

Only the schema and the profile's dataset block change between datasets; this runs every stage
for real at a toy size and checks the artefacts each stage hands to the next."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fairdiff.config import load_config
from fairdiff.evaluate.features import generation_metrics, train_domain_encoder
from fairdiff.imagesets import generated_uint8, real_uint8, to_unit_tensor
from fairdiff.prepare import ensure_dataset, prepare_base
from fairdiff.sample import sample_run
from fairdiff.schema import get_schema
from fairdiff.train import train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("dataset", ["ham10000", "chexpert"])
def test_train_sample_evaluate(dataset, tmp_path):
    cfg = load_config("smoke", dataset, {"data": {"n": 60}, "vae": {"steps": 3},
                                         "train": {"steps": 4, "checkpoint_every": 4, "batch_size": 4},
                                         "fbp": {"window": 2}, "sample": {"steps": 2, "grid_per_group": 1}})
    cfg["data"]["root"] = str(tmp_path / "data")
    schema = get_schema(dataset)
    records = ensure_dataset(cfg, progress=False)
    prepare_base(cfg, tmp_path / "base", progress=False)
    run = train(cfg, "fairbo", tmp_path / "run", str(tmp_path / "base"), tmp_path / "base" / "cache", progress=False)
    metrics = pd.read_csv(run / "metrics.csv")
    sigma_cols = [c for c in metrics.columns if c.startswith("sigma[")]
    assert len(sigma_cols) == sum(schema.n_groups)  # HAM 2 + 2, CheXpert 2 + 3

    out = sample_run(run, split="test", out=tmp_path / "samples", progress=False)
    manifest = pd.read_csv(out / "manifest.csv", dtype={"id": str})
    from fairdiff.data import load_dataset

    frame = load_dataset(dataset, records)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    assert list(manifest["id"]) == list(test["id"])
    grid = pd.read_csv(out / "grid" / "manifest.csv")
    assert len(grid) == sum(schema.n_groups)

    train_frame = frame[frame["split"] == "train"].reset_index(drop=True)
    res = cfg["data"]["resolution"]
    encoder = train_domain_encoder(to_unit_tensor(real_uint8(train_frame, schema, res)), train_frame, schema,
                                   epochs=1, in_res=res)
    table = generation_metrics(to_unit_tensor(real_uint8(test, schema, res)), to_unit_tensor(generated_uint8(manifest)),
                               test, manifest, schema, encoder, n_boot=5, min_group_size=5)
    overall = table[(table["attribute"] == "all") & (table["metric"] == "fid")]
    assert np.isfinite(overall["value"]).all() and (overall["value"] >= 0).all()
    assert set(table["attribute"]) >= set(schema.attribute_names)
    assert torch.from_numpy(generated_uint8(manifest)).shape[1:] == (res, res, 3)
