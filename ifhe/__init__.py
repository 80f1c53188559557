"""ifhe-lab: data-free knowledge distillation by model inversion, built around IFHE (DAC 2023)."""

__version__ = "0.1.0"
