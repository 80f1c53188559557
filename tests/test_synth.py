import pytest
import torch

from ifhe.config import METHODS, preset
from ifhe.errors import IfheError
from ifhe.models import create_model
from ifhe.synth import InversionSynthesizer, synthesizer_for
from ifhe.zoo import attach_dataset


@pytest.fixture
def teacher(tiny_teacher):
    return tiny_teacher


def make(teacher, method="ifhe", **over):
    return synthesizer_for(method, teacher, **{"batch_size": 6, "iterations": 3, **over})


@pytest.mark.parametrize("method", METHODS)
def test_every_method_steps_and_commits(teacher, method):
    s = make(teacher, method)
    s.start_round(0)
    reports = [s.step() for _ in range(3)]
    assert reports[-1].iteration == 3 and "total" in reports[-1].losses
    assert all(torch.isfinite(v) for r in reports for v in r.losses.values())
    images, labels = s.commit()
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 32, 32) and labels.shape == (6,)
    # the student and h are trainable, yet synthesis leaves no gradient on them (only on the images' source)
    assert all(p.requires_grad for p in s.student.parameters())
    assert not any(p.grad is not None for p in s.student.parameters())
    assert not any(p.grad is not None for p in s.head.parameters())


def test_ifhe_terms_and_sorted_labels(teacher):
    s = make(teacher, "ifhe")
    s.start_round(0)
    rep = s.step()
    assert set(rep.losses) == {"H", "bns", "adv", "total"}
    assert torch.equal(s.targets, s.targets.sort().values)
    w = s.cfg
    expected = w.alpha * rep.losses["H"] + w.beta * rep.losses["bns"] + w.gamma * rep.losses["adv"]
    torch.testing.assert_close(rep.losses["total"], expected)


def test_alpha_plugs_into_dafl(teacher):
    s = make(teacher, "dafl", alpha=0.5)
    s.start_round(0)
    assert "H" in s.step().losses
    plain = make(teacher, "dafl")
    plain.start_round(0)
    assert "H" not in plain.step().losses


def test_kept_batch_is_a_copy(teacher):
    s = make(teacher, "deepinversion")
    s.start_round(0)
    s.step()
    kept = s.best_x
    live_before = s.param.x.detach().clone()
    s.step()  # the live pixels change...
    assert not torch.equal(live_before, s.param.x.detach())
    assert kept.data_ptr() != s.param.x.data_ptr()
    images, _ = s.commit()
    images2, _ = s.commit()
    images[:] = 0
    assert images2.max() > 0  # commit returns independent tensors


def test_best_batch_is_lowest_loss(teacher):
    s = make(teacher, "ifhe")
    s.start_round(0)
    totals = [float(s.step().losses["total"]) for _ in range(3)]
    assert float(s.best_loss) == pytest.approx(min(totals))


def test_live_weights(teacher):
    s = make(teacher, "ifhe")
    s.start_round(0)
    s.set_weights(alpha=0.0, gamma=0.0)
    rep = s.step()
    assert "H" not in rep.losses and "adv" not in rep.losses
    with pytest.raises(IfheError, match="not a loss weight: lr_g"):
        s.set_weights(lr_g=1.0)
    with pytest.raises(IfheError, match="alpha must be a number >= 0"):
        s.set_weights(alpha=-1.0)
    with pytest.raises(IfheError, match="cr .*cannot be switched on during a run"):
        s.set_weights(cr=0.8)  # a term this method lacks: CMI's memory is built at the start
    assert s.cfg.alpha == 0.0  # a refused change leaves the weights as they were


def test_student_must_not_be_teacher(teacher):
    synth, _ = preset("zskt", "cpu")
    with pytest.raises(IfheError, match="different model"):
        InversionSynthesizer(synth, teacher, teacher, None, teacher.normalizer, 10, torch.device("cpu"))


def test_unfrozen_teacher_refused():
    t = attach_dataset(create_model("wrn16_1", 10), "cifar10")
    synth, _ = preset("ifhe", "cpu")
    with pytest.raises(IfheError, match="frozen"):
        InversionSynthesizer(synth, t, create_model("wrn16_1", 10), None, t.normalizer, 10, torch.device("cpu"))


def test_generator_state_roundtrip(teacher):
    a = make(teacher, "fast")
    a.start_round(0)
    a.step()
    a.commit()
    b = make(teacher, "fast")
    b.load_state_dict(a.state_dict())
    for (k, x), y in zip(a.generator.state_dict().items(), b.generator.state_dict().values()):
        assert torch.equal(x, y), k
    assert b.term_states["bns"].stats is not None


def test_cmi_memory_is_bounded_and_fills_round_by_round(teacher):
    s = make(teacher, "cmi", cr_bank=12, cr_negatives=4)  # batch 6: two rounds fill it
    for r in range(4):
        s.start_round(r)
        s.step()
        s.commit()
        assert s.term_states["cr"].memory.count == min(12, 6 * (r + 1))
    memory = s.term_states["cr"].memory
    assert memory.data.shape[0] == 12 and memory.data.dtype == torch.float16
    assert memory.nbytes == 12 * memory.data.shape[1] * 2


def test_gan_style_sample(teacher):
    s = make(teacher, "dfq")
    x = s.sample(5)
    assert x.shape == (5, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    with pytest.raises(NotImplementedError):
        make(teacher, "deepinversion").sample(2)


@pytest.mark.parametrize("method, training", [("zskt", True), ("dfq", False), ("cmi", False)])
def test_student_mode_while_the_generator_is_scored(teacher, method, training):
    s = make(teacher, method)
    modes = []
    handle = s.student.register_forward_pre_hook(lambda m, inp: modes.append(m.training))
    try:
        s.start_round(0)
        s.step()
    finally:
        handle.remove()
    assert modes == [training]  # ZSKT's code keeps the student in training mode; the bank methods' do not


def test_cmi_draws_negatives_at_random_from_the_whole_memory():
    """CMI's MemoryBank.get_data: k distinct rows, uniformly from every row written (not the newest k)."""
    from ifhe.synth.term_state import FeatureMemory
    mem = FeatureMemory(capacity=40, dim=2, device=torch.device("cpu"))
    mem.add(torch.arange(30, dtype=torch.float32)[:, None].repeat(1, 2))
    assert mem.count == 30
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        rows = mem.draw(8, g)[:, 0].tolist()
        assert len(rows) == 8 and len(set(rows)) == 8  # without replacement
        assert all(0 <= r < 30 for r in rows)          # only rows written so far
        seen |= set(rows)
    assert seen == set(range(30))                      # every row can be drawn, old ones too
    assert mem.draw(100, g).shape == (30, 2)           # fewer rows than asked: all of them
    mem.add(torch.full((25, 2), 99.0))                  # wraps around: still 40 rows at most
    assert mem.count == 40 and mem.data.shape == (40, 2)


def test_memory_size_of_cmis_bank_is_stated():
    """40,960 rows of (local, global) features of a WRN-16-2 teacher (912 BN channels a view), in float16."""
    from ifhe.synth.term_state import FeatureMemory
    mem = FeatureMemory(40960, 2 * 912, torch.device("meta"))
    assert mem.nbytes == 40960 * 1824 * 2  # 149 MB, half of CMI's float32 bank


def test_deepinversion_rolls_and_flips_the_whole_batch():
    from ifhe.data import roll_flip
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        dy, dx = int(torch.randint(-4, 5, (), generator=g)), int(torch.randint(-4, 5, (), generator=g))
        flip = float(torch.rand((), generator=g)) < 0.5
        expected = torch.roll(x, shifts=(dy, dx), dims=(2, 3))  # CMI's jitter_and_flip, lim 1/8 of 32 = 4
        expected = torch.flip(expected, dims=(3,)) if flip else expected
        assert torch.equal(roll_flip(x, generator=torch.Generator().manual_seed(seed)), expected)


@pytest.mark.parametrize("method", ["dafl", "zskt", "dfq"])
def test_gan_style_methods_show_the_teacher_the_generator_output_as_is(teacher, method, monkeypatch):
    """DAFL, ZSKT and DFQ put no augmentation between generator and teacher (their reference code)."""
    from ifhe.hooks import TeacherProbe
    s = make(teacher, method)
    seen = []
    teacher_pass = TeacherProbe.forward  # a step's teacher pass (the probe runs the teacher's own tensors)
    monkeypatch.setattr(TeacherProbe, "forward", lambda self, x: (seen.append(x.detach().clone()),
                                                                  teacher_pass(self, x))[1])
    s.start_round(0)
    s.step()
    torch.testing.assert_close(seen[0], teacher.normalizer(s.best_x), atol=1e-5, rtol=1e-5)


def test_dafl_and_zskt_generators_emit_the_teachers_input():
    from ifhe.models import create_generator
    for name in ("dafl", "zskt"):
        g = create_generator(name, nz=16).train()
        out = g(torch.randn(64, 16))
        assert g.output_space == "normalized"
        # a BatchNorm is their last layer: per-channel batch mean ~0 (and std ~1 without affine scaling)
        assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert isinstance(create_generator("dafl", nz=16).body[-2], torch.nn.Tanh)
    assert create_generator("dafl", nz=16).body[3].eps == 0.8  # DAFL-train.py's BatchNorm2d(128, 0.8)


def test_fast_resets_the_first_layers_once_late_in_the_run(teacher):
    s = make(teacher, "fast")
    s.start_round(0, progress=0.1)
    before = [p.detach().clone() for p in s.generator.first_layers()[0].parameters()]
    s.step()
    s.commit()
    s.start_round(1, progress=s.cfg.reset_l0_at)
    linear, bn = s.generator.first_layers()
    assert s.l0_reset_done and not torch.equal(linear.weight, before[0])
    assert bn.weight.abs().mean() < 0.1 and torch.count_nonzero(bn.bias) == 0  # N(0, 0.02), as Fast draws it
    snapshot = linear.weight.detach().clone()
    s.step()
    s.commit()
    s.start_round(2, progress=0.9)  # only once
    assert torch.equal(linear.weight, s.generator.first_layers()[0].weight) and s.l0_reset_done
    del snapshot


def test_no_adversarial_term_during_the_warmup(teacher):
    s = make(teacher, "fast")
    s.start_round(0, warmup=True)
    assert "adv" not in s.step().losses
    s.commit()
    s.start_round(1, warmup=False)
    assert "adv" in s.step().losses


def test_zskt_adversarial_term_is_elementmean(teacher):
    """ZSKT's -F.kl_div(...) with the default reduction: the batch-mean KL over the class count."""
    s = make(teacher, "zskt")
    s.start_round(0)
    with torch.no_grad():
        x = teacher.normalizer(s.param._to_unit(s.generator(s.param.noise(6))))
    assert s.cfg.adv_reduction == "elementmean"
    rep = s.step()
    assert rep.losses["adv"] <= 0 and rep.losses["adv"] > -10
    del x
