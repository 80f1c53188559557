"""`ifhe evaluate`: top-1 accuracy of a zoo model or a .safetensors file on the real test set."""
from __future__ import annotations

from .common import add_data


def register(sub) -> None:
    e = sub.add_parser("evaluate", help="top-1 accuracy of a zoo model or .safetensors file on real test data")
    e.add_argument("model", help="zoo name (see `ifhe zoo`) or a .safetensors file")
    e.add_argument("--arch", help="architecture of a file that does not record it")
    e.add_argument("--dataset", help="dataset of a file that does not record it")
    e.add_argument("--device")
    e.add_argument("--threads", type=int)
    add_data(e)
    e.set_defaults(func=command)


def command(a) -> int:
    from ..data import load_split
    from ..device import pick_device, set_cpu_threads
    from ..evaluation import evaluate
    from ..zoo import resolve_teacher

    set_cpu_threads(a.threads)
    dev = pick_device(a.device)
    model = resolve_teacher(a.model, a.arch, dev, a.dataset)
    test = load_split(model.dataset, "test", a.data)
    acc = evaluate(model, test, model.normalizer, dev)
    print(f"{a.model}: top-1 {acc:.2f}% on {len(test)} real {model.dataset} test images")
    return 0
