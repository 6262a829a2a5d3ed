"""Open a report the way a person does, in a real browser: headless Chromium, from disk.

``--dump-dom`` prints the page as the browser built it (after parsing, with the
inline SVG in the DOM), so a test can check what is really there. The flags
keep Chromium off the network: a report must need none.
"""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium() -> str:
    found = shutil.which("chromium")
    assert found, "chromium is not installed: `make test` installs it (Makefile APT_PACKAGES)"
    return found


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM Chromium builds for ``page`` (opened as file://), serialised."""
    done = subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    assert "<html" in done.stdout, f"chromium printed no page: {done.stderr[-2000:]}"
    return done.stdout


class Elements(HTMLParser):
    """Every element of a serialised DOM as (tag, attributes), in document order."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {k: v or "" for k, v in attrs}))

    def with_class(self, tag: str, css_class: str) -> list[dict[str, str]]:
        return [a for t, a in self.found if t == tag and css_class in a.get("class", "").split()]

    def by_id(self, element_id: str) -> dict[str, str] | None:
        return next((a for _, a in self.found if a.get("id") == element_id), None)

    def links(self) -> list[str]:
        return [a[k] for _, a in self.found for k in ("href", "src") if k in a]
