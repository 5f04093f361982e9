"""The HTML report renders in a real browser: every embedded figure decodes and the page is not blank.

Builds a small results directory from synthetic data (``write_synthetic_dir``), writes the report
with :func:`evaluations.present.report.write_report`, and opens it in headless Chromium twice:

* ``--dump-dom`` on a copy of ``report.html`` with a probe script appended that, on ``load``, writes
  the number of ``<img>`` elements that decoded (``complete`` and ``naturalWidth > 0``) into
  ``document.title``; the test parses the title from the dumped DOM;
* ``--screenshot`` of the page, checked with Pillow for many distinct colours (not a blank page).

Skipped when Chromium is not installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from evaluations.present.report import write_report
from tests.test_evaluations_results import write_synthetic_dir

Image = pytest.importorskip("PIL.Image")

PROBE_MARK = "RBS-IMAGES:"
# On load: count images that decoded, and report the text length, as JSON in the title.
PROBE = f"""
<script>
window.addEventListener("load", function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }});
  var bad = imgs.filter(function (i) {{ return !(i.complete && i.naturalWidth > 0); }});
  document.title = "{PROBE_MARK}" + JSON.stringify({{
    total: imgs.length,
    loaded: ok.length,
    failed: bad.map(function (i) {{ return i.alt; }}),
    widths: ok.map(function (i) {{ return i.naturalWidth; }}),
    text: document.body.innerText.length,
    headings: Array.prototype.map.call(document.querySelectorAll("h2"), function (h) {{
      return [h.textContent, Math.round(h.getBoundingClientRect().top)];
    }}),
    collapsed: document.querySelectorAll("details:not([open])").length
  }});
}});
</script>
"""
CHROMIUM_TIMEOUT_S = 120


def _chromium() -> str:
    for candidate in (
        shutil.which("chromium"),
        "/usr/bin/chromium",
        shutil.which("chromium-browser"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("chromium not installed (apt-get install chromium)")


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *args,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False
    )
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic results directory with its report (figures drawn by write_report)."""
    root = tmp_path_factory.mktemp("results")
    write_synthetic_dir(root)
    _, html = write_report(root)
    return html


def test_every_figure_loads(report: Path, tmp_path: Path) -> None:
    binary = _chromium()
    page = report.read_text(encoding="utf-8")
    expected = len(re.findall(r"<img\b", page))
    assert expected >= 4, "the report should embed the figures"
    probed = tmp_path / "report_probe.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")

    dom = _run_chromium(binary, tmp_path / "profile", "--dump-dom", probed.as_uri()).stdout
    match = re.search(rf"<title>{re.escape(PROBE_MARK)}(.*?)</title>", dom, re.S)
    assert match, f"the probe did not run; title was {re.findall(r'<title>.*?</title>', dom)!r}"
    state = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert state["total"] == expected
    assert state["loaded"] == state["total"] > 0, f"images that did not load: {state['failed']}"
    assert all(w > 100 for w in state["widths"]), state["widths"]
    assert state["text"] > 500, "the page has almost no text"
    # The answer comes first: the headline table is the first section, within the first screen.
    first, top = state["headings"][0]
    assert first == "Sparsity cost in robustness" and top < 600, state["headings"]
    assert "Relative to dense" in [h for h, _ in state["headings"]]
    assert state["collapsed"] >= 1  # the configuration is a collapsed block


def test_page_is_not_blank(report: Path, tmp_path: Path) -> None:
    binary = _chromium()
    shot = tmp_path / "shot.png"
    _run_chromium(
        binary,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        "--hide-scrollbars",
        report.as_uri(),
    )
    assert shot.is_file() and shot.stat().st_size > 10_000
    keep = os.environ.get("RBS_SCREENSHOT_DIR")  # to look at the page yourself
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report_browser.png")
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert rgb.size == (1280, 2000)
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 50, f"only {len(colours)} distinct colours: a blank page?"
        background = max(colours)[0] / (rgb.size[0] * rgb.size[1])
        assert background < 0.97, f"{background:.1%} of the page is one colour"
