"""`ifhe train-teacher`: supervised training on real data (teachers, scratch students), resumable; `--publish`
adds the finished model to the zoo."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from .. import catalog
from ..config import SCHEDULES, SWA_BN
from .common import add_data, add_precision, command_line


def register(sub) -> None:
    t = sub.add_parser("train-teacher", help="supervised training on real data (teachers, scratch students)")
    t.add_argument("--arch", default="wrn16_2")
    t.add_argument("--dataset", default="cifar10")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", dest="batch_size", type=int)
    t.add_argument("--max-lr", dest="max_lr", type=float)
    t.add_argument("--weight-decay", dest="weight_decay", type=float)
    t.add_argument("--label-smoothing", dest="label_smoothing", type=float)
    t.add_argument("--cutout", type=int, help="side of the square each training image loses (8 in Page's recipe; 0 off)")
    t.add_argument("--seed", type=int)
    t.add_argument("--init-from", dest="init_from", help="start from these weights (zoo name or .safetensors)")
    t.add_argument("--distill-from", dest="distill_from", metavar="TEACHERS",
                   help="comma-separated zoo names or .safetensors files: learn from their ensemble's softened "
                        "probabilities as well as the labels (ensemble distillation)")
    t.add_argument("--distill-temperature", dest="distill_temperature", type=float)
    t.add_argument("--distill-weight", dest="distill_weight", type=float,
                   help="share of the KD term in the loss (default 0.9; the rest is cross-entropy)")
    t.add_argument("--schedule", choices=SCHEDULES,
                   help="one_cycle (default): warm-up then cosine; swa: constant --max-lr, the weights at the end "
                        "of every epoch averaged (a fine-tuning stage after --init-from)")
    t.add_argument("--swa-bn", dest="swa_bn", choices=SWA_BN,
                   help="BN statistics of the SWA model: average (default, with the weights) or recompute (on the "
                        "augmented training images)")
    t.add_argument("--out", required=True)
    t.add_argument("--resume", action="store_true", help="continue the run in --out after a kill")
    t.add_argument("--publish", metavar="NAME", help="when finished, add to pretrained/ under NAME")
    t.add_argument("--replace-better", dest="replace_better", action="store_true",
                   help="let --publish replace a shipped model of the same name that scored higher")
    t.add_argument("--role", choices=catalog.ROLES, default="teacher",
                   help="how --publish lists it: a teacher (default), or a scratch-trained student to compare against")
    t.add_argument("--device")
    t.add_argument("--threads", type=int)
    add_precision(t)
    add_data(t)
    t.set_defaults(func=command)


def command(a) -> int:
    from ..device import set_cpu_threads
    from ..train import TrainConfig, train_classifier

    set_cpu_threads(a.threads)
    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(a).items() if k in names and v is not None})
    result = train_classifier(cfg, a.out, data=a.data, resume=a.resume, device=a.device)
    print(f"test accuracy {result['test_acc']:.2f}% after {result['epochs_done']:.2f} epochs")
    if not result["finished"]:
        return 0
    origin = provenance(result, cfg, a)   # once: it hashes every distillation teacher's file
    print(f"weights with their provenance: {save_finished(result, cfg, a.out, origin)}")
    if a.publish:
        shipped = catalog.read_manifest().get(a.publish)
        if shipped and not a.replace_better and result["test_acc"] < shipped.get("test_accuracy", 0):
            print(f"not published: {a.publish} is shipped at {shipped['test_accuracy']:.2f}%, this model scored "
                  f"{result['test_acc']:.2f}% (its weights stay in {a.out}: the same command with --resume --replace-better publishes it)")
            return 1
        entry = publish_result(result, cfg, a, origin)
        print(f"published {a.publish}: {entry['file']} sha256 {entry['sha256'][:12]}")
    return 0


def model_record(ref: str) -> dict:
    """What is recorded of a model named by zoo name or .safetensors file: its manifest entry, or the provenance in
    the file's own metadata (`save_finished`), with the file's sha256."""
    from ..checkpoint import sha256_file
    from ..fileio import read_meta

    if catalog.is_file_ref(ref):
        return read_meta(ref) | {"file": ref, "sha256": sha256_file(ref)}
    return catalog.entry(ref) | {"zoo": ref}


def distill_provenance(cfg) -> list[dict]:
    """Where each --distill-from teacher came from: its checksum, accuracy, recipe and compute, from the zoo's
    manifest or the file's own metadata (what is not recorded stays out)."""
    from ..train import distill_sources

    keep = ("zoo", "file", "sha256", "test_accuracy", "epochs", "recipe", "cpu_minutes", "wall_minutes")
    return [{k: v for k, v in model_record(src).items() if k in keep} for src in distill_sources(cfg)]


def same_training(a: dict, b: dict) -> bool:
    """Whether two provenance records describe one training: the same file, or the same recorded recipe, accuracy
    and compute (the model file of a finished run rewritten by `--resume` carries other metadata bytes, so another
    checksum, but its compute was spent once)."""
    if a.get("sha256") and a.get("sha256") == b.get("sha256"):
        return True
    keys = ("recipe", "test_accuracy", "cpu_minutes")
    return all(a.get(k) is not None for k in keys) and all(a.get(k) == b.get(k) for k in keys)


def provenance(result: dict, cfg, a) -> tuple[str, float, dict]:
    """(recipe, epochs, cost) of a finished training: its recipe with the stages it continued, and its compute,
    every earlier stage and every distillation teacher counted once."""
    import torch

    from ..train import DISTILL_SOURCES, RECIPE_SOURCES

    recipe = command_line("train-teacher", a.argv, drop=("--resume", "--replace-better"))
    epochs = cfg.epochs
    earlier = model_record(cfg.init_from) if cfg.init_from else None
    cost = {"cpu_minutes": round(result["cpu_minutes"], 1), "wall_minutes": round(result["wall_minutes"], 1),
            "threads": torch.get_num_threads(), "precision": result["precision"],
            "recipe_sources": list(RECIPE_SOURCES)}
    stages = [cost["cpu_minutes"]]
    walls = [cost["wall_minutes"]]
    if earlier and "recipe" in earlier:
        # a fine-tuning stage of a zoo model or of a finished run's model file: keep the whole history, and count
        # all of its compute
        recipe, epochs = f"{earlier['recipe']} && {recipe}", earlier["epochs"] + cfg.epochs
        stages = [*earlier.get("stage_cpu_minutes", [earlier.get("cpu_minutes")]), *stages]
        walls.append(earlier.get("wall_minutes"))
    elif earlier:   # weights of unrecorded origin: the compute that made them is unknown, so is the total
        stages, walls = [None, *stages], [None, *walls]
    # every teacher the model's stages learned from, once each; their compute is counted once too, and the
    # starting point's compute already holds its own teachers'
    history = list(earlier.get("distilled_from", [])) if earlier else []
    counted = [earlier, *history] if earlier else []
    for teacher in distill_provenance(cfg) if cfg.distill_from else []:
        if not any(same_training(teacher, d) for d in history):
            history.append(teacher)
        if not any(same_training(teacher, d) for d in counted):
            counted.append(teacher)
            stages.insert(-1, teacher.get("cpu_minutes"))
            walls.append(teacher.get("wall_minutes"))
    if history:
        cost["distilled_from"] = history
        cost["recipe_sources"] += DISTILL_SOURCES
    if len(stages) > 1:
        cost["stage_cpu_minutes"] = stages
        # an earlier stage that did not record its compute makes the total unknown, not this stage's
        cost["cpu_minutes"] = round(sum(stages), 1) if all(m is not None for m in stages) else None
        cost["wall_minutes"] = round(sum(walls), 1) if all(m is not None for m in walls) else None
    return recipe, epochs, cost


def publish_result(result: dict, cfg, a, origin: tuple[str, float, dict]) -> dict:
    """The manifest record of a finished training, from its `provenance`."""
    from ..zoo import publish

    recipe, epochs, cost = origin
    return publish(result["model"], a.publish, cfg.dataset, result["test_acc"], epochs, recipe, role=a.role,
                   extra=cost)


def save_finished(result: dict, cfg, out: str, origin: tuple[str, float, dict]) -> Path:
    """`OUT/model.safetensors`: the finished model with its `provenance`, usable as --init-from or --distill-from
    (or by `ifhe evaluate`) without entering the zoo."""
    from ..zoo import save_with_provenance

    recipe, epochs, cost = origin
    path = Path(out) / "model.safetensors"
    save_with_provenance(path, result["model"], cfg.dataset, result["test_acc"], epochs, recipe, cost)
    return path
