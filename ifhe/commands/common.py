"""What several subcommands share: the --data and --precision arguments, --set KEY=VALUE, the command line."""
from __future__ import annotations

import argparse
import shlex

import yaml

from ..config import PRECISIONS
from ..errors import IfheError


def add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="folder with <dataset>-{train,test}.npz or torchvision files, or an .npz; "
                                  "default $IFHE_DATA, then torchvision's loader")


def add_precision(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default=default,
                   help="arithmetic of the forward passes (losses stay fp32); auto, the default of a new run, times "
                        "the run's own step in both and keeps bf16 where it is 10%% faster (about half the time on "
                        "CPUs with AVX512-BF16 such as AMD Zen 4/5, slower on some Intel Xeons that report it); "
                        "a resumed run keeps what it started with (a resumed train-teacher switches when given "
                        "fp32 or bf16, and each epoch's record says which it ran in)")


def parse_set(items: list[str] | None) -> dict:
    """--set section.key=value items as {section: {key: value}} (values parsed as YAML)."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise IfheError(f"--set {item!r}: expected key=value, e.g. synth.lr_g=0.01")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        section, _, name = key.rpartition(".")
        if section not in ("", "synth", "distill"):
            raise IfheError(f"--set {key}: sections are synth. and distill.")
        out.setdefault(section, {})[name] = value
    return out


def command_line(name: str, argv: list[str], drop: tuple[str, ...] = ()) -> str:
    """`ifhe <name> <argv>` as a shell would take it back (arguments in `drop` left out)."""
    return f"ifhe {name} " + " ".join(shlex.quote(x) for x in argv if x not in drop)
