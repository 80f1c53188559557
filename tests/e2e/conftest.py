"""Browser tests: the real app server in a subprocess, driven by Debian's Chromium through Playwright."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from app_server import CHROMIUM, CHROMIUM_ARGS, Server, publish_test_teacher  # noqa: E402


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    skip = None
    if not Path(CHROMIUM).exists():
        skip = pytest.mark.skip(reason=f"{CHROMIUM} is missing (apt-get install chromium)")
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.e2e)
            if skip:
                item.add_marker(skip)


TINY_BANKS = '{"batch": 16, "rounds": 2, "iterations": 2}'   # the page's small banks, in seconds


def shipped_comparison(root: Path, data: Path) -> Path:
    """A tiny committed comparison of the server's tiny teacher (tools/ship_banks.py over tiny runs)."""
    from features_fixture import make_shipped
    from ifhe import catalog
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(catalog, "PRETRAINED_DIR", root / "pretrained")
        return make_shipped(root / "shipped" / "feature-banks", "tiny_wrn16_1", data, root / "shipped")


@pytest.fixture(scope="module")
def server(tmp_path_factory, synthetic_cifar):
    """The app on a free port with two tiny random teachers (WRN-16-1, VGG11-BN) as the shipped ones, a tiny committed
    feature comparison, tiny small banks; one job slot."""
    root = tmp_path_factory.mktemp("e2e")
    publish_test_teacher(root / "pretrained")
    publish_test_teacher(root / "pretrained", "tiny_vgg11_bn", "vgg11_bn", accuracy=9.0)  # the other family
    env = {"IFHE_PRETRAINED": str(root / "pretrained"), "IFHE_APP_RUNS": str(root / "runs"),
           "IFHE_APP_MAX_JOBS": "1", "IFHE_APP_THREADS": "1",  # tests run beside each other
           "IFHE_APP_SHIPPED": str(shipped_comparison(root, synthetic_cifar)), "IFHE_APP_SMALL_BANK": TINY_BANKS}
    with Server(env, log=root / "server.log") as s:
        s.root = root
        yield s


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
