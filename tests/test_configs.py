import sys
from pathlib import Path

import pytest
import yaml

from ifhe.config import METHODS, from_dict, load_config, make_config, preset, to_dict
from ifhe.errors import IfheError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "configs"))


def test_paper_presets_are_current_and_valid():
    from make_presets import all_presets
    presets = all_presets()
    assert len(presets) == 2 * 5 * len(METHODS)
    for path, d in presets.items():
        assert path.exists(), f"{path} missing: run python configs/make_presets.py"
        assert yaml.safe_load(path.read_text()) == d, f"{path} is stale: run python configs/make_presets.py"
        cfg = load_config(path)
        assert cfg.scale == "reference"


def test_ifhe_reference_is_the_paper():
    s, d = preset("ifhe", "reference")
    assert (s.alpha, s.beta, s.gamma, s.adv_kind) == (0.5, 1.0, 0.5, "masked_kl")
    assert s.oh == 0 and d.T == 20
    assert load_config(ROOT / "configs/paper/cifar100/wrn40_2-wrn16_1/ifhe.yaml").synth.alpha == 1.0


def test_dafl_and_dfq_plus_ifhe_are_presets():
    for m in ("dafl", "dfq"):
        cfg = make_config(m, synth={"alpha": 0.5})
        assert cfg.synth.alpha == 0.5 and cfg.method == m


def test_yaml_roundtrip():
    cfg = make_config("cmi", "cpu", synth={"cr_T": 0.2}, budget_minutes=3.0)
    assert from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize("kwargs, field", [
    (dict(synth={"alpha": -1}), "synth.alpha"),
    (dict(synth={"batch_size": 0}), "synth.batch_size"),
    (dict(synth={"param": "voxels"}), "synth.param"),
    (dict(distill={"T": 0}), "distill.T"),
    (dict(rounds=0), "rounds"),
    (dict(student="lenet"), "student"),
    (dict(synth={"warp": 1}), "synth.warp"),
    (dict(budget_minutes=-5), "budget_minutes"),
])
def test_invalid_config_names_field(kwargs, field):
    with pytest.raises(IfheError, match=field.replace(".", r"\.")):
        make_config("ifhe", **kwargs)
