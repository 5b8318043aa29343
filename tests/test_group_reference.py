"""Groups compared at matched size (evaluate.reference): the group-balanced synthetic pool, its
generated images, the group_reference_metrics table (known answers, caching), the real-data rule
and that the default (off) leaves every existing stage key as it was."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairdiff import stage_keys, stages
from fairdiff.data.synth import fairgenmed as synth
from fairdiff.errors import ConfigError, DataError
from fairdiff.evaluate.group_reference import COLUMNS, group_reference_from_features
from fairdiff.evaluate.kid import kid_from_features
from fairdiff.evaluate.metrics import fid_from_features
from fairdiff.reference import SPLIT, pool_folder

PER_GROUP = 6
# The study's planted design (configs/study.yaml), with Black and Asian common enough for a tiny dataset.
PLANTED = {"race_prior": [0.2, 0.2, 0.6], "race_pigment": [0.0, 0.6, 0.0], "race_disc_scale": [0.0, 0.12, 0.0],
           "race_difficulty": [0.0, 0.0, 0.0], "ethnicity_difficulty": [0.0, 0.0]}
REQUIRED = ["method", "attribute", "group", "metric", "value", "lo", "hi", "n_real", "n_fake", "majority"]


def _profile(tmp_path: Path, root: Path, per_group: int | None = PER_GROUP, n: int = 60) -> Path:
    attribute = "race" if per_group else "null"
    path = tmp_path / "reference.yaml"
    path.write_text(f"""inherit: smoke
data: {{root: {root}, n: {n}, synth: {json.dumps(PLANTED)}}}
vae: {{steps: 2}}
train: {{steps: 2, checkpoint_every: 2, batch_size: 4}}
sample: {{steps: 2, grid_per_group: 0}}
evaluate: {{encoder: {{epochs: 1}}, reference: {{attribute: {attribute}, per_group: {per_group or 400}}}}}
""")
    return path


def _synthetic_context(tmp_path: Path, **kwargs) -> stages.Context:
    """A context on a synthetic dataset generated into ``tmp_path`` (a set data.root normally means real data)."""
    ctx = stages.context(_profile(tmp_path, tmp_path / "data" / "fairgenmed", **kwargs), runs=tmp_path / "runs")
    ctx.cfg["data"]["synthetic"] = True
    return ctx


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> stages.Context:
    return _synthetic_context(tmp_path_factory.mktemp("reference"))


# ----------------------------------------------------------------------------- the pool
def test_pool_keeps_population_draws_until_every_group_is_full():
    params = synth.FundusSynthParams(**{k: tuple(v) for k, v in PLANTED.items()})
    pool = synth.draw_group_pool("race", 25, seed=4, params=params, first=101)
    assert pool["race"].value_counts().sort_index().tolist() == [25, 25, 25]
    assert pool["number"].min() >= 101 and (pool["split"] == "test").all()
    # every kept subject is exactly the population's subject of that number (so each group's pool
    # follows the group's own distribution), and no number of the population was skipped unless its
    # group was already full
    population = synth.draw_subjects(int(pool["number"].max()), 4, params).set_index("number")
    columns = [c for c in pool.columns if c not in ("number", "split", "use")]
    kept = population.loc[pool["number"], columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, pool[columns].reset_index(drop=True), check_dtype=False)
    skipped = population.drop(index=pool["number"]).loc[101:]
    for number, race in skipped["race"].items():
        assert (pool[pool["number"] < number]["race"] == race).sum() == 25
    # the planted look: the planted group (Black) is darker and has larger discs than White
    means = pool.groupby("race")[["pigment", "disc_scale"]].mean()
    assert means.loc[1, "pigment"] > means.loc[2, "pigment"] + 0.4
    assert means.loc[1, "disc_scale"] > means.loc[2, "disc_scale"] + 0.06


def test_pool_of_a_group_that_never_occurs_is_an_error():
    params = synth.FundusSynthParams(race_prior=(0.0, 0.2, 0.8))
    with pytest.raises(ValueError, match="race groups still short of 3"):
        synth.draw_group_pool("race", 3, params=params, max_draws=200)


def test_pool_folder_is_balanced_disjoint_recorded_and_drawn_once(synthetic):
    records = stages.dataset(synthetic)
    reference = stages.reference_records(synthetic)
    folder = pool_folder(synthetic.cfg, "race", PER_GROUP)
    assert folder.parent == Path(synthetic.cfg["data"]["root"]).parent
    assert reference["race"].value_counts().sort_index().tolist() == [PER_GROUP] * 3
    assert (reference["split"] == SPLIT).all()
    assert not set(reference["id"]) & set(records["id"])  # no subject of train, val or test
    assert all(Path(p).is_relative_to(folder) for p in reference["image_path"])
    saved = json.loads((folder / "synth_params.json").read_text())
    dataset_params = json.loads((Path(synthetic.cfg["data"]["root"]) / "synth_params.json").read_text())
    assert saved["params"] == dataset_params["params"] and saved["seed"] == dataset_params["seed"]
    assert saved["params"]["race_pigment"] == PLANTED["race_pigment"]
    pool = json.loads((folder / synth.POOL_FILE).read_text())
    assert pool | {"drawn": 0} == {"attribute": "race", "per_group": PER_GROUP, "first": 61, "drawn": 0}
    before = (folder / "synth_params.json").stat().st_mtime_ns
    again = stages.reference_records(_synthetic_context(Path(synthetic.cfg["data"]["root"]).parents[1]))
    assert (folder / "synth_params.json").stat().st_mtime_ns == before  # reused, not redrawn
    assert again["id"].tolist() == reference["id"].tolist()


DRAW = """import json, os, sys
import fairdiff
from fairdiff.reference import ensure_reference_pool
folder = ensure_reference_pool(json.loads(open(sys.argv[1]).read()), "race", 4)
print(os.stat(folder).st_ino)
"""


def test_processes_that_need_the_pool_at_once_draw_it_once(synthetic, tmp_path):
    """Two processes (parallel study arms) ask for a pool that does not exist yet: one draws it, the
    other waits and takes the same folder instead of drawing it again or failing."""
    import os
    import subprocess
    import sys

    cfg = copy.deepcopy(synthetic.cfg)
    cfg["data"]["root"] = str(tmp_path / "fairgenmed")  # the pool goes beside it; the dataset itself is not needed
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", DRAW, str(tmp_path / "cfg.json")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in outs]
    folder = pool_folder(cfg, "race", 4)
    assert {out.strip() for out, _ in outs} == {str(os.stat(folder).st_ino)}  # one folder, never replaced
    assert pd.read_csv(folder / "data_summary.csv")["race"].value_counts().tolist() == [4, 4, 4]


# ----------------------------------------------------------------------------- generated images and the table
def test_reference_images_and_table(synthetic, monkeypatch, one_thread):
    reference = stages.reference_records(synthetic)
    manifest = stages.sampled(synthetic, "baseline", SPLIT)
    assert manifest["race"].value_counts().sort_index().tolist() == [PER_GROUP] * 3
    by_id = reference.set_index("id")
    assert (manifest["prompt"].to_numpy() == by_id.loc[manifest["id"], "prompt"].to_numpy()).all()
    from fairdiff.sample import image_seed
    assert manifest["seed"].tolist() == [image_seed(synthetic.cfg["seed"], i) for i in manifest["id"]]
    assert all(Path(p).is_file() for p in manifest["path"])

    table = stages.group_reference_table(synthetic, "baseline")
    assert list(table.columns[:len(REQUIRED)]) == REQUIRED
    assert (table["n_real"] == PER_GROUP).all() and (table["n_fake"] == PER_GROUP).all()
    assert set(table["majority"]) == {"White"}  # the largest group of the training records
    wide = table.pivot(index="group", columns="metric", values="value")
    assert sorted(wide.index) == ["Asian", "Black", "White"]
    for metric in ("fid", "kid"):
        for group in ("Asian", "Black"):
            assert wide.loc[group, f"{metric}_minus_majority"] == pytest.approx(
                wide.loc[group, metric] - wide.loc["White", metric], rel=1e-5, abs=1e-9)
        assert np.isnan(wide.loc["White", f"{metric}_minus_majority"])
    assert ((table["lo"] <= table["value"]) & (table["value"] <= table["hi"])).all()

    # a second call is a cache hit: nothing is recomputed or rewritten
    path = synthetic.layout.evaluation / "group_reference-baseline.csv"
    before = path.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("recomputed")
    monkeypatch.setattr("fairdiff.evaluate.group_reference.group_reference_metrics", fail)
    pd.testing.assert_frame_equal(stages.group_reference_table(synthetic, "baseline"), table)
    assert path.stat().st_mtime_ns == before


# ----------------------------------------------------------------------------- known answers
def _groups(rng, n_per_group, dim=6):
    ids = np.repeat(np.arange(3), n_per_group)
    return rng.normal(size=(len(ids), dim)), ids


def test_fid_and_kid_known_answers():
    rng = np.random.default_rng(0)
    real, ids = _groups(rng, 80)
    same = group_reference_from_features(real, real.copy(), ids, ids, ("a", "b", "c"), "race", "c", "toy")
    fid = same[same["metric"] == "fid"]
    assert np.abs(fid["value"]).max() < 1e-8  # generated = a copy of real: FID 0
    fake, _ = _groups(rng, 80)
    shift = np.zeros(fake.shape[1])
    shift[0] = 3.0
    fake[ids == 1] += shift  # group b drifts by a mean shift of length 3: FID grows by about 9
    table = group_reference_from_features(real, fake, ids, ids, ("a", "b", "c"), "race", "c", "toy", kid_subsets=7)
    assert list(table.columns) == COLUMNS
    value = table.set_index(["group", "metric"])["value"]
    for g, gid in (("a", 0), ("b", 1), ("c", 2)):  # the stand-alone functions, on the group's rows
        r, f = real[ids == gid], fake[ids == gid]
        assert value[(g, "fid")] == pytest.approx(fid_from_features(r, f), rel=1e-9)
        assert value[(g, "kid")] == pytest.approx(kid_from_features(r, f, 1000, 7)[0], rel=1e-9, abs=1e-12)
    assert value[("b", "fid")] > value[("a", "fid")] + 7
    assert value[("b", "fid_minus_majority")] == pytest.approx(value[("b", "fid")] - value[("c", "fid")])
    assert value[("b", "kid_minus_majority")] > 0
    rows = table.set_index(["group", "metric"])
    lo, hi = rows.loc[("b", "fid_minus_majority"), ["lo", "hi"]]
    assert 0 < lo < 9 < hi  # the interval excludes no gap and covers the planted one
    lo, hi = rows.loc[("a", "fid_minus_majority"), ["lo", "hi"]]
    assert lo < 0 < hi  # two groups drawn alike: their difference is not distinguishable from 0


def test_unmatched_group_sizes_are_refused():
    rng = np.random.default_rng(1)
    real, ids = _groups(rng, 10)
    fake_ids = ids.copy()
    fake_ids[0] = 1
    with pytest.raises(ValueError, match="race group a: expected as many real as generated images"):
        group_reference_from_features(real, real, ids, fake_ids, ("a", "b", "c"), "race", "c", "toy")


# ----------------------------------------------------------------------------- real data
def test_real_test_split_too_small_is_a_clear_error(synthetic_fairgenmed, tmp_path):
    ctx = stages.context(_profile(tmp_path, synthetic_fairgenmed, per_group=400), runs=tmp_path / "runs")
    assert not ctx.cfg["data"]["synthetic"]
    with pytest.raises(DataError, match=r"(?s)test split of .*'race'.*at least 400 images of every race group.*"
                                        r"evaluate.reference.per_group.*of group Asian"):
        stages.reference_records(ctx)


def test_real_test_split_is_subsampled_seeded_per_group(synthetic_fairgenmed, tmp_path):
    ctx = stages.context(_profile(tmp_path, synthetic_fairgenmed, per_group=2), runs=tmp_path / "runs",
                         sets=["evaluate.reference.attribute=gender"])
    records = stages.dataset(ctx)
    chosen = stages.reference_records(ctx)
    test_ids = set(records.loc[records["split"] == "test", "id"])
    assert set(chosen["id"]) <= test_ids and chosen["gender"].value_counts().tolist() == [2, 2]
    again = stages.context(_profile(tmp_path, synthetic_fairgenmed, per_group=2), runs=tmp_path / "runs",
                           sets=["evaluate.reference.attribute=gender"])
    assert stages.reference_records(again)["id"].tolist() == chosen["id"].tolist()
    assert chosen.attrs["subsampled"]


def test_settings_are_checked(synthetic_fairgenmed, tmp_path):
    with pytest.raises(ConfigError, match="evaluate.reference.per_group"):
        stages.context(_profile(tmp_path, synthetic_fairgenmed), sets=["evaluate.reference.per_group=1"])
    ctx = stages.context(_profile(tmp_path, synthetic_fairgenmed), sets=["evaluate.reference.attribute=age"])
    with pytest.raises(ConfigError, match="'age' is not an attribute of fairgenmed"):
        stages.reference_records(ctx)
    off = stages.context(_profile(tmp_path, synthetic_fairgenmed, per_group=None))
    with pytest.raises(ConfigError, match="evaluate.reference.attribute: null"):
        stages.group_reference_table(off, "baseline")


# ----------------------------------------------------------------------------- the default changes nothing
def test_the_setting_is_in_no_existing_key(synthetic_fairgenmed, tmp_path):
    off = stages.context(_profile(tmp_path, synthetic_fairgenmed, per_group=None))
    on = stages.context(_profile(tmp_path, synthetic_fairgenmed))
    older = copy.deepcopy(off.cfg)  # a config from before the setting existed
    del older["evaluate"]["reference"]
    assert not any(k.startswith("evaluate.reference") for k in stage_keys.OMITTED_AT)  # not needed: never read
    for cfg in (off.cfg, on.cfg):
        for name in ("dataset", "base", "encoder"):
            assert stage_keys.stage(name, cfg).key == stage_keys.stage(name, older).key
        for method in ("baseline", "fairbo"):
            assert stage_keys.train_stage(cfg, method).key == stage_keys.train_stage(older, method).key
            for split in ("train", "test"):
                ctx = stages.Context(cfg, off.schema, off.layout, off.figures)
                assert stages._sample_stage(ctx, method, split) == stage_keys.sample_stage(older, method, split)
    older_ctx = stages.Context(older, off.schema, off.layout, off.figures)
    for table in ("generation", "fidelity", "semantic"):
        legacy = stages._table_stage(older_ctx, table, {"samples": "k"}, method="baseline")
        for ctx in (off, on):
            st = stages._table_stage(ctx, table, {"samples": "k"}, method="baseline")
            assert not [k for k in st.settings if k.startswith("evaluate.reference")]
            assert st.key == legacy.key
    # the reference's own keys follow its settings
    assert stages._sample_stage(on, "baseline", SPLIT).key != stages._sample_stage(
        stages.context(_profile(tmp_path, synthetic_fairgenmed, per_group=7)), "baseline", SPLIT).key
