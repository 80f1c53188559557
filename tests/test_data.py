import numpy as np
import pytest
import torch

from ifhe import data as D
from ifhe.errors import DataError


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_real_cifar10_from_env(real_data, monkeypatch):
    # real data: what is checked is that the real CIFAR-10 test split is found through $IFHE_DATA and read whole
    monkeypatch.setenv("IFHE_DATA", str(real_data))
    test = D.load_split("cifar10", "test")
    assert len(test) == 10000 and test.x.shape == (10000, 3, 32, 32) and test.x.dtype == torch.uint8
    assert test.classes[0] == "airplane" and sorted(test.y.unique().tolist()) == list(range(10))
    mean = D.to_unit(test.x).mean((0, 2, 3))
    assert torch.allclose(mean, torch.tensor(D.NORMALIZATION["cifar10"][0]), atol=0.02)


def test_npz_roundtrip(tmp_path):
    x = np.random.randint(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    s = D.load_npz(_write(tmp_path / "a.npz", x=x, y=np.arange(5)))
    assert s.x.shape == (5, 3, 32, 32)
    assert torch.equal(s.x.permute(0, 2, 3, 1), torch.from_numpy(x))
    assert s.y.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("arrays, msg", [
    (dict(images=np.zeros((2, 32, 32, 3), np.uint8), y=np.zeros(2)), "expected arrays 'x' and 'y'"),
    (dict(x=np.zeros((2, 32, 32, 3), np.float32), y=np.zeros(2, np.int64)), "'x' must be uint8"),
    (dict(x=np.zeros((2, 3, 32, 32), np.uint8), y=np.zeros(2, np.int64)), "'x' must be uint8 of shape"),
    (dict(x=np.zeros((2, 32, 32, 3), np.uint8), y=np.zeros(3, np.int64)), "'y' must be integers"),
    (dict(x=np.zeros((2, 32, 32, 3), np.uint8), y=np.zeros(2, np.float32)), "'y' must be integers"),
])
def test_npz_bad_layout(tmp_path, arrays, msg):
    with pytest.raises(DataError, match=msg):
        D.load_npz(_write(tmp_path / "bad.npz", **arrays))


def test_npz_with_pickled_object_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    with pytest.raises(DataError, match="not a readable .npz"):
        D.load_npz(p)


def test_corrupt_npz(tmp_path):
    p = tmp_path / "c.npz"
    p.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="not a readable"):
        D.load_npz(p)


def test_missing_folder_says_where_and_how(tmp_path):
    with pytest.raises(DataError, match=r"nowhere.*IFHE_DATA"):
        D.load_split("cifar10", "test", tmp_path / "nowhere")


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        D.load_split("mnist", "test")


def test_torchvision_download_fails_fast_offline(tmp_path, monkeypatch):
    from torchvision import datasets
    monkeypatch.setattr(datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(DataError, match=r"could not be downloaded.*IFHE_DATA"):
        D.load_split("cifar10", "test", tmp_path)


def test_torchvision_format_is_read(tmp_path, monkeypatch):
    """A folder in torchvision's own CIFAR-10 layout goes through torchvision's loader."""
    import pickle
    from torchvision import datasets
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    flat = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    with open(base / "test_batch", "wb") as f:
        pickle.dump({"data": flat, "labels": [3, 1, 4, 1]}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(D.CIFAR10_CLASSES)}, f)
    from torchvision.datasets import cifar
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # the md5s are of the real files
    s = D.load_split("cifar10", "test", tmp_path, download=False)
    assert s.y.tolist() == [3, 1, 4, 1]
    assert torch.equal(s.x[1], torch.from_numpy(flat[1].reshape(3, 32, 32)))
    assert s.classes[3] == "cat"


def test_random_crop_flip_is_a_shifted_or_flipped_copy():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    out = D.random_crop_flip(x, padding=4, generator=g)
    assert out.shape == x.shape
    for i in range(2):
        hits = 0
        padded = torch.nn.functional.pad(x[i], (4,) * 4)
        for dy in range(9):
            for dx in range(9):
                crop = padded[:, dy:dy + 32, dx:dx + 32]
                hits += torch.equal(crop, out[i]) or torch.equal(crop.flip(-1), out[i])
        assert hits >= 1


def test_random_crop_flip_uint8_keeps_dtype():
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    assert D.random_crop_flip(x).dtype == torch.uint8


def test_cutout_zeroes_one_square_per_image_clipped_at_the_border():
    x = torch.ones(64, 3, 32, 32)
    out = D.cutout(x, 8, generator=torch.Generator().manual_seed(0))
    holes = (out == 0).all(1)                     # every channel of a hole pixel is zeroed together
    assert ((out == 0) == holes[:, None]).all() and torch.equal(x, torch.ones_like(x))   # input untouched
    for hole in holes:
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8 and hole.sum() == len(rows) * len(cols)
        assert (rows.diff() == 1).all() and (cols.diff() == 1).all()   # one contiguous square (a clipped one)
    assert (holes.sum((1, 2)) == 64).float().mean() > 0.4       # most squares lie wholly inside
    assert (holes.sum((1, 2)) < 64).any()                        # and some are clipped at a border
    assert D.cutout(x, 0) is x


def test_cutout_setting_is_validated():
    from ifhe.errors import IfheError
    from ifhe.train import TrainConfig
    with pytest.raises(IfheError, match="cutout"):
        TrainConfig(cutout=-1).validate()
    assert TrainConfig(cutout=8).validate().cutout == 8
