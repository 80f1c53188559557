"""Every method of the engine, one entry each: its label, its reference settings with their sources, its
exceptions to the CPU scale and its sweep variants (the paper's figures for them: ifhe.paper).

Everything else derives from this table: `config.METHODS` and `config.preset`, the sweep variants of
`ifhe reproduce`, the app's method list and labels, `configs/paper/` (`configs/make_presets.py`) and the
README's method table. Adding a preset-only method is one entry here plus `python configs/make_presets.py`.
Where each reference value comes from, setting by setting, is in docs/FIDELITY.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    summary: str                  # parametrization and KD source, one line (README, app)
    synth: dict                   # SynthConfig settings at the reference scale
    distill: dict                 # DistillConfig settings at the reference scale
    run: dict = field(default_factory=dict)          # RunConfig settings at the reference scale (rounds, warmup)
    cpu_synth: dict = field(default_factory=dict)    # exceptions to the CPU rule (config._cpu_scale)
    cpu_distill: dict = field(default_factory=dict)
    cpu_run: dict = field(default_factory=dict)      # run settings at the CPU scale (a warm-up as a share of time)
    source: str = ""              # the code the reference settings follow
    variants: dict = field(default_factory=dict)     # extra sweep variants: name -> synth overrides

    def extend(self, name: str, label: str, summary: str, source: str, synth: dict | None = None,
               distill: dict | None = None, run: dict | None = None, **other) -> "Method":
        """Another method declared as this one plus changes: its settings merged over this one's (sweep
        variants are not inherited)."""
        return Method(name, label, summary, {**self.synth, **(synth or {})}, {**self.distill, **(distill or {})},
                      {**self.run, **(run or {})}, **{"cpu_synth": dict(self.cpu_synth),
                                                       "cpu_distill": dict(self.cpu_distill),
                                                       "cpu_run": dict(self.cpu_run), "source": source, **other})


# The reference code runs 200 epochs of 400 KD steps (Fast-Datafree 220); GAN-style methods synthesize once per
# `steps_per_round` KD steps, so they take 400 / steps_per_round rounds an epoch (configs/make_presets.py).
KD_STEPS_PER_EPOCH = 400

DEEPINVERSION = Method(
    "deepinversion", "DeepInversion", "pixels, Adam lr 0.1, batch-wide roll + flip; KD from the bank",
    synth=dict(param="pixels", iterations=1000, batch_size=256, lr_g=0.1, oh=1.0, beta=10.0, tv=1e-3, tv_form="l1",
               augment="roll_flip"),
    distill=dict(batch_size=256, steps_per_round=400),
    source="zju-vipa/CMI scripts/deepinv/deepinv_cifar10_wrn402_wrn161.sh without its --adv 1 (that script is ADI)")

METHOD_SPECS: dict[str, Method] = {m.name: m for m in (
    DEEPINVERSION,
    DEEPINVERSION.extend("adi", "ADI", "DeepInversion + adversarial Jensen-Shannon term (T 3); KD from the bank",
                         synth=dict(gamma=1.0, adv_kind="js", adv_T=3.0),
                         source="zju-vipa/CMI scripts/deepinv/deepinv_cifar10_wrn402_wrn161.sh"),
    Method("dafl", "DAFL", "DAFL's own generator (z resampled; tanh + BN output); one KD step on each "
                           "generator batch, 1:1",
           synth=dict(param="generator", generator="dafl", iterations=1, batch_size=1024, lr_g=0.02, lr_z=0.0,
                      betas=(0.9, 0.999), reset_generator=False, nz=1000, beta=0.0, oh=0.05, act=0.01,
                      balance=5.0, balance_log_base=10.0, targets="argmax", augment="none", commit_every=20),
           distill=dict(steps_per_round=1, batch_size=1024, source="round", T=1.0, lr=0.1, weight_decay=5e-4,
                        augment=False, lr_schedule="multistep", lr_milestones=(0.4, 0.8)),
           run=dict(rounds=2000 * 120),
           source="huawei-noah/Efficient-Computing DAFL/DAFL-train.py with its README's CIFAR-10 command",
           variants={"dafl+ifhe": {"alpha": 0.5}}),
    Method("zskt", "ZSKT", "ZSKT's generator (z resampled) scored against the student in training mode; 10 "
                           "KD steps (Adam, KL + attention transfer) on the updated generator's batch",
           synth=dict(param="generator", generator="zskt", iterations=1, batch_size=128, lr_g=1e-3, lr_z=0.0,
                      betas=(0.9, 0.999), lr_g_schedule="cosine", reset_generator=False, nz=100, beta=0.0,
                      gamma=1.0, adv_kind="kl", adv_reduction="elementmean", targets="argmax", augment="none",
                      commit_every=20, student_train=True, grad_clip=5.0),
           distill=dict(steps_per_round=10, batch_size=128, source="regenerate", T=1.0, at=250.0,
                        optimizer="adam", lr=2e-3, weight_decay=0.0, grad_clip=5.0, kl_reduction="elementmean",
                        augment=False),
           run=dict(rounds=80000),
           source="polo5/ZeroShotKnowledgeTransfer scripts/ZeroShot/main2.sh, solver.py"),
    Method("dfq", "DFQ", "CMI's large generator (z resampled); 10 KD steps on fresh samples per generator step",
           synth=dict(param="generator", generator="large", iterations=1, batch_size=256, lr_z=0.0,
                      reset_generator=False, beta=1.0, oh=1.0, gamma=1.0, adv_kind="kl", balance=20.0,
                      targets="argmax", augment="none", commit_every=20),
           distill=dict(steps_per_round=10, batch_size=256, source="generator", T=1.0, augment=False),
           run=dict(rounds=200 * 40),
           source="zju-vipa/CMI scripts/dfq/dfq_cifar10_wrn402_wrn161.sh",
           variants={"dfq+ifhe": {"alpha": 0.5}}),
    Method("cmi", "CMI", "generator + z, re-initialised each round; contrastive memory; KD from the bank",
           synth=dict(param="generator", iterations=200, batch_size=256, lr_g=1e-3, lr_z=1e-3, reset_generator=True,
                      beta=1.0, oh=1.0, gamma=0.5, cr=0.8, cr_T=0.1, cr_bank=40960, cr_negatives=4096),
           distill=dict(steps_per_round=400, batch_size=128),
           source="zju-vipa/CMI scripts/cmi/scratch_cmi_cifar10_wrn402_wrn161.sh"),
    Method("fast", "Fast", "meta-learned generator (first-order MAML), z; warm-up without KD; KD from the bank",
           synth=dict(param="meta", iterations=5, batch_size=256, lr_g=3e-3, lr_z=0.01, reset_generator=False,
                      beta=10.0, bn_momentum=0.9, oh=0.4, gamma=1.1, reset_l0_at=139 / 220),
           distill=dict(steps_per_round=400, batch_size=256, lr=0.2, lr_min=2e-4),
           # the 140th round (index 139) re-draws the first layers; KD starts at round index 20
           run=dict(rounds=220, warmup=20 / 220),
           source="zju-vipa/Fast-Datafree scripts/fast_cifar.sh (WRN, g_steps 5)",
           variants={"fast+ifhe": {"alpha": 0.5}}),
    Method("nayer", "NAYER", "label embeddings through noisy layers re-drawn every batch; generator kept for "
                             "g_life rounds; warm-up without KD; KD from the bank",
           synth=dict(param="label", iterations=30, batch_size=400, lr_g=4e-3, lr_z=0.0, nz=1000, g_life=20,
                      embedding="classifier", targets="balanced", beta=10.0, bn_momentum=0.9, oh=0.5, gamma=1.33),
           distill=dict(steps_per_round=200, batch_size=512, lr=0.2, lr_min=2e-4),
           # 20 warm-up epochs of 10 batches, then 100 epochs of 2 batches (g_loops) with 400 KD steps each
           run=dict(rounds=400, warmup=0.5),
           # in time, NAYER's warm-up (no KD) is about its share of epochs, 20 of 120
           cpu_run=dict(warmup=20 / 120),
           source="tmtuan1307/NAYER scripts/nayer_100.sh (c10w402w161: g_steps 30), datafree_kd.py, "
                  "datafree/synthesis/nayer.py; the class embedding from the teacher's classifier, not CLIP",
           variants={"nayer+ifhe": {"alpha": 0.5}}),
    Method("ifhe", "IFHE", "generator + z, re-initialised each round; L_H on the teacher's intermediate "
                           "features; KD of student and h from the bank",
           synth=dict(param="generator", iterations=200, batch_size=256, lr_g=1e-3, lr_z=1e-3, reset_generator=True,
                      alpha=0.5, beta=1.0, gamma=0.5),
           distill=dict(steps_per_round=400, batch_size=128),
           source="the IFHE paper (DAC 2023), built on CMI's code: CMI's generator schedule with L_oh and L_cr "
                  "replaced by L_H (no IFHE code is public)",
           variants={"ifhe-a0": {"alpha": 0.0}, "ifhe-a0.5": {"alpha": 0.5}, "ifhe-a1": {"alpha": 1.0}}),
)}

METHODS: tuple[str, ...] = tuple(METHOD_SPECS)
METHOD_LABELS: dict[str, str] = {m.name: m.label for m in METHOD_SPECS.values()}


def variants() -> dict[str, tuple[str, dict]]:
    """Sweep variants: every method under its own name, plus each method's extra variants."""
    out: dict[str, tuple[str, dict]] = {}
    for m in METHOD_SPECS.values():
        out[m.name] = (m.name, {})
        out.update({name: (m.name, dict(over)) for name, over in m.variants.items()})
    return out
