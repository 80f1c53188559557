"""The bad-input table: every invalid config or argument exits with code 2 and one line naming the field."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from ifhe.cli import main
from ifhe.models import create_model
from ifhe.zoo import save_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "bad.yaml").write_text("synth: [unclosed\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "unknown.yaml").write_text("method: ifhe\nsynth:\n  warp_speed: 9\n")
    np.savez(d / "keys.npz", images=np.zeros((2, 32, 32, 3), np.uint8), y=np.zeros(2, np.int64))
    np.savez(d / "float.npz", x=np.zeros((2, 32, 32, 3), np.float32), y=np.zeros(2, np.int64))
    np.savez(d / "ylabels.npz", x=np.zeros((2, 32, 32, 3), np.uint8), y=np.zeros(2, np.float32))
    teacher10 = d / "t10.safetensors"
    save_model(teacher10, create_model("wrn16_1", 10), "cifar10")
    # weights of a 100-class model under a 10-class record: the class count mismatch must be named
    from ifhe.checkpoint import save_tensors
    save_tensors(d / "t100.safetensors", create_model("wrn16_1", 100).state_dict(),
                 {"arch": "wrn16_1", "num_classes": 10, "dataset": "cifar10"})
    import pickle
    (d / "pickle.safetensors").write_bytes(pickle.dumps({"a": 1}))
    (d / "afile").write_text("not a folder")
    return d


BASE = ["run", "--rounds", "1", "--iterations", "1", "--synth-batch", "4", "--kd-steps", "1", "--kd-batch", "4",
        "--eval-every", "0", "--quiet"]

CASES = [  # (extra arguments, text the one-line message must contain)
    (["--alpha", "-1"], "synth.alpha"),
    (["--beta", "-0.5"], "synth.beta"),
    (["--gamma", "nan"], "synth.gamma"),
    (["--synth-batch", "0"], "synth.batch_size"),
    (["--synth-batch", "1"], "synth.batch_size must be >= 2"),
    (["--kd-batch", "0"], "distill.batch_size"),
    (["--iterations", "0"], "synth.iterations"),
    (["--student", "lenet"], "student: unknown architecture 'lenet'"),
    (["--rounds", "0"], "rounds"),
    (["--budget-minutes", "-3"], "budget_minutes"),
    (["--tau", "0"], "distill.T"),
    (["--lr", "-1"], "distill.lr"),
    (["--lr-g", "0"], "synth.lr_g"),
    (["--eval-images", "0"], "eval_images"),
    (["--threads", "0"], "threads"),
    (["--seed", "-1"], "seed"),
    (["--set", "synth.warp=1"], "synth.warp: unknown setting"),
    (["--set", "foo.bar=1"], "sections are synth. and distill."),
    (["--set", "nokeyvalue"], "expected key=value"),
    (["--set", "synth.param=voxels"], "synth.param"),
    (["--set", "distill.source=magic"], "distill.source"),
    (["--set", "synth.adv_kind=wgan"], "synth.adv_kind"),
    (["--set", "synth.bn_momentum=1.5"], "synth.bn_momentum"),
    (["--set", "synth.h_stages=block9"], "block9"),
    (["--set", "scale=huge"], "scale"),
    (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "tpu"], "device"),
    (["--teacher", "cifar10_nope"], "unknown pretrained model 'cifar10_nope'"),
    (["--teacher", "{d}/pickle.safetensors"], "pickle"),
    (["--teacher", "{d}/t100.safetensors"], "classes"),
    (["--teacher", "{d}/t10.safetensors", "--teacher-arch", "wrn40_2"], "does not fit architecture wrn40_2"),
    (["--teacher", "{d}/missing.safetensors"], "no such file"),
    (["--config", "{d}/missing.yaml"], "no such file"),
    (["--config", "{d}/bad.yaml"], "cannot parse"),
    (["--config", "{d}/list.yaml"], "mapping"),
    (["--config", "{d}/unknown.yaml"], "synth.warp_speed"),
    (["--data", "{d}/nowhere"], "does not exist"),
    (["--data", "{d}/keys.npz"], "expected arrays 'x' and 'y'"),
    (["--data", "{d}/float.npz"], "'x' must be uint8"),
    (["--data", "{d}/ylabels.npz"], "'y' must be integers"),
    (["--out", "{d}/afile"], "not a folder"),
]


@pytest.mark.parametrize("extra, expected", CASES, ids=[" ".join(c[0])[:40] for c in CASES])
def test_bad_input_exit_2_one_line(extra, expected, files, tmp_path, capsys):
    args = [a.replace("{d}", str(files)) for a in BASE + extra]
    if "--out" not in extra:
        args += ["--out", str(tmp_path / "run")]
    if "--teacher" not in extra:
        args += ["--teacher", str(files / "t10.safetensors")]
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and "Traceback" not in err
    assert expected in err, err
    assert len(CASES) >= 25


def test_full_output_folder(files, tmp_path):
    """Writing into a full filesystem is reported in one line (needs a tiny tmpfs; skipped where mount fails)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        r = subprocess.run([sys.executable, "-m", "ifhe", *BASE, "--teacher", str(files / "t10.safetensors"),
                            "--out", str(mnt / "run")], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "No space left on device" in r.stderr and "Traceback" not in r.stderr
        assert r.stderr.strip().count("\n") == 0
    finally:
        subprocess.run(["umount", str(mnt)])


def test_cli_process_exit_code_and_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ifhe", *BASE, "--alpha", "-1", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip() == \
        "ifhe: error: synth.alpha must be a number >= 0, got -1.0"
