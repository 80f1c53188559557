"""Writes configs/paper/<dataset>/<teacher>-<student>/<method>.yaml: the paper's five pairs x 8 methods at
reference scale. Rerun after changing presets; tests/test_configs.py checks the files are current.

    python configs/make_presets.py
"""
from __future__ import annotations

from pathlib import Path

import yaml

PAIRS = [("wrn40_2", "wrn16_1"), ("wrn40_2", "wrn40_1"), ("wrn40_2", "wrn16_2"), ("vgg11_bn", "resnet18"),
         ("resnet34", "resnet18")]
DATASETS = ("cifar10", "cifar100")
BEST_ALPHA = {"cifar10": 0.5, "cifar100": 1.0}  # the paper's ablation
# Reference schedules: 200 epochs of 400 KD steps (220 for Fast); GAN-style methods have one synthesis step
# per `steps_per_round` KD steps, so they take 400 / steps_per_round rounds an epoch.
KD_STEPS_PER_EPOCH = 400
EPOCHS = {"fast": 220}
METHODS = ("deepinversion", "adi", "dafl", "zskt", "dfq", "cmi", "fast", "ifhe")


def preset_file(dataset: str, teacher: str, student: str, method: str) -> dict:
    from ifhe.config import preset

    _, distill = preset(method, "reference")
    rounds = EPOCHS.get(method, 200) * KD_STEPS_PER_EPOCH // max(1, distill.steps_per_round)
    d = {"method": method, "scale": "reference", "teacher": f"{dataset}_{teacher}", "student": student,
         "rounds": rounds, "eval_every": KD_STEPS_PER_EPOCH * 5}
    if method == "ifhe":
        d["synth"] = {"alpha": BEST_ALPHA[dataset]}
    return d


def all_presets() -> dict[Path, dict]:
    root = Path(__file__).resolve().parent / "paper"
    return {root / ds / f"{t}-{s}" / f"{m}.yaml": preset_file(ds, t, s, m)
            for ds in DATASETS for t, s in PAIRS for m in METHODS}


def main() -> None:
    for path, d in all_presets().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(d, sort_keys=False))
    print(f"wrote {len(all_presets())} presets")


if __name__ == "__main__":
    main()
