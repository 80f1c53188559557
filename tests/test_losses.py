"""Every loss against a hand computation on small tensors."""
import math

import pytest
import torch

from ifhe import losses as L
from ifhe.hooks import BNStats


def test_kd_kl_by_hand():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    T = 2.0
    ps = torch.softmax(s / T, 1)[0]
    pt = torch.softmax(t / T, 1)[0]
    expected = float((pt * (pt.log() - ps.log())).sum()) * T * T
    assert L.kd_kl(s, t, T=T).item() == pytest.approx(expected, rel=1e-6)
    assert L.kd_kl(t, t).item() == pytest.approx(0.0, abs=1e-7)
    two = torch.cat([s, t]), torch.cat([t, t])
    assert L.kd_kl(*two, T=T).item() == pytest.approx(expected / 2, rel=1e-6)  # batchmean


def test_bn_stat_loss_by_hand():
    st = BNStats(mean=torch.tensor([1.0, 2.0]), var=torch.tensor([1.0, 1.0]),
                 running_mean=torch.tensor([1.0, 0.0]), running_var=torch.tensor([4.0, 1.0]))
    # ||var - rv|| = 3, ||mean - rm|| = 2
    assert L.bn_stat_loss([st]).item() == pytest.approx(5.0)
    assert L.bn_stat_loss([st, st], first_multiplier=2.0).item() == pytest.approx(15.0)
    # momentum: 0.5 * batch + 0.5 * earlier (mean [1, 0], var [4, 1]) -> mean [1, 1], var [2.5, 1]
    mom = [(torch.tensor([1.0, 0.0]), torch.tensor([4.0, 1.0]))]
    assert L.bn_stat_loss([st], momentum_stats=mom, momentum=0.5).item() == pytest.approx(1.5 + 1.0)


def test_one_hot_and_heterogeneity_ce_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert L.one_hot_ce(logits, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)
    assert L.heterogeneity_ce(logits, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)


def test_masked_adversarial_kl_by_hand():
    t = torch.tensor([[3.0, 0.0], [3.0, 0.0]])
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # first agrees with the teacher, second does not
    kl0 = L.kd_kl(s[:1], t[:1]).item()
    assert L.masked_adversarial_kl(s, t).item() == pytest.approx(-kl0 / 2, rel=1e-6)
    kl1 = L.kd_kl(s[1:], t[1:]).item()
    assert L.masked_adversarial_kl(s, t, use_mask=False).item() == pytest.approx(-(kl0 + kl1) / 2, rel=1e-6)


def test_js_divergence_by_hand():
    a, b = torch.tensor([[0.0, 100.0]]), torch.tensor([[100.0, 0.0]])
    assert L.js_divergence(a, b).item() == pytest.approx(math.log(2), rel=1e-4)  # disjoint: ln 2
    assert L.js_divergence(a, a).item() == pytest.approx(0.0, abs=1e-6)
    x, y = torch.randn(4, 5), torch.randn(4, 5)
    assert L.js_divergence(x, y).item() == pytest.approx(L.js_divergence(y, x).item(), rel=1e-5)


def test_contrastive_loss_by_hand():
    # two orthonormal samples matching their own global view: logits diag 1/T, off-diagonal 0
    e = torch.eye(2)
    T = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert L.contrastive_loss(e, e, T=T).item() == pytest.approx(expected, rel=1e-6)
    # current and cached halves are averaged separately and added
    assert L.contrastive_loss(e, e, T=T, n_current=1).item() == pytest.approx(2 * expected, rel=1e-6)


def test_dafl_terms_by_hand():
    f = torch.tensor([[1.0, -3.0]])
    assert L.dafl_activation_loss(f).item() == pytest.approx(-2.0)
    uniform = torch.zeros(4, 2)
    assert L.dafl_balance_loss(uniform).item() == pytest.approx(-math.log(2))
    one_class = torch.tensor([[50.0, 0.0]] * 4)
    assert L.dafl_balance_loss(one_class).item() == pytest.approx(0.0, abs=1e-6)


def test_total_variation_by_hand():
    x = torch.zeros(1, 1, 2, 2)
    x[0, 0, 0, 0] = 1.0
    # vertical diffs: (1, 0) -> mean of squares 0.5 ; horizontal: (1, 0) -> 0.5
    assert L.total_variation(x).item() == pytest.approx(1.0)


def test_unknown_reduction():
    with pytest.raises(ValueError):
        L.masked_adversarial_kl(torch.zeros(1, 2), torch.zeros(1, 2), reduction="median")
    with pytest.raises(ValueError):
        L.dafl_activation_loss(torch.zeros(1, 2), reduction="median")


def test_attention_transfer_by_hand():
    # one image, two channels on a 1x2 map: channel mean of squares [(1+1)/2, (0+4)/2] = [1, 2] -> [1, 2]/sqrt(5)
    s = torch.tensor([[[[1.0, 0.0]], [[1.0, 2.0]]]])
    t = torch.tensor([[[[3.0, 0.0]]]])  # one channel: [9, 0] -> [1, 0]; the channel counts may differ
    a_s = torch.tensor([1.0, 2.0]) / math.sqrt(5)
    expected = float(((a_s - torch.tensor([1.0, 0.0])) ** 2).mean())
    assert L.attention_transfer([s], [t]).item() == pytest.approx(expected, rel=1e-6)
    assert L.attention_transfer([s, s], [t, 2 * s]).item() == pytest.approx(expected, rel=1e-6)  # scale-free
    with pytest.raises(ValueError, match="one teacher map"):
        L.attention_transfer([s], [])
