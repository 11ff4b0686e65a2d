"""Drives `fastjoint view` in a real browser (headless Chromium through Playwright).

Used by the browser tests (tests/test_viewer.py) and the viewer benchmark
(benchmarks/viewer.py). Every timing is the browser's own clock (`performance.now()`): the
viewer's status line ("frame N · WxH px · scene:style · ms", or "scene:left|right" for a split view) is watched by a
MutationObserver, which stamps each change as the page receives it. No wait here runs on
a wall-clock deadline: each polls a bounded number of times and fails with what it saw.

Chromium: Debian's package (`apt-get install -y chromium`, /usr/bin/chromium); Playwright's
own browser download is not needed. WebGL runs in software (SwiftShader).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
STATUS = re.compile(r"frame (\d+) · (\d+)x(\d+) px · (\w+):([\w-]+)(?:\|([\w-]+))? · (\d+) ms")
POLL = 0.1  # seconds between two looks at the page
VIEWPORT = {"width": 1000, "height": 700}
PANEL_WIDTH = 340  # viser's control panel covers the right of the page; the scene is left of it
# viser's notice that WebGL runs in software covers the top left, its axes the bottom left:
# the scene is judged between them.
SCENE_TOP, SCENE_BOTTOM = 170, 630


class BrowserMissing(RuntimeError):
    pass


def chromium_path() -> str:
    """Debian's chromium, or $FASTJOINT_CHROMIUM; raises BrowserMissing when absent or Playwright is."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        raise BrowserMissing("Playwright is missing: pip install -e '.[test]' (or pip install playwright)") from None
    candidates = [os.environ.get("FASTJOINT_CHROMIUM", ""), *CHROMIUM_PATHS, shutil.which("chromium") or ""]
    for path in candidates:
        if path and Path(path).is_file():
            return path
    raise BrowserMissing("Chromium is missing: apt-get update && apt-get install -y chromium")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_signals() -> None:
    """In the viewer's process: Ctrl-C and SIGTERM as a user's shell would deliver them."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Viewer:
    """`fastjoint view RUN` in a subprocess; its output is collected line by line."""

    def __init__(self, run_dir: Path, *args: str, env: dict | None = None) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "fastjoint", "view", str(run_dir), "--port", str(self.port), *args]
        environment = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200", **(env or {}))
        self.process = subprocess.Popen(
            command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_default_signals
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def url(self, tries: int = 1200) -> str:
        """The URL the viewer prints, once it does (polls `tries` times)."""
        for _ in range(tries):
            for line in self.lines:
                match = re.search(r"fastjoint view: (http://\S+)", line)
                if match:
                    return match.group(1)
            if self.process.poll() is not None:
                raise AssertionError(f"fastjoint view exited with {self.process.returncode}:\n{self.output}")
            time.sleep(POLL)
        raise AssertionError(f"fastjoint view printed no URL after {tries} polls:\n{self.output}")

    def lines_after_url(self) -> list[str]:
        """What the viewer printed after its URL line (its output once the server is up)."""
        return self.lines[next(i for i, text in enumerate(self.lines) if "fastjoint view: http" in text) + 1 :]

    def stop(self, tries: int = 300, signum: int = signal.SIGTERM) -> int:
        """SIGTERM (or `signum`), then the exit status (SIGKILL if it does not stop within `tries` polls)."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        for _ in range(tries):
            if self.process.poll() is not None:
                break
            time.sleep(POLL)
        else:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)
        return self.process.returncode


@dataclass
class Status:
    frame: int
    width: int
    height: int
    scene: str
    style: str
    ms: int
    at: float  # performance.now() in the page when it appeared
    compare: str | None = None  # the style of the right half of a split view

    @staticmethod
    def parse(text: str, at: float) -> Status | None:
        match = STATUS.search(text)
        if not match:
            return None
        frame, width, height, scene, style, compare, ms = match.groups()
        return Status(int(frame), int(width), int(height), scene, style, int(ms), at, compare)


WATCH_STATUS = """() => {
    window.__statuses = window.__statuses || [];
    const record = () => {
        const text = document.body.innerText.match(/frame \\d+ · \\d+x\\d+ px · \\S+ · \\d+ ms/);
        if (text && (window.__statuses.length === 0 || window.__statuses[window.__statuses.length - 1][0] !== text[0]))
            window.__statuses.push([text[0], performance.now()]);
    };
    new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true});
    record();
}"""


class Page:
    """The viewer's page in headless Chromium, and what the tests do on it."""

    def __init__(self, page: Any) -> None:
        self.page = page

    def now(self) -> float:
        return float(self.page.evaluate("() => performance.now()"))

    def statuses(self) -> list[Status]:
        raw = self.page.evaluate("() => window.__statuses || []")
        return [s for s in (Status.parse(text, at) for text, at in raw) if s is not None]

    def wait_status(self, check, what: str, tries: int = 600) -> Status:
        """The first status after the page's current count that passes `check` (polls `tries` times)."""
        for _ in range(tries):
            for status in self.statuses():
                if check(status):
                    return status
            time.sleep(POLL)
        seen = [f"{s.frame} {s.width}x{s.height} {s.scene}:{s.style}" for s in self.statuses()[-5:]]
        raise AssertionError(f"the viewer never showed {what} ({tries} polls); last statuses: {seen}")

    def scene_pixels(self) -> np.ndarray:
        """A screenshot of the 3D view (left of the panel, clear of viser's notices), [H, W, 3] uint8."""
        import io

        from PIL import Image

        clip = {"x": 0, "y": SCENE_TOP, "width": VIEWPORT["width"] - PANEL_WIDTH, "height": SCENE_BOTTOM - SCENE_TOP}
        png = self.page.screenshot(clip=clip)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def save_screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path))

    def choose(self, label: str, option: str) -> float:
        """Picks `option` in the dropdown `label`; returns the page's clock at the click."""
        self.page.get_by_label(label, exact=True).click()
        item = self.page.get_by_role("option", name=option, exact=True)
        item.wait_for()
        at = self.now()
        item.click()
        return at

    def fill(self, label: str, value: str, index: int = 0) -> None:
        """Types into the `index`-th text field under the label `label` and confirms it."""
        box = self.page.locator(f"xpath=//label[normalize-space()='{label}']/following::input[not(@type) or @type='text'][{index + 1}]")
        box.fill(value)
        box.press("Enter")

    def click(self, button: str) -> float:
        """Clicks a panel button; returns the page's clock at the click."""
        target = self.page.get_by_role("button", name=button, exact=True)
        at = self.now()
        target.click()
        return at

    def drag(self, moves: int, dx: float = 4.0) -> tuple[float, float]:
        """Orbits the camera with the mouse, `moves` small moves; returns the page's clock at start and end."""
        mouse = self.page.mouse
        x, y = (VIEWPORT["width"] - PANEL_WIDTH) / 2, VIEWPORT["height"] / 2
        mouse.move(x, y)
        mouse.down()
        start = self.now()
        for i in range(moves):
            mouse.move(x + dx * (i + 1), y + 0.3 * dx * ((i % 10) - 5))
            time.sleep(0.02)
        end = self.now()
        mouse.up()
        return start, end


@contextmanager
def open_viewer(url: str) -> Iterator[Page]:
    """The viewer's page in headless Chromium, its status line watched."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            page.wait_for_selector("canvas", timeout=120_000)
            page.evaluate(WATCH_STATUS)
            yield Page(page)
        finally:
            browser.close()


def not_blank(pixels: np.ndarray) -> float:
    """The fraction of pixels that differ from the image's most common colour (the background)."""
    flat = pixels.reshape(-1, 3).astype(np.int32)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    return float((np.abs(flat - background).sum(-1) > 30).mean())
