"""h's starting point: a random h (the paper), the h shipped with the teacher, or an earlier run's h."""
import json

import pytest
import torch

from tiny_settings import TINY_RUN
from ifhe import catalog, zoo
from ifhe.checkpoint import CheckpointError, load_tensors, save_tensors
from ifhe.config import make_config
from ifhe.errors import IfheError
from ifhe.experiment import Run, run_to_end
from ifhe.heads import PRETRAINED_HEAD, head_for, load_head_init


def ifhe_cfg(h_init="", rounds=1, **synth):
    return make_config("ifhe", "cpu", teacher="cifar10_wrn16_2", rounds=rounds, log_every=1, checkpoint_seconds=0,
                       synth={**TINY_RUN["synth"], "h_init": h_init, **synth}, distill=TINY_RUN["distill"])


def trained_head(model, path, seed=3, **meta):
    torch.manual_seed(seed)
    head = head_for(model)
    save_tensors(path, head.state_dict(), {"in_features": head.in_features, "num_classes": head.num_classes,
                                           "hidden": head.hidden, "stages": ["block1", "block2", "block3"],
                                           "teacher": "cifar10_wrn16_2"} | meta)
    return head


def test_a_run_starts_h_from_an_earlier_runs_head(shipped_teacher, tmp_path):
    """h before the first round is the file's h, not a random one; the bank says where h started."""
    given = trained_head(shipped_teacher, tmp_path / "head.safetensors", head_acc=71.5)
    run = Run(ifhe_cfg(str(tmp_path / "head.safetensors")), tmp_path / "run", teacher=shipped_teacher,
              test_set=None)
    for a, b in zip(run.head.state_dict().values(), given.state_dict().values()):
        assert torch.equal(a, b)
    said = run.head_training()
    assert said.startswith(f"h started from {tmp_path / 'head.safetensors'} (71.50% on the real test set)")
    random_start = Run(ifhe_cfg(""), tmp_path / "run2", teacher=shipped_teacher, test_set=None)
    assert not torch.equal(random_start.head.net[0].weight, given.net[0].weight)
    assert not random_start.head_training().startswith("h started")


def test_an_h_of_another_teacher_or_shape_is_refused(shipped_teacher, tmp_path):
    trained_head(shipped_teacher, tmp_path / "other.safetensors")
    meta = load_tensors(tmp_path / "other.safetensors")[1]
    assert meta["teacher"] == "cifar10_wrn16_2"
    head = head_for(shipped_teacher)
    with pytest.raises(IfheError, match="teacher 'cifar10_wrn16_2'.*this run's teacher is 'mine.safetensors'"):
        load_head_init(head, str(tmp_path / "other.safetensors"), ("block1", "block2", "block3"), shipped_teacher,
                       "mine.safetensors")
    with pytest.raises(IfheError, match="stages"):
        load_head_init(head_for(shipped_teacher, ("block3",)), str(tmp_path / "other.safetensors"), ("block3",),
                       shipped_teacher)
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04junk")  # a pickle is never unpickled
    with pytest.raises(CheckpointError):
        load_head_init(head, str(tmp_path / "junk.safetensors"), ("block1", "block2", "block3"), shipped_teacher)
    with pytest.raises(IfheError, match="h_init"):
        ifhe_cfg(3)


def test_pretrained_h_needs_a_shipped_one_and_its_checksum(shipped_teacher, tmp_path, monkeypatch):
    """publish_head ships a run's h with the teacher; h_init=pretrained loads it, verified by its checksum."""
    root = tmp_path / "pretrained"
    torch.manual_seed(0)
    zoo.publish(zoo.create_model("wrn16_2", 10), "t", "cifar10", 10.0, 0, "tests", root=root)
    monkeypatch.setattr(catalog, "PRETRAINED_DIR", root)
    teacher = zoo.load_teacher("t")
    head = head_for(teacher)
    with pytest.raises(IfheError, match="ships no trained h"):
        load_head_init(head, PRETRAINED_HEAD, ("block1", "block2", "block3"), teacher)
    with pytest.raises(CheckpointError, match="no such file"):
        zoo.publish_head("t", tmp_path / "missing.safetensors", 50.0, "tests", root=root)
    trained_head(teacher, tmp_path / "foreign.safetensors", teacher="other")
    with pytest.raises(IfheError, match="an h of teacher 'other'"):
        zoo.publish_head("t", tmp_path / "foreign.safetensors", 50.0, "tests", root=root)
    given = trained_head(teacher, tmp_path / "run_head.safetensors", teacher="t")
    record = zoo.publish_head("t", tmp_path / "run_head.safetensors", 50.0, "made by a test", root=root)
    assert json.loads((root / "manifest.json").read_text())["t"]["head"] == record
    assert record["test_accuracy"] == 50.0 and record["file"] == "t.ifhe-head.safetensors"
    teacher = zoo.load_teacher("t")
    said = load_head_init(head, PRETRAINED_HEAD, ("block1", "block2", "block3"), teacher, "t")
    assert "t.ifhe-head.safetensors" in said and "50.00% on the real test set" in said
    for a, b in zip(head.state_dict().values(), given.state_dict().values()):
        assert torch.equal(a, b)
    blob = bytearray((root / record["file"]).read_bytes())
    blob[-1] ^= 1
    (root / record["file"]).write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum"):
        load_head_init(head, PRETRAINED_HEAD, ("block1", "block2", "block3"), teacher, "t")


def test_the_shipped_h_scores_what_the_manifest_says(shipped_teacher, real_data):
    """The h shipped with the WRN-16-2 teacher: its top-1 on the 10,000 real test images is the manifest's."""
    # real data: the figure checked is the shipped h's accuracy on the real test set
    from ifhe.data import load_split
    from ifhe.distill import evaluate_head
    record = shipped_teacher.zoo_entry.get("head")
    if not record:
        pytest.skip("no h shipped with cifar10_wrn16_2")
    head = head_for(shipped_teacher, tuple(record["stages"]), record["hidden"])
    load_head_init(head, PRETRAINED_HEAD, tuple(record["stages"]), shipped_teacher, "cifar10_wrn16_2")
    acc = evaluate_head(head.eval(), shipped_teacher, load_split("cifar10", "test", real_data),
                        shipped_teacher.normalizer, torch.device("cpu"), tuple(record["stages"]))
    assert acc == pytest.approx(record["test_accuracy"], abs=0.011)
