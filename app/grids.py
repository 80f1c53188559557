"""Image grids for the pages: the synthesis batch with the teacher's view of each image, bank samples by class,
thumbnails; PNG bytes and data URIs. Pure functions of tensors (the job thread composes, the pages show)."""
from __future__ import annotations

import base64
import io
from typing import Any

# Pillow, numpy and torch are imported where an image is made: the first page shows none before a run starts


def spread_indices(n: int, k: int) -> list[int]:
    """At most k indices spread evenly over range(n) (targets are sorted by class, so every class shows)."""
    if n <= k:
        return list(range(n))
    return [int(i * n / k) for i in range(k)]


def font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the bitmap font has one size
        return ImageFont.load_default()


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # fast: the grid is redrawn several times a second
    return buf.getvalue()


def _to_hwc(x) -> Any:
    """uint8 (3, H, W) torch tensor or numpy array -> (H, W, 3) numpy."""
    import numpy as np
    a = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
    return np.ascontiguousarray(a.transpose(1, 2, 0))


def compose_grid(images, labels, conf=None, pred=None, classes: tuple = (), scale: int = 3, cols: int = 8) -> bytes:
    """One PNG: upscaled tiles, each captioned with its target class and the teacher's confidence in it.

    A caption is red when the teacher's top class differs from the target.
    """
    from PIL import Image, ImageDraw
    n = len(images)
    if n == 0:
        raise ValueError("no images to draw")
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    h, w = images.shape[2] * scale, images.shape[3] * scale
    cap = 16
    pad = 2
    canvas = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + cap + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    face = font(11)
    for i in range(n):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * (w + pad), pad + r * (h + cap + pad)
        tile = Image.fromarray(_to_hwc(images[i])).resize((w, h), Image.NEAREST)
        canvas.paste(tile, (x0, y0))
        label = int(labels[i])
        name = classes[label] if label < len(classes) else str(label)
        text = name if conf is None else f"{name} {float(conf[i]):.2f}"
        wrong = pred is not None and int(pred[i]) != label
        draw.text((x0 + 1, y0 + h + 1), text[:16], fill=(200, 30, 30) if wrong else (20, 20, 20), font=face)
    return png_bytes(canvas)


def compose_bank_by_class(images, labels, classes: tuple = (), per_class: int = 6, scale: int = 2,
                          max_classes: int = 20) -> bytes:
    """Rows of bank samples, one row per class (the most recent `per_class` of each), class name on the left."""
    import torch
    from PIL import Image, ImageDraw
    labels = torch.as_tensor(labels)
    present = sorted(set(labels.tolist()))[:max_classes] if len(labels) else []
    h, w = 32 * scale, 32 * scale
    left, pad = 170, 2
    rows = max(1, len(present))
    canvas = Image.new("RGB", (left + per_class * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    face = font(20)  # the picture is shown shrunk to a column's width
    for r, cls in enumerate(present):
        idx = (labels == cls).nonzero().flatten()[-per_class:]
        y0 = pad + r * (h + pad)
        name = classes[cls] if cls < len(classes) else str(cls)
        draw.text((4, y0 + h // 2 - 11), f"{name} ({int((labels == cls).sum())})", fill=(20, 20, 20), font=face)
        for c, i in enumerate(idx.tolist()):
            tile = Image.fromarray(_to_hwc(images[i])).resize((w, h), Image.NEAREST)
            canvas.paste(tile, (left + pad + c * (w + pad), y0))
    return png_bytes(canvas)


def png_url(png: bytes) -> str:
    """A PNG as a data URI for `st.image`: no media-file round trip (a fast-refreshing grid never shows a 404)
    and no markdown to parse in the browser at every refresh."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def thumbnail_png(image, scale: int = 4) -> bytes:
    from PIL import Image
    a = _to_hwc(image)
    return png_bytes(Image.fromarray(a).resize((a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST))
