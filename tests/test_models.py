import pytest
import torch

from ifhe.errors import IfheError
from ifhe.hooks import BNStatHook, FeatureTap
from ifhe.models import ARCHITECTURES, create_generator, create_model


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_forward_and_every_stage_tap(arch):
    model = create_model(arch, 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with FeatureTap(model, model.stages) as tap:
        logits = model(x)
        feats = dict(tap.features)
        concat = tap.concat()
    assert logits.shape == (2, 10)
    assert list(feats) == list(model.stages)
    for stage, f in feats.items():
        assert f.shape == (2, model.stage_channels[stage]), stage
    assert concat.shape == (2, sum(model.stage_channels.values()))
    # the penultimate tap is exactly what the classifier reads
    torch.testing.assert_close(model.fc(feats["penultimate"]), logits)


def test_tap_removes_its_hooks():
    model = create_model("wrn16_1", 10)
    with FeatureTap(model, ["block2"]) as tap:
        model(torch.randn(1, 3, 32, 32))
    tap.features.clear()
    model(torch.randn(1, 3, 32, 32))
    assert tap.features == {}
    assert all(not m._forward_hooks for m in model.modules())


def test_unpooled_tap_keeps_spatial_maps():
    model = create_model("wrn16_2", 10)
    with FeatureTap(model, ["block1", "block3"], pool=False) as tap:
        model(torch.randn(2, 3, 32, 32))
    assert tap.features["block1"].shape == (2, 32, 32, 32)
    assert tap.features["block3"].shape == (2, 128, 8, 8)


def test_bn_hook_records_input_statistics():
    model = create_model("wrn16_1", 10).eval()
    x = torch.randn(4, 3, 32, 32)
    with BNStatHook(model) as hook:
        model(x)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert len(hook.stats) == n_bn
    first = model.block1[0].bn1  # reads conv1's output
    with torch.no_grad():
        inp = model.conv1(x)
    torch.testing.assert_close(hook.stats[0].mean, inp.mean((0, 2, 3)))
    torch.testing.assert_close(hook.stats[0].var, inp.var((0, 2, 3), unbiased=False))
    assert hook.stats[0].running_var is first.running_var


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(IfheError, match="unknown architecture 'wrn99_9'.*wrn16_2.*resnet34.*vgg11_bn"):
        create_model("wrn99_9", 10)


def test_unknown_stage_is_named():
    with pytest.raises(IfheError, match="block7"):
        FeatureTap(create_model("wrn16_1", 10), ["block7"])


def test_bad_class_count():
    with pytest.raises(IfheError, match="num_classes"):
        create_model("wrn16_1", 1)


def test_generator_shape_and_range():
    g = create_generator(nz=256)
    img = g(torch.randn(3, 256))
    assert img.shape == (3, 3, 32, 32)
    assert img.min() >= 0 and img.max() <= 1
    with pytest.raises(ValueError, match="z of shape"):
        g(torch.randn(3, 100))
