"""The forms' values: each method's defaults at the app's scale, and the run config built from what a page holds
(validated by the engine's one validator)."""
from __future__ import annotations

from typing import Any

from ifhe.config import make_config, preset
from ifhe.errors import IfheError
from ifhe.terms import WEIGHTS

from .catalog import arch_label

DEFAULT_BATCH = 16            # small batches keep the live grid moving on a CPU


def form_defaults(method: str) -> dict[str, Any]:
    """The preset's values for the widgets a method changes (CPU scale, the app's small batch)."""
    s, d = preset(method, "cpu")
    gan_style = s.param == "generator" and s.lr_z == 0  # DAFL, ZSKT, DFQ: a round is one generator step
    return {**{w: getattr(s, w) for w in WEIGHTS}, "lr_g": s.lr_g, "lr_z": s.lr_z,
            "iterations": s.iterations, "batch": DEFAULT_BATCH, "tau": d.T, "kd_steps": d.steps_per_round,
            "kd_batch": d.batch_size, "kd_lr": d.lr, "rounds": 2000 if gan_style else 100,
            "distill_rounds": 2000 if gan_style else 30}


def measured_setup(method: str, minutes: float, kd_share: float, precision: str | None) -> dict[str, Any]:
    """The form values that rerun a sweep's cell from the Distill page: the preset at CPU scale with its own batch
    (not the live view's small one), the sweep's budget rule, time budget and precision; rounds end by the budget."""
    s, _ = preset(method, "cpu")
    return {**form_defaults(method), "method": method, "batch": s.batch_size, "budget": float(minutes),
            "kd_share": float(kd_share or 0.0), "precision": precision or "auto", "distill_rounds": 100000}


def build_config(v: dict, kind: str):
    """A validated RunConfig from the form values `v`; kind 'synth' (synthesis first) or 'distill'."""
    synth = {**{w: float(v[w]) for w in WEIGHTS if v.get(w) is not None},
             "lr_g": float(v["lr_g"]), "lr_z": float(v["lr_z"]), "batch_size": int(v["batch"]),
             "iterations": int(v["iterations"])}
    distill = {"T": float(v["tau"])}
    if kind == "synth" and not v.get("kd_between"):
        distill["steps_per_round"] = 0
    else:
        distill |= {"steps_per_round": int(v["kd_steps"]), "batch_size": int(v["kd_batch"]),
                    "lr": float(v["kd_lr"]), "kd_share": float(v.get("kd_share") or 0.0)}
    teacher = v.get("teacher_path") if v.get("teacher") == "upload" else v.get("teacher")
    if teacher and teacher.startswith("paper:"):
        raise IfheError(f"no {arch_label(teacher[6:])} teacher is shipped: upload one, or train it with the "
                        f"command shown under the pair")
    if not teacher:
        raise IfheError("no teacher: pick a shipped one, or upload a .safetensors file and wait for it to be accepted")
    budget = v.get("budget") or None
    device = v.get("device") or "auto"
    eval_images = int(v.get("eval_images") or 0) or None
    run = dict(teacher=str(teacher), student=v["student"], rounds=int(v["rounds"]), seed=int(v.get("seed") or 0),
               device=None if device == "auto" else device, precision=v.get("precision") or "auto",
               log_every=1, preview_every=1,
               eval_every=int(v.get("eval_every") or 0), eval_images=eval_images,
               budget_minutes=float(budget) if budget else None, checkpoint_seconds=30.0)
    return make_config(v["method"], "cpu", synth, distill, **run)
