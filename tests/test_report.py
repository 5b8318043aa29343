"""The README's tables are printed from the reproduction's CSVs: known answers on hand-made files."""
from __future__ import annotations

import pandas as pd
import pytest

from fairdiff.report import results_markdown


def _write(folder, name, rows):
    pd.DataFrame(rows).to_csv(folder / f"{name}.csv", index=False)


@pytest.fixture
def figures(tmp_path):
    folder = tmp_path / "runs" / "fairgenmed-mini" / "evaluation" / "tables"
    folder.mkdir(parents=True)
    gen, es, gap, sem, fid = [], [], [], [], []
    for k, method in enumerate(["fairbo", "baseline"]):  # written out of order on purpose
        for metric, value in (("fid", 20.0 + k), ("mifid", 400.0), ("is", 2.0 + k / 10), ("kid", 0.004 + k / 1000)):
            gen.append({"extractor": "e", "attribute": "all", "group": "all", "metric": metric, "value": value,
                        "boot_lo": value - (0.001 if metric == "kid" else 1),
                        "boot_hi": value + (0.002 if metric == "kid" else 2), "method": method})
        for attr in ("race", "gender", "ethnicity"):
            es.append({"extractor": "e", "attribute": attr, "metric": "es_fid", "value": 30.0 + k,
                       "boot_lo": 25.0, "boot_hi": 41.0, "method": method})
            es.append({"extractor": "e", "attribute": attr, "metric": "es_is", "value": 1.0, "method": method})
            gap.append({"method": method, "attribute": attr, "fid_gap": 5.0 + k})
            fid.append({"source": method, "attribute": attr, "group": "all", "metric": "accuracy",
                        "value": 0.5 + k / 10 + len(attr) / 100})
    for source, auc in (("baseline", 0.9), ("real", 0.98), ("fairbo", 0.91)):
        sem.append({"task": "glaucoma", "attribute": "all", "metric": "auc", "value": auc, "boot_lo": auc - 0.05,
                    "boot_hi": auc + 0.01, "source": source})
        sem.append({"task": "glaucoma", "attribute": "race", "metric": "es_auc", "value": auc - 0.1,
                    "boot_lo": auc - 0.2, "boot_hi": auc - 0.05, "source": source})
    _write(folder, "generation_metrics", gen)
    _write(folder, "equity_scaled_generation", es)
    _write(folder, "fid_gap", gap)
    _write(folder, "semantic_metrics", sem)
    _write(folder, "attribute_fidelity", fid)
    return tmp_path


def test_results_tables_carry_values_with_intervals_in_method_order(figures):
    text = results_markdown("mini", "fairgenmed", root=figures)
    lines = text.splitlines()
    baseline = next(line for line in lines if line.startswith("| baseline |"))
    fairbo = next(line for line in lines if line.startswith("| fairbo |"))
    assert lines.index(baseline) < lines.index(fairbo)  # the paper's order, not the file's
    assert "21.0 [20.0, 23.0]" in baseline and "2.10 [1.10, 4.10]" in baseline
    assert "5.00 [4.00, 7.00]" in baseline and "4.00 [3.00, 6.00]" in fairbo  # KID x 10^3
    assert "0.64 / 0.66 / 0.69" in baseline and "0.54 / 0.56 / 0.59" in fairbo  # fidelity race / gender / ethnicity
    assert "31.0 [25.0, 41.0]" in baseline and "6.0 / 6.0 / 6.0" in baseline
    assert "20.0 [19.0, 22.0]" in fairbo and "5.0 / 5.0 / 5.0" in fairbo
    real = next(line for line in lines if line.startswith("| real |"))
    assert "0.980 [0.930, 0.990]" in real and "0.880 [0.780, 0.930]" in real
    assert lines.index(real) < lines.index(next(x for x in lines if x.startswith("| baseline images |")))


def test_missing_tables_name_the_file_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"generation_metrics.csv.*fairdiff evaluate, or make reproduce"):
        results_markdown("mini", "fairgenmed", root=tmp_path)
