"""The speed work changes how things are computed, never what: each fast path against the plain PyTorch it
replaces, values and gradients, on small tensors (docs/PROFILE.md says what each one saves)."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ifhe.device import maybe_compile
from ifhe.hooks import BNStatHook, FeatureTap, TeacherProbe, channel_moments, spatial_mean
from ifhe.models import create_generator
from ifhe.synth.generative import generate, upsample_conv3x3
from ifhe.synth.inversion import ProjectionHead


def _plain_moments(x, rows):
    xs = x[:rows]
    mean = xs.mean(dim=(0, 2, 3))
    var = (xs * xs).mean(dim=(0, 2, 3)) - mean * mean
    return mean, var.clamp_min(0), x.mean(dim=(2, 3))


@pytest.mark.parametrize("rows", [None, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_channel_moments_match_autograd(rows, channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, 6, 6, generator=g, dtype=torch.float64) * 2 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w_mean, w_var, w_inst = (torch.randn(4, generator=g, dtype=torch.float64),
                             torch.randn(4, generator=g, dtype=torch.float64),
                             torch.randn(5, 4, generator=g, dtype=torch.float64))
    grads = []
    for fn in (lambda x: channel_moments(x, True, rows), lambda x: _plain_moments(x, rows or x.shape[0])):
        xi = x.clone().requires_grad_(True)
        mean, var, inst = fn(xi)
        ((mean * w_mean).sum() + (var * w_var).sum() + (inst * w_inst).sum()).backward()
        grads.append((mean.detach(), var.detach(), inst.detach(), xi.grad))
    for ours, plain in zip(*grads):
        torch.testing.assert_close(ours, plain)
    if rows:  # images past `rows` get only their instance means' gradient
        torch.testing.assert_close(grads[0][3][rows:], (w_inst[rows:] / 36).view(2, 4, 1, 1).expand(2, 4, 6, 6))


def test_channel_moments_gradcheck_without_instance_means():
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: channel_moments(x, False)[:2], (x,))
    assert torch.autograd.gradcheck(lambda x: channel_moments(x, True, rows=2), (x,))


def test_spatial_mean_matches_mean():
    x = torch.randn(3, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(spatial_mean, (x,))
    torch.testing.assert_close(spatial_mean(x), x.mean(dim=(2, 3)))


@pytest.mark.parametrize("bias", [True, False])
def test_upsample_conv3x3_is_conv_of_nearest_upsampling(bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=bias).double()
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    outs, grads = [], []
    for fn in (lambda x: upsample_conv3x3(x, conv), lambda x: conv(F.interpolate(x, scale_factor=2))):
        conv.zero_grad()
        xi = x.clone().requires_grad_(True)
        y = fn(xi)
        (y * torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y)).sum().backward()
        outs.append(y.detach())
        grads.append([xi.grad, *(p.grad.clone() for p in conv.parameters())])
    assert outs[0].shape == (2, 5, 8, 12)
    torch.testing.assert_close(outs[0], outs[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["cmi", "large", "dafl", "zskt"])
def test_generate_is_the_generator_forward(kind):
    torch.manual_seed(0)
    g = create_generator(kind, nz=16, ngf=8, img_size=32).double()
    z = torch.randn(3, 16, dtype=torch.float64)
    outs = []
    for fn in (lambda: generate(g, z), lambda: g(z)):
        g.zero_grad()
        y = fn()
        (y * torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y)).sum().backward()
        outs.append((y.detach(), [p.grad.clone() for p in g.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="z of shape"):
        generate(g, torch.zeros(3, 7, dtype=torch.float64))


def test_projection_head_constant_rows_is_the_projection_of_the_concatenation():
    torch.manual_seed(0)
    head = ProjectionHead(6, 4).double()
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    cached = torch.randn(5, 6, dtype=torch.float64)
    a = head(x, cached)
    b = head(torch.cat([x, cached]))
    torch.testing.assert_close(a, b)
    ga = torch.autograd.grad(a.sum(), [x, *head.parameters()])
    gb = torch.autograd.grad(b.sum(), [x, *head.parameters()])
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v)


def test_teacher_probe_records_what_the_hooks_record(tiny_teacher):
    """One pass of the probe = the teacher under BNStatHook + FeatureTap; stats and taps of the first `rows`."""
    x = torch.rand(6, 3, 32, 32)
    stages = ("block1", "block2")
    probe = TeacherProbe(tiny_teacher, stages, instance_means=True, rows=4)
    logits, stats, feats = probe(x)
    with BNStatHook(tiny_teacher, instance_means=True) as bn, FeatureTap(tiny_teacher, list(stages)) as tap:
        ref = tiny_teacher(x[:4])
        ref_stats = list(bn.stats)
        ref_feats = [tap.features[s] for s in stages]
    torch.testing.assert_close(logits[:4], ref, rtol=1e-4, atol=1e-5)
    for (mean, var, inst), r in zip(stats, ref_stats):
        torch.testing.assert_close(mean, r.mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(var, r.var, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(inst[:4], r.instance_mean, rtol=1e-4, atol=1e-5)
        assert inst.shape[0] == 6  # instance means of every image (CMI's local views ride along)
    for f, r in zip(feats, ref_feats):
        torch.testing.assert_close(f, r, rtol=1e-4, atol=1e-5)
    # the probe shares the teacher's tensors and records nothing when the teacher itself is called
    assert all(a is b for a, b in zip(probe.model.parameters(), tiny_teacher.parameters()))
    tiny_teacher(x)
    assert probe._stats == [] and probe._features == {}
    with pytest.raises(Exception, match="unknown stage"):
        TeacherProbe(tiny_teacher, ("block9",))


def test_compile_falls_back_to_eager_when_compiling_fails(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no C++ compiler found")
    monkeypatch.setattr(torch, "compile", broken)
    lin = nn.Linear(3, 2)
    run = maybe_compile(lin, "test module", enabled=True)
    x = torch.randn(4, 3)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        y = run(x)
        run(x)  # said once
    torch.testing.assert_close(y, lin(x))
    assert len([m for m in w if "torch.compile of the test module failed" in str(m.message)]) == 1
    assert maybe_compile(lin, "off", enabled=False) is lin
