import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from ifhe.errors import IfheError
from ifhe.train import TrainConfig, one_cycle_lr, train_classifier

CFG = TrainConfig(arch="wrn16_1", epochs=2, batch_size=32, checkpoint_every=3, seed=3,
                  precision="fp32")  # resolved, as train_classifier passes it to the step functions


@pytest.mark.parametrize("cutout", [0, 8])
def test_resume_after_kill_matches_uninterrupted_run(synthetic_cifar, tmp_path, cutout):
    cfg = dataclasses.replace(CFG, cutout=cutout)
    full = train_classifier(cfg, tmp_path / "full", data=synthetic_cifar, progress=False)
    first = train_classifier(cfg, tmp_path / "cut", data=synthetic_cifar, progress=False, max_steps=13)
    assert first["step"] == 13 and not first["finished"]
    resumed = train_classifier(cfg, tmp_path / "cut", data=synthetic_cifar, progress=False, resume=True)
    assert resumed["finished"] and resumed["step"] == full["step"] == 20
    # resuming a finished run leaves its checkpoint as it is (a committed snapshot stays unmodified)
    ckpt = (tmp_path / "cut" / "checkpoint.safetensors")
    written, mtime = ckpt.read_bytes(), ckpt.stat().st_mtime_ns
    again = train_classifier(cfg, tmp_path / "cut", data=synthetic_cifar, progress=False, resume=True)
    assert again["finished"] and ckpt.read_bytes() == written and ckpt.stat().st_mtime_ns == mtime
    for (k, a), b in zip(full["model"].state_dict().items(), resumed["model"].state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    epochs = [json.loads(l)["epoch"] for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    if cutout:   # the patches reach the training batches: other weights than without them
        plain = train_classifier(CFG, tmp_path / "plain", data=synthetic_cifar, progress=False, max_steps=3)
        again = train_classifier(cfg, tmp_path / "again", data=synthetic_cifar, progress=False, max_steps=3)
        assert not torch.equal(next(iter(plain["model"].state_dict().values())),
                               next(iter(again["model"].state_dict().values())))


def test_metrics_written_after_checkpoint_are_dropped_on_resume(synthetic_cifar, tmp_path):
    out = tmp_path / "r"
    train_classifier(CFG, out, data=synthetic_cifar, progress=False, max_steps=12)
    log = out / "metrics.jsonl"
    # simulate a kill between the metrics line of epoch 2 and the checkpoint that covers it
    log.write_text(log.read_text() + json.dumps({"epoch": 2, "test_acc": 1.0}) + "\n")
    train_classifier(CFG, out, data=synthetic_cifar, progress=False, resume=True)
    assert [json.loads(l)["epoch"] for l in log.read_text().splitlines()] == [1, 2]


def test_existing_run_is_not_overwritten(synthetic_cifar, tmp_path):
    train_classifier(CFG, tmp_path / "r", data=synthetic_cifar, progress=False, max_steps=3)
    with pytest.raises(IfheError, match="--resume"):
        train_classifier(CFG, tmp_path / "r", data=synthetic_cifar, progress=False)


def test_a_resumed_run_may_switch_precision_and_says_so(synthetic_cifar, tmp_path):
    first = train_classifier(CFG, tmp_path / "r", data=synthetic_cifar, progress=False, max_steps=12)
    assert first["precision"] == "fp32"
    done = train_classifier(dataclasses.replace(CFG, precision="bf16"), tmp_path / "r", data=synthetic_cifar,
                            progress=False, resume=True)
    assert done["finished"] and done["precision"] == "fp32+bf16"
    log = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["precision"] for r in log] == ["fp32", "bf16"]
    # epochs logged before records named their precision ran in what the checkpoint says, not in the new one
    train_classifier(CFG, tmp_path / "old", data=synthetic_cifar, progress=False, max_steps=12)
    old_log = tmp_path / "old" / "metrics.jsonl"
    old_log.write_text("".join(json.dumps({k: v for k, v in json.loads(l).items() if k != "precision"}) + "\n"
                               for l in old_log.read_text().splitlines()))
    done = train_classifier(dataclasses.replace(CFG, precision="bf16"), tmp_path / "old", data=synthetic_cifar,
                            progress=False, resume=True)
    assert done["precision"] == "fp32+bf16"


def test_resume_with_other_config_is_refused(synthetic_cifar, tmp_path):
    train_classifier(CFG, tmp_path / "r", data=synthetic_cifar, progress=False, max_steps=3)
    other = TrainConfig(arch="wrn16_1", epochs=3, batch_size=32, checkpoint_every=3, seed=3)
    with pytest.raises(IfheError, match="different config"):
        train_classifier(other, tmp_path / "r", data=synthetic_cifar, progress=False, resume=True)


def test_one_cycle_schedule_shape():
    lrs = [one_cycle_lr(s, 100, 0.2, 0.25) for s in range(101)]
    assert lrs[0] == pytest.approx(0.2 / 25) and max(lrs) == pytest.approx(0.2)
    assert lrs.index(max(lrs)) == 25 and lrs[-1] < 1e-6


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", -1), ("max_lr", 0.0)])
def test_bad_config(field, value):
    with pytest.raises(IfheError, match=field):
        TrainConfig(**{field: value}).validate()


def test_fine_tuning_starts_from_given_weights(synthetic_cifar, tmp_path):
    from ifhe.models import create_model
    from ifhe.zoo import save_model
    torch.manual_seed(5)
    init = create_model("wrn16_1", 10)
    save_model(tmp_path / "init.safetensors", init, "cifar10")
    cfg = TrainConfig(arch="wrn16_1", epochs=1, batch_size=32, seed=3, max_lr=1e-9,
                      init_from=str(tmp_path / "init.safetensors"))
    r = train_classifier(cfg, tmp_path / "ft", data=synthetic_cifar, progress=False, max_steps=1)
    w = r["model"].state_dict()["fc.weight"]
    torch.testing.assert_close(w, init.state_dict()["fc.weight"], atol=1e-6, rtol=0)
    with pytest.raises(IfheError):
        train_classifier(TrainConfig(arch="wrn16_2", init_from=str(tmp_path / "init.safetensors")),
                         tmp_path / "bad", data=synthetic_cifar, progress=False, max_steps=1)


SWA = TrainConfig(arch="wrn16_1", epochs=2, batch_size=32, checkpoint_every=3, seed=3, schedule="swa", max_lr=0.05,
                  swa_bn="recompute")


def test_swa_returns_the_average_of_epoch_end_weights_with_fresh_bn_statistics(synthetic_cifar, tmp_path):
    from ifhe.checkpoint import load_state
    one = train_classifier(SWA, tmp_path / "e1", data=synthetic_cifar, progress=False, max_steps=10)  # end of epoch 1
    w1 = {k: v.clone() for k, v in one["model"].state_dict().items()}
    full = train_classifier(SWA, tmp_path / "full", data=synthetic_cifar, progress=False)
    w2 = load_state(tmp_path / "full" / "checkpoint.safetensors")[0]["model"]  # the last iterate
    avg = full["model"].state_dict()
    torch.testing.assert_close(avg["fc.weight"], (w1["fc.weight"] + w2["fc.weight"]) / 2)
    bn = next(k for k in avg if k.endswith("running_mean"))
    assert not torch.allclose(avg[bn], (w1[bn] + w2[bn]) / 2)  # recomputed for the averaged weights
    cut = train_classifier(SWA, tmp_path / "cut", data=synthetic_cifar, progress=False, max_steps=13)
    assert not cut["finished"]
    resumed = train_classifier(SWA, tmp_path / "cut", data=synthetic_cifar, progress=False, resume=True)
    for k, v in avg.items():
        torch.testing.assert_close(resumed["model"].state_dict()[k], v, msg=k)


def test_constant_rate_of_swa_and_unknown_schedule():
    from ifhe.train import learning_rate
    assert {learning_rate(SWA, s, 20) for s in range(20)} == {0.05}
    with pytest.raises(IfheError, match="schedule"):
        TrainConfig(schedule="step").validate()


def test_checkpoint_from_before_the_schedule_setting_resumes(synthetic_cifar, tmp_path):
    from ifhe.checkpoint import load_state, save_state
    train_classifier(CFG, tmp_path / "r", data=synthetic_cifar, progress=False, max_steps=3)
    path = tmp_path / "r" / "checkpoint.safetensors"
    state, meta = load_state(path)
    del meta["config"]["schedule"]
    save_state(path, state, meta)
    assert train_classifier(CFG, tmp_path / "r", data=synthetic_cifar, progress=False, resume=True)["finished"]


def test_swa_can_average_the_bn_statistics_with_the_weights(synthetic_cifar, tmp_path):
    from dataclasses import replace
    from ifhe.checkpoint import load_state
    one = train_classifier(replace(SWA, swa_bn="average"), tmp_path / "e1", data=synthetic_cifar, progress=False,
                           max_steps=10)
    w1 = {k: v.clone() for k, v in one["model"].state_dict().items()}
    full = train_classifier(replace(SWA, swa_bn="average"), tmp_path / "full", data=synthetic_cifar, progress=False)
    w2 = load_state(tmp_path / "full" / "checkpoint.safetensors")[0]["model"]
    avg = full["model"].state_dict()
    for k in ("fc.weight", next(k for k in avg if k.endswith("running_var"))):
        torch.testing.assert_close(avg[k], (w1[k] + w2[k]) / 2, msg=k)


@pytest.mark.parametrize("mode", ["none", "bf16"])
def test_a_checkpoint_without_full_momentum_resumes_and_is_smaller(synthetic_cifar, tmp_path, mode):
    """Resumable from git (README): the momentum kept in bf16 or not at all (rebuilt from gradients at the
    restored weights) shrinks the checkpoint; the resumed run ends close to the uninterrupted one."""
    from dataclasses import replace

    from ifhe.checkpoint import load_state
    from ifhe.fileio import read_meta

    cfg = replace(CFG, momentum=mode, rebuild_steps=4)
    train_classifier(CFG, tmp_path / "full", data=synthetic_cifar, progress=False, max_steps=13)
    train_classifier(cfg, tmp_path / "cut", data=synthetic_cifar, progress=False, max_steps=13)
    ckpt = tmp_path / "cut" / "checkpoint.safetensors"
    assert read_meta(ckpt)["meta"]["momentum_kept"] == mode
    assert ckpt.stat().st_size < (tmp_path / "full" / "checkpoint.safetensors").stat().st_size
    state, _ = load_state(ckpt)
    assert (state["optimizer"]["state"] == {}) == (mode == "none")
    resumed = train_classifier(cfg, tmp_path / "cut", data=synthetic_cifar, progress=False, resume=True)
    assert resumed["finished"] and resumed["step"] == 20
    # a 20-step toy at learning rate 0.2 is chaotic: the resumed weights stay near the uninterrupted run's
    straight = train_classifier(CFG, tmp_path / "full", data=synthetic_cifar, progress=False, resume=True)
    a = torch.cat([p.detach().flatten() for p in straight["model"].parameters()])
    b = torch.cat([p.detach().flatten() for p in resumed["model"].parameters()])
    assert torch.isfinite(b).all() and (a - b).norm() <= 0.3 * a.norm()


def test_momentum_kept_by_default_fits_the_git_budget():
    from ifhe.models import create_model
    from ifhe.train import CHECKPOINT_BUDGET, momentum_kept

    assert momentum_kept(TrainConfig(arch="wrn16_2"), create_model("wrn16_2", 10)) == "full"
    assert momentum_kept(TrainConfig(arch="wrn40_2"), create_model("wrn40_2", 10)) == "full"
    vgg = create_model("vgg11_bn", 10)
    assert momentum_kept(TrainConfig(arch="vgg11_bn"), vgg) == "none"
    assert sum(v.numel() * 4 for v in vgg.state_dict().values() if v.is_floating_point()) < CHECKPOINT_BUDGET


def test_rebuilt_momentum_points_where_the_real_one_does(synthetic_cifar, tmp_path):
    from dataclasses import replace

    from ifhe.checkpoint import load_state
    from ifhe.data import Normalizer, load_split, normalization
    from ifhe.train import _Training, rebuild_momentum

    r = train_classifier(CFG, tmp_path / "a", data=synthetic_cifar, progress=False, max_steps=10)
    real = load_state(tmp_path / "a" / "checkpoint.safetensors")[0]["optimizer"]["state"]
    real = torch.cat([real[k]["momentum_buffer"].flatten() for k in sorted(real, key=int)])
    train = load_split("cifar10", "train", synthetic_cifar)
    params = list(r["model"].parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    t = _Training(r["model"], opt, torch.Generator(), {}, step=10)
    before = {k: v.clone() for k, v in r["model"].state_dict().items()}
    rebuild_momentum(t, replace(CFG, rebuild_steps=20), train, Normalizer(*normalization("cifar10")),
                     torch.device("cpu"))
    for k, v in r["model"].state_dict().items():
        assert torch.equal(v, before[k]), f"{k} moved while the momentum was rebuilt"
    # the buffers are back (how close they come to the lost ones, and what that costs, is measured on a real
    # training by bench/bench_resume_momentum.py: the toy here learns nothing, its gradients are noise)
    rebuilt = torch.cat([opt.state[p]["momentum_buffer"].flatten() for p in params])
    assert rebuilt.shape == real.shape and torch.isfinite(rebuilt).all() and rebuilt.norm() > 0


def test_a_published_fine_tuning_stage_counts_the_compute_of_every_stage(synthetic_cifar, tmp_path, monkeypatch):
    from ifhe import catalog
    from ifhe.cli import main
    monkeypatch.setattr(catalog, "PRETRAINED_DIR", tmp_path / "zoo")
    base = ["train-teacher", "--arch", "wrn16_1", "--epochs", "1", "--batch-size", "64", "--threads", "1",
            "--data", str(synthetic_cifar), "--precision", "fp32", "--publish", "t"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    first = catalog.read_manifest()["t"]
    assert main(base + ["--out", str(tmp_path / "b"), "--init-from", "t", "--max-lr", "0.01"]) == 0
    second = catalog.read_manifest()["t"]
    assert second["epochs"] == 2 and " && " in second["recipe"] and "--init-from t" in second["recipe"]
    stages = second["stage_cpu_minutes"]
    assert len(stages) == 2 and stages[0] == first["cpu_minutes"]
    assert second["cpu_minutes"] == pytest.approx(sum(stages), abs=0.06)
    assert second["wall_minutes"] >= first["wall_minutes"]
    assert second["wall_minutes"] == round(second["wall_minutes"], 1)


def test_a_stage_from_a_finished_runs_model_file_continues_its_history(synthetic_cifar, tmp_path, monkeypatch):
    from ifhe import catalog
    from ifhe.cli import main
    from ifhe.models import create_model
    from ifhe.zoo import save_model
    monkeypatch.setattr(catalog, "PRETRAINED_DIR", tmp_path / "zoo")
    base = ["train-teacher", "--arch", "wrn16_1", "--epochs", "1", "--batch-size", "64", "--threads", "1",
            "--data", str(synthetic_cifar), "--precision", "fp32", "--max-lr", "0.01"]
    assert main(base + ["--out", str(tmp_path / "a"), "--publish", "t"]) == 0
    first = catalog.read_manifest()["t"]
    assert main(base + ["--out", str(tmp_path / "b"), "--init-from", "t"]) == 0     # not published: a file only
    assert main(base + ["--out", str(tmp_path / "c"), "--init-from", str(tmp_path / "b" / "model.safetensors"),
                        "--publish", "t", "--replace-better"]) == 0
    third = catalog.read_manifest()["t"]
    assert third["epochs"] == 3 and third["recipe"].count(" && ") == 2
    assert len(third["stage_cpu_minutes"]) == 3 and third["stage_cpu_minutes"][0] == first["cpu_minutes"]
    assert third["cpu_minutes"] == pytest.approx(sum(third["stage_cpu_minutes"]), abs=0.06)
    # weights that record no provenance: what made them is unknown, so is the total
    plain = tmp_path / "plain.safetensors"
    save_model(plain, create_model("wrn16_1", num_classes=10), "cifar10")
    assert main(base + ["--out", str(tmp_path / "d"), "--init-from", str(plain), "--publish", "u"]) == 0
    unknown = catalog.read_manifest()["u"]
    assert unknown["cpu_minutes"] is None and unknown["stage_cpu_minutes"][0] is None and unknown["epochs"] == 1


def test_an_ensemble_is_a_teacher_whose_softened_probabilities_are_the_members_mean():
    from ifhe.train import ensemble_logits

    a, b = torch.randn(5, 10), torch.randn(5, 10)
    for T in (1.0, 4.0):
        mixed = F.softmax(ensemble_logits([a, b], T) / T, dim=1)
        assert torch.allclose(mixed, (F.softmax(a / T, 1) + F.softmax(b / T, 1)) / 2, atol=1e-6)
    assert torch.allclose(F.softmax(ensemble_logits([a], 1.0), 1), F.softmax(a, 1), atol=1e-6)


def test_the_distillation_weight_moves_the_loss_from_the_labels_to_the_teachers():
    from dataclasses import replace

    from ifhe.losses import kd_kl
    from ifhe.train import supervised_loss

    s, t, y = torch.randn(6, 10), torch.randn(6, 10), torch.randint(10, (6,))
    ce = F.cross_entropy(s, y, label_smoothing=CFG.label_smoothing)
    assert torch.allclose(supervised_loss(s, y, CFG), ce)
    assert torch.allclose(supervised_loss(s, y, replace(CFG, distill_weight=0.0), t), ce)
    assert torch.allclose(supervised_loss(s, y, replace(CFG, distill_weight=1.0), t), kd_kl(s, t, T=4.0))
    with pytest.raises(IfheError, match="distill_weight"):
        replace(CFG, distill_weight=1.5).validate()
    with pytest.raises(IfheError, match="names no teacher"):
        replace(CFG, distill_from=" , ").validate()


def test_distilling_from_zoo_and_file_teachers_records_them_and_counts_their_compute_once(
        synthetic_cifar, tmp_path, monkeypatch):
    from ifhe import catalog
    from ifhe.cli import main
    from ifhe.fileio import read_meta
    monkeypatch.setattr(catalog, "PRETRAINED_DIR", tmp_path / "zoo")
    base = ["train-teacher", "--arch", "wrn16_1", "--epochs", "1", "--batch-size", "64", "--threads", "1",
            "--data", str(synthetic_cifar), "--precision", "fp32"]
    assert main(base + ["--out", str(tmp_path / "a"), "--publish", "t"]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--seed", "1", "--publish", "other"]) == 0
    first, other = catalog.read_manifest()["t"], catalog.read_manifest()["other"]
    left = read_meta(tmp_path / "b" / "model.safetensors")   # every finished training leaves its model in --out
    assert {k: left[k] for k in ("test_accuracy", "recipe", "cpu_minutes")} == \
        {k: other[k] for k in ("test_accuracy", "recipe", "cpu_minutes")}
    copy = tmp_path / "other.safetensors"   # a model taken out of the zoo keeps its provenance in the file
    copy.write_bytes((tmp_path / "zoo" / "other.safetensors").read_bytes())
    assert read_meta(copy)["cpu_minutes"] == other["cpu_minutes"]
    assert main(base + ["--out", str(tmp_path / "c"), "--init-from", "t", "--max-lr", "0.01", "--replace-better",
                        "--distill-from", f"t,{copy}", "--publish", "t"]) == 0
    third = catalog.read_manifest()["t"]
    assert [d.get("zoo") or d.get("file") for d in third["distilled_from"]] == ["t", str(copy)]
    assert third["distilled_from"][0]["sha256"] == first["sha256"]
    # t is both the starting point and a teacher: its compute once, then the other teacher's, then this stage's
    stages = third["stage_cpu_minutes"]
    assert len(stages) == 3 and stages[:2] == [first["cpu_minutes"], other["cpu_minutes"]]
    assert third["cpu_minutes"] == pytest.approx(sum(stages), abs=0.06)
    assert any("Hinton" in s for s in third["recipe_sources"])
    assert "--distill-from" in third["recipe"] and "--replace-better" not in third["recipe"]
    # a later stage distilling from the same two teachers again adds only its own compute
    assert main(base + ["--out", str(tmp_path / "d"), "--init-from", "t", "--max-lr", "0.01", "--replace-better",
                        "--distill-from", f"other,{copy}", "--publish", "t"]) == 0
    fourth = catalog.read_manifest()["t"]
    assert fourth["stage_cpu_minutes"][:-1] == stages
    assert [d["sha256"] for d in fourth["distilled_from"]] == [first["sha256"], other["sha256"]]
    # a stage without distillation keeps the model's history of teachers
    assert main(base + ["--out", str(tmp_path / "e"), "--init-from", "t", "--max-lr", "0.01", "--replace-better",
                        "--publish", "t"]) == 0
    assert catalog.read_manifest()["t"]["distilled_from"] == fourth["distilled_from"]
    assert any("Hinton" in s for s in catalog.read_manifest()["t"]["recipe_sources"])
    assert fourth["cpu_minutes"] == pytest.approx(sum(fourth["stage_cpu_minutes"]), abs=0.06)
    # the model file of a finished run written again (`--resume`, other metadata bytes) is the same training
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    rewritten = tmp_path / "rewritten.safetensors"
    with safe_open(str(copy), "pt") as f:
        header = f.metadata()
    save_file(load_file(str(copy)), str(rewritten), metadata={**header, "written_by": "a later version"})
    assert rewritten.read_bytes() != copy.read_bytes()
    before = catalog.read_manifest()["t"]
    assert main(base + ["--out", str(tmp_path / "f"), "--init-from", "t", "--max-lr", "0.01", "--replace-better",
                        "--distill-from", str(rewritten), "--publish", "t"]) == 0
    fifth = catalog.read_manifest()["t"]
    assert fifth["stage_cpu_minutes"][:-1] == before["stage_cpu_minutes"]
    assert fifth["distilled_from"] == before["distilled_from"]


def test_publishing_refuses_to_replace_a_better_shipped_model(synthetic_cifar, tmp_path, monkeypatch, capsys):
    from ifhe import catalog
    from ifhe.cli import main
    monkeypatch.setattr(catalog, "PRETRAINED_DIR", tmp_path / "zoo")
    base = ["train-teacher", "--arch", "wrn16_1", "--epochs", "1", "--batch-size", "64", "--threads", "1",
            "--data", str(synthetic_cifar), "--precision", "fp32", "--publish", "t"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    record = catalog.read_manifest()["t"]
    catalog.write_record("t", record | {"test_accuracy": 100.0})   # a shipped model nothing can beat
    before = (tmp_path / "zoo" / "t.safetensors").read_bytes()
    worse = base + ["--out", str(tmp_path / "b"), "--seed", "1"]
    assert main(worse) == 1
    assert "not published" in capsys.readouterr().out
    assert (tmp_path / "zoo" / "t.safetensors").read_bytes() == before
    assert main(worse + ["--resume", "--replace-better"]) == 0    # the finished run is published, not retrained
    assert catalog.read_manifest()["t"]["sha256"] != record["sha256"]
