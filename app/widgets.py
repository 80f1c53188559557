"""Kept only for app/features_view.py and app/views/features.py, which import `widgets as W` (another engineer's
files): what they use, re-exported from where it now lives. Everything else imports those modules directly;
delete this file once the two switch to them."""
from ifhe.methods import METHOD_LABELS  # noqa: F401

from .files import data_status, safe_path  # noqa: F401
from .forms import build_config, form_defaults  # noqa: F401
from .grids import thumbnail_png  # noqa: F401
