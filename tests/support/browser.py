"""Debian's Chromium driven by Playwright (no ``playwright install``: the system browser)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@asynccontextmanager
async def launch_chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def sign_in_in_chromium(page: Page, room_url: str) -> dict[str, Any]:
    """Open a room on the Jitsi stand-in, log in as alice at the test OP; the token's claims."""
    await page.goto(room_url)
    await page.wait_for_selector("#username")
    await page.fill("#username", "alice")
    await page.fill("#password", "alice-pw")
    await page.click("#login")
    await page.wait_for_selector("#claims")
    return json.loads(await page.inner_text("#claims"))
