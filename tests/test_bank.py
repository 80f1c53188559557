import json

import pytest
import torch

from ifhe.bank import ImageBank, open_bank
from ifhe.errors import CheckpointError, IfheError


def batch(n, value=0):
    return torch.full((n, 3, 32, 32), value, dtype=torch.uint8), torch.arange(n) % 10


def test_add_reload_sample(tmp_path):
    bank = ImageBank(tmp_path, classes=tuple("abcdefghij"))
    bank.add(*batch(4, 1))
    bank.add(*batch(6, 2))
    again = ImageBank(tmp_path)
    assert len(again) == 10 and again.n_shards == 2 and again.classes == tuple("abcdefghij")
    assert torch.equal(again.images, bank.images)
    x, y = again.sample(1000, torch.Generator().manual_seed(0))
    # uniform over images: about 40% come from the first shard (value 1)
    frac = (x[:, 0, 0, 0] == 1).float().mean().item()
    assert 0.33 < frac < 0.47


def test_debris_of_a_kill_is_removed_and_not_counted(tmp_path):
    bank = ImageBank(tmp_path)
    bank.add(*batch(3))
    (tmp_path / "r0_000001.safetensors").write_bytes(b"half-written")  # shard written, manifest not
    (tmp_path / ".manifest_r0.json.tmp123").write_text("{")
    again = ImageBank(tmp_path)
    assert len(again) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest_r0.json", "r0_000000.safetensors"]
    again.add(*batch(2))
    assert ImageBank(tmp_path).n_shards == 2


def test_truncate_drops_only_later_shards(tmp_path):
    bank = ImageBank(tmp_path)
    for i in range(4):
        bank.add(*batch(2, i))
    first_two = bank.images[:4].clone()
    bank.truncate(2)
    assert len(bank) == 4 and torch.equal(bank.images, first_two)
    assert not (tmp_path / "r0_000002.safetensors").exists()
    assert [s["file"] for s in json.loads((tmp_path / "manifest_r0.json").read_text())["shards"]] == \
        ["r0_000000.safetensors", "r0_000001.safetensors"]


def test_ranks_merge(tmp_path):
    ImageBank(tmp_path, rank=0).add(*batch(2))
    ImageBank(tmp_path, rank=1).add(*batch(3))
    assert len(ImageBank(tmp_path)) == 5


def test_export_png(tmp_path):
    bank = ImageBank(tmp_path / "b", classes=("cat", "dog"))
    bank.add(torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1, 1]))
    assert bank.export_png(tmp_path / "png") == 3
    from PIL import Image
    assert len(list((tmp_path / "png" / "dog").glob("*.png"))) == 2
    assert torch.equal(torch.from_numpy(__import__("numpy").array(Image.open(tmp_path / "png" / "cat" / "000000.png"))),
                       bank.images[0].permute(1, 2, 0))


def test_bad_input(tmp_path):
    bank = ImageBank(tmp_path)
    with pytest.raises(IfheError, match="uint8"):
        bank.add(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))
    with pytest.raises(IfheError, match="labels"):
        bank.add(*batch(2)[:1], torch.zeros(3, dtype=torch.long))
    with pytest.raises(IfheError, match="empty"):
        bank.sample(4)
    with pytest.raises(IfheError, match="no image bank"):
        open_bank(tmp_path / "none")


def test_tampered_shard_detected(tmp_path):
    ImageBank(tmp_path).add(*batch(2))
    p = tmp_path / "r0_000000.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        open_bank(tmp_path)


def test_shard_info_meta_and_rounds_survive_reopening(tmp_path):
    from ifhe.bank import ImageBank, count_images, open_bank

    bank = ImageBank(tmp_path / "b")
    x = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    bank.add(x, torch.arange(4), {"round": 3, "h_updates": 0})
    bank.add(x[:2], torch.arange(2), {"round": 7, "h_updates": 50})
    bank.set_meta(head_training="h-only KD, 20 steps a round")
    again = open_bank(tmp_path / "b")
    assert again.image_rounds().tolist() == [3, 3, 3, 3, 7, 7]
    assert [r["h_updates"] for r in again.records()] == [0, 50]
    assert again.meta == {"head_training": "h-only KD, 20 steps a round"}
    assert count_images(tmp_path / "b") == 6 and count_images(tmp_path / "nothing") == 0


def test_rounds_of_a_bank_without_recorded_rounds_are_shard_indices(tmp_path):
    from ifhe.bank import ImageBank

    bank = ImageBank(tmp_path / "b")
    x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    bank.add(x, torch.arange(2))
    bank.add(x, torch.arange(2))
    assert bank.image_rounds().tolist() == [0, 0, 1, 1]
