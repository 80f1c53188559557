"""`ifhe train-teacher`: supervised training on real data (teachers, scratch students), resumable; `--publish`
adds the finished model to the zoo."""
from __future__ import annotations

from dataclasses import fields

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
    t.add_argument("--schedule", choices=SCHEDULES,
                   help="one_cycle (default): warm-up then cosine; swa: constant --max-lr, the weights at the end "
                        "of every epoch averaged (a fine-tuning stage after --init-from)")
    t.add_argument("--swa-bn", dest="swa_bn", choices=SWA_BN,
                   help="BN statistics of the SWA model: average (default, with the weights) or recompute (on the "
                        "augmented training images)")
    t.add_argument("--out", required=True)
    t.add_argument("--resume", action="store_true", help="continue the run in --out after a kill")
    t.add_argument("--publish", metavar="NAME", help="when finished, add to pretrained/ under NAME")
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
    from ..zoo import publish

    set_cpu_threads(a.threads)
    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(a).items() if k in names and v is not None})
    result = train_classifier(cfg, a.out, data=a.data, resume=a.resume, device=a.device)
    print(f"test accuracy {result['test_acc']:.2f}% after {result['epochs_done']:.2f} epochs")
    if a.publish and result["finished"]:
        recipe = command_line("train-teacher", a.argv, drop=("--resume",))
        epochs = cfg.epochs
        earlier = catalog.read_manifest().get(cfg.init_from) if cfg.init_from else None
        import torch

        from ..train import RECIPE_SOURCES
        cost = {"cpu_minutes": round(result["cpu_minutes"], 1), "wall_minutes": round(result["wall_minutes"], 1),
                "threads": torch.get_num_threads(), "precision": result["precision"],
                "recipe_sources": list(RECIPE_SOURCES)}
        if earlier:  # a fine-tuning stage of a zoo model: keep the whole history, and count all of its compute
            recipe, epochs = f"{earlier['recipe']} && {recipe}", earlier["epochs"] + cfg.epochs
            cost["stage_cpu_minutes"] = [*earlier.get("stage_cpu_minutes", [earlier.get("cpu_minutes")]),
                                         cost["cpu_minutes"]]
            if all(m is not None for m in cost["stage_cpu_minutes"]):
                cost["cpu_minutes"] = round(sum(cost["stage_cpu_minutes"]), 1)
            else:  # an earlier stage did not record its compute: the total is unknown, not this stage's
                cost["cpu_minutes"] = None
            cost["wall_minutes"] = round(earlier["wall_minutes"] + cost["wall_minutes"], 1) \
                if earlier.get("wall_minutes") is not None else None
        entry = publish(result["model"], a.publish, cfg.dataset, result["test_acc"], epochs, recipe, role=a.role,
                        extra=cost)
        print(f"published {a.publish}: {entry['file']} sha256 {entry['sha256'][:12]}")
    return 0
