"""End to end: the real server in headless Chromium. Open the app, start IFHE synthesis, see the image grid
change, stop it, reload (reattach), open the feature page; four sessions starting at once; no Deploy button;
stopping the server (SIGTERM, Ctrl-C) while a run goes on."""
from __future__ import annotations

import re
import signal
import time

import pytest
from playwright.sync_api import expect

from app_server import GRID, Server, button, health, open_page
from app_server import main_block as main


def open_app(browser, server, path=""):
    return open_page(browser, server.url + path)


def stop_if_running(page) -> None:
    """After a test that started a run, whether it passed or not: stop the run, so that the one job slot of the
    module's server is free for the next test (a failure used to fail every later test with "busy")."""
    try:
        stop = button(page, "Stop")
        if stop.count() and stop.is_enabled():
            stop.click()
            page.get_by_text(re.compile(r"stopped · ")).wait_for(timeout=30_000)
    except Exception:  # noqa: BLE001 - best effort: the page may be gone
        pass


def wait_for_grid_change(page, timeout=30.0) -> tuple[str, str]:
    img = page.locator(GRID).first
    img.wait_for(timeout=timeout * 1000)
    first = img.get_attribute("src")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        now = page.locator(GRID).first.get_attribute("src")
        if now and now != first:
            return first, now
        page.wait_for_timeout(100)
    raise AssertionError("the image grid did not change")


def test_synthesize_grid_stop_reload_feature_page(server, browser):
    page = open_app(browser, server)
    assert main(page).get_by_role("heading", name="Synthesize").is_visible()
    button(page, "Start").click()
    try:
        first, later = wait_for_grid_change(page, timeout=60.0)
    finally:
        stop_if_running(page)
    assert first.startswith("data:image/png;base64,")
    assert re.search(r"[?&]job=[\w-]{20,}", page.url), page.url
    page.get_by_text(re.compile(r"stopped · ")).wait_for(timeout=30_000)
    expect(button(page, "Start")).to_be_enabled(timeout=30_000)
    # a reload is a new session: the job id in the URL brings the run back
    page.reload()
    page.get_by_text(re.compile(r"stopped · ")).wait_for(timeout=60_000)
    page.locator(GRID).first.wait_for(timeout=10_000)
    # the feature page, through the navigation
    page.get_by_role("link", name="Feature space").click()
    main(page).get_by_role("heading", name="Feature space").wait_for(timeout=30_000)
    expect(main(page).get_by_role("button", name="Compute the map")).to_be_visible()
    # the default stage of the user's report: one h does not read (h's input is measured beside it)
    expect(main(page).get_by_role("combobox", name="Primary stage")).to_have_value("penultimate")
    expect(main(page).get_by_role("button", name=re.compile(r"^Make (a small|the \d missing)"))).not_to_have_count(0)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.context.close()


def shipped_on_screen(page) -> None:
    """The committed comparison's label, both maps (every set's panel) and a table."""
    main(page).get_by_text(re.compile(r"^shipped comparison: DeepInversion, CMI, IFHE")).wait_for(timeout=60_000)
    charts = main(page).get_by_test_id("stPlotlyChart")
    charts.nth(1).wait_for(timeout=60_000)
    for name in ("real", "DeepInversion s0", "CMI s0", "IFHE s0"):
        charts.nth(0).get_by_text(name, exact=True).wait_for(timeout=60_000)
    main(page).locator('[data-testid="stDataFrame"]:visible').first.wait_for(timeout=60_000)


def test_feature_page_opens_on_the_shipped_comparison(server, browser):
    """Without making a bank: the shipped maps and metrics table are on screen soon after the page opens, labelled,
    and the maps use the page's width."""
    before = set((server.root / "runs").glob("*/bank"))
    page = open_app(browser, server)
    t0 = time.perf_counter()
    page.get_by_role("link", name="Feature space").click()
    shipped_on_screen(page)
    took = time.perf_counter() - t0
    print(f"Feature space: shipped maps and table on screen {took:.2f} s after the click")
    box = main(page).get_by_test_id("stPlotlyChart").first.bounding_box()
    width = main(page).get_by_role("heading", name="Feature space").bounding_box()["width"]
    assert box["width"] > 0.95 * width, (box, width)          # the page's width, not squeezed beside the controls
    assert took < 30, f"{took:.1f} s"                          # README gives the figure on a quiet machine
    assert set((server.root / "runs").glob("*/bank")) == before    # nothing was made
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.context.close()


def test_make_the_missing_banks_then_the_map_without_another_click(server, browser):
    """One click makes every missing bank and then their map; the page is left alone meanwhile (no click, no
    reload), and every bank and the map appear."""
    page = open_app(browser, server)
    page.get_by_role("link", name="Feature space").click()
    shipped_on_screen(page)
    make = main(page).get_by_role("button", name=re.compile(r"^Make the (\d missing banks|missing bank)$"))
    expect(make).to_have_count(1, timeout=30_000)
    missing = int((re.search(r"\d", make.inner_text()) or ["1"])[0])
    make.click()
    main(page).get_by_text(f"all {missing} bank(s) made, and their map").wait_for(timeout=240_000)
    for name in ("DeepInversion", "CMI", "IFHE"):   # the new map's panels (the shipped ones are "... s0")
        maps = main(page).get_by_test_id("stPlotlyChart").filter(has=page.get_by_text(name, exact=True))
        expect(maps).to_have_count(2, timeout=120_000)
    made = {p.name.split("-")[2] for p in (server.root / "runs").iterdir() if (p / "bank").is_dir()}
    assert {"deepinversion", "cmi", "ifhe"} <= made, made
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.context.close()


def test_choose_the_vgg_pair_and_run_it(server, browser):
    """The pair picker in the browser: the VGG11 -> ResNet18 pair (the paper's, here with a tiny VGG teacher)."""
    page = open_app(browser, server)
    box = main(page).get_by_role("combobox", name="Teacher → student")
    expect(box).to_have_value(re.compile(r"^WRN16-1 → WRN16-1 · tiny_wrn16_1"))
    box.click()
    box.fill("VGG11 → ResNet18")
    page.get_by_role("option", name=re.compile(r"^VGG11 → ResNet18 · tiny_vgg11_bn .*the paper's pair")).click()
    expect(box).to_have_value(re.compile(r"^VGG11 → ResNet18"))
    main(page).get_by_text("No finished run of this pair").wait_for(timeout=10_000)
    button(page, "Start").click()
    try:
        page.locator(GRID).first.wait_for(timeout=60_000)
        assert re.search(r"[?&]job=", page.url)
    finally:
        stop_if_running(page)
    run = max((server.root / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    import yaml
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert (cfg["teacher"], cfg["student"]) == ("tiny_vgg11_bn", "resnet18")
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.context.close()


def test_four_sessions_keep_the_limit(server, browser):
    pages = [open_app(browser, server) for _ in range(4)]
    for p in pages:  # as close to "at once" as one driver gets
        button(p, "Start").click(no_wait_after=True)
    started, refused = [], []
    deadline = time.perf_counter() + 60
    while len(started) + len(refused) < 4 and time.perf_counter() < deadline:
        started = [p for p in pages if "job=" in p.url]
        refused = [p for p in pages if "job=" not in p.url
                   and main(p).get_by_text("of this server are busy", exact=False).count()]
        pages[0].wait_for_timeout(200)
    if len(started) != 1 or len(refused) != 3:
        for p in started:
            stop_if_running(p)
    assert len(started) == 1 and len(refused) == 3, [  # IFHE_APP_MAX_JOBS=1, the default on 2 cores
        (p.url, main(p).inner_text()[:200], p.get_by_test_id("stSidebar").inner_text()[-200:]) for p in pages]
    assert max(health(server.url) for _ in range(5)) < 1.0  # the server answers while the job runs
    # no session sees another's run: the refused ones show no job
    started[0].locator(GRID).first.wait_for(timeout=60_000)
    for p in refused:
        assert "job=" not in p.url and main(p).locator(GRID).count() == 0
    name = started[0].get_by_test_id("stSidebar").locator("code").first.inner_text()
    for p in refused:
        assert name not in p.get_by_test_id("stSidebar").inner_text()
    for p in started:
        button(p, "Stop").click()
    for p in started:
        p.get_by_text(re.compile(r"stopped · ")).wait_for(timeout=30_000)
    for p in pages:
        p.context.close()


def test_no_deploy_button_or_developer_menu(server, browser):
    page = open_app(browser, server)
    expect(page.get_by_test_id("stAppDeployButton")).to_have_count(0)
    expect(page.get_by_test_id("stMainMenu")).to_have_count(0)
    page.context.close()


class _Demo(Server):
    """`ifhe demo` (which runs the server as its child) in a session of its own, as a terminal would run it."""

    name = "ifhe demo"
    new_session = True

    def command(self) -> list[str]:
        import sys
        return [sys.executable, "-m", "ifhe", "demo", "--port", str(self.port), "--headless"]


@pytest.mark.parametrize("launch, sig", [("server", signal.SIGTERM), ("ifhe demo", signal.SIGTERM),
                                         ("ifhe demo", "Ctrl-C")], ids=["server-SIGTERM", "demo-SIGTERM", "demo-Ctrl-C"])
def test_stopping_the_server_stops_runs_and_keeps_their_checkpoints(server, browser, tmp_path, launch, sig):
    """SIGTERM (docker stop) or Ctrl-C (SIGINT to the terminal's process group: `ifhe demo` and its server) while a
    run goes on: the run stops at its next step and saves its checkpoint and student, and the process exits 0
    within docker's grace period. It used to abort (exit code 134), and `ifhe demo` killed its server at once."""
    import os
    env = {**{k: v for k, v in server.env.items() if k.startswith("IFHE_")}, "IFHE_APP_RUNS": str(tmp_path / "runs")}
    own = (_Demo if launch == "ifhe demo" else Server)(env, log=tmp_path / "server.log").start()
    try:
        page = open_app(browser, own)
        button(page, "Start").click()
        page.locator(GRID).first.wait_for(timeout=60_000)
        t0 = time.perf_counter()
        if sig == "Ctrl-C":
            os.killpg(own.proc.pid, signal.SIGINT)
        else:
            own.proc.send_signal(sig)
        code = own.proc.wait(20)
        took = time.perf_counter() - t0
        page.context.close()
    finally:
        own.stop()
    log = (tmp_path / "server.log").read_text()
    assert code == 0 and "terminate called" not in log and "Traceback" not in log, (code, log[-2000:])
    assert took < 10, f"{took:.1f} s: docker stop kills after 10 s"
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    for name in ("checkpoint.safetensors", "student.safetensors", "status.json"):
        assert (run / name).is_file(), name
    import json
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"
