"""The pip pins and the conda description must describe one environment."""
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert m, f"requirement {line!r} is not pinned with =="
        pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_requirements_are_all_pinned_and_match_environment_yml():
    pip_pins = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_pins = _pins(pip_section)
    assert pip_pins == conda_pins
    assert "python=3.11" in env["dependencies"]


def test_torch_is_the_cpu_build_pin_and_torchvision_absent():
    pins = _pins((ROOT / "requirements.txt").read_text().splitlines())
    assert pins["torch"] == "2.13.0"
    assert "torchvision" not in pins  # PyPI torchvision does not import beside the CPU torch


def test_installed_versions_match_pins():
    from importlib.metadata import PackageNotFoundError, version

    pins = _pins((ROOT / "requirements.txt").read_text().splitlines())
    wrong = {}
    for name, pinned in pins.items():
        try:
            got = version(name)
        except PackageNotFoundError:
            wrong[name] = "missing"
            continue
        if got.split("+")[0] != pinned:
            wrong[name] = got
    assert not wrong, f"installed versions differ from requirements.txt: {wrong}"
