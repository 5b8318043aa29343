"""Strict configs: every key declared once (configs/mini.yaml), typos and impossible values refused
with the file, the key path and the closest valid key, before any work starts."""
from __future__ import annotations

import pytest

from fairdiff.config import load_config, parse_sets
from fairdiff.errors import ConfigError


def _profile(tmp_path, text, name="user.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_shipped_profile_and_dataset_validates():
    for profile in ("smoke", "mini", "paper"):
        for dataset in ("fairgenmed", "ham10000", "chexpert"):
            cfg = load_config(profile, dataset)
            assert cfg["dataset"] == dataset and cfg["train"]["steps"] >= 1


def test_a_user_profile_anywhere_inherits_by_name(tmp_path):
    path = _profile(tmp_path, "inherit: smoke\nfbp: {window: 5}\n")
    cfg = load_config(path)
    assert cfg["fbp"]["window"] == 5 and cfg["profile"] == "smoke" and cfg["train"]["steps"] == 40


def test_unknown_key_names_the_file_the_path_and_the_closest_key(tmp_path):
    path = _profile(tmp_path, "inherit: smoke\nfbp: {windw: 5}\n")
    with pytest.raises(ConfigError, match=rf"{path}: fbp.windw: unknown key; did you mean 'fbp.window'"):
        load_config(path)


def test_unknown_key_inside_a_dataset_block_is_refused(tmp_path):
    path = _profile(tmp_path, "inherit: smoke\ndatasets: {ham10000: {data: {nn: 5}}}\n")
    with pytest.raises(ConfigError, match=r"data.nn: unknown key; did you mean 'data.n'"):
        load_config(path, "fairgenmed")


@pytest.mark.parametrize("setting, message", [
    ("train.steps=0", r"train.steps: expected a value >= 1, got 0"),
    ("train.steps=-5", r"train.steps: expected a value >= 1, got -5"),
    ("train.batch_size=0", r"train.batch_size: expected a value >= 1"),
    ("fbp.window=1", r"fbp.window: expected a value >= 2"),
    ("fbp.exploitation=1.5", r"fbp.exploitation: expected a value in \[0.0, 1.0\]"),
    ("train.uncond_prob=-0.1", r"train.uncond_prob: expected a value in \[0.0, 1.0\]"),
    ("train.steps=ten", r"train.steps: expected an integer, got 'ten'"),
    ("train.lr=fast", r"train.lr: expected a number, got 'fast'"),
    ("train.ema=1", r"train.ema: expected true or false, got 1"),
    ("sample.scheduler=euler", r"sample.scheduler: expected one of ddim, dpmsolver"),
    ("evaluate.classifiers=[{arch: resnet}]", r"evaluate.classifiers.0: missing image_size"),
    ("methods=[baseline, fairdiffusion]", r"methods.1: expected one of baseline"),
    ("trian.steps=3", r"trian: unknown key; did you mean 'train'"),
])
def test_bad_overrides_fail_with_the_key_path(setting, message):
    with pytest.raises(ConfigError, match=rf"^--set: {message}"):
        load_config("smoke", sets=[setting])


def test_wrong_type_in_a_profile_names_the_profile(tmp_path):
    path = _profile(tmp_path, "inherit: smoke\nevaluate: {n_boot: many}\n")
    with pytest.raises(ConfigError, match=rf"{path}: evaluate.n_boot: expected an integer"):
        load_config(path)


def test_set_overrides_parse_yaml_values_and_nest():
    assert parse_sets(["fbp.window=10", "train.lr=2e-5", "train.ema=false", "methods=[baseline]"]) == {
        "fbp": {"window": 10}, "train": {"lr": 2e-5, "ema": False}, "methods": ["baseline"]}
    cfg = load_config("smoke", sets=["fbp.window=10", "train.lr=2e-5"])
    assert cfg["fbp"]["window"] == 10 and cfg["train"]["lr"] == 2e-5
    with pytest.raises(ConfigError, match="expected key.path=value"):
        parse_sets(["fbp.window"])


def test_inherit_cycle_and_missing_parent_are_clear(tmp_path):
    a = _profile(tmp_path, "inherit: b.yaml\n", "a.yaml")
    _profile(tmp_path, "inherit: a.yaml\n", "b.yaml")
    with pytest.raises(ConfigError, match="forms a cycle"):
        load_config(a)
    with pytest.raises(ConfigError, match="nosuch.yaml: config file not found"):
        load_config(_profile(tmp_path, "inherit: nosuch\n", "c.yaml"))


def test_the_cli_refuses_a_bad_config_in_one_line_before_any_work(tmp_path):
    from fairdiff.cli import main

    runs = tmp_path / "runs"
    code = main(["train", "--config", "smoke", "--method", "baseline", "--runs", str(runs), "--set", "fbp.windw=3"])
    assert code == 2 and not runs.exists()
