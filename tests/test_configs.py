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
    assert len(presets) == 2 * 5 * len(METHODS) + 3 * len(METHODS)
    for path, d in presets.items():
        assert path.exists(), f"{path} missing: run python configs/make_presets.py"
        assert yaml.safe_load(path.read_text()) == d, f"{path} is stale: run python configs/make_presets.py"
        cfg = load_config(path)
        assert cfg.scale == ("reference" if "paper" in path.parts else "cpu")
    assert (ROOT / "configs/cpu/cifar10/vgg11_bn-wrn16_1/ifhe.yaml").exists()
    assert (ROOT / "configs/paper/cifar10/vgg11_bn-resnet18/cmi.yaml").exists()


def test_readme_method_table_is_current():
    from make_presets import readme_with_table
    text = (ROOT / "README.md").read_text()
    assert readme_with_table(text) == text, "README's method table is stale: run python configs/make_presets.py"


def test_method_spec_is_the_one_place_for_methods():
    from ifhe.methods import METHOD_LABELS, METHOD_SPECS, variants
    from ifhe.synth import PARAMETRIZATIONS
    from ifhe.config import PARAMETRIZATIONS as NAMES
    assert METHODS == tuple(METHOD_SPECS) == tuple(METHOD_LABELS)
    v = variants()
    assert v["dafl+ifhe"] == ("dafl", {"alpha": 0.5}) and v["fast+ifhe"] == ("fast", {"alpha": 0.5})
    assert v["cmi"] == ("cmi", {}) and v["ifhe-a0"] == ("ifhe", {"alpha": 0.0})
    assert tuple(PARAMETRIZATIONS) == NAMES


def test_cpu_scale_keeps_cmis_memory_proportions():
    s, _ = preset("cmi", "cpu")
    r, _ = preset("cmi", "reference")
    assert (r.cr_bank, r.cr_negatives, r.batch_size) == (40960, 4096, 256)
    assert (s.cr_bank, s.cr_negatives, s.batch_size) == (10240, 1024, 64)  # 160 batches, 16 negatives an image


def test_fast_schedule_is_a_fraction_of_the_run():
    ref = make_config("fast", "reference")
    assert ref.rounds == 220 and round(ref.warmup * 220) == 20 and round(ref.synth.reset_l0_at * 220) == 139
    cpu = make_config("fast", "cpu", budget_minutes=10.0)
    assert cpu.warmup == ref.warmup and cpu.rounds == 200  # the same fractions, of the time budget here


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
    (dict(synth={"cr_negatives": 9, "cr_bank": 8}), "synth.cr_negatives"),
    (dict(synth={"betas": [0.9]}), "synth.betas"),
    (dict(synth={"act": 0.1, "param": "pixels"}), "synth.act"),
    (dict(distill={"lr_milestones": [1.5]}), "distill.lr_milestones"),
    (dict(distill={"optimizer": "rmsprop"}), "distill.optimizer"),
    (dict(warmup=1.0), "warmup"),
])
def test_invalid_config_names_field(kwargs, field):
    with pytest.raises(IfheError, match=field.replace(".", r"\.")):
        make_config("ifhe", **kwargs)


def test_a_method_can_be_declared_as_another_plus_changes():
    from ifhe.methods import METHOD_SPECS

    di, adi = METHOD_SPECS["deepinversion"], METHOD_SPECS["adi"]
    assert adi.synth == {**di.synth, "gamma": 1.0, "adv_kind": "js", "adv_T": 3.0}
    assert adi.distill == di.distill and adi.variants == {}
    mine = di.extend("di-tv0", "DI without TV", "DeepInversion, no total variation", "a test", synth={"tv": 0.0})
    assert mine.synth["tv"] == 0.0 and mine.synth["beta"] == di.synth["beta"] and di.synth["tv"] == 1e-3
