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


def _js_reference(a, b, T):
    """CMI's criterions.jsdiv / NVlabs' ADI term, written out with Python floats: 0.5 KL(M||P) + 0.5 KL(M||Q)
    with P, Q, M clamped to [0.01, 0.99] (M formed before clamping), mean over the batch."""
    def softmax(row):
        e = [math.exp(v / T) for v in row]
        return [v / sum(e) for v in e]
    clamp = lambda v: min(max(v, 0.01), 0.99)  # noqa: E731
    total = 0.0
    for ra, rb in zip(a.tolist(), b.tolist()):
        p, q = softmax(ra), softmax(rb)
        m = [clamp(0.5 * (x + y)) for x, y in zip(p, q)]
        p, q = [clamp(x) for x in p], [clamp(x) for x in q]
        total += 0.5 * sum(mi * math.log(mi / pi) for mi, pi in zip(m, p)) + \
            0.5 * sum(mi * math.log(mi / qi) for mi, qi in zip(m, q))
    return total / len(a)


def test_js_divergence_is_the_reference_codes_form():
    a, b = torch.tensor([[0.0, 100.0]]), torch.tensor([[100.0, 0.0]])
    # disjoint: P, Q clamped to (0.01, 0.99), M = (0.5, 0.5): KL(M||P) = 0.5 ln 50 + 0.5 ln(0.5/0.99)
    expected = 0.5 * math.log(50) + 0.5 * math.log(0.5 / 0.99)
    assert L.js_divergence(a, b).item() == pytest.approx(expected, rel=1e-5)
    assert L.js_divergence(a, a).item() == pytest.approx(0.0, abs=1e-6)
    torch.manual_seed(0)
    x, y = 3 * torch.randn(4, 10), 3 * torch.randn(4, 10)
    for T in (1.0, 3.0):
        assert L.js_divergence(x, y, T=T).item() == pytest.approx(_js_reference(x, y, T), rel=1e-5)
    # not the textbook 0.5 KL(P||M) + 0.5 KL(Q||M)
    p, q = torch.softmax(x / 3, 1), torch.softmax(y / 3, 1)
    m = 0.5 * (p + q)
    textbook = 0.5 * ((p * (p / m).log()).sum(1) + (q * (q / m).log()).sum(1)).mean().item()
    assert abs(L.js_divergence(x, y, T=3.0).item() - textbook) > 0.01


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
    assert L.dafl_balance_loss(uniform, log_base=10).item() == pytest.approx(-math.log10(2))  # DAFL's own log10
    one_class = torch.tensor([[50.0, 0.0]] * 4)
    assert L.dafl_balance_loss(one_class).item() == pytest.approx(0.0, abs=1e-6)


def test_total_variation_by_hand():
    x = torch.zeros(1, 1, 2, 2)
    x[0, 0, 0, 0] = 1.0
    # CMI's l1 form, directions right, down, anti-diagonal, diagonal: |1-0| over 2 pairs -> 0.5, 0.5;
    # anti-diagonal x[1,0]-x[0,1] = 0 -> 0; diagonal x[0,0]-x[1,1] = 1 over 1 pair -> 1
    assert L.total_variation(x, form="l1").item() == pytest.approx(0.5 + 0.5 + 0.0 + 1.0)
    # NVlabs' l2 form: norms 1, 1, 0, 1
    assert L.total_variation(x, form="l2").item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="total-variation form"):
        L.total_variation(x, form="l3")


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


def test_elementmean_is_f_kl_div_default_reduction():
    """ZSKT's solver.py calls F.kl_div without a reduction: the mean over all N x C elements."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    s, t = torch.randn(5, 10), torch.randn(5, 10)
    zskt = F.kl_div(F.log_softmax(s, dim=1), F.softmax(t, dim=1), reduction="mean")
    assert L.kd_kl(s, t, reduction="elementmean").item() == pytest.approx(zskt.item(), rel=1e-6)
    assert L.kd_kl(s, t).item() == pytest.approx(10 * zskt.item(), rel=1e-6)
    assert L.masked_adversarial_kl(s, t, use_mask=False, reduction="elementmean").item() == \
        pytest.approx(-zskt.item(), rel=1e-6)
