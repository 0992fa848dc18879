"""scripts/screenshots.py, run as a person runs it (into a tmp folder): one PNG per tab, 1440x900, not
blank, each under the size the README's copies are kept at. Keeps docs/screenshots/ reproducible."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
TABS = ("depth", "curate", "train")


def pixel_stats(path: Path) -> tuple[tuple[int, int], float, int]:
    """(size, grey-level standard deviation, distinct colours) of a PNG."""
    img = Image.open(io.BytesIO(path.read_bytes())).convert("RGB")
    rgb = np.asarray(img)
    return img.size, float(rgb.mean(-1).std()), len(np.unique(rgb.reshape(-1, 3), axis=0))


@pytest.mark.slow          # the studio, a pseudo-label job and a training run: about 7 min on a loaded 2-core machine
@pytest.mark.timeout(1800)
def test_the_script_writes_a_1440x900_picture_of_every_tab(tmp_path, vitt_checkpoint):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is not installed (apt-get install chromium)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    out = tmp_path / "shots"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "screenshots.py"), "--out", str(out),
                           "--checkpoint", str(vitt_checkpoint), "--train-steps", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1700)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t}.png" for t in TABS)
    for tab in TABS:
        path = out / f"{tab}.png"
        size, spread, colours = pixel_stats(path)
        assert size == (1440, 900), (tab, size)
        assert spread > 10 and colours > 64, (tab, spread, colours)           # a page, not a blank or flat picture
        assert path.stat().st_size <= 300 * 1024, (tab, path.stat().st_size)
        assert f"{path} (" in done.stdout                                     # the script says what it wrote


def test_the_committed_screenshots_are_1440x900_pictures_the_readme_shows():
    readme = (ROOT / "README.md").read_text()
    for tab in TABS:
        path = ROOT / "docs" / "screenshots" / f"{tab}.png"
        size, spread, colours = pixel_stats(path)
        assert size == (1440, 900) and spread > 10 and colours > 64, (tab, size, spread, colours)
        assert path.stat().st_size <= 300 * 1024, (tab, path.stat().st_size)
        assert f"docs/screenshots/{tab}.png" in readme, tab
