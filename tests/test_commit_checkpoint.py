"""tools/commit_checkpoint.sh in a scratch git repository: it commits a checkpoint from a run folder or where it
lies (a training run straight into checkpoints/NAME), and refuses a fourth snapshot and a file over 40 MB."""
import shutil
import subprocess
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "commit_checkpoint.sh"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "tools").mkdir()
    shutil.copy(TOOL, tmp_path / "tools" / TOOL.name)
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.org")
    git(tmp_path, "config", "user.name", "t")
    git(tmp_path, "add", "tools")
    git(tmp_path, "commit", "-qm", "tool")
    return tmp_path


def commit_checkpoint(repo: Path, run: str, name: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "tools/commit_checkpoint.sh", run, name], cwd=repo, capture_output=True, text=True)


def write_checkpoint(folder: Path, payload: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint.safetensors").write_bytes(payload)
    (folder / "metrics.jsonl").write_text(f'{{"step": {len(payload)}}}\n')


def test_copies_from_a_run_folder(repo):
    write_checkpoint(repo / "runs" / "t", b"weights-1")
    done = commit_checkpoint(repo, "runs/t", "t")
    assert done.returncode == 0, done.stderr
    assert "snapshot 1 of 3" in done.stdout
    assert git(repo, "show", "HEAD:checkpoints/t/checkpoint.safetensors") == "weights-1"
    assert git(repo, "show", "HEAD:checkpoints/t/metrics.jsonl") == '{"step": 9}\n'


def test_commits_a_training_that_runs_in_place_and_stops_at_three(repo):
    folder = repo / "checkpoints" / "t"
    for n in (1, 2, 3):
        write_checkpoint(folder, b"w" * n)
        done = commit_checkpoint(repo, "checkpoints/t", "t")   # cp onto itself used to fail here
        assert done.returncode == 0, done.stderr
        assert f"snapshot {n} of 3" in done.stdout
        assert git(repo, "show", "HEAD:checkpoints/t/checkpoint.safetensors") == "w" * n
    write_checkpoint(folder, b"w" * 4)
    refused = commit_checkpoint(repo, "checkpoints/t", "t")
    assert refused.returncode != 0 and "already has 3 snapshots" in refused.stderr
    assert git(repo, "show", "HEAD:checkpoints/t/checkpoint.safetensors") == "www"   # nothing committed


def test_refuses_a_file_over_40_mb(repo):
    folder = repo / "runs" / "big"
    folder.mkdir(parents=True)
    with open(folder / "checkpoint.safetensors", "wb") as f:
        f.truncate(40 * 1024 * 1024 + 1)   # sparse: no 40 MB written
    refused = commit_checkpoint(repo, "runs/big", "big")
    assert refused.returncode != 0 and "over 40 MB" in refused.stderr
    assert not (repo / "checkpoints" / "big").exists()
