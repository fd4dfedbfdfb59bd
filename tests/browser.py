"""A real browser for the end-to-end page tests: Debian's Chromium driven by Python playwright.

Playwright (the `test` extra) drives /usr/bin/chromium (installed by `.ci/run`); it downloads no
browser. Its sync API runs in one worker thread (`trio.to_thread.run_sync`), with the whole
scenario inside: a scenario is a plain function of the page that reaches back into the test's
Trio loop with `trio.from_thread.run` (to move a simulated price, wait for a bus event, …). Every
playwright wait has a timeout, and the thread call sits under `trio.fail_after`, so a stuck
browser fails the test instead of hanging it. Each run gets a fresh profile directory.

A test module makes a `Browser` in a fixture that skips, with `missing_browser()`'s reason, when
Chromium or playwright is missing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import trio

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = ["CHROMIUM", "SCREENSHOTS", "Browser", "missing_browser"]

T = TypeVar("T")

CHROMIUM = Path("/usr/bin/chromium")
# Screenshots the page tests write (gitignored): CI keeps them as artifacts.
SCREENSHOTS = Path(
    os.environ.get(
        "GATEWAY_SCREENSHOTS", Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
    )
)
ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 5000  # the default bound of every playwright wait


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"needs {CHROMIUM} (apt-get install chromium; .ci/run does it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "needs the playwright package (pip install -e '.[test]')"
    return None


class Browser:
    """Runs scenarios in a fresh headless Chromium, one at a time, each in a worker thread."""

    def __init__(self, profile_root: Path) -> None:
        self._root = profile_root
        self._runs = 0

    async def run(
        self,
        scenario: Callable[[Page], T],
        *,
        viewport: tuple[int, int] = (1280, 800),
        limit: float = 60,
    ) -> T:
        """`scenario(page)` in a new browser; its result, or its exception re-raised here."""
        self._runs += 1
        profile = self._root / f"profile-{self._runs}"
        call = partial(_in_browser, scenario, profile, viewport)
        with trio.fail_after(limit):
            return await trio.to_thread.run_sync(call, abandon_on_cancel=True)


def _in_browser(scenario: Callable[[Page], T], profile: Path, viewport: tuple[int, int]) -> T:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": viewport[0], "height": viewport[1]},
            timeout=30_000,
        )
        try:
            context.set_default_timeout(WAIT_MS)
            page = context.pages[0] if context.pages else context.new_page()
            console: list[str] = []
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            try:
                return scenario(page)
            except Exception as error:
                # What the page showed and logged, for the failure report (and a picture); a
                # page too broken for that must not hide the original error.
                with contextlib.suppress(Exception):
                    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                    shot = SCREENSHOTS / f"failed-{profile.name}.png"
                    page.screenshot(path=str(shot), timeout=WAIT_MS)
                    text = page.inner_text("body", timeout=WAIT_MS)
                    error.add_note(f"page text:\n{text}\nconsole:\n" + "\n".join(console[-30:]))
                raise
        finally:
            context.close()
