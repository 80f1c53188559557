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
