"""Forward hooks that only record; each is a context manager that removes itself on exit."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from torch import nn

from .errors import IfheError


@dataclass
class BNStats:
    """Batch statistics of one BatchNorm2d input next to the layer's running statistics."""

    mean: torch.Tensor
    var: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor
    instance_mean: torch.Tensor | None = None  # (N, C): per-image channel means, CMI's features


class _ChannelMoments(torch.autograd.Function):
    """Per-channel mean and biased variance of an (N, C, H, W) batch over (N, H, W) of its first `rows` images, as
    E[x^2] - E[x]^2 clamped at 0, and optionally every image's channel means (N, C), with one fused backward.

    The same values and gradients as the autograd of `xs.mean((0, 2, 3))`, `(xs * xs).mean((0, 2, 3)) - mean**2`
    (xs = x[:rows]) and `x.mean((2, 3))`; that autograd materialises broadcast gradients in a layout other than
    the batch's (channels_last), mixes the two layouts, and zero-fills a full-size gradient for every slice, which
    took 10-20x longer than the one `addcmul` pass here (docs/PROFILE.md). `var_mean` is slower still on
    channels_last batches here, so the forward keeps the two plain reductions."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rows: int, instance_means: bool):
        xs = x[:rows]
        if instance_means:
            inst = x.mean(dim=(2, 3))
            mean = inst[:rows].mean(0)  # every image has H*W pixels: the mean of the images' means is the batch's
        else:
            inst = None
            mean = xs.mean(dim=(0, 2, 3))
        raw = (xs * xs).mean(dim=(0, 2, 3)) - mean * mean
        var = raw.clamp_min(0)
        ctx.save_for_backward(x, mean, raw >= 0)
        ctx.rows = rows
        return mean, var, inst

    @staticmethod
    def backward(ctx, g_mean, g_var, g_inst):
        x, mean, keep = ctx.saved_tensors
        n, c, h, w = x.shape
        r = ctx.rows
        m = r * h * w
        # d mean / dx = 1/m; d var / dx = 2 (x - mean) / m where the clamp passes the gradient; d inst / dx = 1/(hw)
        b = (2.0 / m) * g_var * keep if g_var is not None else torch.zeros_like(mean)
        a = -b * mean
        if g_mean is not None:
            a = a + g_mean / m
        a = a.view(1, c, 1, 1)
        gi = (g_inst / (h * w)).view(n, c, 1, 1) if g_inst is not None else None
        if r == n:
            return torch.addcmul(a if gi is None else a + gi, x, b.view(1, c, 1, 1)), None, None
        grad = torch.empty_like(x)
        torch.addcmul(a if gi is None else a + gi[:r], x[:r], b.view(1, c, 1, 1), out=grad[:r])
        if gi is None:
            grad[r:].zero_()
        else:
            grad[r:].copy_(gi[r:].expand(n - r, c, h, w))
        return grad, None, None


def channel_moments(x: torch.Tensor, instance_means: bool = False, rows: int | None = None):
    """(mean, var, instance means or None) of a BatchNorm input x: mean and var over the first `rows` images
    (all by default), instance means of every image; see `_ChannelMoments`."""
    rows = x.shape[0] if rows is None else min(rows, x.shape[0])
    mean, var, inst = _ChannelMoments.apply(x, rows, instance_means)
    return mean, var, inst


def bn_input_moments(x: torch.Tensor, instance_means: bool, rows: int | None = None):
    """What the BN-statistics hooks record of a BatchNorm input: `channel_moments` in float32 (under bf16
    autocast E[x^2] - E[x]^2 would lose every digit)."""
    return channel_moments(x.float(), instance_means, rows)


def stage_feature(output: torch.Tensor, pool: bool, rows: int | None = None) -> torch.Tensor:
    """What the feature taps record of a stage output: its first `rows` images (None: all) in float32 (features
    and every loss on them stay float32 under bf16 autocast), instance-mean pooled to (N, C) with `pool`."""
    if rows is not None and rows < output.shape[0]:
        output = output[:rows]
    output = output.float()
    return spatial_mean(output) if pool and output.dim() == 4 else output


class _SpatialMean(torch.autograd.Function):
    """x.mean((2, 3)) whose gradient stays a broadcast view (no materialised tensor in another layout)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor):
        ctx.shape = x.shape
        return x.mean(dim=(2, 3))

    @staticmethod
    def backward(ctx, g):
        n, c, h, w = ctx.shape
        return (g / (h * w)).view(n, c, 1, 1).expand(n, c, h, w)


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """Per-image channel means (N, C) of an (N, C, H, W) tensor."""
    return _SpatialMean.apply(x)


class _Hooks:
    """Records only the forward passes of the thread that installed it: a model shared by threads (the app's
    jobs and its warm-up) never mixes another thread's tensors into this one's losses."""

    def __init__(self):
        self._handles: list = []
        self._owner = threading.get_ident()

    def _mine(self) -> bool:
        return threading.get_ident() == self._owner

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class BNStatHook(_Hooks):
    """Records per-channel mean and biased variance of every BatchNorm2d input (DeepInversion)."""

    def __init__(self, model: nn.Module, instance_means: bool = False):
        super().__init__()
        self.instance_means = instance_means
        self.stats: list[BNStats] = []
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                self._handles.append(m.register_forward_hook(self._record))
        if not self._handles:
            raise IfheError("model has no BatchNorm2d layer: the BN-statistics loss cannot be used with it")

    def _record(self, module: nn.BatchNorm2d, inputs, output) -> None:
        if not self._mine():
            return
        mean, var, inst = bn_input_moments(inputs[0], self.instance_means)
        self.stats.append(BNStats(mean, var, module.running_mean, module.running_var, inst))

    def clear(self) -> None:
        self.stats = []


class FeatureTap(_Hooks):
    """Records the output of named stages (see `model.stages`), instance-mean pooled to (N, C) by default."""

    def __init__(self, model: nn.Module, stages: list[str] | tuple[str, ...], pool: bool = True):
        super().__init__()
        known = getattr(model, "stage_modules", None)
        if not known:
            raise IfheError(f"{type(model).__name__} declares no stages to tap")
        unknown = [s for s in stages if s not in known]
        if unknown:
            raise IfheError(f"unknown stage(s) {unknown}; {getattr(model, 'arch', type(model).__name__)} has "
                            f"{', '.join(known)}")
        self.stages, self.pool = tuple(stages), pool
        self.features: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        for stage in self.stages:
            self._handles.append(modules[known[stage]].register_forward_hook(self._recorder(stage)))

    def _recorder(self, stage: str):
        def record(module, inputs, output):
            if not self._mine():
                return
            self.features[stage] = stage_feature(output, self.pool)
        return record

    def concat(self) -> torch.Tensor:
        """The tapped features side by side, in stage order: the `f_T` of IFHE."""
        return self.concat_of(self.stages)

    def concat_of(self, stages) -> torch.Tensor:
        return torch.cat([self.features[s] for s in stages], dim=1)


class TeacherProbe(nn.Module):
    """One synthesis pass through the frozen teacher that also returns what the loss terms read inside it:
    `probe(x) -> (logits, ((mean, var, instance means or None) per BatchNorm2d input), (pooled output per stage))`.

    It runs a private copy of the teacher's module tree (sharing the teacher's parameter and buffer tensors) whose
    recording hooks are installed once, so that the pass can be compiled (`ifhe.device.maybe_compile`: no hook is added or removed
    between steps) and no other caller of the teacher (KD, evaluation, another thread) is ever recorded.
    Statistics are those of the first `rows` images (None: all), instance means those of every image, as
    `BNStatHook(teacher, instance_means)` and `FeatureTap(teacher, stages)` record them for the first `rows` images."""

    def __init__(self, teacher: nn.Module, stages: tuple[str, ...] = (), instance_means: bool = False,
                 rows: int | None = None):
        super().__init__()
        import copy

        # new module objects around the teacher's own parameter and buffer tensors (shared, not copied)
        shared = {id(t): t for t in (*teacher.parameters(), *teacher.buffers())}
        self.model = copy.deepcopy(teacher, memo=shared).eval()
        for m in self.model.modules():  # no hook another caller had installed on the teacher comes along
            m._forward_hooks.clear()
            m._forward_pre_hooks.clear()
        self.stages, self.instance_means, self.rows = tuple(stages), instance_means, rows
        self.bns = [m for m in self.model.modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.bns:
            raise IfheError("model has no BatchNorm2d layer: the BN-statistics loss cannot be used with it")
        known = getattr(self.model, "stage_modules", None) or {}
        unknown = [s for s in self.stages if s not in known]
        if unknown:
            raise IfheError(f"unknown stage(s) {unknown}; {getattr(teacher, 'arch', type(teacher).__name__)} has "
                            f"{', '.join(known) or 'none'}")
        self._stats: list = []
        self._features: dict = {}
        for m in self.bns:
            m.register_forward_hook(self._record_bn)
        modules = dict(self.model.named_modules())
        for stage in self.stages:
            modules[known[stage]].register_forward_hook(self._recorder(stage))

    def _record_bn(self, module, inputs, output) -> None:
        self._stats.append(bn_input_moments(inputs[0], self.instance_means, self.rows))

    def _recorder(self, stage: str):
        def record(module, inputs, output):
            self._features[stage] = stage_feature(output, True, self.rows)
        return record

    def forward(self, x: torch.Tensor):
        self._stats, self._features = [], {}
        logits = self.model(x)
        # fresh tuples of tensors (what torch.compile returns reliably), not the containers the hooks filled
        stats = tuple(self._stats)
        features = tuple(self._features[s] for s in self.stages)
        self._stats, self._features = [], {}
        return logits, stats, features

    def bn_stats(self, stats) -> list[BNStats]:
        """The recorded statistics next to each layer's running statistics, as `BNStatHook.stats`."""
        return [BNStats(mean, var, m.running_mean, m.running_var, inst) for (mean, var, inst), m in zip(stats, self.bns)]


class ProbedFeatures:
    """What `FeatureTap` offers the loss terms (`features`, `concat`, `concat_of`), from a `TeacherProbe` pass."""

    def __init__(self, stages: tuple[str, ...], features: tuple[torch.Tensor, ...]):
        self.stages, self.features = tuple(stages), dict(zip(stages, features))

    def concat(self) -> torch.Tensor:
        return self.concat_of(self.stages)

    def concat_of(self, stages) -> torch.Tensor:
        return torch.cat([self.features[s] for s in stages], dim=1)
