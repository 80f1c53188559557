"""Writes configs/paper/<dataset>/<teacher>-<student>/<method>.yaml (the paper's five pairs x every method of
ifhe/methods.py at reference scale), configs/cpu/cifar10/<teacher>-<student>/<method>.yaml (the pairs of the
teachers this project trains itself, at CPU scale) and the README's method table. Rerun after changing a method;
tests/test_configs.py checks that all are current.

    python configs/make_presets.py
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PAIRS = [("wrn40_2", "wrn16_1"), ("wrn40_2", "wrn40_1"), ("wrn40_2", "wrn16_2"), ("vgg11_bn", "resnet18"),
         ("resnet34", "resnet18")]
DATASETS = ("cifar10", "cifar100")
BEST_ALPHA = {"cifar10": 0.5, "cifar100": 1.0}  # the paper's ablation
# the teachers trained by this project (pretrained/) with their students; VGG11-BN -> WRN16-1 is a pair across
# families: the student has no stage that mirrors the teacher's
CPU_PAIRS = [("wrn16_2", "wrn16_1"), ("vgg11_bn", "wrn16_1"), ("vgg11_bn", "resnet18")]
EPOCHS = 200  # of KD_STEPS_PER_EPOCH KD steps, unless the method says how many rounds it runs
README_MARKERS = ("<!-- methods-table -->", "<!-- /methods-table -->")


def preset_file(dataset: str, teacher: str, student: str, method: str) -> dict:
    from ifhe.config import preset
    from ifhe.methods import KD_STEPS_PER_EPOCH, METHOD_SPECS

    spec = METHOD_SPECS[method]
    _, distill = preset(method, "reference")
    rounds = spec.run.get("rounds", EPOCHS * KD_STEPS_PER_EPOCH // max(1, distill.steps_per_round))
    d = {"method": method, "scale": "reference", "teacher": f"{dataset}_{teacher}", "student": student,
         "rounds": rounds, "eval_every": KD_STEPS_PER_EPOCH * 5}
    if spec.synth.get("alpha", 0) > 0:
        d["synth"] = {"alpha": BEST_ALPHA[dataset]}
    return d


def cpu_preset_file(teacher: str, student: str, method: str) -> dict:
    return {"method": method, "scale": "cpu", "teacher": f"cifar10_{teacher}", "student": student,
            "budget_minutes": 10.0, "clock": "cpu", "eval_every": 250, "eval_images": 2000}


def all_presets() -> dict[Path, dict]:
    from ifhe.methods import METHODS

    root = ROOT / "configs"
    paper = {root / "paper" / ds / f"{t}-{s}" / f"{m}.yaml": preset_file(ds, t, s, m)
             for ds in DATASETS for t, s in PAIRS for m in METHODS}
    cpu = {root / "cpu" / "cifar10" / f"{t}-{s}" / f"{m}.yaml": cpu_preset_file(t, s, m)
           for t, s in CPU_PAIRS for m in METHODS}
    return paper | cpu


def _weights(synth: dict) -> str:
    from ifhe.terms import TERMS

    names = {"alpha": "α", "beta": "β", "gamma": "γ"}
    parts = [f"{names.get(t.weight, t.weight)} {synth[t.weight]:g}" for t in TERMS if synth.get(t.weight)]
    return ", ".join(parts) or "none"


def methods_table() -> str:
    """The README's method table, from ifhe/methods.py."""
    from ifhe.methods import METHOD_SPECS

    lines = ["| method (`--method`) | what it does | loss weights (reference preset) | follows |",
             "|---|---|---|---|"]
    for m in METHOD_SPECS.values():
        lines.append(f"| `{m.name}` | {m.summary} | {_weights(m.synth)} | {m.source} |")
    return "\n".join(lines)


def readme_with_table(text: str) -> str:
    start, end = README_MARKERS
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {start} ... {end} block")
    return pattern.sub(lambda _: f"{start}\n{methods_table()}\n{end}", text)


def main() -> None:
    for path, d in all_presets().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(d, sort_keys=False))
    readme = ROOT / "README.md"
    readme.write_text(readme_with_table(readme.read_text()))
    print(f"wrote {len(all_presets())} presets and the README's method table")


if __name__ == "__main__":
    main()
