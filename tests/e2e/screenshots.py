"""Screenshots of every page for the README (a script, not a test): docs/screenshots/<page>.png.

    python tests/e2e/screenshots.py [--teacher-checkpoint runs/teachers/cifar10_wrn16_2/checkpoint.safetensors]

Makes a few short runs in a temporary runs folder (DeepInversion, CMI, IFHE banks; two IFHE runs with KD that
differ in alpha), starts the real server on them and photographs each page in headless Chromium. Uses the shipped
cifar10_wrn16_2 teacher, or the model inside a training checkpoint while that teacher is still being trained.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app_server import CHROMIUM, CHROMIUM_ARGS, GRID, Server, button, main_block  # noqa: E402

OUT = ROOT / "docs" / "screenshots"


def teacher_zoo(tmp: Path, checkpoint: str | None) -> tuple[dict, str]:
    from ifhe.catalog import available
    if checkpoint is None and "cifar10_wrn16_2" in available():
        return {}, "cifar10_wrn16_2"
    import torch
    from ifhe.checkpoint import load_state
    from ifhe.models import create_model
    from ifhe.zoo import publish
    state, meta = load_state(checkpoint)
    model = create_model(meta.get("arch", "wrn16_2"), 10)
    model.load_state_dict(state["model"])
    acc = float("nan")
    if os.environ.get("IFHE_DATA"):
        from ifhe.data import load_split
        from ifhe.evaluation import evaluate
        from ifhe.zoo import attach_dataset
        m = attach_dataset(model.eval(), "cifar10")
        acc = evaluate(m, load_split("cifar10", "test").subset(2000), m.normalizer, torch.device("cpu"))
    publish(model, "cifar10_wrn16_2", "cifar10", acc, 0, f"snapshot of {checkpoint}", root=tmp / "pretrained")
    return {"IFHE_PRETRAINED": str(tmp / "pretrained")}, "cifar10_wrn16_2"


def make_runs(base: Path, teacher: str, with_data: bool) -> None:
    import torch
    from ifhe.config import make_config
    from ifhe.experiment import Run, run_to_end
    torch.set_num_threads(1)  # gentle: other work may share the machine
    plans = [("deepinversion-bank", "deepinversion", dict(batch_size=64, iterations=60), {"steps_per_round": 0}, 2),
             ("cmi-bank", "cmi", dict(batch_size=64), {"steps_per_round": 0}, 5),
             ("ifhe-bank", "ifhe", dict(batch_size=64), {"steps_per_round": 0}, 5)]
    if with_data:
        plans += [(f"ifhe-kd-alpha{a}", "ifhe", dict(batch_size=32, alpha=a), {"steps_per_round": 30}, 4)
                  for a in (0.0, 0.5)]
        plans += [("cmi-kd", "cmi", dict(batch_size=32), {"steps_per_round": 30}, 4)]
    for name, method, synth, distill, rounds in plans:
        t0 = time.perf_counter()
        cfg = make_config(method, "cpu", synth, distill, teacher=teacher, rounds=rounds, eval_every=30,
                          eval_images=1000, checkpoint_seconds=60)
        fin = run_to_end(Run(cfg, base / name))
        print(f"{name}: {fin.bank_size} images, acc {fin.student_acc}, {time.perf_counter() - t0:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher-checkpoint", help="use the model in this training checkpoint as cifar10_wrn16_2")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    from playwright.sync_api import expect, sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="screens_"))
    env, teacher = teacher_zoo(tmp, a.teacher_checkpoint)
    if "IFHE_PRETRAINED" in env:
        import ifhe.catalog
        ifhe.catalog.PRETRAINED_DIR = Path(env["IFHE_PRETRAINED"])
    with_data = bool(os.environ.get("IFHE_DATA"))
    make_runs(tmp / "runs", teacher, with_data)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    env |= {"IFHE_APP_RUNS": str(tmp / "runs"), "IFHE_APP_MAX_JOBS": "1"}
    with Server(env, log=tmp / "server.log") as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1500, "height": 1100}).new_page()
        main = main_block(page)

        def btn(name):
            return button(page, name)

        page.goto(server.url)
        btn("Start").click()
        page.locator(GRID).first.wait_for(timeout=60_000)
        page.wait_for_timeout(12_000)
        page.screenshot(path=str(out / "synthesize.png"), full_page=True)
        btn("Reset").click()
        expect(btn("Start")).to_be_enabled(timeout=30_000)

        page.get_by_role("link", name="Distill").click()
        btn("Start KD run").wait_for(timeout=30_000)
        for key, value in (("Rounds", 20), ("KD steps per round", 20), ("Evaluate every (KD steps)", 20),
                           ("Test images per evaluation", 500)):
            field = main.get_by_label(key, exact=True)
            if field.is_enabled():
                field.fill(str(value))
                field.press("Enter")
                page.wait_for_timeout(400)
        btn("Start KD run").click()
        page.wait_for_timeout(60_000)
        page.screenshot(path=str(out / "distill.png"), full_page=True)
        btn("Stop").click()
        expect(btn("Start KD run")).to_be_enabled(timeout=60_000)

        page.get_by_role("link", name="Feature space").click()
        btn("Compute the map").wait_for(timeout=30_000)
        btn("Compute the map").click()
        main.get_by_test_id("stPlotlyChart").first.wait_for(timeout=300_000)
        page.wait_for_timeout(3000)
        page.screenshot(path=str(out / "features.png"), full_page=True)

        page.get_by_role("link", name="Compare").click()
        main.get_by_role("heading", name="Compare").wait_for(timeout=30_000)
        page.wait_for_timeout(3000)
        page.screenshot(path=str(out / "compare.png"), full_page=True)
        page.get_by_role("tab", name="Paper vs ours").click()
        page.wait_for_timeout(2000)
        page.screenshot(path=str(out / "compare_paper.png"), full_page=True)
        browser.close()
    print(f"screenshots in {out}; runs in {tmp / 'runs'}")


if __name__ == "__main__":
    main()
