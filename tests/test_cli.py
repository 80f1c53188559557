import subprocess
import sys


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ifhe", *args], capture_output=True, text=True, env=env, timeout=300)


def test_unknown_architecture_exit_2_one_line(tmp_path):
    r = run_cli("train-teacher", "--arch", "lenet", "--out", str(tmp_path / "x"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "unknown architecture 'lenet'" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_zoo_name(tmp_path):
    r = run_cli("evaluate", "cifar10_nope")
    assert r.returncode == 2 and "unknown pretrained model 'cifar10_nope'" in r.stderr


def test_missing_data_folder(tmp_path):
    r = run_cli("train-teacher", "--arch", "wrn16_1", "--out", str(tmp_path / "x"), "--data", str(tmp_path / "none"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "IFHE_DATA" in r.stderr


def test_readme_commands_are_what_ci_runs():
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    readme = root.joinpath("README.md").read_text().splitlines()
    i = readme.index("<!-- test-command -->")
    assert readme[i + 2].endswith("python -m pytest")
    # run the extraction line of .ci/run itself (not a copy of it) against the README
    ci = root.joinpath(".ci", "run").read_text().splitlines()
    extract = next(line for line in ci if "test-command" in line and "awk" in line)
    out = subprocess.run(["bash", "-c", f"cd {root} && {extract} && printf '%s' \"$cmd\""], capture_output=True,
                         text=True).stdout.strip()
    assert out == readme[i + 2]
