import numpy as np
import pytest
import torch

from ifhe.embedding import (compute_feature_map, fit_shared_map, frechet_distance, heterogeneity_metrics,
                            knn_accuracy, silhouette, write_report)
from ifhe.features import cached_features, extract_features


def clusters(n_per=60, k=5, sep=20.0, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * sep
    x = np.concatenate([c + rng.normal(size=(n_per, dim)) for c in centers])
    y = np.repeat(np.arange(k), n_per)
    return x, y


def test_separated_clusters_score_high():
    x, y = clusters()
    assert knn_accuracy(x, y) > 0.98
    assert silhouette(x, y) > 0.7


def test_shuffled_labels_score_at_chance():
    x, y = clusters()
    y = np.random.default_rng(1).permutation(y)
    assert abs(knn_accuracy(x, y) - 0.2) < 0.1  # 5 classes
    assert silhouette(x, y) < 0.05


def test_frechet_distance_by_hand():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # same covariance (identity), means 2 apart along one axis -> distance ~ 4
    assert frechet_distance(a, a + np.array([2.0, 0, 0])) == pytest.approx(4.0, rel=1e-3)
    # N(0, I) vs N(0, 4I) in 3-d: 3 * (1 + 4 - 2*2) = 3
    assert frechet_distance(a, 2 * rng.normal(size=(200000, 3))) == pytest.approx(3.0, rel=0.05)


def test_metrics_bundle_and_degenerate_labels():
    x, y = clusters()
    m = heterogeneity_metrics(x, y, real_features=x)
    assert m["frechet"] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(knn_accuracy(x, np.zeros(len(x))))
    assert np.isnan(silhouette(x, np.zeros(len(x))))


def test_shared_map_places_new_points_near_their_cluster():
    x, y = clusters(n_per=80, k=3, dim=8)
    m = fit_shared_map(x, seed=0)
    pts = m.fitted_points
    new, new_y = clusters(n_per=10, k=3, dim=8, seed=0)  # same centers, new noise
    new_xy = m.transform(new + 0.01)
    centroids = np.stack([pts[y == c].mean(0) for c in range(3)])
    nearest = np.argmin(((new_xy[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest == new_y).mean() > 0.9


def test_feature_extraction_and_cache(tiny_teacher, tmp_path):
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    fs = extract_features(tiny_teacher, images)
    assert set(fs.features) == set(tiny_teacher.stages)
    assert fs.features["block2"].shape == (20, 32) and fs.pred.shape == (20,)
    a = cached_features(tiny_teacher, images, "block2", tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    b = cached_features(tiny_teacher, images, "block2", tmp_path)
    np.testing.assert_array_equal(a.features["block2"], b.features["block2"])
    np.testing.assert_allclose(a.features["block2"], fs.features["block2"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        extract_features(tiny_teacher, images.float())


def test_feature_map_and_report(tiny_teacher, tiny_cifar, tmp_path):
    from ifhe.data import load_split
    real = load_split("cifar10", "test", tiny_cifar)
    syn = torch.randint(0, 256, (60, 3, 32, 32), dtype=torch.uint8), torch.arange(60) % 10
    fm = compute_feature_map(tiny_teacher, {"noise": syn}, (real.x, real.y), "block1", n_per_set=50, n_real=150,
                             cache_dir=tmp_path / "c")
    assert fm.fitted_on == "real" and set(fm.points["set"]) == {"real", "noise"}
    assert list(fm.metrics["set"]) == ["real", "noise"] and np.isfinite(fm.metrics["frechet"].iloc[1])
    paths = write_report(fm, tmp_path / "rep")
    html = paths["html"].read_text()
    assert "plotly_hover" in html and "data:image/png;base64" in html
    assert paths["png"].stat().st_size > 1000 and "| noise | block1 | 50 |" in paths["md"].read_text()
    fm2 = compute_feature_map(tiny_teacher, {"noise": syn}, None, "block1", n_per_set=50, cache_dir=tmp_path / "c")
    assert fm2.fitted_on == "synthesized" and "union" in fm2.note


def test_features_cli_on_engine_banks(tiny_cifar, tmp_path, capsys):
    from ifhe.cli import main
    from ifhe.config import make_config
    from ifhe.experiment import Run, run_to_end
    from ifhe.models import create_model
    from ifhe.zoo import save_model
    from tiny_settings import TINY_RUN
    torch.manual_seed(0)
    teacher = tmp_path / "t.safetensors"
    save_model(teacher, create_model("wrn16_1", 10), "cifar10")
    for method in ("ifhe", "deepinversion"):
        cfg = make_config(method, teacher=str(teacher), rounds=2, **TINY_RUN)
        run_to_end(Run(cfg, tmp_path / "runs" / method / "seed0", test_set=None))
    code = main(["features", "--teacher", str(teacher), "--real", str(tiny_cifar), "--stage", "block1",
                 "--sets", str(tmp_path / "runs" / "ifhe" / "seed0"), f"DI={tmp_path / 'runs' / 'deepinversion' / 'seed0'}",
                 "--n-per-set", "16", "--n-real", "100", "--out", str(tmp_path / "report")])
    out = capsys.readouterr().out
    assert code == 0 and "| ifhe | block1 | 16 |" in out and "| DI | block1 | 16 |" in out
    assert (tmp_path / "report" / "report.html").exists()
