"""Synthesizers: every method is a preset of `InversionSynthesizer` (see ifhe.methods and ifhe.config.preset)."""
from .base import ImageParametrization, StepReport, Synthesizer, no_param_grads
from .inversion import PARAMETRIZATIONS, InversionSynthesizer
from .build import synthesizer_for

__all__ = ["ImageParametrization", "StepReport", "Synthesizer", "InversionSynthesizer", "PARAMETRIZATIONS",
           "no_param_grads", "synthesizer_for"]
