"""Attention transfer in the KD step: which stages are paired, and that the term trains the student."""
import torch

from ifhe.distill import attention_pairs, kd_step, make_kd_optimizer
from ifhe.models import create_model

CPU = torch.device("cpu")


def test_attention_pairs_match_spatial_sizes():
    wrn = attention_pairs(create_model("wrn16_1", 10), create_model("wrn16_2", 10), CPU)
    assert wrn == (("block1", "block1"), ("block2", "block2"), ("block3", "block3"))
    # VGG11 halves the size in its first stage, ResNet18 only from its second
    mixed = attention_pairs(create_model("resnet18", 10), create_model("vgg11_bn", 10), CPU)
    assert mixed == (("block2", "block1"), ("block3", "block2"), ("block4", "block3"))


def test_kd_step_reports_and_lowers_the_attention_term():
    torch.manual_seed(0)
    teacher = create_model("wrn16_2", 10).eval().requires_grad_(False)
    student = create_model("wrn16_1", 10)
    pairs = attention_pairs(student, teacher, CPU)
    opt = make_kd_optimizer(student, None, lr=0.05, momentum=0.9, weight_decay=0.0)
    x = torch.randn(16, 3, 32, 32)
    first = kd_step(student, None, teacher, x, opt, 1.0, ("block1",), at=250.0, at_pairs=pairs)
    for _ in range(15):
        last = kd_step(student, None, teacher, x, opt, 1.0, ("block1",), at=250.0, at_pairs=pairs)
    assert set(first) == {"kd_student", "attention"}
    assert last["attention"] < 0.5 * first["attention"]
    without = kd_step(student, None, teacher, x, opt, 1.0, ("block1",))
    assert "attention" not in without


def test_zskt_kd_step_uses_adam_elementmean_and_clips_the_students_gradient():
    import math
    torch.manual_seed(0)
    teacher = create_model("wrn16_2", 10).eval().requires_grad_(False)
    student = create_model("wrn16_1", 10)
    opt = make_kd_optimizer(student, None, lr=2e-3, momentum=0.9, weight_decay=0.0, kind="adam")
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["betas"] == (0.9, 0.999)
    x = 5 * torch.randn(8, 3, 32, 32)
    norms = []
    orig = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        total = orig(params, max_norm, *a, **k)
        norms.append((float(total), max_norm))
        return total

    torch.nn.utils.clip_grad_norm_ = spy
    try:
        losses = kd_step(student, None, teacher, x, opt, 1.0, ("block1",), kl_reduction="elementmean",
                         grad_clip=5.0)
    finally:
        torch.nn.utils.clip_grad_norm_ = orig
    assert norms and norms[0][1] == 5.0
    assert math.isfinite(float(losses["kd_student"]))


def test_head_only_kd_step_trains_h_and_leaves_the_student():
    from ifhe.heads import head_for
    from ifhe.zoo import attach_dataset, freeze
    torch.manual_seed(0)
    teacher = attach_dataset(freeze(create_model("wrn16_1", 10)), "cifar10")
    student = create_model("wrn16_1", 10)
    head = head_for(teacher)
    opt = make_kd_optimizer(student, head, lr=0.1, momentum=0.9, weight_decay=1e-4)
    before_s = [p.detach().clone() for p in student.parameters()]
    before_h = [p.detach().clone() for p in head.parameters()]
    losses = kd_step(None, head, teacher, torch.randn(8, 3, 32, 32), opt, 20.0, ("block1", "block2", "block3"))
    assert set(losses) == {"kd_head"}
    assert all(torch.equal(a, b) for a, b in zip(before_s, student.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_h, head.parameters()))
