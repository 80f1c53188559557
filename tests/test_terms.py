"""Every row of ifhe.terms.TERMS, alone: finite, a gradient on the images' source, and its state (if it keeps
one) survives a checkpoint: a restored synthesizer takes the same next step as the original."""
import pytest
import torch

from ifhe.checkpoint import load_state, save_state
from ifhe.synth import synthesizer_for
from ifhe.terms import TERMS, WEIGHTS

# what each term needs besides its own weight, to be switched on alone on the CMI generator (adv: the plain KL,
# whose gradient does not vanish where a random student and teacher happen to disagree on every image)
ALONE = {"adv": {"adv_kind": "kl"}, "bns": {"bn_momentum": 0.9}, "cr": {"cr_bank": 24, "cr_negatives": 4}}


def alone(teacher, term, seed=0):
    weights = {w: 0.0 for w in WEIGHTS} | {term.weight: 1.0}
    torch.manual_seed(seed)
    return synthesizer_for("cmi", teacher, batch_size=6, iterations=3, **weights, **ALONE.get(term.key, {}))


def one_round(s, r):
    s.start_round(r)
    reps = [s.step() for _ in range(2)]
    s.commit()
    return reps


@pytest.mark.parametrize("term", TERMS, ids=[t.key for t in TERMS])
def test_every_term_alone_is_finite_with_a_gradient_and_survives_save_restore(tiny_teacher, term, tmp_path):
    a = alone(tiny_teacher, term)
    reps = one_round(a, 0)
    assert set(reps[-1].losses) == {term.key, "total"}
    assert all(torch.isfinite(r.losses[term.key]) for r in reps)
    grads = [p.grad for p in a.generator.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0, f"{term.key}: no gradient on the generator"
    one_round(a, 1)

    b = alone(tiny_teacher, term, seed=1)   # other weights: everything that matters must come from the state
    save_state(tmp_path / "synth.safetensors", a.state_dict())   # through the checkpoint format, as a Run does
    b.load_state_dict(load_state(tmp_path / "synth.safetensors")[0])
    b.rng.load_state_dict(a.rng.state_dict())
    b.student.load_state_dict(a.student.state_dict())   # the student and h are the run's (its checkpoint has them)
    b.head.load_state_dict(a.head.state_dict())
    assert set(b.term_states) == set(a.term_states)
    for key, st in a.term_states.items():
        _assert_same(st.state_dict(), b.term_states[key].state_dict(), f"{term.key}/{key}")
    ra, rb = one_round(a, 2), one_round(b, 2)
    for x, y in zip(ra, rb):
        torch.testing.assert_close(x.losses["total"], y.losses["total"], rtol=1e-5, atol=1e-6)


def _assert_same(x, y, where):
    if isinstance(x, torch.Tensor):
        assert torch.equal(x, y), where
    elif isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for k in x:
            _assert_same(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            _assert_same(u, v, f"{where}[{i}]")
    else:
        assert x == y, where


def test_the_synthesizer_names_no_term():
    """Terms are run from the table: the synthesizer reads no term's weight and names no term's key."""
    import inspect

    import ifhe.synth.inversion as inversion

    src = inspect.getsource(inversion.InversionSynthesizer)
    for t in TERMS:
        assert f"cfg.{t.weight} " not in src and f"cfg.{t.weight})" not in src, t.weight
        assert f'"{t.key}"' not in src and f"'{t.key}'" not in src, t.key
    for word in ("contrastive", "negatives", "cr_head", "bn_momentum"):
        assert word not in src, word
