"""Synthesizers: every method is a preset of `InversionSynthesizer` (see ifhe.config.preset)."""
from .base import StepReport, Synthesizer, no_param_grads
from .inversion import LIVE_WEIGHTS, InversionSynthesizer

__all__ = ["StepReport", "Synthesizer", "InversionSynthesizer", "LIVE_WEIGHTS", "no_param_grads"]
