"""The engine on a CUDA GPU (marked `cuda`, skipped without one; tools/gpu/check.sh runs `pytest -m cuda`), with
tiny random models so that no data or pretrained weights are needed; and, on any machine, the GPU tools' own
parts: the packed data's round trip and the scripts' syntax."""
import copy
import importlib.util
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_settings import TINY_RUN
from ifhe.checkpoint import load_state, sha256_file
from ifhe.config import make_config, preset
from ifhe.data import CIFAR10_CLASSES, ImageSet
from ifhe.distill import kd_step, make_kd_optimizer, prepare_batch
from ifhe.experiment import Evaluated, Run, SynthStep, run_to_end
from ifhe.heads import head_for
from ifhe.models import create_model
from ifhe.synth import InversionSynthesizer

ROOT = Path(__file__).resolve().parent.parent
GPU = torch.device("cuda")


def on_cuda(test):
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


@pytest.fixture(scope="module")
def teacher(tiny_teacher):
    """The random frozen WRN-16-1 of conftest, copied onto the GPU (the session's CPU one stays where it is)."""
    return copy.deepcopy(tiny_teacher).to(GPU)


def synthesizer(teacher, precision="fp32", method="ifhe"):
    torch.manual_seed(1)
    cfg = replace(preset(method, "cpu")[0], batch_size=8, iterations=3)
    student = create_model("wrn16_1", 10).to(GPU)
    head = head_for(teacher, cfg.h_stages, cfg.h_hidden).to(GPU)
    return InversionSynthesizer(cfg, teacher, student, head, teacher.normalizer, 10, GPU, precision)


def kd(teacher, precision="fp32"):
    torch.manual_seed(2)
    student, head = create_model("wrn16_1", 10).to(GPU), head_for(teacher).to(GPU)
    opt = make_kd_optimizer(student, head, 0.1, 0.9, 1e-4)
    bank = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)  # a bank lives on the CPU, as in Run
    x = prepare_batch(bank, teacher.normalizer, GPU, augment=True)
    before = [p.detach().clone() for p in student.parameters()]
    losses = kd_step(student, head, teacher, x, opt, 4.0, ("block1", "block2", "block3"), precision)
    moved = any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))
    return losses, moved


@on_cuda
@pytest.mark.parametrize("method", ["ifhe", "deepinversion", "cmi"])
def test_synthesis_steps_on_cuda(teacher, method):
    s = synthesizer(teacher, method=method)
    s.start_round(0)
    reports = [s.step() for _ in range(3)]
    for name, v in reports[-1].losses.items():
        assert v.device.type == "cuda" and torch.isfinite(v), name
    images, labels = s.commit()
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 32, 32) and labels.shape == (8,)
    assert all(p.grad is None for p in teacher.parameters())


@on_cuda
def test_kd_step_on_cuda(teacher):
    losses, moved = kd(teacher)
    assert set(losses) == {"kd_student", "kd_head"} and moved
    assert all(v.device.type == "cuda" and torch.isfinite(v) for v in losses.values())


@on_cuda
def test_bf16_synthesis_and_kd_on_cuda(teacher):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    steps = {}
    for precision in ("fp32", "bf16"):  # each seeded alike: same generator, z, targets and augmentation
        s = synthesizer(teacher, precision)
        s.start_round(0)
        steps[precision] = s, s.step().losses
    (_, a), (low, b) = steps["fp32"], steps["bf16"]
    for name, v in b.items():
        assert v.dtype == torch.float32 and torch.isfinite(v), name
        torch.testing.assert_close(v, a[name], rtol=0.08, atol=0.02, msg=name)  # as tests/test_precision.py
    assert low.best_x.dtype == torch.float32  # the kept images are not rounded to bf16
    (ref_kd, _), (low_kd, moved) = kd(teacher, "fp32"), kd(teacher, "bf16")
    assert moved
    for name, v in low_kd.items():
        assert v.dtype == torch.float32 and torch.isfinite(v), name
        torch.testing.assert_close(v, ref_kd[name], rtol=0.08, atol=0.01, msg=name)


def run_config(rounds, **over):
    return make_config("ifhe", "cpu", device="cuda", rounds=rounds, eval_every=3,
                       **{k: v for k, v in TINY_RUN.items()}, **over)


def random_test_set(n=40):
    g = torch.Generator().manual_seed(3)
    return ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                    torch.randint(0, 10, (n,), generator=g), CIFAR10_CLASSES, "random")


@on_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_run_on_cuda_writes_bank_checkpoint_and_models(teacher, tmp_path, precision):
    run = Run(run_config(2, precision=precision), tmp_path, teacher=teacher, test_set=random_test_set())
    assert run.device.type == "cuda" and next(run.student.parameters()).is_cuda
    events = []
    fin = run_to_end(run, events.append)
    assert fin.reason == "rounds" and fin.round == 2 and fin.bank_size == 16
    assert any(isinstance(e, Evaluated) and 0 <= e.student_acc <= 100 for e in events)
    for name in ("checkpoint.safetensors", "student.safetensors", "head.safetensors", "config.yaml"):
        assert (tmp_path / name).exists(), name
    state, _ = load_state(tmp_path / "checkpoint.safetensors")  # readable on the CPU
    assert "cuda_rng" in state and state["progress"]["round"] == 2
    assert len(list((tmp_path / "bank").glob("r0_*.safetensors"))) == 2


@on_cuda
def test_killed_run_on_cuda_resumes_without_overwriting(teacher, tmp_path):
    cut = Run(run_config(3), tmp_path, teacher=teacher, test_set=None)
    events = cut.events()
    for ev in events:  # "kill" in round 1, after round 0's checkpoint (checkpoint_seconds=0)
        if isinstance(ev, SynthStep) and ev.round == 1 and ev.iteration == 2:
            break
    events.close()
    first = tmp_path / "bank" / "r0_000000.safetensors"
    digest = sha256_file(first)
    resumed = Run(run_config(3), tmp_path, resume=True, teacher=teacher, test_set=None)
    assert resumed.resumed and resumed.progress.round == 1 and len(resumed.bank) == 8
    fin = run_to_end(resumed)
    assert fin.round == 3 and fin.bank_size == 24
    assert sha256_file(first) == digest  # the shard written before the kill is untouched
    shards = sorted(p.name for p in (tmp_path / "bank").glob("r0_*.safetensors"))
    assert shards == [f"r0_{i:06d}.safetensors" for i in range(3)]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records if not r.get("final")] == [0, 1, 2]  # none lost, none repeated


# ---- the GPU tools, on any machine --------------------------------------------------------------------------

def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "gpu" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_packed_data_round_trip(real_data, tmp_path):
    # real images: the PSNR bound below is the packer's promise for CIFAR photographs, which noise-like made-up
    # images do not meet
    pack_data = load_tool("pack_data")
    src = tmp_path / "src"
    src.mkdir()
    for split, n in (("train", 50), ("test", 300)):
        with np.load(real_data / f"cifar10-{split}.npz", allow_pickle=False) as f:
            idx = np.random.default_rng(0).permutation(len(f["y"]))[:n]
            np.savez(src / f"cifar10-{split}.npz", x=f["x"][idx], y=f["y"][idx], classes=f["classes"])
    info = pack_data.pack(src, tmp_path / "packed", test_n=100)
    assert info["files"]["cifar10-train.jpg.npz"]["images"] == 50
    dest = pack_data.unpack(tmp_path / "packed", tmp_path / "data")
    for split, n in (("train", 50), ("test", 100)):
        with np.load(dest / f"cifar10-{split}.npz", allow_pickle=False) as got, \
                np.load(src / f"cifar10-{split}.npz", allow_pickle=False) as want:
            x, y = want["x"], want["y"]
            if split == "test":  # a class-balanced subset, in the source's order
                idx = pack_data.balanced_subset(y, 100)
                x, y = x[idx], y[idx]
                assert np.bincount(y, minlength=10).tolist() == [10] * 10
            assert got["x"].dtype == np.uint8 and got["x"].shape == (n, 32, 32, 3)
            assert got["y"].dtype == np.uint8 and np.array_equal(got["y"], y)
            assert list(got["classes"]) == list(want["classes"])
            # JPEG is lossy; at the source's own quality most pixels come back exactly
            assert pack_data.psnr(got["x"], x) > 40 and np.abs(got["x"].astype(int) - x).mean() < 1.0
    from ifhe.data import load_split
    assert len(load_split("cifar10", "train", dest)) == 50  # the project's loader reads the result
    packed = tmp_path / "packed" / "cifar10-test.jpg.npz"
    data = bytearray(packed.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one changed byte inside the JPEG data
    packed.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="checksum"):
        pack_data.unpack(tmp_path / "packed", tmp_path / "data2")


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
@pytest.mark.parametrize("script", ["check.sh", "train_teacher.sh"])
def test_gpu_scripts_parse(script):
    r = subprocess.run(["bash", "-n", str(ROOT / "tools" / "gpu" / script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
