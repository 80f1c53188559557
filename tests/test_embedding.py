"""The feature measurement on synthetic features of known structure, then on a tiny teacher, then the CLI."""
import numpy as np
import pytest
import torch

from ifhe import feature_metrics as E
from ifhe.embedding import fit_map
from ifhe.feature_metrics import (accuracy_interval, fixed_folds, frechet_distance, out_of_fold, set_metrics,
                                  window_indices)
from ifhe.feature_report import Features, ImageSet, compute_report, equal_n
from ifhe.features import (bank_set, cached_features, check_stages, default_stages, extract_features, h_stages_of,
                           head_provenance, stage_choices, write_report)


def clusters(n_per=60, k=5, sep=20.0, dim=16, seed=0, spread=1.0, centers=None):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * sep if centers is None else centers
    dim = centers.shape[1]
    x = np.concatenate([c + spread * rng.normal(size=(n_per, dim)) for c in centers])
    y = np.repeat(np.arange(k), n_per)
    return x.astype(np.float32), y, centers


def knn_bacc(x, y):
    return accuracy_interval(y, out_of_fold(x, y, fixed_folds(y)), n_boot=0).estimate


# ---- protocol ----------------------------------------------------------------------------------------------

def test_separated_clusters_score_high_and_shuffled_labels_at_chance():
    x, y, _ = clusters()
    assert knn_bacc(x, y) > 0.98
    m = set_metrics(x, y, y, n_boot=50)
    assert m["probe"].estimate > 0.98 and m["silhouette"].estimate > 0.7 and m["chance"] == pytest.approx(0.2)
    shuffled = np.random.default_rng(1).permutation(y)
    assert abs(knn_bacc(x, shuffled) - 0.2) < 0.1  # 5 classes: balanced chance is 1/5
    assert set_metrics(x, shuffled, shuffled, n_boot=0)["silhouette"].estimate < 0.05


def test_balanced_accuracy_is_sklearns():
    from sklearn.metrics import balanced_accuracy_score
    rng = np.random.default_rng(0)
    y = rng.choice(4, 300, p=[0.6, 0.2, 0.15, 0.05])
    pred = np.where(rng.random(300) < 0.7, y, rng.integers(0, 4, 300))
    assert accuracy_interval(y, pred, n_boot=0).estimate == pytest.approx(balanced_accuracy_score(y, pred))
    iv = accuracy_interval(y, pred, n_boot=50)
    assert iv.estimate == pytest.approx(balanced_accuracy_score(y, pred)) and iv.low < iv.estimate < iv.high
    # an imbalanced set that always answers the majority class is at chance, not at 60%
    assert accuracy_interval(y, np.zeros_like(y), n_boot=0).estimate == pytest.approx(0.25)


def test_target_vs_predicted_labels():
    """Features clustered by target t; the teacher's predictions ignore t (IFHE drops L_oh). Labelled by t, the
    classes separate; labelled by prediction, they do not, and agreement with t is at chance."""
    x, t, _ = clusters(n_per=80, k=5)
    pred = np.random.default_rng(3).integers(0, 5, len(t))
    by_t = set_metrics(x, t, pred, n_boot=0)
    by_pred = set_metrics(x, pred, t, n_boot=0)
    assert by_t["knn"].estimate > 0.95 and by_t["knn_alt"].estimate < 0.35
    assert by_pred["knn"].estimate < 0.35 and by_pred["knn_alt"].estimate == pytest.approx(by_t["knn"].estimate)
    assert abs(E.agreement_interval(t, pred, n_boot=0).estimate - 0.2) < 0.08
    # the same through compute_report: the labelling switches the column
    s = _set("syn", x, t, pred=pred)
    rep_t = compute_report(s.featurize, [s.set], None, ("f",), labels="target", n_boot=0, maps=False)
    rep_p = compute_report(s.featurize, [s.set], None, ("f",), labels="predicted", n_boot=0, maps=False)
    assert rep_t.metrics["knn"].iloc[0] > 0.95 > 0.35 > rep_p.metrics["knn"].iloc[0]
    assert rep_t.metrics["agreement"].iloc[0] == rep_p.metrics["agreement"].iloc[0]


def test_folds_are_fixed_for_every_set():
    """Five stratified folds whatever the set: a class with fewer than five images is left out and named,
    instead of the number of folds dropping."""
    y_small = np.array([0] * 3 + [1] * 12 + [2] * 12)
    y_big = np.repeat(np.arange(3), 40)
    for y in (y_small, y_big):
        f = fixed_folds(y)
        assert f.n_folds == 5 and set(f.fold[f.kept]) == set(range(5))
        for c in np.unique(y[f.kept]):  # stratified: every fold holds every kept class
            assert all(((f.fold == k) & (y == c)).any() for k in range(5))
    f = fixed_folds(y_small)
    assert f.excluded == (0,) and (f.fold[:3] == -1).all()
    assert (fixed_folds(y_small, seed=0).fold == fixed_folds(y_small, seed=0).fold).all()
    x, _, _ = clusters(n_per=12, k=3)
    x = np.concatenate([x[:3], x[:24]])
    m = set_metrics(x[:len(y_small)], y_small, y_small, n_boot=0)
    assert m["excluded"] == (0,) and m["chance"] == pytest.approx(0.5)


def test_intervals_shrink_with_n():
    widths = []
    for n_per in (20, 200):
        x, y, _ = clusters(n_per=n_per, k=5, sep=0.4, seed=2)  # overlapping classes: accuracy well below 1
        iv = accuracy_interval(y, out_of_fold(x, y, fixed_folds(y)), n_boot=200)
        assert iv.low <= iv.estimate <= iv.high
        widths.append(iv.high - iv.low)
    assert widths[1] < widths[0] / 2  # 10x the points: about 1/sqrt(10) of the width


def test_collapsed_set_scores_low_on_diversity():
    """A generator that draws every image of a class alike is perfectly 'separable' but not diverse."""
    x, y, centers = clusters(n_per=60, k=5, sep=3.0)
    collapsed, yc, _ = clusters(n_per=60, k=5, centers=centers, spread=0.01, seed=5)
    ref = E.within_class_distance(x, y)
    m_real = set_metrics(x, y, y, ref, n_boot=50)
    m_coll = set_metrics(collapsed, yc, yc, ref, n_boot=50)
    assert m_real["diversity"].estimate == pytest.approx(1.0)
    assert m_coll["knn"].estimate > 0.98 and m_coll["diversity"].estimate < 0.02
    assert m_coll["diversity"].high < 0.05


def test_frechet_distance_by_hand():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + np.array([2.0, 0, 0])) == pytest.approx(4.0, rel=1e-3)
    assert frechet_distance(a, 2 * rng.normal(size=(200000, 3))) == pytest.approx(3.0, rel=0.05)


# ---- sampling ------------------------------------------------------------------------------------------------

def test_window_picks_the_most_recent_rounds():
    rounds = np.repeat(np.arange(10), 64)           # 10 rounds of 64 images
    idx, desc = window_indices(rounds, "auto", 200)  # 4 rounds hold 256 >= 200
    assert set(rounds[idx]) == {6, 7, 8, 9} and "rounds 6–9" in desc and "last 4 of 10" in desc
    idx, _ = window_indices(rounds, "last:2", 200)
    assert set(rounds[idx]) == {8, 9}
    idx, _ = window_indices(rounds, "all", 200)
    assert len(idx) == 640
    idx, _ = window_indices(rounds, "auto", 5000)   # the bank is smaller than n: all of it
    assert len(idx) == 640
    with pytest.raises(Exception, match="last:K"):
        window_indices(rounds, "recent", 10)


class Pool:
    """Synthetic 'banks' whose images are row numbers into one feature table, so one featurizer serves all."""

    def __init__(self):
        self.x, self.pred = [], []

    def add(self, name, x, y, rounds=None, pred=None) -> ImageSet:
        start = sum(len(a) for a in self.x)
        self.x.append(np.asarray(x, np.float32))
        self.pred.append(np.asarray(y if pred is None else pred))
        return ImageSet(name, torch.arange(start, start + len(y)), np.asarray(y), rounds)

    def featurize(self, rows):
        x, pred, r = np.concatenate(self.x), np.concatenate(self.pred), rows.numpy()
        return Features({"f": x[r], "g": x[r, :4], "h": x[r]}, pred[r], np.ones(len(r), np.float32))


class _Set:
    def __init__(self, name, x, y, rounds=None, pred=None):
        self.pool = Pool()
        self.set = self.pool.add(name, x, y, rounds, pred)
        self.featurize = self.pool.featurize


def _set(name, x, y, rounds=None, pred=None):
    return _Set(name, x, y, rounds, pred)


def test_matched_sampling_equal_n_from_the_last_rounds():
    """Banks of different sizes and histories are compared at one n, each from its most recent rounds; the
    real set is drawn at the same n, and a second disjoint real sample gives the Fréchet floor."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 8)) * 6
    pool = Pool()
    big_x, big_y, _ = clusters(n_per=120, k=5, centers=centers, seed=1)       # 600 images, 10 rounds
    small_x, small_y, _ = clusters(n_per=50, k=5, centers=centers, seed=2)    # 250 images, 5 rounds
    o_big, o_small = rng.permutation(600), rng.permutation(250)
    big = pool.add("big", big_x[o_big], big_y[o_big], np.repeat(np.arange(10), 60))
    small = pool.add("small", small_x[o_small], small_y[o_small], np.repeat(np.arange(5), 50))
    real_x, real_y, _ = clusters(n_per=200, k=5, centers=centers, seed=3)
    real = pool.add("real", real_x, real_y)

    n, note = equal_n([big, small], real, 400, "auto")
    assert n == 250 and "small's window holds 250" in note
    rep = compute_report(pool.featurize, [big, small], real, ("f",), n=400, window="auto", n_boot=20, maps=False)
    assert rep.n == 250 and list(rep.metrics["n"]) == [250, 250, 250]
    assert [s.n for s in rep.sets] == [250, 250, 250] and any("not 400" in x for x in rep.notes)
    big_info = next(s for s in rep.sets if s.name == "big")
    assert "rounds 5–9" in big_info.window                     # the most recent 5 rounds hold 300 >= 250
    drawn = rep.images["big"].numpy() - int(big.images[0])
    assert len(set(drawn)) == 250 and (big.rounds[drawn] >= 5).all()
    # metric vs share of the run: windows of equal shares of each run, the same n across banks (and real)
    r = rep.rounds
    assert set(r["set"]) == {"real", "big", "small"} and r["n"].nunique() == 1
    big_r, small_r = r[r["set"] == "big"], r[r["set"] == "small"]
    assert len(big_r) == 5 and big_r["round"].is_monotonic_increasing
    assert list(big_r["share"]) == list(small_r["share"]) == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    assert list(big_r["round_lo"]) == [0, 2, 4, 6, 8] and list(small_r["round_lo"]) == [0, 1, 2, 3, 4]
    # --window all draws from the whole bank
    rep = compute_report(pool.featurize, [big, small], real, ("f",), n=250, window="all", n_boot=0, maps=False,
                         n_round_windows=0)
    drawn = rep.images["big"].numpy() - int(big.images[0])
    assert (big.rounds[drawn] < 5).any() and len(rep.rounds) == 0


def test_windows_are_matched_by_the_share_of_each_run():
    """A method that makes fewer rounds in the same budget is compared over the same share of its run, not over the
    same number of images or rounds; the tables say which rounds each set's images come from."""
    rounds = np.repeat(np.arange(20), 8)
    idx, desc = window_indices(rounds, "share:0.25", 1000)
    assert set(rounds[idx]) == {15, 16, 17, 18, 19} and "rounds 15–19 of 20" in desc and "last 25%" in desc
    idx, desc = window_indices(rounds, "share:0-0.5", 1000)
    assert set(rounds[idx]) == set(range(10)) and "0–50%" in desc
    idx, _ = window_indices(np.repeat(np.arange(8), 8), "share:0.25", 1000, total_rounds=12)   # a run still going
    assert set(np.repeat(np.arange(8), 8)[idx]) == set()            # its last quarter (rounds 9-11) is not made yet
    for bad in ("share:0", "share:1.5", "share:0.5-0.2", "recent"):
        with pytest.raises(Exception, match="share:F"):
            window_indices(rounds, bad, 10)
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 8)) * 6
    pool = Pool()
    long_x, long_y, _ = clusters(n_per=64, k=5, centers=centers, seed=1)       # 320 images, 40 rounds of 8
    short_x, short_y, _ = clusters(n_per=32, k=5, centers=centers, seed=2)     # 160 images, 10 rounds of 16
    long = pool.add("long", long_x, long_y, np.tile(np.arange(40), 8))
    short = pool.add("short", short_x, short_y, np.tile(np.arange(10), 16))
    rep = compute_report(pool.featurize, [long, short], None, ("f",), n=1000, window="share:0.25", n_boot=0,
                         maps=False, n_round_windows=0)
    drawn = {s: rep.sampled[s] for s in ("long", "short")}
    assert set(long.rounds[drawn["long"]]) == set(range(30, 40)) and set(short.rounds[drawn["short"]]) == {8, 9}
    assert rep.n == 32 and "last 25% of each run's rounds" in rep.window
    from ifhe.feature_view import metrics_table, report_header
    assert list(metrics_table(rep)["rounds used"]) == ["rounds 30–39 of 40", "rounds 8–9 of 10"]
    assert "last 25% of each run's rounds" in report_header(rep)


def _seeded_banks(pool, centers, spreads: dict[str, list[float]]) -> list:
    """Banks of clustered features, one per (method, seed): a smaller spread separates the classes better."""
    sets = []
    for method, per_seed in spreads.items():
        for seed, spread in enumerate(per_seed):
            x, y, _ = clusters(n_per=40, k=5, centers=centers, seed=10 * seed + len(method), spread=spread)
            sets.append(pool.add(f"{method} s{seed}", x, y, np.repeat(np.arange(4), 50)))
            sets[-1].group, sets[-1].seed = method, seed
    return sets


def test_verdicts_rest_on_seeds_at_the_primary_stage():
    """Metrics per bank; per method the mean over its banks with a t interval over seeds, each bank's interval
    over images beside it; the claim decided by the difference paired by seed, at the primary stage (not h's
    input) first."""
    from ifhe.feature_view import seed_table, stage_caveat, verdict_table
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(5, 16)) * 2.0
    pool = Pool()
    sets = _seeded_banks(pool, centers, {"IFHE": [0.5, 0.55, 0.6], "CMI": [1.5, 1.6, 1.4]})
    rep = compute_report(pool.featurize, sets, None, ("g", "h"), n=200, window="all", n_boot=20, maps=False,
                         n_round_windows=0, h_stages=("f",))
    assert rep.primary == "g"
    seeds = rep.seeds[(rep.seeds["stage"] == "g")].set_index("group")
    assert seeds.loc["IFHE", "n_banks"] == 3 and seeds.loc["IFHE", "seeds"] == "0,1,2"
    per_bank = rep.metrics[(rep.metrics["stage"] == "g") & (rep.metrics["group"] == "IFHE")]["silhouette"]
    assert seeds.loc["IFHE", "silhouette"] == pytest.approx(per_bank.mean())
    assert seeds.loc["IFHE", "silhouette_lo"] < per_bank.mean() < seeds.loc["IFHE", "silhouette_hi"]
    assert seeds.loc["IFHE", "silhouette_banks"].count("[") == 3     # each bank's interval over images
    v = rep.verdicts
    assert list(v["stage"])[:2] == ["g", "g"] and set(v["claim"]) == {"IFHE > CMI, silhouette",
                                                                     "IFHE > CMI, k-NN bal. acc"}
    sil = v[(v["stage"] == "g") & (v["metric"] == "silhouette")].iloc[0]
    assert sil["verdict"] == "reproduced" and sil["n_pairs"] == 3 and sil["diff_lo"] > 0
    table = verdict_table(rep)
    assert table["stage"].iloc[0] == "g (primary)" and "what L_H optimises" in table["stage"].iloc[-1]
    assert "over seeds" in " ".join(seed_table(rep).columns) and "each bank over images" in " ".join(
        seed_table(rep).columns)
    assert "g" in stage_caveat(rep) and "by construction" in stage_caveat(rep)
    # one bank each: no interval over seeds, and the verdict says so
    one = compute_report(pool.featurize, [sets[0], sets[3]], None, ("g",), n=200, window="all", n_boot=20,
                         maps=False, n_round_windows=0)
    assert one.verdicts["verdict"].str.startswith("inconclusive: 1 bank(s)").all()


def test_real_vs_real_floor_is_near_zero_against_a_shifted_set():
    pool = Pool()
    x, y, centers = clusters(n_per=200, k=5, sep=3.0, dim=8)
    shifted, ys, _ = clusters(n_per=100, k=5, centers=centers + 4.0, seed=7, dim=8)
    same, yy, _ = clusters(n_per=100, k=5, centers=centers, seed=8, dim=8)
    sets = [pool.add("shifted", shifted, ys), pool.add("same", same, yy)]
    rep = compute_report(pool.featurize, sets, pool.add("real", x, y), ("f",), n=400, n_boot=0, maps=False)
    assert rep.n == 400  # min(400, 500 in each set, half of the 1,000 real images)
    m = rep.metrics.set_index("set")
    assert m.loc["shifted", "frechet_floor"] < 0.1 * m.loc["shifted", "frechet"]
    assert m.loc["same", "frechet"] < 3 * m.loc["same", "frechet_floor"]


def test_shared_map_places_new_points_near_their_cluster():
    x, y, centers = clusters(n_per=80, k=3, dim=8)
    m = fit_map(x, seed=0)
    pts = m.fitted_points
    new, new_y, _ = clusters(n_per=10, k=3, dim=8, centers=centers, seed=9)
    new_xy = m.transform(new)
    centroids = np.stack([pts[y == c].mean(0) for c in range(3)])
    nearest = np.argmin(((new_xy[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (nearest == new_y).mean() > 0.9


# ---- features of a teacher -----------------------------------------------------------------------------------

def test_feature_extraction_h_stage_and_cache(tiny_teacher, tmp_path):
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    fs = extract_features(tiny_teacher, images, ("h", "block3"))
    dims = tiny_teacher.stage_channels
    assert fs.features["h"].shape == (20, dims["block1"] + dims["block2"] + dims["block3"])
    np.testing.assert_array_equal(fs.features["h"][:, -dims["block3"]:], fs.features["block3"])
    a = cached_features(tiny_teacher, images, ("h", "block3"), tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 3  # one entry per teacher stage; h is assembled from them
    b = cached_features(tiny_teacher, images, "h", tmp_path)
    np.testing.assert_array_equal(a.features["h"], b.features["h"])
    np.testing.assert_allclose(a.features["h"], fs.features["h"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.pred, fs.pred)
    with pytest.raises(ValueError, match="uint8"):
        extract_features(tiny_teacher, images.float())


def test_stages_come_from_the_teacher():
    from ifhe.models import create_model
    vgg = create_model("vgg11_bn", 10)
    assert stage_choices(vgg)[0] == "h" and "block5" in stage_choices(vgg)
    assert default_stages(vgg) == ("penultimate", "h")     # the primary stage (not h's input) first
    wrn = create_model("wrn16_1", 10)
    assert default_stages(wrn) == ("penultimate", "h")
    assert check_stages(vgg, ("h", "block4"), ("block3", "block4"))[1] == ("block3", "block4")
    with pytest.raises(Exception, match="block4"):
        check_stages(wrn, ("block4",), None)


def test_h_stages_and_provenance_from_runs():
    assert h_stages_of([]) == ("block1", "block2", "block3")
    ifhe = {"synth": {"alpha": 0.5, "h_stages": ["block2", "block3"]}}
    cmi = {"synth": {"alpha": 0.0, "h_stages": ["block1", "block2", "block3"]}}
    assert h_stages_of([cmi, ifhe]) == ("block2", "block3")
    with pytest.raises(Exception, match="different stages"):
        h_stages_of([ifhe, {"synth": {"alpha": 1.0, "h_stages": ["block3"]}}])
    said = "h learned KL(T/τ‖h(f_T)/τ) for 20 steps a round on the bank (no student KD)"
    assert head_provenance({"head_training": said}, ifhe) == said
    assert head_provenance({}, ifhe) == "h training not recorded"
    assert "alpha = 0" in head_provenance({"head_training": "h learned on the KD batches"}, cmi)


def test_report_on_a_teacher_and_its_files(tiny_teacher, synthetic_cifar, tmp_path):
    from ifhe.bank import ImageBank
    from ifhe.data import load_split
    from ifhe.features import feature_report, real_set
    bank = ImageBank(tmp_path / "run" / "bank")
    g = torch.Generator().manual_seed(0)
    for r in range(4):
        bank.add(torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(30) % 10,
                 info={"round": r, "h_updates": 20 * r})
    bank.set_meta(head_training="h learned KL for 20 steps a round")
    s, cfg = bank_set(tmp_path / "run", "noise")
    assert list(np.unique(s.rounds)) == [0, 1, 2, 3] and s.head == "h learned KL for 20 steps a round"
    real = real_set("cifar10", synthetic_cifar)   # a test split in the CIFAR layout: the report's mechanics
    assert len(real.labels) == len(load_split("cifar10", "test", synthetic_cifar).y)
    rep = feature_report(tiny_teacher, [s], real, ("h", "block1"), teacher_name="tiny", n=60, n_boot=20,
                         window="share:0.5", cache_dir=tmp_path / "c")
    assert rep.n == 60 and set(rep.points["map"]) == {"shared", "own"}
    assert set(rep.points["set"]) == {"real", "noise"} and set(rep.points["stage"]) == {"h", "block1"}
    assert "sha256" in rep.teacher or "weights hash" in rep.teacher
    assert "rounds 2–3" in rep.sets[1].window and "h had 40–60 updates before them" in rep.sets[1].window
    paths = write_report(rep, tmp_path / "rep")
    html = paths["html"].read_text()
    assert "plotly_hover" in html and "data:image/jpeg;base64" in html
    md = paths["md"].read_text()
    assert "h learned KL for 20 steps a round" in md and str(tmp_path / "run" / "bank") in md
    assert "| h input (block1+block2+block3) | noise | 60 |" in md and "[" in md  # intervals
    assert "real-vs-real floor" in md
    assert paths["png"].stat().st_size > 1000 and paths["csv"].exists()
    assert paths["rounds_png"].stat().st_size > 1000  # 120 images: 2 windows of 60
    rep2 = feature_report(tiny_teacher, [s], None, ("block1",), n=60, n_boot=0, cache_dir=tmp_path / "c")
    assert rep2.fitted_on == "synthesized" and any("union" in n for n in rep2.notes)


def test_features_cli_on_engine_banks(synthetic_cifar, tmp_path, capsys):
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
        cfg = make_config(method, teacher=str(teacher), rounds=3, **TINY_RUN)
        run_to_end(Run(cfg, tmp_path / "runs" / method / "seed0", test_set=None))
    runs = tmp_path / "runs"
    code = main(["features", "--teacher", str(teacher), "--real", str(synthetic_cifar), "--stage", "h", "block1",
                 "--sets", str(runs / "ifhe" / "seed0"), f"DI={runs / 'deepinversion' / 'seed0'}",
                 "--n", "16", "--window", "all", "--bootstrap", "10", "--out", str(tmp_path / "report")])
    out = capsys.readouterr().out
    assert code == 0 and "| h input (block1+block2+block3) | ifhe | 16 |" in out and "| block1 | DI | 16 |" in out
    assert "**ifhe**" in out and "; h: " in out  # every bank's provenance, IFHE's h included
    assert "t.safetensors (wrn16_1, weights hash" in out
    for f in ("report.html", "map.png", "metrics.csv", "metrics.md"):
        assert (tmp_path / "report" / f).exists()
