"""`ifhe run` under torchrun: 2 CPU processes with the gloo backend."""
import subprocess
import sys

import torch

from ifhe.bank import open_bank
from ifhe.checkpoint import load_state
from ifhe.models import create_model
from ifhe.zoo import save_model

ARGS = ["--method", "ifhe", "--rounds", "3", "--synth-batch", "8", "--kd-batch", "8", "--kd-steps", "3",
        "--iterations", "2", "--eval-every", "0", "--threads", "1", "--quiet"]


def test_two_ranks_match_single_process(tmp_path):
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.safetensors"
    save_model(teacher, create_model("wrn16_1", 10), "cifar10")
    env_args = ["--teacher", str(teacher), "--data", str(tmp_path / "no-data")]
    single = subprocess.run([sys.executable, "-m", "ifhe", "run", *ARGS, *env_args[:2], "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            "-m", "ifhe", "run", *ARGS, *env_args[:2], "--out", str(tmp_path / "two")],
                           capture_output=True, text=True, timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert multi.stdout.count("finished (rounds) after 3 rounds") == 1  # only rank 0 reports
    one, two = open_bank(tmp_path / "one" / "bank"), open_bank(tmp_path / "two" / "bank")
    assert len(one) == len(two) == 24
    assert sorted(p.name for p in (tmp_path / "two" / "bank").glob("*.safetensors")) == \
        [f"r{r}_{i:06d}.safetensors" for r in (0, 1) for i in range(3)]
    s0, _ = load_state(tmp_path / "two" / "checkpoint.safetensors")
    s1, _ = load_state(tmp_path / "two" / "checkpoint_r1.safetensors")
    params = {n for n, _ in create_model("wrn16_1", 10).named_parameters()}
    for k in params:  # DDP keeps the weights in sync (BN running statistics are per rank, as usual)
        torch.testing.assert_close(s0["student"][k], s1["student"][k], msg=k)
    assert s0["progress"]["kd_steps"] == s1["progress"]["kd_steps"] == 9
    # the two ranks synthesized different images (their own generators and noise)
    x = two.images
    assert not torch.equal(x[:4], x[4:8])
