"""The HTML report's denoise section: per study, the image-quality table (noise SD, NPS mean
frequency, edge width before and after) and the NPS plot, from the job records; records
written before those measures existed still render."""

from __future__ import annotations

import json
import re

import numpy as np
from scipy import ndimage

from medssl.denoise.physics import quality_report
from medssl.report import denoise_section, write_report


def _job(root, key: str, quality: dict | None):
    job = root / key
    (job / "preview").mkdir(parents=True)
    rec = {"key": key, "noise_hu_before": 30.0, "noise_hu_after": 12.5, "seconds": 4.0}
    if quality is not None:
        rec["quality"] = quality
    (job / "job.json").write_text(json.dumps(rec))
    return job


def _quality() -> dict:
    """A real record's ``quality``: a disc phantom and its Gaussian blur."""
    yy, xx = np.mgrid[:128, :128]
    clean = np.where(np.hypot(yy - 64, xx - 64) < 50, 40.0, -1000.0)
    clean[np.hypot(yy - 64, xx - 50) < 18] = 1000.0
    noise = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=clean.shape), 0.7)
    image = ndimage.gaussian_filter(clean, 1.0) + 30.0 * noise / noise.std()
    return quality_report(image, ndimage.gaussian_filter(image, 1.2), (0.7, 0.7)).to_dict()


def _cells(html: str, row: str) -> list[str]:
    """The cells of the quality table's row that starts with ``row``."""
    match = re.search(rf"<tr><td[^>]*>{re.escape(row)}</td>(.*?)</tr>", html)
    assert match, f"no row {row!r}"
    return re.findall(r"<td>(.*?)</td>", match.group(1))


def test_each_study_shows_its_quality_table_and_nps_plot(tmp_path):
    q = _quality()
    html = denoise_section([_job(tmp_path, "abc123", q)])
    sd = _cells(html, "noise SD in homogeneous tissue (HU)")
    assert sd[:2] == [f"{q['noise_sd_before_hu']:.1f}", f"{q['noise_sd_after_hu']:.1f}"]
    assert sd[2] == f"{-100 * q['noise_sd_reduction']:+.0f} %" and sd[2].startswith("-")
    nps = _cells(html, "NPS mean frequency (cycles/mm)")
    assert nps[0] == f"{q['nps_mean_frequency_before_per_mm']:.3f}"
    assert nps[2] == f"{100 * q['nps_mean_frequency_shift']:+.0f} %"
    edge = _cells(html, "edge width, 10-90 % rise (mm)")
    assert edge == [
        f"{q['edge_width_before_mm']:.2f}",
        f"{q['edge_width_after_mm']:.2f}",
        f"{100 * q['edge_width_growth']:+.0f} %",
    ]
    # the radial NPS of input and output, inline
    assert html.count("<svg") == 1 and html.count("<polyline") == 2
    assert "NPS input" in html and "NPS denoised" in html and "cycles/mm" in html
    path = write_report(tmp_path / "r.html", "t", [html])
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", path.read_text())


def test_records_written_before_the_quality_measures_still_render(tmp_path):
    old = _job(tmp_path, "old0", None)
    q = _quality()
    q["edge_width_before_mm"] = q["edge_width_after_mm"] = q["edge_width_growth"] = None
    new = _job(tmp_path, "new1", q)
    html = denoise_section([old, new])
    assert "old0" in html and "12.5" in html  # the old record's noise line and summary row
    assert html.count('class="quality"') == 1 and html.count("<svg") == 1
    assert _cells(html, "edge width, 10-90 % rise (mm)") == ["&ndash;"] * 3
    summary = re.search(r"<tr><td>old0</td>(.*?)</tr>", html).group(1)
    assert summary.count("&ndash;") == 3  # SD, NPS and edge changes not measured then
