"""Generator parametrizations: generator + optimized z (CMI, IFHE), free-running GAN-style generators
(DAFL, ZSKT, DFQ: z resampled every step) and the meta-learned generator of Fast-Datafree."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Normalizer
from ..device import RunRNG, fast_layout, seeded_init
from ..models import create_generator
from ..models.generator import Generator, LabelGenerator, class_embedding
from .base import OneOptimizerImages


def upsample_conv3x3(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """conv(nearest 2x upsampling of x) for a 3x3, stride-1, padding-1 convolution, computed on x itself: each of
    the four output phases (row parity a, column parity b) reads a 2x2 window of x with the kernel's rows and
    columns summed where two of them land on the same input pixel, e.g. rows (w0, w1 + w2) for a = 0 and
    (w0 + w1, w2) for a = 1. The same function and gradients as `conv(F.interpolate(x, scale_factor=2))`
    (sums of weights taken before the products: float rounding only), with 16 instead of 36 multiply-adds per
    four output pixels; one convolution with the 4 phases' kernels stacked, then the phases interleaved."""
    n, _, h, w = x.shape
    weight = conv.weight
    cout, cin = weight.shape[:2]
    r0, r1, r2 = weight[:, :, 0], weight[:, :, 1], weight[:, :, 2]
    rows = torch.stack([torch.stack([r0, r1 + r2], 2), torch.stack([r0 + r1, r2], 2)])  # (a, cout, cin, 2, 3)
    c0, c1, c2 = rows[..., 0], rows[..., 1], rows[..., 2]
    k = torch.stack([torch.stack([c0, c1 + c2], -1), torch.stack([c0 + c1, c2], -1)], 1)  # (a, b, cout, cin, 2, 2)
    k = k.reshape(4 * cout, cin, 2, 2).contiguous(memory_format=torch.channels_last)
    bias = conv.bias.repeat(4) if conv.bias is not None else None
    y = F.conv2d(x.contiguous(memory_format=torch.channels_last), k, bias, padding=1)  # (n, 4 cout, h+1, w+1)
    return _Interleave.apply(y, h, w)


class _Interleave(torch.autograd.Function):
    """out[:, c, 2i + a, 2j + b] = y[:, (2a + b) cout + c, i + a, j + b] for y of shape (n, 4 cout, h + 1, w + 1),
    both channels_last: one copy forward, one zero-fill and one copy backward (autograd of slice assignments would
    clone and zero-fill the whole gradient once per phase)."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, h: int, w: int):
        n, c4 = y.shape[:2]
        cout = c4 // 4
        yv = y.permute(0, 2, 3, 1).reshape(n, h + 1, w + 1, 2, 2, cout)
        out = y.new_empty(n, h, 2, w, 2, cout)
        for a in (0, 1):
            for b in (0, 1):
                out[:, :, a, :, b] = yv[:, a:a + h, b:b + w, a, b]
        ctx.dims = (n, cout, h, w)
        return out.view(n, 2 * h, 2 * w, cout).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        n, cout, h, w = ctx.dims
        gv = g.permute(0, 2, 3, 1).reshape(n, h, 2, w, 2, cout)
        gy = g.new_zeros(n, h + 1, w + 1, 2, 2, cout)
        for a in (0, 1):
            for b in (0, 1):
                gy[:, a:a + h, b:b + w, a, b] = gv[:, :, a, :, b]
        return gy.view(n, h + 1, w + 1, 4 * cout).permute(0, 3, 1, 2), None, None


def _fusable(up: nn.Module, conv: nn.Module) -> bool:
    return (isinstance(up, nn.Upsample) and up.mode == "nearest" and up.size is None
            and up.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0))
            and type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


def generate(g: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """g(z); for the engine's generators (`ifhe.models.generator`: a projection, then a sequential body), every
    nearest 2x upsampling followed by a 3x3 convolution runs as `upsample_conv3x3`. On the 2-core CPU box
    CMI's generator forward + backward at batch 64 takes about 30% less time that way (docs/PROFILE.md).
    Any other module is simply called."""
    if not isinstance(g, Generator) or type(g).forward is not Generator.forward \
            or not isinstance(getattr(g, "body", None), nn.Sequential):
        return g(z)
    if z.dim() != 2 or z.shape[1] != g.nz:
        raise ValueError(f"generator expects z of shape (N, {g.nz}), got {tuple(z.shape)}")
    x = g.project(z).view(z.shape[0], g.c0, g.init_size, g.init_size).contiguous(memory_format=torch.channels_last)
    layers = list(g.body)
    i = 0
    while i < len(layers):
        if i + 1 < len(layers) and _fusable(layers[i], layers[i + 1]):
            x = upsample_conv3x3(x, layers[i + 1])
            i += 2
        else:
            x = layers[i](x)
            i += 1
    return x


def reinit_generator(g: nn.Module, rng: torch.Generator | None = None) -> None:
    """CMI's per-round reset: N(0, 0.02) weights, BN scales N(1, 0.02)."""
    for m in g.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=rng)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02, generator=rng)
            nn.init.zeros_(m.bias)


def reset_first_layer(g: nn.Module, rng: torch.Generator | None = None) -> None:
    """Fast-Datafree's `reset_l0`: the projection from z and the BatchNorm after it get N(0, 0.02) weights and
    zero biases again (the BN's scale too: near 0, not near 1, as `fast_meta.reset_l0` draws it)."""
    for layer in g.first_layers():
        nn.init.normal_(layer.weight, 0.0, 0.02, generator=rng)
        nn.init.zeros_(layer.bias)


def _adam(params, lr: float, betas=None) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas) if betas else (0.5, 0.999))


class _GeneratorBase:
    """What both generator parametrizations share: the network, the map of its output to [0, 1], sampling."""

    def __init__(self, name: str, nz: int, normalizer: Normalizer, device: torch.device, rng: RunRNG):
        self.nz, self.normalizer, self.device, self.rng = nz, normalizer, device, rng
        self.generator = fast_layout(create_generator(name, nz).to(device)).train()

    def _to_unit(self, out: torch.Tensor) -> torch.Tensor:
        # DAFL's and ZSKT's generators emit the teacher's input itself; the engine keeps images in [0, 1]
        return self.normalizer.denormalize(out) if self.generator.output_space == "normalized" else out

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.nz, device=self.device, generator=self.rng.dev)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Fresh images in [0, 1] for KD, with the generator's running BN statistics (eval mode), as CMI's
        `GenerativeSynthesizer.sample` draws them."""
        self.generator.eval()
        try:
            return self._to_unit(generate(self.generator, self.noise(n)))
        finally:
            self.generator.train()


class GeneratorImages(_GeneratorBase):
    """x = g(z). With lr_z > 0, z is a fresh N(0, I) batch each round, optimized with g; with lr_z = 0, z is
    redrawn at every step and only g learns (GAN-style)."""

    def __init__(self, cfg, normalizer: Normalizer, device: torch.device, rng: RunRNG, **_):
        super().__init__(cfg.generator, cfg.nz, normalizer, device, rng)
        self.lr_g, self.lr_z, self.reset, self.grad_clip = cfg.lr_g, cfg.lr_z, cfg.reset_generator, cfg.grad_clip
        self.betas = cfg.betas
        self.opt_g = _adam(self.generator.parameters(), self.lr_g, self.betas)
        self.z: torch.Tensor | None = None
        self._last_z: torch.Tensor | None = None
        self.opt_z: torch.optim.Optimizer | None = None
        self.batch_size = 0

    def start_round(self, batch_size: int, targets: torch.Tensor | None = None) -> None:
        self.batch_size = batch_size
        if self.reset:
            reinit_generator(self.generator, self.rng.dev)
            self.opt_g = _adam(self.generator.parameters(), self.lr_g, self.betas)
        if self.lr_z > 0:
            self.z = self.noise(batch_size).requires_grad_()
            self.opt_z = _adam([self.z], self.lr_z, self.betas)

    def set_lr(self, lr_g: float) -> None:
        for g in self.opt_g.param_groups:
            g["lr"] = lr_g

    def render(self) -> torch.Tensor:
        z = self.z if self.z is not None else self.noise(self.batch_size)
        self._last_z = z.detach()
        return self._to_unit(generate(self.generator, z))

    @torch.no_grad()
    def rerender(self) -> torch.Tensor:
        """The last z through the generator as it is now (after its step), in training mode: the batch ZSKT's
        student learns from."""
        return self._to_unit(generate(self.generator, self._last_z))

    def zero_grad(self) -> None:
        self.opt_g.zero_grad(set_to_none=True)
        if self.opt_z is not None:
            self.opt_z.zero_grad(set_to_none=True)

    def after_backward(self) -> None:
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.generator.parameters(), self.grad_clip)

    def step(self) -> None:
        self.opt_g.step()
        if self.opt_z is not None:
            self.opt_z.step()

    def end_round(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "opt_g": self.opt_g.state_dict(),
                "z": self.z.detach() if self.z is not None else None,
                "opt_z": self.opt_z.state_dict() if self.opt_z is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.opt_g = _adam(self.generator.parameters(), self.lr_g, self.betas)
        self.opt_g.load_state_dict(state["opt_g"])
        if state.get("z") is not None:
            self.z = state["z"].to(self.device).requires_grad_()
            self.batch_size = self.z.shape[0]
            self.opt_z = _adam([self.z], self.lr_z, self.betas)
            if state.get("opt_z"):
                self.opt_z.load_state_dict(state["opt_z"])


class MetaGeneratorImages(_GeneratorBase):
    """Fast-Datafree: each round adapts a copy of the meta-generator (and z) for a few steps; the first-order
    MAML gradient, summed over those steps, updates the meta-generator once at the end of the round."""

    def __init__(self, cfg, normalizer: Normalizer, device: torch.device, rng: RunRNG, **_):
        super().__init__(cfg.generator, cfg.nz, normalizer, device, rng)
        self.lr_g, self.lr_z, self.betas = cfg.lr_g, cfg.lr_z, cfg.betas
        self.meta_opt = _adam(self.generator.parameters(), cfg.lr_g * cfg.iterations, self.betas)
        self.fast: nn.Module | None = None
        self.z: torch.Tensor | None = None
        self.opt: torch.optim.Optimizer | None = None

    def start_round(self, batch_size: int, targets: torch.Tensor | None = None) -> None:
        self.fast = copy.deepcopy(self.generator)
        self.z = self.noise(batch_size).requires_grad_()
        self.opt = _adam([{"params": self.fast.parameters()}, {"params": [self.z], "lr": self.lr_z}], self.lr_g,
                         self.betas)
        self.meta_opt.zero_grad(set_to_none=False)
        for p in self.generator.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def render(self) -> torch.Tensor:
        return self._to_unit(generate(self.fast, self.z))

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def after_backward(self) -> None:
        for p, fp in zip(self.generator.parameters(), self.fast.parameters()):
            if fp.grad is not None:
                p.grad.add_(fp.grad)

    def step(self) -> None:
        self.opt.step()

    def end_round(self) -> None:
        self.meta_opt.step()

    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "meta_opt": self.meta_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.meta_opt.load_state_dict(state["meta_opt"])


class LabelGeneratorImages(OneOptimizerImages):
    """NAYER (tmtuan1307/NAYER datafree/synthesis/nayer.py): x = g(noisy(BN(e_t))) for the round's targets t.

    Before every round (one NAYER batch) the noisy layers are re-drawn and a fresh Adam (NAYER builds one per
    batch) takes the generator's parameters; every `synth.g_life` rounds the whole generator is created anew
    (NAYER's `reinit()`: PyTorch's default initialisation), and in between it is kept and keeps learning."""

    def __init__(self, cfg, normalizer: Normalizer, device: torch.device, rng: RunRNG, teacher: nn.Module,
                 num_classes: int):
        self.cfg, self.normalizer, self.device, self.rng = cfg, normalizer, device, rng
        self.num_classes = num_classes
        self.embedding = class_embedding(cfg.embedding, teacher, num_classes)
        self.generator = self._new_generator()
        self.rounds_lived = 0
        self.targets: torch.Tensor | None = None
        self.opt: torch.optim.Optimizer | None = None

    def _new_generator(self) -> LabelGenerator:
        seed = int(torch.randint(0, 2 ** 62, (), generator=self.rng.cpu))
        with seeded_init(seed, self.device):
            g = LabelGenerator(self.embedding, self.cfg.batch_size, group=self.num_classes,
                               le_size=self.cfg.nz).to(self.device)
        return fast_layout(g).train()

    def start_round(self, batch_size: int, targets: torch.Tensor | None = None) -> None:
        if targets is None or len(targets) != batch_size:
            raise ValueError("the label generator needs the round's targets")
        if self.cfg.g_life and self.rounds_lived >= self.cfg.g_life:
            self.generator, self.rounds_lived = self._new_generator(), 0
        self.rounds_lived += 1
        self.generator.reinit_noise(self.rng.dev)
        self.targets = targets
        self.opt = _adam(self.generator.parameters(), self.cfg.lr_g, self.cfg.betas)

    def render(self) -> torch.Tensor:
        g = self.generator
        return generate(g.net, g.codes(self.targets))

    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "rounds_lived": self.rounds_lived,
                "opt": self.opt.state_dict() if self.opt is not None else None,
                "targets": self.targets}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.rounds_lived = int(state["rounds_lived"])
        if state.get("targets") is not None:
            self.targets = state["targets"].to(self.device)
            self.opt = _adam(self.generator.parameters(), self.cfg.lr_g, self.cfg.betas)
            if state.get("opt"):
                self.opt.load_state_dict(state["opt"])
