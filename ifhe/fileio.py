"""Files without torch: atomic writes, checksums, JSON made safe to write, and the metadata in a safetensors
file's header (read without loading a tensor, so that catalogues and pages can read it before torch is imported).

Nothing is ever unpickled: a file that is not a well-formed safetensors file is refused by its first bytes.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from .errors import CheckpointError

META_KEY = "ifhe"                 # the safetensors metadata entry that holds our JSON
MAX_HEADER = 100 * 1024 * 1024


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_safe(obj):
    """JSON-safe: NaN and infinities become null, tuples lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def looks_like_pickle(head: bytes) -> bool:
    """A pickle (protocol 2+) starts with 0x80; `torch.save` writes a zip archive ("PK")."""
    return head[:1] == b"\x80" or head[:2] == b"PK"


def check_safetensors(path: Path) -> int:
    """Reject anything that is not a well-formed safetensors file before a parser sees it, naming pickles;
    returns the length of its JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if len(head) == 9 and n <= MAX_HEADER and n + 8 <= path.stat().st_size and head[8:9] == b"{":
        return n
    if looks_like_pickle(head):
        raise CheckpointError(f"{path}: this is a pickle/torch.save file; only safetensors files are accepted "
                              f"(nothing was unpickled)")
    if len(head) < 9:
        raise CheckpointError(f"{path}: truncated ({len(head)} bytes), not a safetensors file")
    raise CheckpointError(f"{path}: corrupt or truncated safetensors file (bad header)")


def read_meta(path: str | os.PathLike) -> dict:
    """Our JSON metadata of a safetensors file ({} when it has none), from its header alone."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    n = check_safetensors(path)
    try:
        with open(path, "rb") as f:
            f.seek(8)
            header = json.loads(f.read(n))
        raw = (header.get("__metadata__") or {}).get(META_KEY, "{}")
        meta = json.loads(raw)
    except (json.JSONDecodeError, OSError, ValueError, AttributeError, TypeError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt safetensors file (its metadata is not a JSON object)")
    return meta
