"""`precision: bf16`: forward passes in bfloat16, every loss and statistic still in float32 and close to fp32's."""

import pytest
import torch

from ifhe.config import make_config, preset
from ifhe.device import autocast
from ifhe.distill import kd_step, make_kd_optimizer
from ifhe.errors import IfheError
from ifhe.heads import head_for
from ifhe.hooks import BNStatHook, FeatureTap
from ifhe.models import create_model
from ifhe.synth import InversionSynthesizer, synthesizer_for

CPU = torch.device("cpu")


@pytest.fixture
def teacher(tiny_teacher):
    return tiny_teacher


def first_step(teacher, method: str, precision: str):
    torch.manual_seed(1)
    s = synthesizer_for(method, teacher, precision=precision, batch_size=8, iterations=2)
    s.start_round(0)
    return s, s.step()


@pytest.mark.parametrize("method", ["ifhe", "cmi", "deepinversion", "dafl"])
def test_bf16_step_matches_fp32(teacher, method):
    _, ref = first_step(teacher, method, "fp32")
    s, low = first_step(teacher, method, "bf16")
    assert set(low.losses) == set(ref.losses)
    for name, v in low.losses.items():
        assert v.dtype == torch.float32, name
        # bf16 keeps 8 bits of mantissa: a few per cent on a loss summed over 20+ layers, not more
        torch.testing.assert_close(v, ref.losses[name], rtol=0.08, atol=0.02, msg=name)
    assert s.best_x.dtype == torch.float32  # the kept images are not rounded to bf16
    images, _ = s.commit()
    assert images.dtype == torch.uint8


def test_bn_statistics_are_float32_under_autocast(teacher):
    x = torch.randn(4, 3, 32, 32)
    with BNStatHook(teacher) as ref_hook, torch.no_grad():
        teacher(x)
    with autocast(CPU, "bf16"), BNStatHook(teacher) as hook, FeatureTap(teacher, ["block2"]) as tap, torch.no_grad():
        teacher(x)
    assert all(s.mean.dtype == s.var.dtype == torch.float32 for s in hook.stats)
    assert tap.features["block2"].dtype == torch.float32
    for a, b in zip(hook.stats, ref_hook.stats):
        torch.testing.assert_close(a.var, b.var, rtol=0.1, atol=0.05)


def test_bf16_kd_step_matches_fp32(teacher):
    x = teacher.normalizer(torch.rand(16, 3, 32, 32))
    out = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(2)
        student = create_model("wrn16_1", 10)
        head = head_for(teacher)
        opt = make_kd_optimizer(student, head, 0.1, 0.9, 1e-4)
        out[precision] = kd_step(student, head, teacher, x, opt, 4.0, ("block1", "block2", "block3"), precision)
    for name, v in out["bf16"].items():
        assert v.dtype == torch.float32 and torch.isfinite(v)
        torch.testing.assert_close(v, out["fp32"][name], rtol=0.08, atol=0.01, msg=name)


def test_unknown_precision_is_refused(teacher):
    with pytest.raises(IfheError, match="precision.*fp16.*fp32, bf16"):
        make_config("ifhe", "cpu", precision="fp16")
    with pytest.raises(IfheError, match="fp16"):  # the library path, not only the config
        InversionSynthesizer(preset("ifhe", "cpu")[0], teacher, create_model("wrn16_1", 10), head_for(teacher),
                             teacher.normalizer, 10, CPU, "fp16")


@pytest.mark.parametrize("method", ["ifhe", "cmi", "fast", "nayer", "deepinversion"])
def test_bf16_gradient_points_where_fp32_does(teacher, method):
    """What the optimizer moves gets nearly the same gradient in bf16: cosine similarity above 0.98 (measured on
    the shipped teacher at batch 64: 0.994-0.9999, results/precision/gradients.txt)."""
    def grad(precision):
        s, _ = first_step(teacher, method, precision)
        g = s.param.generator if s.param.generator is not None else None
        moved = [s.param.x] if g is None else list(getattr(s.param, "fast", None) and s.param.fast.parameters()
                                                   or g.parameters())
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in moved])
    a, b = grad("fp32"), grad("bf16")
    assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > 0.98
