"""NAYER (tmtuan1307/NAYER): the label generator, its noisy layers, its life cycle, its embeddings, and runs of
NAYER and NAYER + L_H end to end."""
import json

import pytest
import torch

from ifhe.config import make_config, preset
from ifhe.device import RunRNG
from ifhe.experiment import Run, run_to_end
from ifhe.models.generator import LabelGenerator, class_embedding
from ifhe.synth import synthesizer_for
from ifhe.synth.inversion import draw_targets


def test_balanced_targets_hold_every_class_once_per_group():
    t = draw_targets("balanced", 24, 10, torch.device("cpu"), RunRNG(0))
    assert t.shape == (24,)
    assert torch.equal(t[:10], torch.arange(10)) and torch.equal(t[10:20], torch.arange(10))
    assert ((0 <= t[20:]) & (t[20:] < 10)).all()


def test_each_group_of_samples_has_its_own_noisy_layer():
    emb = torch.randn(3, 5)
    g = LabelGenerator(emb, batch_size=7, group=3, le_size=16).eval()
    assert len(g.noisy) == 3
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    codes = g.codes(targets)
    assert codes.shape == (7, 16)
    # the same class in two groups goes through two different layers
    assert not torch.allclose(codes[0], codes[3])
    torch.testing.assert_close(codes[3], g.noisy[1](g.norm(emb[targets])[3:4])[0])
    assert g(targets).shape == (7, 3, 32, 32)
    with pytest.raises(ValueError):
        g.codes(torch.zeros(10, dtype=torch.long))   # more samples than the 3 noisy layers of 3 cover


def test_class_embeddings(tiny_teacher):
    rows = class_embedding("classifier", tiny_teacher, 10)
    assert torch.equal(rows, tiny_teacher.fc.weight.detach())
    assert torch.equal(class_embedding("onehot", tiny_teacher, 10), torch.eye(10))
    g = class_embedding("gaussian", tiny_teacher, 10, dim=512)
    assert g.shape == (10, 512) and torch.equal(g, class_embedding("gaussian", tiny_teacher, 10, dim=512))
    with pytest.raises(ValueError, match="unknown class embedding"):
        class_embedding("clip", tiny_teacher, 10)


def test_noise_is_redrawn_every_round_and_the_generator_renewed_after_its_life(tiny_teacher):
    s = synthesizer_for("nayer", tiny_teacher, batch_size=12, iterations=2, g_life=2)
    seen_noise, generators = [], []
    for r in range(5):
        s.start_round(r)
        seen_noise.append(s.param.generator.noisy[0].weight.detach().clone())
        generators.append(s.param.generator)
        s.step()
        s.commit()
    assert all(not torch.equal(a, b) for a, b in zip(seen_noise, seen_noise[1:]))
    # rounds 0-1 one generator, 2-3 a new one, 4 a third
    assert generators[0] is generators[1] and generators[1] is not generators[2]
    assert generators[2] is generators[3] and generators[3] is not generators[4]
    assert s.targets[:10].tolist() == list(range(10))


def test_the_kept_generator_learns_between_rounds(tiny_teacher):
    s = synthesizer_for("nayer", tiny_teacher, batch_size=12, iterations=2, g_life=0)
    s.start_round(0)
    before = s.param.generator.net.project[0].weight.detach().clone()
    s.step()
    s.step()
    s.commit()
    s.start_round(1)
    assert not torch.equal(before, s.param.generator.net.project[0].weight)


def test_preset_follows_nayers_script():
    synth, distill = preset("nayer", "reference")
    assert (synth.param, synth.iterations, synth.batch_size, synth.lr_g, synth.nz) == ("label", 30, 400, 4e-3, 1000)
    assert (synth.beta, synth.oh, synth.gamma, synth.bn_momentum, synth.g_life) == (10.0, 0.5, 1.33, 0.9, 20)
    assert (distill.batch_size, distill.lr, distill.lr_min, distill.T) == (512, 0.2, 2e-4, 20.0)
    cfg = make_config("nayer", "reference")
    assert (cfg.rounds, cfg.warmup) == (400, 0.5)
    assert make_config("nayer").warmup == pytest.approx(20 / 120)


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_nayer_and_nayer_plus_lh_run_end_to_end_and_resume(tmp_path, synthetic_cifar, tiny_teacher, alpha):
    cfg = make_config("nayer", synth={"batch_size": 12, "iterations": 2, "alpha": alpha, "g_life": 2},
                      distill={"batch_size": 8, "steps_per_round": 2}, rounds=3, warmup=0.3, eval_every=0,
                      data=str(synthetic_cifar), student="wrn16_1", checkpoint_seconds=0)
    run = Run(cfg, tmp_path / "run", teacher=tiny_teacher)
    fin = run_to_end(run)
    assert fin.round == 3 and fin.bank_size == 36
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["method"] == "nayer" and result["compute"]["kd_student"] == run.progress.kd_steps * 8
    assert run.progress.kd_steps == 4   # the first round is the warm-up: no KD
    resumed = Run(cfg.__class__(**{**cfg.__dict__, "rounds": 4}), tmp_path / "run", resume=True, teacher=tiny_teacher)
    assert resumed.progress.round == 3 and resumed.synth.param.rounds_lived == run.synth.param.rounds_lived
    assert torch.equal(resumed.synth.param.generator.net.project[0].weight, run.synth.param.generator.net.project[0].weight)
    run_to_end(resumed)
    assert resumed.progress.round == 4
    if alpha:
        assert "H" in json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[1])["synth"]
