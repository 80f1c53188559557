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
    assert not list((server.root / "runs").glob("*/bank"))     # nothing was made
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
