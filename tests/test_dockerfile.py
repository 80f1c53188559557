"""Static checks of the container recipe (no Docker engine runs on the CI machines)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_contract():
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/_stcore/health" in text
    assert "EXPOSE 8501" in text and "OMP_NUM_THREADS" in text
    assert not re.search(r"(?i)(password|secret|token|api_key)\s*=", text)
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs", "*.npz"} <= set(ignore)
