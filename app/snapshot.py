"""What a page draws of a job: its snapshot (a copy, safe to read without the job's lock), with the helpers that keep
it bounded. The job thread (`app.jobs`) fills it from the run's events."""
from __future__ import annotations

from dataclasses import dataclass, field

from ifhe.terms import WEIGHTS

ACTIVE_STATES = ("starting", "running", "paused", "stopping")
MAX_HISTORY = 2000            # points per curve kept in a snapshot (older points are thinned, never dropped all)


@dataclass
class Snapshot:
    """What a page needs to draw a job; a copy, safe to read without the job's lock."""

    kind: str                                   # synth (synthesis first) | distill (rounds of synthesis + KD)
    method: str
    out_dir: str
    run_name: str
    state: str = "starting"
    message: str = ""                           # error text, or why it stopped
    note: str = ""                              # e.g. "no real test data: purely data-free"
    rounds: int = 0
    iterations: int = 0                         # synthesis iterations per round
    kd_steps_per_round: int = 0
    round: int = 0
    iteration: int = 0
    steps: int = 0                              # synthesis steps seen so far (all rounds)
    kd_steps: int = 0
    bank_size: int = 0
    it_per_s: float = 0.0                       # synthesis iterations per wall second within the round, as seen here
    images_per_s: float = 0.0
    lr: float = 0.0
    weights: dict = field(default_factory=dict)
    synth_losses: list = field(default_factory=list)    # {"step", "round", <term>: value}
    kd_losses: list = field(default_factory=list)       # {"kd_steps", "round", kd_student, kd_head}
    accuracy: list = field(default_factory=list)        # {"kd_steps", "round", "elapsed_s", student_acc, head_acc}
    class_counts: list = field(default_factory=list)
    classes: tuple = ()
    grid_png: bytes | None = None
    grid_version: int = 0
    grid_caption: str = ""
    bank_png: bytes | None = None
    student_acc: float | None = None
    head_acc: float | None = None
    h_agree: float | None = None                # h's agreement with the teacher on the current batch (L_H on)
    head_training: str = ""                     # how this run trains h (the engine's words)
    student_file: str | None = None             # a downloadable student (final, or an on-demand export)
    exports: int = 0                            # on-demand exports done
    started_at: float = 0.0
    first_grid_s: float | None = None           # seconds from submit to the first grid
    elapsed_s: float = 0.0
    events: int = 0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def weights_of(cfg) -> dict[str, float]:
    return {k: getattr(cfg.synth, k) for k in WEIGHTS}


def thin(history: list) -> None:
    """Keep a long curve bounded: drop every other old point once it is over MAX_HISTORY."""
    if len(history) > MAX_HISTORY:
        head = history[:MAX_HISTORY // 2][::2]
        history[:] = head + history[MAX_HISTORY // 2:]


def class_names(dataset: str, n: int, known: tuple | None = None) -> tuple[str, ...]:
    if known and len(known) >= n:
        return tuple(known)
    if dataset == "cifar10" and n == 10:
        from ifhe.data import CIFAR10_CLASSES   # ifhe.data imports torch; a job's thread has it already
        return CIFAR10_CLASSES
    return tuple(str(i) for i in range(n))
