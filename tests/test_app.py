"""The Streamlit app through streamlit.testing (AppTest): every page, start/pause/step/stop, live weights,
reattaching by the job id in the URL, the job limit, uploads, safe paths. A tiny random teacher published into a
temporary zoo keeps every run to a few hundred milliseconds."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

import ifhe.zoo as zoo  # noqa: E402
from app import files, forms, jobs  # noqa: E402
from ifhe import catalog as zoo_catalog  # noqa: E402
from ifhe.errors import IfheError  # noqa: E402

APP = str(ROOT / "app" / "streamlit_app.py")
TEACHER = "tiny_wrn16_1"
VGG_TEACHER = "tiny_vgg11_bn"


def wait_until(pred, timeout=20.0, what="condition"):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    from ifhe.models import create_model
    root = tmp_path_factory.mktemp("pretrained")
    torch.manual_seed(0)
    zoo.publish(create_model("wrn16_1", 10), TEACHER, "cifar10", 10.0, 0, "random init (tests)", root=root)
    # the other teacher family: a random VGG11-BN (the trained one is not shipped yet), below TEACHER's accuracy
    zoo.publish(create_model("vgg11_bn", 10), VGG_TEACHER, "cifar10", 9.0, 0, "random init (tests)", root=root)
    return root


@pytest.fixture
def env(tiny_zoo, tmp_path, monkeypatch):
    """A fresh job registry over a temporary runs folder, the tiny teacher as the only shipped one, no data."""
    monkeypatch.setattr(zoo_catalog, "PRETRAINED_DIR", tiny_zoo)
    monkeypatch.setenv("IFHE_APP_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("IFHE_APP_MAX_JOBS", "1")
    monkeypatch.setenv("IFHE_APP_THREADS", "1")
    monkeypatch.setenv("IFHE_APP_WARMUP", "0")
    monkeypatch.setenv("IFHE_APP_SHIPPED", str(tmp_path / "no-shipped"))   # tests never read the real committed one
    monkeypatch.delenv("IFHE_APP_SMALL_BANK", raising=False)
    monkeypatch.delenv("IFHE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no torchvision cache: purely data-free
    jobs._cached_registry.clear()
    yield tmp_path / "runs"
    jobs.registry().stop_all(wait=30)
    jobs._cached_registry.clear()


def new_app(**query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(query)
    return at.run()


def small(at: AppTest, batch=8, iterations=3, rounds=100) -> AppTest:
    at.number_input(key="batch").set_value(batch)
    at.number_input(key="iterations").set_value(iterations)
    at.number_input(key="rounds").set_value(rounds)
    return at.run()


def job_of(at: AppTest):
    jid = at.query_params.get("job")
    jid = jid[0] if isinstance(jid, list) else jid
    return jobs.registry().get(jid)


def no_exceptions(at: AppTest):
    assert not at.exception, [e.value for e in at.exception]


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


# ---- Synthesize ----------------------------------------------------------------------------------------------

def test_synthesize_page_widgets_and_presets(env):
    at = new_app()
    no_exceptions(at)
    assert at.title[0].value == "Synthesize"
    assert [b.label for b in at.button][:5] == ["Start", "Pause", "Step", "Stop", "Reset"]
    assert at.button(key="start_synth").disabled is False
    assert at.button(key="stop").disabled and at.button(key="step").disabled
    assert at.selectbox(key="pair").value == f"zoo:{TEACHER}:wrn16_1"  # the best teacher, the default student
    assert (at.session_state["teacher"], at.session_state["student"]) == (TEACHER, "wrn16_1")
    assert at.selectbox(key="method").value == "ifhe"
    assert (at.slider(key="alpha").value, at.slider(key="beta").value, at.slider(key="gamma").value) == (0.5, 1.0, 0.5)
    assert len(at.latex) >= 4  # L_H, L_bns, L_adv, L_inv
    # a preset sets its own weights
    at.selectbox(key="method").set_value("deepinversion").run()
    assert (at.slider(key="alpha").value, at.slider(key="beta").value, at.slider(key="gamma").value) == (0.0, 10.0, 0.0)
    assert at.number_input(key="iterations").value == 200
    # the preset's other terms get sliders too, from the engine's table of terms
    assert at.slider(key="tv").value == pytest.approx(0.001) and at.slider(key="oh").value == 1.0
    assert "total variation" in at.slider(key="tv").label
    at.selectbox(key="method").set_value("ifhe").run()
    assert not [s for s in at.slider if s.key in ("tv", "oh", "cr")]  # IFHE has no other term


def test_start_pause_step_live_weights_stop(env):
    at = small(new_app())
    at.button(key="start_synth").click().run()
    no_exceptions(at)
    job = job_of(at)
    assert job is not None and at.session_state["job_id"] == job.id
    wait_until(lambda: job.snapshot().grid_png is not None, what="first image grid")
    at.run()
    assert at.button(key="start_synth").disabled  # one run per session at a time
    images = {i.proto.imgs[0].caption: i.proto.imgs[0].url for i in at.get("image")}
    grid = [url for cap, url in images.items() if cap.startswith("round 0, iteration")]
    assert len(grid) == 1 and grid[0].startswith("data:image/png;base64,")  # one composite image, a data URI
    assert any(cap.startswith("loss terms") for cap in images)  # the live loss chart: an image too
    assert not at.get("plotly_chart")  # (the interactive chart comes when the run ends)
    # α moved while running reaches the synthesizer at its next step
    at.slider(key="alpha").set_value(1.25).run()
    assert job.snapshot().weights["alpha"] == 1.25
    wait_until(lambda: job.run is None or job.run.synth.cfg.alpha == 1.25, what="live alpha applied")
    # a bad value is refused when it arrives, with a message; the run goes on with the weights it had
    from ifhe.errors import IfheError
    with pytest.raises(IfheError, match="alpha must be a number >= 0"):
        job.set_weights(alpha=-1.0)
    with pytest.raises(IfheError, match="cr .*cannot be switched on during a run"):
        job.set_weights(cr=0.8)  # a term IFHE does not have
    assert job.snapshot().weights["alpha"] == 1.25 and job.snapshot().state == "running"
    # pause, then exactly one step
    at.button(key="pause").click().run()
    wait_until(lambda: job.snapshot().state == "paused", what="pause")
    time.sleep(0.3)
    steps = job.snapshot().steps
    time.sleep(0.3)
    assert job.snapshot().steps == steps
    at.run()
    assert at.button(key="resume") and not at.button(key="step").disabled
    at.button(key="step").click().run()
    wait_until(lambda: job.snapshot().steps == steps + 1, what="one step")
    time.sleep(0.3)
    assert job.snapshot().steps == steps + 1 and job.snapshot().state == "paused"
    # stop: the run ends cleanly, keeps its checkpoint and student
    at.button(key="stop").click().run()
    assert job.wait(30)
    snap = job.snapshot()
    assert snap.state == "stopped", snap.message
    out = Path(snap.out_dir)
    assert (out / "student.safetensors").is_file() and (out / "config.yaml").is_file()
    assert job.id not in (out / "status.json").read_text() and job.id not in out.name
    at.run()
    no_exceptions(at)
    assert not at.button(key="start_synth").disabled
    assert at.get("plotly_chart")  # the run has ended: the interactive loss chart


def test_precision_choice_reaches_the_run(env):
    at = small(new_app())
    assert at.selectbox(key="precision").value == "auto"
    at.selectbox(key="precision").set_value("bf16").run()
    at.button(key="start_synth").click().run()
    no_exceptions(at)
    job = job_of(at)
    assert job is not None and job.cfg.precision == "bf16"
    wait_until(lambda: job.snapshot().grid_png is not None, what="first image grid in bf16")
    jobs.registry().stop_all()


def test_reload_and_page_switch_reattach_never_kill(env):
    at = small(new_app())
    at.button(key="start_synth").click().run()
    job = job_of(at)
    # another page, and back: the same job, still running
    at.switch_page("views/distill.py").run()
    no_exceptions(at)
    assert at.title[0].value == "Distill" and job_of(at) is job
    at.switch_page("views/synthesize.py").run()
    assert job_of(at) is job and job.snapshot().active
    # a reload is a new session: the id in the URL reattaches (and shows the job's own settings)
    job.set_weights(gamma=0.75)
    again = new_app(job=job.id)
    no_exceptions(again)
    assert again.session_state["job_id"] == job.id
    assert again.slider(key="gamma").value == 0.75
    assert again.button(key="start_synth").disabled and not again.button(key="stop").disabled
    assert job.snapshot().active  # nothing clicked so far stopped it
    # Reset stops the attached run and detaches
    again.button(key="reset").click().run()
    assert job.wait(30) and job.snapshot().state == "stopped"
    assert "job" not in again.query_params


def test_unknown_or_foreign_job_ids(env):
    at = new_app(job="not-a-real-job-id")
    no_exceptions(at)
    assert "not on this server" in texts(at)
    assert "job" not in at.query_params
    # a session without the id never sees someone else's run
    owner = small(new_app())
    owner.button(key="start_synth").click().run()
    job = job_of(owner)
    stranger = new_app()
    assert "job_id" not in stranger.session_state
    assert job.id not in texts(stranger) and job.snapshot().run_name not in texts(stranger)


def test_job_limit_is_told_not_crashed(env):
    first = small(new_app())
    first.button(key="start_synth").click().run()
    assert job_of(first) is not None
    second = small(new_app())
    second.button(key="start_synth").click().run()
    no_exceptions(second)
    assert "busy" in texts(second)
    assert "job_id" not in second.session_state
    assert jobs.registry().active_count() == 1


def test_registry_limit_under_concurrent_starts(env, tmp_path):
    reg = jobs.JobRegistry(tmp_path / "conc", max_jobs=2, threads=1)
    cfg = forms.build_config(dict(forms.form_defaults("ifhe"), method="ifhe", teacher=TEACHER, student="wrn16_1",
                                    rounds=100, seed=0, batch=8, iterations=3), "synth")
    results, barrier = [], threading.Barrier(4)

    def start():
        barrier.wait()
        try:
            results.append(reg.submit(cfg))
        except jobs.JobLimitError as e:
            results.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = [r for r in results if isinstance(r, jobs.Job)]
    assert len(started) == 2 and reg.active_count() == 2
    ids = {j.id for j in started}
    assert len(ids) == 2 and all(len(i) >= 20 for i in ids)
    assert len({j.out for j in started}) == 2
    reg.stop_all()
    assert reg.active_count() == 0
    assert isinstance(reg.submit(cfg), jobs.Job)  # a slot is free again
    reg.stop_all()


def test_run_failure_is_reported_not_raised(env):
    cfg = forms.build_config(dict(forms.form_defaults("ifhe"), method="ifhe", teacher="no-such-teacher",
                                    student="wrn16_1", rounds=2, seed=0, batch=8, iterations=3), "synth")
    job = jobs.registry().submit(cfg)
    assert job.wait(30)
    assert job.snapshot().state == "failed" and "no-such-teacher" in job.snapshot().message
    again = new_app(job=job.id)
    no_exceptions(again)
    assert any("failed" in e.value for e in again.error)


def test_grid_is_composed_only_when_a_page_drew_the_last_one(env):
    """Nobody watching: the first grid and no other (the job thread spends nothing on pictures); a page that drew
    version v gets v + 1 at the next step, not before."""
    cfg = forms.build_config(dict(forms.form_defaults("ifhe"), method="ifhe", teacher=TEACHER, student="wrn16_1",
                                    rounds=100, seed=0, batch=8, iterations=50), "synth")
    job = jobs.registry().submit(cfg)
    wait_until(lambda: job.snapshot().grid_version == 1, what="first grid")
    steps = job.snapshot().steps
    wait_until(lambda: job.snapshot().steps >= steps + 3, what="three more steps")
    assert job.snapshot().grid_version == 1
    job.drawn(1)
    wait_until(lambda: job.snapshot().grid_version == 2, what="the next grid once the first was drawn")
    time.sleep(0.6)
    assert job.snapshot().grid_version == 2
    # paused: the grid catches up with the batch as it stands, so Step shows the step it made
    job.drawn(2)
    job.pause()
    wait_until(lambda: job.snapshot().state == "paused", what="pause")
    job.step()
    wait_until(lambda: f"iteration {job.snapshot().iteration} " in job.snapshot().grid_caption,
               what="the grid of the last step")
    s = job.snapshot()
    assert s.it_per_s > 0  # iterations per wall second, as the page shows them
    jobs.registry().stop_all()


def test_grid_uses_the_teachers_probabilities_when_the_engine_gives_them():
    """With the step's teacher probabilities at hand, captioning a grid costs no teacher pass."""
    class NoTeacher:
        @property
        def teacher(self):
            raise AssertionError("the teacher was run again")

    job = jobs.Job.__new__(jobs.Job)
    job._snap = jobs.Snapshot(kind="synth", method="ifhe", out_dir="x", run_name="x", classes=tuple("abcdefghij"))
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    probs = torch.softmax(torch.randn(4, 10), 1)
    assert job._grid(NoTeacher(), images, torch.tensor([0, 1, 2, 3]), probs).startswith(b"\x89PNG")


# ---- teachers, first page, exits -----------------------------------------------------------------------------

def test_teacher_list_offers_teachers_only_best_first(env, tmp_path, monkeypatch):
    """The zoo says which entries are teachers; a scratch-trained student is never offered (nor the default) and the
    best teacher comes first."""
    from ifhe.models import create_model
    root = tmp_path / "zoo"
    torch.manual_seed(0)
    zoo.publish(create_model("wrn16_1", 10), "a_scratch_student", "cifar10", 95.0, 0, "tests", root=root,
                role="student")
    zoo.publish(create_model("wrn16_1", 10), "b_teacher", "cifar10", 80.0, 0, "tests", root=root)
    zoo.publish(create_model("wrn16_1", 10), "c_teacher", "cifar10", 90.0, 0, "tests", root=root)
    manifest = json.loads((root / "manifest.json").read_text())
    assert [manifest[n]["role"] for n in sorted(manifest)] == ["student", "teacher", "teacher"]
    del manifest["b_teacher"]["role"]  # published before roles existed: a teacher
    (root / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(zoo_catalog, "PRETRAINED_DIR", root)
    at = new_app()
    no_exceptions(at)
    options = at.selectbox(key="pair").options  # as shown: "WRN16-1 → WRN16-1 · c_teacher (90.0% test)"
    teachers = list(dict.fromkeys(o.split(" · ")[1].split()[0] for o in options if "test)" in o))
    assert teachers == ["c_teacher", "b_teacher"]
    assert not any("a_scratch_student" in o for o in options)
    assert at.session_state["teacher"] == "c_teacher" and at.selectbox(key="pair").value == "zoo:c_teacher:wrn16_1"
    with pytest.raises(IfheError, match="role"):
        zoo.publish(create_model("wrn16_1", 10), "x", "cifar10", 1.0, 0, "tests", root=root, role="teaching")


def test_shipped_zoo_roles():
    from app import catalog
    manifest = zoo_catalog.read_manifest(ROOT / "pretrained")
    if "cifar10_wrn16_1" in manifest:
        assert manifest["cifar10_wrn16_1"]["role"] == "student"  # WRN-16-1 trained from scratch: not a teacher
    if "cifar10_wrn16_2" in manifest:
        assert manifest["cifar10_wrn16_2"]["role"] == "teacher"
        if zoo_catalog.PRETRAINED_DIR.resolve() == (ROOT / "pretrained").resolve():
            # the demo teacher, the one the CPU presets and shipped banks are made for, even beside a better one
            assert catalog.default_teacher("cifar10") == "cifar10_wrn16_2"
            assert catalog.teachers("cifar10")[0] == max(
                catalog.teachers("cifar10"), key=lambda n: manifest[n]["test_accuracy"])


def test_catalog_is_the_engines():
    """The first page lists the zoo and the architectures from the engine's torch-free catalogue: one list of
    architectures, one reader of the manifest (no copies in the app)."""
    from ifhe.models import ARCHITECTURES
    from app import catalog
    assert catalog.ARCHITECTURES is zoo_catalog.ARCHITECTURES is ARCHITECTURES
    assert catalog.read_manifest is zoo_catalog.read_manifest and catalog.teachers is zoo_catalog.teachers


_QUICK_EXIT = """
import os, sys, time
sys.path.insert(0, {root!r})
from streamlit.testing.v1 import AppTest
import app.warmup
app.warmup.WARM_UP_DELAY_S = 1.0   # the print below comes before the warm-up imports torch
at = AppTest.from_file({app!r}, default_timeout=60).run()
assert not at.exception, at.exception
print("torch imported by the first page:", "torch" in sys.modules, flush=True)
time.sleep({delay})
"""


@pytest.mark.parametrize("delay", [0.0, 0.0, 0.0, 1.5])
def test_a_process_that_draws_the_first_page_and_exits_exits_cleanly(tmp_path, delay):
    """The first page needs no torch; the warm-up that starts after it never aborts the interpreter at exit
    (it used to: "terminate called without an active exception", exit code 134, when the process ended while the
    warm-up was importing torch). 1.5 s: the exit comes while the warm-up is importing torch."""
    import subprocess
    env = {**os.environ, "IFHE_APP_RUNS": str(tmp_path / "runs"), "IFHE_APP_WARMUP": "1"}
    code = _QUICK_EXIT.format(root=str(ROOT), app=APP, delay=delay)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "terminate called" not in out.stderr, (out.returncode, out.stderr[-2000:])
    assert "torch imported by the first page: False" in out.stdout


def test_pair_picker_both_teacher_families_and_the_papers_pairs(env):
    """Pairs, not two lists: each shipped teacher with each student (WRN and VGG families), the paper's pairs marked;
    a paper's pair whose teacher is not shipped says how to get one and cannot start; the VGG pair runs."""
    at = new_app()
    no_exceptions(at)
    picker = at.selectbox(key="pair")
    labels = picker.options
    from app import catalog
    assert len([o for o in labels if f"· {VGG_TEACHER}" in o]) == len(catalog.ARCHITECTURES)
    assert len([o for o in labels if f"· {TEACHER}" in o]) == len(catalog.ARCHITECTURES)
    vgg = next(o for o in labels if o.startswith("VGG11 → ResNet18"))
    assert VGG_TEACHER in vgg and "the paper's pair" in vgg  # VGG11 -> ResNet18 is the paper's fourth pair
    missing = [o for o in labels if "teacher not shipped" in o]
    assert {o.split(" · ")[0] for o in missing} == {"WRN40-2 → WRN16-1", "WRN40-2 → WRN40-1", "WRN40-2 → WRN16-2",
                                                     "ResNet34 → ResNet18"}
    assert labels[-1].startswith("Upload")
    # a paper's pair without its teacher: what to do, and no run
    picker.set_value("paper:wrn40_2:wrn16_1").run()
    no_exceptions(at)
    assert "Upload one" in texts(at)
    assert any("ifhe train-teacher --arch wrn40_2 --dataset cifar10" in c.value for c in at.code)
    at.button(key="start_synth").click().run()
    assert "job_id" not in at.session_state and "no WRN40-2 teacher is shipped" in texts(at)
    # the VGG pair runs (and its student is the pair's)
    at.selectbox(key="pair").set_value(f"zoo:{VGG_TEACHER}:resnet18").run()
    assert (at.session_state["teacher"], at.session_state["student"]) == (VGG_TEACHER, "resnet18")
    small(at, batch=4, iterations=2)
    at.button(key="start_synth").click().run()
    no_exceptions(at)
    job = job_of(at)
    assert job is not None and (job.cfg.teacher, job.cfg.student) == (VGG_TEACHER, "resnet18")
    wait_until(lambda: job.snapshot().grid_png is not None, timeout=60, what="a grid from the VGG teacher")
    jobs.registry().stop_all()
    # another page and back: the pair stays
    at.switch_page("views/distill.py").run()
    assert "VGG11" in texts(at) and "ResNet18" in texts(at)
    at.switch_page("views/synthesize.py").run()
    assert at.selectbox(key="pair").value == f"zoo:{VGG_TEACHER}:resnet18"


def test_pair_picker_shows_what_was_measured_for_a_pair(env, tmp_path, monkeypatch):
    """Figures of this teacher (its checksum) and the current presets only: seeded sweeps first with n and the
    interval, a single run marked as one run; a figure of another teacher checksum, of none recorded, or of other
    settings never."""
    from ifhe.config import dump_yaml, make_config
    from ifhe.stats import mean_interval

    def run(name, acc, sha, **synth):
        folder = env / name
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(dump_yaml(make_config("ifhe", "cpu", synth, teacher=TEACHER)))
        (folder / "result.json").write_text(json.dumps({"final": True, "teacher": TEACHER, "student": "wrn16_1",
                                                        "method": "ifhe", "student_acc": acc,
                                                        **({"teacher_sha256": sha} if sha else {})}))
    run("finished-ifhe", 58.25, current_sha())
    run("other-teacher", 77.0, "f" * 64)          # a stale cell: made with another teacher checksum
    run("no-checksum", 66.0, None)                # which teacher: not recorded
    run("other-settings", 71.0, current_sha(), alpha=2.0)
    (env / "broken").mkdir()
    (env / "broken" / "result.json").write_text("{not json")
    results = tmp_path / "results"
    monkeypatch.setenv("IFHE_APP_RESULTS", str(results))
    _fake_sweep(results / "sweep-a", {"cmi": [50.0, 54.0]})
    _fake_sweep(results / "stale", {"ifhe": [88.0, 89.0]}, sha="e" * 64)
    _fake_sweep(results / "reference", {"cmi": [80.0]}, synth={"iterations": 200})
    at = new_app()
    no_exceptions(at)
    label = next(o for o in at.selectbox(key="pair").options if o.startswith("WRN16-1 → WRN16-1"))
    assert "measured: cmi 52.0% (2 seeds)" in label
    page = texts(at)
    iv = mean_interval([50.0, 54.0])
    seeded = f"cmi 52.0% [{iv.low:.1f}, {iv.high:.1f}] (sweep results/sweep-a, 2 seeds, 10 min)"
    single = "ifhe 58.2% (one run: run finished-ifhe)"
    assert seeded in page and single in page and page.index(seeded) < page.index(single)
    for stale in ("77.0", "66.0", "71.0", "88.0", "88.5", "80.0"):
        assert f"{stale}%" not in page, stale
    assert "Left out: 6 older figures" in page and "made with another version of the teacher: 3" in page
    assert "the teacher's checksum was not recorded: 1" in page and "other settings than the current preset: 2" in page
    at.selectbox(key="pair").set_value(f"zoo:{TEACHER}:wrn40_1").run()
    assert "No finished run of this pair" in texts(at)


# ---- uploads and paths -------------------------------------------------------------------------------------

def _weights(arch="wrn16_1", nc=10) -> bytes:
    from safetensors.torch import save
    from ifhe.models import create_model
    return save({k: v.contiguous() for k, v in create_model(arch, nc).state_dict().items()})


class _Trap:
    """Unpickling this creates a file: the proof that nothing was unpickled is that the file never appears."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_upload_checks(env, tmp_path):
    dest = tmp_path / "uploads"
    import io
    import pickle
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    with pytest.raises(IfheError, match="pickle"):
        files.validate_upload("model.safetensors", buf.getvalue(), "wrn16_1", "cifar10", dest)
    trap = tmp_path / "unpickled.txt"
    with pytest.raises(IfheError, match="not unpickled"):
        files.validate_upload("model.safetensors", pickle.dumps(_Trap(str(trap))), "wrn16_1", "cifar10", dest)
    assert not trap.exists()
    with pytest.raises(IfheError, match="pickle"):
        files.validate_upload("model.pt", b"\x80\x04\x95" + b"\x00" * 20, "wrn16_1", "cifar10", dest)
    with pytest.raises(IfheError, match="only .safetensors"):
        files.validate_upload("model.bin", _weights(), "wrn16_1", "cifar10", dest)
    with pytest.raises(IfheError, match="upload limit"):
        files.validate_upload("big.safetensors", b"{" * (2 * 2 ** 20), "wrn16_1", "cifar10", dest, limit_mb=1)
    with pytest.raises(IfheError, match="corrupt|truncated"):
        files.validate_upload("bad.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage", None, "cifar10", dest)
    with pytest.raises(IfheError, match="classes"):
        files.validate_upload("c100.safetensors", _weights("wrn16_1", 100), "wrn16_1", "cifar10", dest)
    with pytest.raises(IfheError, match="does not fit|shape"):
        files.validate_upload("arch.safetensors", _weights("wrn16_1"), "wrn16_2", "cifar10", dest)
    with pytest.raises(IfheError, match="architecture"):  # no arch given and none recorded in the file
        files.validate_upload("plain.safetensors", _weights("wrn16_1"), None, "cifar10", dest)
    path, summary = files.validate_upload("ok.safetensors", _weights("wrn16_1"), "wrn16_1", "cifar10", dest)
    assert path.parent == dest and path.name.startswith("teacher-") and "wrn16_1" in summary
    assert not list(dest.glob(".upload-*"))  # no temporary leftovers
    from ifhe.checkpoint import read_meta
    assert read_meta(path)["dataset"] == "cifar10"


def test_upload_through_the_page(env):
    import io
    at = new_app()
    at.selectbox(key="pair").set_value("upload").run()
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    at.file_uploader(key="upload_file").set_value(("evil.safetensors", buf.getvalue(), "application/octet-stream"))
    at.run()
    no_exceptions(at)
    assert any("pickle" in e.value and "not unpickled" in e.value for e in at.error)
    at.button(key="start_synth").click().run()
    assert "job_id" not in at.session_state and "no teacher" in texts(at)
    at.selectbox(key="upload_arch").set_value("wrn16_1")
    at.file_uploader(key="upload_file").set_value(("good.safetensors", _weights(), "application/octet-stream"))
    at.run()
    assert any("Teacher accepted" in s.value for s in at.success)
    at.switch_page("views/distill.py").run()
    at.switch_page("views/synthesize.py").run()  # the accepted upload survives a page switch
    assert at.selectbox(key="pair").value == "upload"
    assert any("Teacher accepted" in s.value for s in at.success)
    small(at, rounds=1)
    at.button(key="start_synth").click().run()
    job = job_of(at)
    assert job is not None and job.wait(60) and job.snapshot().state == "finished", job.snapshot().message


def test_safe_paths(env, tmp_path):
    base = tmp_path / "base"
    (base / "ok").mkdir(parents=True)
    assert files.safe_path(base, "ok/bank") == (base / "ok" / "bank").resolve()
    for bad in ("../x", "ok/../../x", "/etc", "~/x", ""):
        with pytest.raises(IfheError):
            files.safe_path(base, bad)
    outside = tmp_path / "outside"
    outside.mkdir()
    (base / "link").symlink_to(outside)
    with pytest.raises(IfheError, match="outside"):
        files.safe_path(base, "link/bank")
    for bad in ("../escape", "a/b", "", ".hidden", "x" * 81):
        with pytest.raises(IfheError):
            files.check_run_name(bad)
    # through the page: a run name that tries to leave the runs folder is refused
    at = small(new_app())
    at.text_input(key="run_name").set_value("../escape").run()
    at.button(key="start_synth").click().run()
    assert "job_id" not in at.session_state and "run name" in texts(at)
    assert not (env.parent / "escape").exists()


# ---- Distill -------------------------------------------------------------------------------------------------

def test_distill_page_data_free_explains(env):
    at = new_app()
    at.switch_page("views/distill.py").run()
    no_exceptions(at)
    assert at.title[0].value == "Distill"
    assert "IFHE_DATA" in texts(at) and "purely data-free" in texts(at)
    assert len(at.latex) >= 2  # L_KD-S and L_KD-h
    assert at.number_input(key="eval_every").disabled


def test_measured_best_opens_on_a_short_budget_and_falls_back_to_the_shortest():
    from app.catalog import Figure, Measured, measured_best
    here = {"cpu_model": "Test CPU", "usable_cores": 2}
    fig = lambda method, acc, minutes: Figure(method, acc, "sweep x", 3, minutes=minutes, machine=here)  # noqa: E731
    m = Measured(figures=[fig("fast", 77.0, 10.0), fig("fast", 85.0, 60.0), fig("cmi", 49.0, 1000.0)])
    assert measured_best(m, here)[0].student_acc == 77.0                         # at most 10 minutes
    assert measured_best(m, here, None)[0].student_acc == 85.0                   # any budget
    longer_only = Measured(figures=[fig("fast", 85.0, 60.0), fig("cmi", 49.0, 1000.0)])
    assert measured_best(longer_only, here)[0].minutes == 60.0                   # the shortest there is


def test_distill_page_default_is_the_measured_best_here(env, tmp_path, monkeypatch):
    """The Distill page opens on the best seeded figure measured for the pair on this kind of machine (its preset
    at CPU scale with its own batch, the sweep's budget rule, budget and precision) and says where the figure
    comes from; a method the user picked first is kept, the measured setup one click away."""
    from ifhe.config import preset
    from ifhe.cpu import cpu_kind
    here = {**cpu_kind(), "torch_threads": 2}
    results = tmp_path / "results"
    monkeypatch.setenv("IFHE_APP_RESULTS", str(results))
    _fake_sweep(results / "sweep-g", {"fast": [79.0, 78.0], "cmi": [50.0, 51.0]}, threads=2, kd_share=0.8,
                machine=here)
    _fake_sweep(results / "sweep-x", {"ifhe": [90.0, 91.0]}, machine={"cpu_model": "Another CPU"})
    # an hour-long run measures more but is not what the page opens on; it is named beside the default
    _fake_sweep(results / "sweep-d60", {"fast": [85.0]}, threads=2, kd_share=0.8, machine=here, minutes=60.0)
    at = new_app()
    at.switch_page("views/distill.py").run()
    no_exceptions(at)
    ss = at.session_state
    assert ss["method"] == "fast" and ss["kd_share"] == 0.8 and ss["budget"] == 10.0
    assert ss["batch"] == preset("fast", "cpu")[0].batch_size
    note = " ".join(str(e.value) for e in at.success)
    assert "With more time: Fast about 85% after 60 min on 2 cores (1 seed, `bash tools/sweeps.sh d60`)" in note
    assert "Measured best for this pair: Fast" in note and "about 78%" in note and "bash tools/sweeps.sh g" in note
    assert "on this kind of machine" in note and "2 seeds" in note and "10 min on 2 cores" in note
    assert "jobs use 1 thread" in note and "1/2 of that compute" in note
    assert "KD share 0.8" in texts(new_app())          # the budget rule's figures stay current on Synthesize

    at = new_app()                                      # a user who chose a method first keeps it
    at.selectbox(key="method").set_value("cmi").run()
    at.switch_page("views/distill.py").run()
    assert at.session_state["method"] == "cmi" and not at.success
    at.button(key="use_measured").click().run()
    assert at.session_state["method"] == "fast" and at.session_state["kd_share"] == 0.8

    for f in [*results.glob("sweep-g/*"), *results.glob("sweep-d60/*")]:   # measured elsewhere only: said so
        f.unlink()
    _fake_sweep(results / "sweep-g2", {"fast": [70.0, 71.0]}, machine={"cpu_model": "Another CPU"})
    from app import common
    common._measured.clear()
    at = new_app()
    at.switch_page("views/distill.py").run()
    note = texts(at)
    assert "Measured best for this pair: IFHE" in note and "on another kind of machine" in note


def test_distill_run_with_test_images_and_downloads(env, synthetic_cifar, monkeypatch):
    monkeypatch.setenv("IFHE_DATA", str(synthetic_cifar))   # test images in the CIFAR layout; what they show is moot
    at = small(new_app(), rounds=100)
    at.switch_page("views/distill.py").run()
    for key, value in (("distill_rounds", 2), ("kd_steps", 3), ("kd_batch", 8), ("eval_every", 3),
                       ("eval_images", 100)):
        at.number_input(key=key).set_value(value)
    at.run()
    assert "purely data-free" not in texts(at)
    at.button(key="start_distill").click().run()
    no_exceptions(at)
    job = job_of(at)
    assert job.wait(60)
    snap = job.snapshot()
    assert snap.state == "finished", snap.message
    assert snap.kd_steps == 6 and snap.bank_size == 16 and len(snap.accuracy) == 2
    assert snap.student_acc is not None and snap.head_acc is not None and sum(snap.class_counts) == 16
    at.run()
    no_exceptions(at)
    labels = [d.label for d in at.get("download_button")]
    assert "Student (safetensors)" in labels and "Run config (YAML)" in labels
    assert any("Bank samples by class" in m.value for m in at.markdown) and at.get("image")
    import yaml
    cfg = yaml.safe_load(job.config_yaml())
    assert cfg["distill"]["steps_per_round"] == 3 and cfg["method"] == "ifhe"


def test_export_student_while_paused(env):
    at = small(new_app())
    at.button(key="start_synth").click().run()
    job = job_of(at)
    wait_until(lambda: job.snapshot().steps > 0, what="a step")
    job.pause()
    wait_until(lambda: job.snapshot().state == "paused", what="pause")
    job.request_export()
    wait_until(lambda: job.snapshot().exports == 1, what="export")
    from ifhe.zoo import load_model
    model, meta = load_model(job.snapshot().student_file)
    assert meta["snapshot"] is True and model.arch == "wrn16_1"


# ---- Feature space and Compare -------------------------------------------------------------------------------

def _fake_run(base: Path, name: str, method: str, alpha=None, accs=(), n_images=0):
    """A run folder as the engine leaves it (config, metrics, status, bank), without running anything."""
    from ifhe.bank import ImageBank
    from ifhe.config import dump_yaml, make_config
    out = base / name
    out.mkdir(parents=True)
    synth = {"alpha": alpha} if alpha is not None else {}
    (out / "config.yaml").write_text(dump_yaml(make_config(method, "cpu", synth, teacher=TEACHER)))
    lines = [{"round": i, "kd_steps": 50 * (i + 1), "bank_size": 64 * (i + 1), "elapsed_s": 10.0 * (i + 1),
              "student_acc": a, "head_acc": a - 1} for i, a in enumerate(accs)]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if accs:
        (out / "status.json").write_text(json.dumps({"state": "finished", "student_acc": accs[-1],
                                                     "head_acc": accs[-1] - 1, "teacher_sha256": current_sha()}))
    if n_images:
        g = torch.Generator().manual_seed(len(name))
        ImageBank(out / "bank").add(torch.randint(0, 256, (n_images, 3, 32, 32), dtype=torch.uint8, generator=g),
                                    torch.arange(n_images) % 10)
    return out


def chain_of(at: AppTest):
    return jobs.registry().get_chain(at.session_state["fm_chain"])


def first_job(chain, timeout=30.0):
    wait_until(lambda: chain.jobs, timeout, "the chain's first job")
    return chain.jobs[0]


def test_feature_page_without_banks_offers_to_make_them(env):
    at = new_app()
    at.switch_page("views/features.py").run()
    no_exceptions(at)
    assert at.title[0].value == "Feature space"
    assert "No shipped comparison is committed yet" in texts(at)   # said plainly, and the user's own banks offered
    assert at.button(key="fm_go").disabled
    assert at.selectbox(key="fm_stage").value == "penultimate"   # the primary stage: one h does not read
    assert at.selectbox(key="fm_stage").options == ["penultimate", "h input (what L_H optimises)", "block1",
                                                    "block2", "block3"]
    assert at.radio(key="fm_labels").value == "target" and at.slider(key="fm_n").value == 1000
    assert at.selectbox(key="fm_window").value == "all"
    at.button(key="make_all").click().run()  # the three small banks, one after another, then their map
    no_exceptions(at)
    chain = chain_of(at)
    assert at.query_params["banks"] in (chain.id, [chain.id])    # a reload reattaches to the chain
    job = first_job(chain)
    assert job.cfg.method == "deepinversion" and job.cfg.distill.steps_per_round == 0
    assert (job.cfg.rounds, job.cfg.synth.batch_size, job.cfg.synth.iterations) == (3, 64, 50)
    assert chain.status().labels == ["DeepInversion", "CMI", "IFHE"]
    assert at.get("progress"), "the chain's progress bar"
    job.stop()    # the chain moves on by itself, without a page rerun
    wait_until(lambda: len(chain.jobs) == 2, 30, "the next bank")
    nxt = chain.jobs[1]
    assert nxt.cfg.method == "cmi" and nxt.cfg.synth.iterations == 20
    chain.stop()
    assert chain.wait(30) and chain.status().state == "stopped"
    at.run()
    no_exceptions(at)
    assert "stopped" in texts(at) or any("stopped" in str(p.proto) for p in at.get("progress"))


def test_make_the_missing_banks_then_their_map_without_another_click(env, synthetic_cifar, monkeypatch):
    """One click: every missing bank, one after another, then their map; the queue lives with the jobs, so no
    page has to rerun for it to move."""
    monkeypatch.setenv("IFHE_DATA", str(synthetic_cifar))
    monkeypatch.setenv("IFHE_APP_SMALL_BANK", json.dumps({"batch": 32, "rounds": 2, "iterations": 2}))
    _fake_run(env, "r-cmi", "cmi", n_images=64)      # CMI has a bank already: two are missing
    at = new_app()
    at.switch_page("views/features.py").run()
    at.slider(key="fm_n").set_value(100)
    at.run()
    assert at.button(key="make_all").proto.label == "Make the 2 missing banks"
    at.button(key="make_all").click().run()
    no_exceptions(at)
    chain = chain_of(at)
    assert chain.wait(240), "the banks and the map, with nobody rerunning the page"
    status = chain.status()
    assert status.state == "done" and status.labels == ["DeepInversion", "IFHE"] and len(status.runs) == 2
    from app import features_data
    assert features_data.REPORTS.ready(status.result)          # the map was computed by the chain
    at.run(timeout=120)
    no_exceptions(at)
    metrics = next(d.value for d in at.dataframe if {"set", "rounds used"} <= set(d.value.columns))
    assert list(metrics["set"]) == ["real", "CMI", "DeepInversion", "IFHE"]
    assert len(at.get("plotly_chart")) >= 2 and "all 2 bank(s) made, and their map" in str(
        [p.proto for p in at.get("progress")])


def test_small_ifhe_bank_starts_h_from_the_teachers_shipped_h(env, tiny_zoo, tmp_path, monkeypatch):
    """Three rounds are too few for h to learn from scratch: the page's IFHE bank starts from the h its teacher
    ships (synth.h_init=pretrained), and a teacher without one keeps the random start."""
    import shutil
    from ifhe.checkpoint import save_tensors
    from ifhe.heads import head_for
    root = tmp_path / "pretrained"
    shutil.copytree(tiny_zoo, root)
    monkeypatch.setattr(zoo_catalog, "PRETRAINED_DIR", root)
    head = head_for(zoo.load_teacher(TEACHER))
    save_tensors(tmp_path / "head.safetensors", head.state_dict(),
                 {"in_features": head.in_features, "num_classes": 10, "hidden": head.hidden,
                  "stages": ["block1", "block2", "block3"], "teacher": TEACHER})
    zoo.publish_head(TEACHER, tmp_path / "head.safetensors", 12.5, "tests", root=root)
    at = new_app()
    at.switch_page("views/features.py").run()
    at.button(key="make_ifhe").click().run()
    no_exceptions(at)
    chain = chain_of(at)
    job = first_job(chain)
    assert job.cfg.method == "ifhe" and job.cfg.synth.h_init == "pretrained"
    assert job.cfg.distill.steps_per_round == 0 and job.cfg.distill.head_steps > 0   # and h keeps learning
    chain.stop()
    chain.wait(30)
    monkeypatch.setattr(zoo_catalog, "PRETRAINED_DIR", tiny_zoo)   # the same teacher without a shipped h
    at.button(key="make_ifhe").click().run()
    other = chain_of(at)
    assert other is not chain and first_job(other).cfg.synth.h_init == ""
    other.stop()
    other.wait(30)


def test_small_bank_progress_from_the_snapshot():
    from app.features_data import chain_progress, job_progress
    snap = jobs.Snapshot(kind="synth", method="ifhe", out_dir="x", run_name="x", state="running", rounds=3,
                         iterations=20, round=1, iteration=10, bank_size=64)
    frac, text = job_progress(snap)
    assert frac == pytest.approx(0.5) and "round 2 of 3" in text and "64 images" in text
    frac, text = job_progress(jobs.Snapshot(kind="synth", method="ifhe", out_dir="x", run_name="x",
                                            state="finished", rounds=3, bank_size=192))
    assert frac == 1.0 and "finished" in text
    status = jobs.ChainStatus("running", ["DeepInversion", "CMI", "IFHE"], index=1)
    frac, text = chain_progress(status, replace_snap(snap, method="cmi"))
    assert frac == pytest.approx(1.5 / 4) and "CMI bank: round 2 of 3" in text and "then IFHE" in text
    frac, text = chain_progress(jobs.ChainStatus("finishing", ["DeepInversion", "CMI", "IFHE"], index=3))
    assert "computing their map" in text


def replace_snap(snap, **kw):
    from dataclasses import replace
    return replace(snap, **kw)


def test_a_chain_runs_its_jobs_one_after_another_within_the_limit(env):
    """Chains run their jobs one at a time through the registry (the job limit holds), wait for a busy slot, and
    end with their last step; Stop ends the running job and starts no other."""
    from ifhe.config import make_config
    cfg = make_config("ifhe", teacher=TEACHER, rounds=2, synth={"batch_size": 8, "iterations": 2},
                      distill={"steps_per_round": 0})
    reg = jobs.registry()
    blocker = reg.submit(make_config("ifhe", teacher=TEACHER, rounds=1000, synth={"batch_size": 8,
                                                                                   "iterations": 2}))
    seen = []
    chain = reg.submit_chain([cfg, cfg], ["a", "b"], then=lambda js: [j.snapshot().state for j in js])
    wait_until(lambda: chain.status().state == "waiting", 20, "the chain waiting for the busy slot")
    blocker.stop()
    assert chain.wait(120)
    status = chain.status()
    assert status.state == "done" and status.result == ["finished", "finished"] and len(status.runs) == 2
    a, b = chain.jobs
    assert a.snapshot().started_at <= b.snapshot().started_at and not (a.active or b.active)
    assert reg.get_chain(chain.id) is chain and reg.get_chain("nope") is None
    long = reg.submit_chain([make_config("ifhe", teacher=TEACHER, rounds=1000, synth={"batch_size": 8}), cfg],
                            ["long", "next"], then=seen.append)
    first_job(long)
    long.stop()
    assert long.wait(30) and long.status().state == "stopped" and len(long.jobs) == 1 and not seen


def _two_round_bank(out: Path, head: str | None = None, n: int = 60) -> None:
    """A second round of images in a fake run's bank, and the run's h provenance."""
    from ifhe.bank import ImageBank
    bank = ImageBank(out / "bank")
    g = torch.Generator().manual_seed(len(out.name) + 1)
    bank.add(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % 10,
             info={"round": 1})
    if head:
        bank.set_meta(head_training=head)


def test_feature_page_map_metrics_and_click(env, synthetic_cifar, monkeypatch):
    monkeypatch.setenv("IFHE_DATA", str(synthetic_cifar))   # the page's mechanics, not what real images score
    said = "h learned KL(T/τ‖h(f_T)/τ) for 20 steps a round on the bank (no student KD)"
    for method in ("deepinversion", "cmi", "ifhe"):
        _two_round_bank(_fake_run(env, f"r-{method}", method, n_images=60), said if method == "ifhe" else None)
    at = new_app()
    at.switch_page("views/features.py").run()
    at.slider(key="fm_n").set_value(100)
    at.text_input(key="fm_extra").set_value("../../etc").run()
    assert any("runs folder" in e.value for e in at.error)
    at.text_input(key="fm_extra").set_value("").run()
    assert at.selectbox(key="fm_ifhe").value == "r-ifhe"
    at.button(key="fm_go").click().run(timeout=180)
    no_exceptions(at)
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(charts) == 3, "shared map, per-set maps, metrics against the share of the run"
    for fig in charts[:2]:
        assert [a["text"] for a in fig["layout"]["annotations"]] == ["real", "DeepInversion", "CMI", "IFHE"]
        assert len({t["xaxis"] for t in fig["data"]}) == 4 and fig["layout"]["height"] < 500   # one row, full width
    assert "fitted on real" in charts[0]["layout"]["title"]["text"] and "alone" in charts[1]["layout"]["title"]["text"]
    assert "target t" in charts[0]["layout"]["legend"]["title"]["text"]
    assert "share of the run" in charts[2]["layout"]["title"]["text"]
    metrics = next(d.value for d in at.dataframe if {"set", "rounds used"} <= set(d.value.columns))
    assert list(metrics["set"]) == ["real", "DeepInversion", "CMI", "IFHE"]
    assert {"k-NN bal. acc (t)", "probe bal. acc (t)", "agreement pred = t", "diversity", "Fréchet to real",
            "real-vs-real floor", "k-NN bal. acc (pred.)"} <= set(metrics.columns)
    assert metrics["k-NN bal. acc (t)"].str.contains(r"\[").all()  # every figure with its interval
    assert (metrics["n"] == 100).all() and (metrics["stage"] == "penultimate").all()
    assert (metrics["rounds used"].iloc[1:] == "rounds 0–1 of 2").all()
    page = texts(at)
    assert said in page and "alpha = 0" in page  # IFHE's h as its run trained it; CMI and DeepInversion use none
    assert "by construction" in page             # the caveat: h's input favours IFHE
    # h's input, beside the primary stage: the same report, another stage
    at.selectbox(key="fr_stage").set_value("h").run(timeout=60)
    metrics = next(d.value for d in at.dataframe if {"set", "rounds used"} <= set(d.value.columns))
    assert (metrics["stage"] == "h input (block1+block2+block3)").all()
    # click a point: its image appears beside the map
    from app import features_data
    report = features_data.feature_report(at.session_state["fm_spec"], str(env / "feature_cache"))
    row = report.points[(report.points["set"] == "IFHE") & (report.points["map"] == "own")].iloc[0]
    event = {"selection": {"points": [{"x": row["x"], "y": row["y"], "customdata": [int(row["index"]), 0, 0.5, 3, 0]}]}}
    assert features_data.selected_point(report, event, "h", "own") == ("IFHE", int(row["index"]))
    from ifhe.feature_view import plot_map
    html = features_data.hover_html(report, plot_map(report, "h", "shared"))
    assert "plotly_hover" in html and html.count("data:image/jpeg;base64") == 4  # one sheet a set
    # colour by the teacher's prediction instead
    at.radio(key="fr_colour").set_value("predicted").run(timeout=60)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "prediction" in fig["layout"]["legend"]["title"]["text"]
    # block3, labelled by prediction
    at.selectbox(key="fm_stage").set_value("block3")
    at.radio(key="fm_labels").set_value("predicted")
    at.button(key="fm_go").click().run(timeout=180)
    no_exceptions(at)
    at.selectbox(key="fr_stage").set_value("block3").run(timeout=60)
    metrics = next(d.value for d in at.dataframe if {"set", "rounds used"} <= set(d.value.columns))
    assert (metrics["stage"] == "block3").all() and "k-NN bal. acc (pred.)" in metrics.columns
    assert "k-NN bal. acc (t)" in metrics.columns  # the other labelling, as the secondary column


def test_feature_page_data_free(env):
    for method in ("deepinversion", "ifhe"):
        _fake_run(env, f"r-{method}", method, n_images=60)
    at = new_app()
    at.switch_page("views/features.py").run()
    assert at.checkbox(key="fm_real").disabled and not at.checkbox(key="fm_real").value
    assert "IFHE_DATA" in texts(at)
    at.slider(key="fm_n").set_value(100)
    at.button(key="fm_go").click().run(timeout=120)
    no_exceptions(at)
    page = texts(at)
    assert "fitted on the union of the sets" in page and "n = 60 per set, not 100" in page
    metrics = next(d.value for d in at.dataframe if {"set", "rounds used"} <= set(d.value.columns))
    assert list(metrics["set"]) == ["DeepInversion", "IFHE"]
    assert "h training not recorded" in page  # a bank from before provenance was recorded


@pytest.fixture(scope="module")
def shipped(tiny_zoo, synthetic_cifar, tmp_path_factory):
    """A tiny committed comparison of the tiny teacher, made by tools/ship_banks.py from tiny runs."""
    from features_fixture import make_shipped
    root = tmp_path_factory.mktemp("shipped")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zoo_catalog, "PRETRAINED_DIR", tiny_zoo)
        return make_shipped(root / "feature-banks", TEACHER, synthetic_cifar, root)


def test_feature_page_opens_on_the_shipped_comparison(env, shipped, monkeypatch):
    """The committed comparison is on screen at once: both maps across the page's width and the tables, labelled,
    with nothing made or computed (no job, no chain) and nothing slow to import (no torch, no analysis stack)."""
    import subprocess
    monkeypatch.setenv("IFHE_APP_SHIPPED", str(shipped))
    at = new_app()
    t0 = time.perf_counter()
    at.switch_page("views/features.py").run()
    took = time.perf_counter() - t0
    no_exceptions(at)
    label = next(m.value for m in at.markdown if "shipped comparison:" in m.value)
    assert "DeepInversion, CMI, IFHE (2 seeds each)" in label and f"teacher {TEACHER}" in label
    assert "last 50% of each run's rounds" in label
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert "fitted on real" in charts[0]["layout"]["title"]["text"] and "alone" in charts[1]["layout"]["title"]["text"]
    assert [a["text"] for a in charts[0]["layout"]["annotations"]] == ["real", "DeepInversion s0", "CMI s0", "IFHE s0"]
    frames = [d.value for d in at.dataframe]
    metrics = next(f for f in frames if {"set", "rounds used"} <= set(f.columns))
    assert len(metrics) == 7 and (metrics["stage"] == "penultimate").all()
    seeds = next(f for f in frames if "banks (seeds)" in f.columns)
    assert list(seeds["method"]) == ["real", "DeepInversion", "CMI", "IFHE"] and seeds["banks (seeds)"].iloc[1] == "0,1"
    claims = next(f for f in frames if "claim" in f.columns)
    assert claims["stage"].iloc[0] == "penultimate (primary)" and (claims["paired seeds"].iloc[:4] == "0,1").all()
    provenance = next(f for f in frames if "made by" in f.columns)
    assert len(provenance) == 6 and provenance["made by"].str.contains("config.yaml").all()
    assert jobs.registry().active_count() == 0 and "fm_chain" not in at.session_state
    assert not env.exists() or not any(env.iterdir())     # no bank made
    at.selectbox(key="sh_seed").set_value("all").run()
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert len(fig["layout"]["annotations"]) == 7
    print(f"shipped comparison drawn in {took:.2f} s (AppTest, in process)")
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import app.features_data; "
            f"from ifhe.feature_banks import load_comparison; from ifhe import feature_view; "
            f"load_comparison({str(shipped)!r}); "
            "print(sorted(m for m in ('torch', 'sklearn', 'openTSNE', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


def test_users_banks_beside_the_shipped_ones(env, shipped, synthetic_cifar, monkeypatch):
    monkeypatch.setenv("IFHE_APP_SHIPPED", str(shipped))
    monkeypatch.setenv("IFHE_DATA", str(synthetic_cifar))
    _two_round_bank(_fake_run(env, "r-ifhe", "ifhe", n_images=60))
    at = new_app()
    at.switch_page("views/features.py").run()
    at.slider(key="fm_n").set_value(100)
    at.checkbox(key="fm_beside").check().run()
    at.button(key="fm_go").click().run(timeout=180)
    no_exceptions(at)
    metrics = next(d.value for d in at.dataframe if {"set", "rounds used"} <= set(d.value.columns) and "IFHE" in set(d.value["set"]))
    assert list(metrics["set"]) == ["real", "IFHE", "shipped DeepInversion s0", "shipped CMI s0", "shipped IFHE s0"]
    assert (metrics["n"] == 48).all()          # the committed banks hold 48 images each


def test_compare_page(env, tmp_path, monkeypatch):
    monkeypatch.setenv("IFHE_APP_RESULTS", str(tmp_path / "no-results"))
    _fake_run(env, "ifhe-a0", "ifhe", alpha=0.0, accs=(40.0, 55.0))
    _fake_run(env, "ifhe-a05", "ifhe", alpha=0.5, accs=(42.0, 58.0))
    _fake_run(env, "cmi", "cmi", accs=(41.0, 56.0))
    at = new_app()
    at.switch_page("views/compare.py").run()
    no_exceptions(at)
    assert at.title[0].value == "Compare"
    assert "No sweep of this teacher and the current presets yet" in texts(at)
    frames = [d.value for d in at.dataframe]
    summary = next(f for f in frames if "run" in f.columns)
    assert set(summary["run"]) == {"ifhe-a0", "ifhe-a05", "cmi"}
    assert summary["student_acc"].notna().all()
    assert set(at.multiselect(key="cmp_runs").value) == {"ifhe-a0", "ifhe-a05", "cmi"}
    # the paper's table and ours side by side
    paper = next(f for f in frames if "WRN40-2/WRN16-1" in f.columns)
    assert paper.loc["IFHE", "WRN40-2/WRN16-1"] == 91.80
    ours = next(f for f in frames if "WRN16-1/WRN16-1" in f.columns)
    assert ours.loc["IFHE", "WRN16-1/WRN16-1"] == 58.0 and ours.loc["CMI", "WRN16-1/WRN16-1"] == 56.0
    from app.compare_data import alpha_points
    from app.runs import list_runs
    pts = alpha_points(list_runs(env))
    assert pts["WRN16-1/WRN16-1"] == [(0.0, 55.0), (0.5, 58.0)]


def current_sha(teacher: str = TEACHER) -> str:
    return zoo_catalog.read_manifest()[teacher]["sha256"]


def _preset_config(variant: str, **over) -> dict:
    """A cell's recorded config: the variant's current preset (as `ifhe reproduce` records it)."""
    from ifhe.config import make_config, to_dict
    from ifhe.methods import variants
    method, synth = variants()[variant]
    return to_dict(make_config(method, "cpu", synth=synth, **over))


def _fake_sweep(folder: Path, accs: dict[str, list[float]], legacy: bool = False, teacher: str = TEACHER,
                sha: str | None = "current", synth: dict | None = None, threads: int = 1, kd_share: float = 0.0,
                machine: dict | None = None, minutes: float = 10.0) -> list[dict]:
    """A sweep folder as `ifhe reproduce` leaves it (results.json), for variants x seeds, without running; its
    cells record the teacher's checksum (`sha`: "current" the zoo's, None none) and the variant's preset."""
    from ifhe.fileio import json_safe
    from ifhe.sweep_stats import analyze
    pair = f"{teacher}-wrn16_1"
    cal = {"step_s": 0.8, "wall_s": 0.8, "threads": 1, "clock": "cpu per thread"}
    sha = current_sha(teacher) if sha == "current" else sha
    config = {v: _preset_config(v, teacher=teacher, threads=threads, budget_minutes=minutes) for v in accs}
    for c in config.values():
        c["synth"].update(synth or {})
        c["distill"]["kd_share"] = kd_share
    cells = [{"cell": {"teacher": teacher, "student": "wrn16_1", "variant": v, "seed": i},
              "id": f"{pair}/{v}/seed{i}", "pair": pair, "variant": v, "seed": i, "student_acc": a,
              "head_acc": 80.0, "rounds": 10, "kd_steps": 500, "bank_size": 640, "elapsed_s": 600.0,
              **({"teacher_sha256": sha} if sha else {}),
              "config": config[v], "final_test_images": 10000,
              "curve": [{"elapsed_s": t, "student_acc": a * t / 600} for t in (60.0, 300.0, 600.0)],
              "machine": None if legacy else (machine or {"cpu_model": "Test CPU", "logical_cores": 2}),
              "threads": threads,
              "calibration": None if legacy else cal}
             for v, xs in accs.items() for i, a in enumerate(xs)]
    folder.mkdir(parents=True)
    data = cells if legacy else json_safe({**analyze(cells, minutes, [("ifhe", "cmi")]), "cells": cells})
    (folder / "results.json").write_text(json.dumps(data))
    return cells


def test_compare_page_sweeps_with_intervals_paired_differences_and_bands(env, tmp_path, monkeypatch):
    from ifhe.stats import mean_interval, paired_difference
    results = tmp_path / "results"
    monkeypatch.setenv("IFHE_APP_RESULTS", str(results))
    cmi, ifhe = [50.0, 53.0, 55.0], [56.0, 58.0, 62.0]
    _fake_sweep(results / "sweep-a", {"cmi": cmi, "ifhe": ifhe})
    _fake_sweep(results / "old", {"cmi": [40.0], "ifhe": [45.0]}, legacy=True)  # a results.json from before
    _fake_sweep(results / "stale", {"cmi": [90.0]}, sha="0" * 64)     # made with another teacher: left out
    _fake_sweep(results / "unknown", {"cmi": [91.0]}, sha=None)       # which teacher, not recorded: left out
    (results / "sweep-a" / "runs" / "x").mkdir(parents=True)  # run folders are not searched
    (results / "sweep-a" / "runs" / "x" / "results.json").write_text("[]")
    (results / "gpu").mkdir()
    (results / "gpu" / "results.json").write_text('{"steps": []}')  # another tool's results.json
    at = new_app()
    at.switch_page("views/compare.py").run()
    no_exceptions(at)
    assert at.selectbox(key="sw_pick").options == ["results/old", "results/sweep-a"]
    assert "results/stale (1 cell(s): made with another version of the teacher)" in texts(at)
    assert "results/unknown (1 cell(s): the teacher's checksum was not recorded)" in texts(at)
    at.selectbox(key="sw_pick").set_value("results/sweep-a").run()
    no_exceptions(at)
    assert "Test CPU" in texts(at) and "0.800 s" in texts(at)
    frames = [d.value for d in at.dataframe]
    variants = next(f for f in frames if "student mean" in f.columns).set_index("variant")
    want = mean_interval(cmi)
    assert variants.loc["cmi", "n"] == 3 and variants.loc["cmi", "student mean"] == pytest.approx(want.estimate)
    assert (variants.loc["cmi", "95% low"], variants.loc["cmi", "95% high"]) == pytest.approx((want.low, want.high))
    assert variants.loc["ifhe", "paper"] == 91.8
    paired = next(f for f in frames if "mean difference" in f.columns)
    row = paired[paired["A − B"] == "ifhe − cmi"].iloc[0]
    d = paired_difference(dict(enumerate(ifhe)), dict(enumerate(cmi)))
    assert row["mean difference"] == pytest.approx(d.diff.estimate) and row["95% low"] == pytest.approx(d.diff.low)
    assert row["sign-flip p"] == pytest.approx(0.25) and row["t test p"] == pytest.approx(d.t_p)
    assert row["verdict"] == "reproduced" and row["seeds"] == "0,1,2"

    def band_of(variant):
        for chart in at.get("plotly_chart"):
            fig = json.loads(chart.proto.spec)
            for tr in fig["data"]:
                if tr.get("fill") == "toself" and tr["name"].startswith(variant + ","):
                    return tr["y"]
        raise AssertionError(f"no band for {variant}")

    y = band_of("cmi")  # min-max by default: the upper edge, then the lower edge backwards
    assert y[len(y) // 2 - 1] == pytest.approx(max(cmi)) and y[len(y) // 2] == pytest.approx(min(cmi))
    at.radio(key="sw_band").set_value("95% t interval of the mean").run()
    no_exceptions(at)
    y = band_of("cmi")
    assert y[len(y) // 2 - 1] == pytest.approx(want.high) and y[len(y) // 2] == pytest.approx(want.low)
    # the older sweep: one seed each, read and analysed, no bands and no interval
    at.selectbox(key="sw_pick").set_value("results/old").run()
    no_exceptions(at)
    assert "older results.json" in texts(at)
    old = next(d.value for d in at.dataframe if "student mean" in d.value.columns)
    assert list(old["n"]) == [1, 1] and old["95% low"].isna().all()
