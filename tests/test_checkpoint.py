import os
import pickle

import pytest
import torch

from ifhe.checkpoint import load_state, save_state, save_tensors
from ifhe.errors import CheckpointError, IfheError
from ifhe.models import create_model
from ifhe.zoo import load_model, load_teacher, publish, save_model


class _WritesAFile:
    """Unpickling this creates a file: proof that a loader unpickled user data."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture
def saved_wrn(tmp_path):
    m = create_model("wrn16_1", 10)
    p = tmp_path / "wrn16_1.safetensors"
    save_model(p, m, "cifar10")
    return m, p


def test_weights_roundtrip(saved_wrn):
    m, p = saved_wrn
    m2, meta = load_model(p)
    assert meta["arch"] == "wrn16_1" and meta["num_classes"] == 10
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_malicious_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    for name, writer in (("evil.safetensors", lambda f: pickle.dump(_WritesAFile(str(marker)), f)),
                         ("evil_torch.safetensors", lambda f: torch.save({"x": _WritesAFile(str(marker))}, f))):
        p = tmp_path / name
        with open(p, "wb") as f:
            writer(f)
        with pytest.raises(CheckpointError, match=r"evil.*pickle.*nothing was unpickled"):
            load_model(p, "wrn16_1", 10)
    assert not marker.exists()


@pytest.mark.parametrize("cut", [0, 5, 100, -1000])
def test_truncated_file(saved_wrn, tmp_path, cut):
    _, p = saved_wrn
    data = p.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(CheckpointError, match="cut.safetensors.*(truncated|corrupt)"):
        load_model(bad)


def test_random_bytes(tmp_path):
    p = tmp_path / "noise.safetensors"
    p.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="noise.safetensors"):
        load_model(p, "wrn16_1", 10)


def test_wrong_architecture_is_named(saved_wrn):
    _, p = saved_wrn
    with pytest.raises(CheckpointError, match="does not fit architecture wrn16_2"):
        load_model(p, "wrn16_2", 10)


def test_class_count_mismatch_is_named(saved_wrn):
    _, p = saved_wrn
    with pytest.raises(CheckpointError, match="10 classes.*100"):
        load_model(p, "wrn16_1", 100)


def test_nan_weights_refused(tmp_path):
    m = create_model("wrn16_1", 10)
    sd = m.state_dict()
    sd["fc.weight"][0, 0] = float("nan")
    p = tmp_path / "nan.safetensors"
    save_tensors(p, sd, {"arch": "wrn16_1", "num_classes": 10})
    with pytest.raises(CheckpointError, match="fc.weight contains NaN"):
        load_model(p)


def test_nested_state_roundtrip(tmp_path):
    m = create_model("wrn16_1", 10)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.5, 0.999))
    m(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    state = {"opt": opt.state_dict(), "rng": torch.get_rng_state(), "step": 7, "name": "x", "none": None,
             "floats": [1.5, float("inf")]}
    save_state(tmp_path / "s.safetensors", state, {"k": 1})
    back, meta = load_state(tmp_path / "s.safetensors")
    assert meta == {"k": 1} and back["step"] == 7 and back["none"] is None and back["floats"][1] == float("inf")
    assert torch.equal(back["rng"], state["rng"])
    opt2 = torch.optim.Adam(m.parameters(), lr=1e-3)
    opt2.load_state_dict(back["opt"])
    assert opt2.state_dict()["param_groups"][0]["betas"] == (0.5, 0.999)
    s0, s1 = opt.state_dict()["state"][0], opt2.state_dict()["state"][0]
    assert torch.equal(s0["exp_avg"], s1["exp_avg"])


def test_weights_file_is_not_a_state(saved_wrn):
    with pytest.raises(CheckpointError, match="not a resumable state"):
        load_state(saved_wrn[1])


def test_zoo_publish_load_and_checksum(tmp_path):
    m = create_model("wrn16_1", 10)
    entry = publish(m, "cifar10_test", "cifar10", 12.345, 1, "ifhe train-teacher ...", root=tmp_path)
    assert entry["test_accuracy"] == 12.35 and len(entry["sha256"]) == 64
    t = load_teacher("cifar10_test", root=tmp_path)
    assert not t.training and not any(p.requires_grad for p in t.parameters())
    assert t.dataset == "cifar10"
    (tmp_path / entry["file"]).write_bytes((tmp_path / entry["file"]).read_bytes()[:-1] + b"\x00")
    with pytest.raises(CheckpointError, match="checksum"):
        load_teacher("cifar10_test", root=tmp_path)
    with pytest.raises(IfheError, match="unknown pretrained model 'nope'.*cifar10_test"):
        load_teacher("nope", root=tmp_path)


def test_shipped_manifest_is_consistent():
    from ifhe.checkpoint import sha256_file
    from ifhe.catalog import PRETRAINED_DIR, read_manifest
    manifest = read_manifest()
    for name, e in manifest.items():
        assert sha256_file(PRETRAINED_DIR / e["file"]) == e["sha256"], name
        assert {"arch", "dataset", "num_classes", "normalization", "test_accuracy", "epochs", "recipe"} <= set(e)
