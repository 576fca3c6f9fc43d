"""The web view in a real browser (Debian's Chromium, headless, driven by Selenium) against a
live network of four nodes in two groups: the page shows every group, updates itself after a
round and after a leader is killed, and a screenshot is saved. Skips, saying why, where there
is no browser (``.ci/run`` installs one where it can); the HTML is checked with a parser in
``test_view.py`` either way."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.loopback import crash, learning_network
from mycelium_p2p.web import WebView

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser(profile: Path) -> Any:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (the test extra has it)")
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.skip("no Chromium/ChromeDriver (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))


def _cells(driver: Any, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


@run_async(timeout=300)
async def test_the_page_follows_a_live_network_in_a_real_browser(tmp_path: Path) -> None:
    driver = _browser(tmp_path / "profile")
    common = {"migrate": False, "merge": False, "split": False, "round_pause": 0.3}
    configs = [
        {"create": "alpha", **common},
        {"group": "alpha", **common},
        {"create": "beta", **common},
        {"group": "beta", **common},
    ]
    try:
        async with learning_network(configs) as (_, leader, member, _b, _c):
            await wait_for(lambda: member.group.model.round >= 1, 60, "a first round")
            view = WebView(member.dht, member)
            host, port = await view.start()
            try:
                await asyncio.to_thread(driver.get, f"http://{host}:{port}/")

                def names() -> list[str]:
                    return _cells(driver, "#groups tbody tr td:first-child")

                async def shows(what: str, test: Any, timeout: float = 60) -> None:
                    async def check() -> bool:
                        return bool(await asyncio.to_thread(test))

                    loop = asyncio.get_running_loop()
                    end = loop.time() + timeout
                    while not await check():
                        assert loop.time() < end, f"the page never showed {what}"
                        await asyncio.sleep(0.5)

                await shows("both groups", lambda: sorted(names()) == ["alpha", "beta"])

                def live() -> Any:
                    return driver.execute_script("return document.body.dataset.live")

                # the table is served in the page; the stream's first message comes after it
                await shows("a live page", lambda: live() is not None, timeout=15)
                assert await asyncio.to_thread(live) == "events"  # server-sent events, not polling
                first = int(_cells(driver, "#node-round")[0])
                await shows(
                    "a newer round, without a reload",
                    lambda: int(_cells(driver, "#node-round")[0] or 0) > first,
                )
                await crash(leader)  # SIGKILL-like: the member elects itself (term 2)
                await shows(
                    "the member leading term 2",
                    lambda: (
                        _cells(driver, "#node-role") == ["leader"]
                        and _cells(driver, "#node-term") == ["2"]
                    ),
                )
                shot = tmp_path / "web-view.png"
                assert await asyncio.to_thread(driver.save_screenshot, str(shot))
                assert shot.stat().st_size > 10_000
                print(f"screenshot: {shot}")
            finally:
                await view.close()
    finally:
        await asyncio.to_thread(driver.quit)
