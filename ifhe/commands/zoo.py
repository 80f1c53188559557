"""`ifhe zoo`: list the shipped models; `--publish-head` ships a run's h with the teacher whose features it reads."""
from __future__ import annotations

from .. import catalog
from ..errors import IfheError
from .common import add_data


def register(sub) -> None:
    z = sub.add_parser("zoo", help="list the shipped pretrained models")
    z.add_argument("--publish-head", metavar="HEAD", help="ship a run's head.safetensors with its teacher "
                   "(synth.h_init=pretrained then starts h from it); needs --teacher")
    z.add_argument("--teacher", help="the zoo teacher whose features the head reads")
    z.add_argument("--recipe", help="how the head was made, kept in the manifest")
    add_data(z)
    z.set_defaults(func=command)


def command(a) -> int:
    if a.publish_head:
        return publish_head(a)
    for name, e in catalog.read_manifest().items():
        head = e.get("head")
        extra = f"  h {head['test_accuracy']:.2f}% ({head['file']})" if head else ""
        print(f"{name:24s} {e['arch']:10s} {e['dataset']:9s} {e['test_accuracy']:6.2f}%  {e['epochs']} epochs{extra}")
    return 0


def publish_head(a) -> int:
    """Measure a run's h on the real test set with its teacher, then ship it with that teacher."""
    import torch

    from ..checkpoint import load_tensors, load_weights_into, read_meta
    from ..data import load_split
    from ..distill import evaluate_head
    from ..heads import HeterogeneityHead
    from ..zoo import publish_head as ship, resolve_teacher

    if not a.teacher:
        raise IfheError("--publish-head needs --teacher (the zoo teacher whose features the head reads)")
    catalog.entry(a.teacher)   # a zoo name, not a file: the head is shipped with it
    meta = read_meta(a.publish_head)
    teacher = resolve_teacher(a.teacher)
    head = HeterogeneityHead(meta["in_features"], meta["num_classes"], meta["hidden"])
    load_weights_into(head, load_tensors(a.publish_head)[0], str(a.publish_head))
    test = load_split(teacher.dataset, "test", a.data)
    acc = evaluate_head(head.eval(), teacher, test, teacher.normalizer, torch.device("cpu"), tuple(meta["stages"]))
    record = ship(a.teacher, a.publish_head, acc, a.recipe or f"ifhe zoo --publish-head {a.publish_head}")
    print(f"h of {a.publish_head}: top-1 {acc:.2f}% on {len(test)} real test images -> pretrained/{record['file']}")
    return 0
