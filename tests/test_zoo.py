"""The shipped zoo: what the manifest claims is what `ifhe evaluate` measures on the real test set."""
import subprocess
import sys

import pytest

from ifhe.catalog import read_manifest


@pytest.mark.parametrize("name", sorted(read_manifest()) or ["<none>"])
def test_manifest_accuracy_is_measured(name, real_data):
    # real data: the manifest's accuracy is a figure on the 10,000 real test images
    if name == "<none>":
        pytest.skip("no shipped models yet")
    entry = read_manifest()[name]
    r = subprocess.run([sys.executable, "-m", "ifhe", "evaluate", name, "--data", str(real_data)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    printed = float(r.stdout.split("top-1 ")[1].split("%")[0])
    assert printed == pytest.approx(entry["test_accuracy"], abs=0.011), r.stdout
    assert "on 10000 real cifar10 test images" in r.stdout


def test_shipped_teachers_meet_the_shipping_bar():
    """A teacher ships once it passes 88% and beats the scratch student of its table; the WRN-16-2 teacher of the
    demo and the sweeps was asked for at 90% (README, Teachers)."""
    zoo = read_manifest()
    teachers = {n: e for n, e in zoo.items() if e["arch"] in ("wrn16_2", "wrn40_2", "resnet34", "vgg11_bn")}
    if not teachers:
        pytest.skip("no teacher published yet")
    for name, entry in teachers.items():
        assert entry["test_accuracy"] >= 88.0 and entry["recipe"].startswith("ifhe train-teacher"), name
        scratch = zoo.get(f"{entry['dataset']}_wrn16_1")
        if scratch:
            assert entry["test_accuracy"] > scratch["test_accuracy"], name
    if "cifar10_wrn16_2" in teachers:
        assert teachers["cifar10_wrn16_2"]["test_accuracy"] >= 90.0
    if "cifar10_vgg11_bn" in teachers:   # asked for at 90% (issue 24); shipped at 90.15% (README, The fast recipe)
        entry = teachers["cifar10_vgg11_bn"]
        assert entry["test_accuracy"] >= 90.0 and entry["cpu_minutes"] > 0 and entry["recipe_sources"]
        # its compute counts every stage and every distillation teacher (two VGGs, then WRN-40-2), each once
        assert entry["cpu_minutes"] == pytest.approx(sum(entry["stage_cpu_minutes"]), abs=0.11)
        assert len(entry["distilled_from"]) == 3
        assert "cifar10_wrn40_2" in {d.get("zoo") for d in entry["distilled_from"]}
    if "cifar10_wrn40_2" in teachers:   # asked for at 93% (issue 24); shipped at 90.92% (README, Teachers)
        entry = teachers["cifar10_wrn40_2"]
        assert entry["test_accuracy"] > teachers.get("cifar10_wrn16_2", {}).get("test_accuracy", 0.0)
        assert entry["cpu_minutes"] > 0 and entry["epochs"] == 60 and entry["recipe_sources"]
