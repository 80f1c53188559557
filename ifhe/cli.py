"""The `ifhe` command. User mistakes print one line and exit with code 2; nothing prints a traceback."""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields

from .errors import IfheError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit 2
        self.exit(2, f"ifhe: error: {message}\n")


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="folder with <dataset>-{train,test}.npz or torchvision files, or an .npz; "
                                  "default $IFHE_DATA, then torchvision's loader")


def _cmd_train_teacher(a) -> int:
    from .device import set_cpu_threads
    from .train import TrainConfig, train_classifier
    from .zoo import publish

    set_cpu_threads(a.threads)
    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(a).items() if k in names and v is not None})
    result = train_classifier(cfg, a.out, data=a.data, resume=a.resume, device=a.device)
    print(f"test accuracy {result['test_acc']:.2f}% after {result['epochs_done']:.2f} epochs")
    if a.publish and result["finished"]:
        recipe = "ifhe train-teacher " + " ".join(shlex.quote(x) for x in a.argv if x != "--resume")
        entry = publish(result["model"], a.publish, cfg.dataset, result["test_acc"], cfg.epochs, recipe)
        print(f"published {a.publish}: {entry['file']} sha256 {entry['sha256'][:12]}")
    return 0


def _cmd_evaluate(a) -> int:
    from .data import load_split
    from .device import pick_device, set_cpu_threads
    from .evaluation import evaluate
    from .zoo import attach_dataset, load_model, load_teacher

    set_cpu_threads(a.threads)
    dev = pick_device(a.device)
    if a.model.endswith(".safetensors"):
        model, meta = load_model(a.model, a.arch, device=dev)
        model = attach_dataset(model, a.dataset or meta.get("dataset") or "cifar10")
    else:
        model = load_teacher(a.model, dev)
    test = load_split(model.dataset, "test", a.data)
    acc = evaluate(model, test, model.normalizer, dev)
    print(f"{a.model}: top-1 {acc:.2f}% on {len(test)} real {model.dataset} test images")
    return 0


def _cmd_zoo(a) -> int:
    from .zoo import read_manifest

    for name, e in read_manifest().items():
        print(f"{name:24s} {e['arch']:10s} {e['dataset']:9s} {e['test_accuracy']:6.2f}%  {e['epochs']} epochs")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ifhe", description="Data-free knowledge distillation by model inversion (IFHE and baselines)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train-teacher", help="supervised training on real data (teachers, scratch students)")
    t.add_argument("--arch", default="wrn16_2")
    t.add_argument("--dataset", default="cifar10")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", dest="batch_size", type=int)
    t.add_argument("--max-lr", dest="max_lr", type=float)
    t.add_argument("--weight-decay", dest="weight_decay", type=float)
    t.add_argument("--label-smoothing", dest="label_smoothing", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--out", required=True)
    t.add_argument("--resume", action="store_true", help="continue the run in --out after a kill")
    t.add_argument("--publish", metavar="NAME", help="when finished, add to pretrained/ under NAME")
    t.add_argument("--device")
    t.add_argument("--threads", type=int)
    _add_data(t)
    t.set_defaults(func=_cmd_train_teacher)

    e = sub.add_parser("evaluate", help="top-1 accuracy of a zoo model or .safetensors file on real test data")
    e.add_argument("model", help="zoo name (see `ifhe zoo`) or a .safetensors file")
    e.add_argument("--arch")
    e.add_argument("--dataset")
    e.add_argument("--device")
    e.add_argument("--threads", type=int)
    _add_data(e)
    e.set_defaults(func=_cmd_evaluate)

    z = sub.add_parser("zoo", help="list the shipped pretrained models")
    z.set_defaults(func=_cmd_zoo)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]
    try:
        return args.func(args)
    except IfheError as e:
        print(f"ifhe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ifhe: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
