"""Shared bits of the screenshot scripts (run as ``python scripts/screenshot_*.py`` under
xvfb-run, so this folder is on ``sys.path``)."""

from __future__ import annotations

import time


def wait(app, seconds: float = 0.6) -> None:
    """Let Qt draw for ``seconds``."""
    t0 = time.time()
    while time.time() - t0 < seconds:
        app.processEvents()
        time.sleep(0.02)


def wait_for_job(app, section, timeout: float) -> bool:
    """Process events until ``section.panel`` stops running (or ``timeout`` s); whether it produced
    ``section.last_result``, with the panel's error on stderr when not."""
    import sys

    t0 = time.time()
    while section.panel.running and time.time() - t0 < timeout:
        app.processEvents()
        time.sleep(0.02)
    if section.last_result is None:
        print(f"no labels: {section.panel.last_error or section.panel.status.text()}", file=sys.stderr)
        return False
    return True
