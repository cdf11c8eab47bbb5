"""The report in a real browser: headless Chromium loads it with no console error, draws the
charts, shows hostile file names as text, and a control page proves errors are caught."""

from __future__ import annotations

import io

import pytest

from codeintegrity.htmlreport import write_report
from tests.htmlreport.browser import BrowserUnavailable, Chromium, file_url

INVALID_RED = (0xC6, 0x28, 0x28)  # the "invalid" bar of the verdict chart


@pytest.fixture(scope="module")
def browser():
    try:
        chromium = Chromium()
    except BrowserUnavailable as exc:
        print(f"skipping browser tests: {exc}")
        pytest.skip(str(exc))
    with chromium:
        yield chromium


def _pixels(png: bytes):
    import numpy as np  # numpy and Pillow come with matplotlib (the report extra)
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    return image, np.asarray(image, dtype=np.int32).reshape(-1, 3)


def test_the_report_renders_in_chromium(browser, verified_run, tmp_path):
    out = tmp_path / "report.html"
    write_report(verified_run.store, out)
    page = browser.load(file_url(out), width=1280, height=1000)
    assert page.errors == []
    assert page.title.startswith("Code Integrity report")
    # The hostile path is on the page as text (the browser decoded the escapes, ran nothing).
    assert verified_run.hostile_path in page.text
    assert "Failing files" in page.text and "Throwaway Test Publisher" in page.text
    image, pixels = _pixels(page.screenshot)
    assert image.size == (1280, 1000)
    # Not blank: many colours, a real spread of brightness, and the chart's red bar drawn.
    assert len({tuple(p) for p in pixels[::7].tolist()}) > 50
    variance = float(pixels.mean(axis=1).var())
    assert variance > 100, variance
    red = (abs(pixels - INVALID_RED) <= 12).all(axis=1).sum()
    assert red > 500, red


def test_results_report_renders_too(browser, verified_run, tmp_path):
    out = tmp_path / "results.html"
    write_report(verified_run.results, out)
    page = browser.load(file_url(out))
    assert page.errors == []
    assert f"{len(verified_run.reports)}\nFILES" in page.text.upper()


def test_the_report_prints(browser, verified_run, tmp_path):
    import re

    out = tmp_path / "report.html"
    write_report(verified_run.store, out)
    pdf = browser.print_pdf(file_url(out))
    assert pdf.startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
    assert 1 <= pages <= 10, pages


def test_the_error_check_catches_errors_and_blocked_scripts(browser, verified_run, tmp_path):
    """Controls: the same report with an injected script. Without the page's policy the script
    runs and its console error is caught; with the policy it is blocked, and the block itself is
    reported. Either way a report that let markup through would fail the test above."""
    out = tmp_path / "report.html"
    write_report(verified_run.store, out)
    text = out.read_text(encoding="utf-8")
    injected = '<script>console.error("injected-ran")</script></body>'
    with_policy = tmp_path / "with-policy.html"
    with_policy.write_text(text.replace("</body>", injected), encoding="utf-8")
    page = browser.load(file_url(with_policy))
    assert page.errors and not any("injected-ran" in e for e in page.errors)
    assert any("Content Security Policy" in e for e in page.errors), page.errors
    without = tmp_path / "without-policy.html"
    start = text.index('<meta http-equiv="Content-Security-Policy"')
    end = text.index(">", start) + 1
    without.write_text((text[:start] + text[end:]).replace("</body>", injected), encoding="utf-8")
    page = browser.load(file_url(without))
    assert any("injected-ran" in e for e in page.errors), page.errors
