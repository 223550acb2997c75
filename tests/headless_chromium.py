"""Open a page in headless Chromium as a reader would and return the DOM after its scripts ran.

Used by the gallery and notebook-page tests. Chromium is Debian's `chromium` package (`.ci/run` installs
it); where it is absent those tests are skipped, saying so.
"""
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian package `chromium`: "
                             "apt-get install chromium; .ci/run installs it)")


def rendered_dom(page: Path, *, budget_ms: int = 20000) -> str:
    """The DOM of `page` (a local file) once its scripts ran, as Chromium's --dump-dom prints it.

    `budget_ms` is Chromium's virtual time for scripts, timers and loads (MathJax, images) to settle.
    """
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                               "--dump-dom", Path(page).resolve().as_uri()],
                              capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and done.stdout.strip(), f"chromium failed: {done.stderr[-2000:]}"
    return done.stdout
