"""Nothing overwritten in silence: sample folders made for another run or sampler are regenerated
whole (a manifest never describes images it did not write), foreign folders are refused, and the
command line reports expected errors in one line with exit status 2."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import tiny_config
from fairdiff import stage_keys
from fairdiff.errors import RunConflict
from fairdiff.sample import sample_stage_run
from fairdiff.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(synthetic_fairgenmed, prepared_base, tmp_path_factory):
    _, base = prepared_base
    cfg = tiny_config(synthetic_fairgenmed)
    cfg["sample"].update(steps=2, grid_per_group=1)
    return cfg, train(cfg, "baseline", tmp_path_factory.mktemp("r") / "baseline", str(base), base / "cache",
                      progress=False)


def _stage(cfg, sample):
    return stage_keys.stage("sample", {"sample": sample}, {"train": "k"}, method="baseline", split="test")


def test_a_foreign_folder_is_refused_untouched(tiny_run, tmp_path):
    cfg, run = tiny_run
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "holiday.png").write_bytes(b"mine")
    with pytest.raises(RunConflict, match="not a fairdiff sample folder"):
        sample_stage_run(run, out, _stage(cfg, cfg["sample"]), cfg["sample"], progress=False)
    assert (out / "images" / "holiday.png").read_bytes() == b"mine"


def test_other_sampler_settings_regenerate_the_folder_whole(tiny_run, tmp_path):
    cfg, run = tiny_run
    out = tmp_path / "out"
    first = dict(cfg["sample"])
    sample_stage_run(run, out, _stage(cfg, first), first, progress=False)
    old = pd.read_csv(out / "manifest.csv", dtype={"id": str})
    stale = out / "images" / "from-the-old-run.png"
    stale.write_bytes(b"x")
    second = dict(first, steps=3)
    sample_stage_run(run, out, _stage(cfg, second), second, progress=False)
    new = pd.read_csv(out / "manifest.csv", dtype={"id": str})
    assert not stale.exists()  # nothing of the old settings survives next to the new manifest
    assert set(new["steps"]) == {3} and set(old["steps"]) == {2}
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{i}.png" for i in new["id"])
    assert stage_keys.read_stamp(out)["settings"]["sample.steps"] == 3 and stage_keys.read_stamp(out)["complete"]


def test_cli_expected_errors_are_one_line_with_status_2(tmp_path, capsys):
    from fairdiff.cli import main

    code = main(["train", "--config", "smoke", "--method", "baseline", "--runs", str(tmp_path),
                 "--set", "train.steps=0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "train.steps: expected a value >= 1, got 0" in err
    assert "Traceback" not in err
    from fairdiff.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "train", "--config", "smoke", "--method", "baseline", "--set", "train.steps=0"])


def test_prepare_prints_and_keeps_the_rejection_table_and_strict_refuses(synthetic_fairgenmed, tmp_path, capsys):
    import shutil

    from fairdiff.cli import main

    root = tmp_path / "fgm"
    shutil.copytree(synthetic_fairgenmed, root)
    victim = sorted((root / "train").glob("data_*.npz"))[0]
    victim.unlink()  # its CSV row now has no files
    args = ["prepare", "--config", "smoke", "--runs", str(tmp_path / "runs"), "--set", f"data.root={root}",
            "--set", "vae.steps=1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    table = tmp_path / "runs" / "fairgenmed-smoke" / "rejections.csv"
    assert victim.name in out and table.is_file() and victim.name in table.read_text()
    assert main(args + ["--strict"]) == 2
    assert victim.name in capsys.readouterr().err
