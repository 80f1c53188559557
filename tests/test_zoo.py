"""The shipped zoo: what the manifest claims is what `ifhe evaluate` measures on the real test set."""
import subprocess
import sys

import pytest

from ifhe.zoo import read_manifest


@pytest.mark.parametrize("name", sorted(read_manifest()) or ["<none>"])
def test_manifest_accuracy_is_measured(name, real_data):
    if name == "<none>":
        pytest.skip("no shipped models yet")
    entry = read_manifest()[name]
    r = subprocess.run([sys.executable, "-m", "ifhe", "evaluate", name, "--data", str(real_data)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    printed = float(r.stdout.split("top-1 ")[1].split("%")[0])
    assert printed == pytest.approx(entry["test_accuracy"], abs=0.011), r.stdout
    assert "on 10000 real cifar10 test images" in r.stdout


def test_shipped_teacher_meets_the_bar():
    entry = read_manifest().get("cifar10_wrn16_2")
    if entry is None:
        pytest.skip("cifar10_wrn16_2 not published yet")
    assert entry["test_accuracy"] >= 90.0 and entry["recipe"].startswith("ifhe train-teacher")
