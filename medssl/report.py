"""Self-contained HTML run reports (no network at view time: images are inlined as data URIs,
curves as inline SVG, styles inline).

Studies are labelled by the hash keys of their outputs (see :mod:`medssl.denoise.batch`), never
by patient data; only values that medssl computed (noise estimates, losses, Dice) appear.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medssl import __version__
from medssl.denoise.record import JobRecord
from medssl.io.atomic import atomic_file
from medssl.transforms.windows import SOFT_TISSUE

__all__ = ["denoise_section", "finetune_section", "pretrain_section", "write_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em}
.study{margin:1em 0 2em}.row{display:flex;gap:12px;flex-wrap:wrap}
figure{margin:0;text-align:center}figure img{width:300px;image-rendering:pixelated;
border:1px solid #999;background:#000}figcaption{font-size:.85em;color:#555}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.25em .6em;
text-align:right}th{background:#f0f0f0}.meta{color:#666;font-size:.85em}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _num(value: Any, fmt: str) -> str:
    """A number from a record, formatted; a dash where there is none (older records)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return "&ndash;"
    return format(value, fmt)


def _change(value: Any) -> str:
    """A relative change as a signed percentage."""
    return "&ndash;" if _num(value, "g") == "&ndash;" else f"{100 * value:+.0f} %"


def _sd_change(q: dict[str, Any]) -> str:
    """The noise SD's change (the record holds its reduction)."""
    reduction = q.get("noise_sd_reduction")
    return _change(-reduction if _num(reduction, "g") != "&ndash;" else None)


def _quality_table(q: dict[str, Any]) -> str:
    """Noise SD, NPS mean frequency and edge width before and after (``quality`` of a job
    record, see :func:`medssl.denoise.physics.quality_report`)."""
    rows = (
        (
            "noise SD in homogeneous tissue (HU)",
            _num(q.get("noise_sd_before_hu"), ".1f"),
            _num(q.get("noise_sd_after_hu"), ".1f"),
            _sd_change(q),
        ),
        (
            "NPS mean frequency (cycles/mm)",
            _num(q.get("nps_mean_frequency_before_per_mm"), ".3f"),
            _num(q.get("nps_mean_frequency_after_per_mm"), ".3f"),
            _change(q.get("nps_mean_frequency_shift")),
        ),
        (
            "edge width, 10-90 % rise (mm)",
            _num(q.get("edge_width_before_mm"), ".2f"),
            _num(q.get("edge_width_after_mm"), ".2f"),
            _change(q.get("edge_width_growth")),
        ),
    )
    body = "".join(
        f'<tr><td style="text-align:left">{name}</td><td>{b}</td><td>{a}</td><td>{c}</td></tr>'
        for name, b, a, c in rows
    )
    return (
        '<table class="quality"><tr><th></th><th>input</th><th>denoised</th><th>change</th></tr>'
        f"{body}</table>"
        f'<p class="meta">measured at the same {_num(q.get("noise_patches"), ".0f")} '
        f"homogeneous patches and {_num(q.get('edge_sites'), '.0f')} edges in both, chosen on "
        "the input</p>"
    )


def _nps_plot(q: dict[str, Any]) -> str:
    """The radial NPS of input and output (``quality["nps_radial"]``) as inline SVG."""
    nps = q.get("nps_radial") or {}
    freq = nps.get("frequency_per_mm") or []
    series = {
        label: [
            (float(f), float(v))
            for f, v in zip(freq, nps.get(key) or [], strict=False)
            if "&ndash;" not in (_num(f, "g"), _num(v, "g"))
        ]
        for label, key in (("NPS input", "before_hu2_mm2"), ("NPS denoised", "after_hu2_mm2"))
    }
    if not any(series.values()):
        return ""
    return (
        f"<figure>{_svg_curve(series, width=420, height=220, xlabel='cycles/mm')}"
        "<figcaption>noise power spectrum, radial (HU&sup2; mm&sup2;)</figcaption></figure>"
    )


def denoise_section(job_dirs: Sequence[Path]) -> str:
    """Per study: noisy, denoised and range-sigma previews side by side, noise before/after,
    and where the record has them (records written before it do not) the image-quality
    measures: noise SD, NPS mean frequency and edge width before and after, and the NPS.

    Args:
        job_dirs: Output folders of :func:`medssl.denoise.batch.run_batch`: their
            :class:`~medssl.denoise.record.JobRecord` (any version) and the previews it names.
    """
    parts = ["<h2>Denoising (Filter2Noise)</h2>"]
    rows = []
    for job in job_dirs:
        rec = JobRecord.read(job)
        quality = rec.quality or {}
        figures = "".join(
            f"<figure>{_img(path)}<figcaption>{caption}</figcaption></figure>"
            for name, caption in (
                ("noisy", f"input (middle slice, {SOFT_TISSUE.label()})"),
                ("denoised", "denoised"),
                ("sigma_r", "range sigma (NLM: h) map, last stage"),
            )
            if (path := rec.preview(job, name)) is not None
        )
        measures = (
            f'<div class="row"><div>{_quality_table(quality)}</div>{_nps_plot(quality)}</div>'
            if quality
            else ""
        )
        key = html.escape(rec.key)
        before, after = _num(rec.noise_hu_before, ".1f"), _num(rec.noise_hu_after, ".1f")
        parts.append(
            f'<div class="study"><h3>study {key}</h3>'
            f'<div class="row">{figures}</div>'
            f"<p>noise estimate {before} HU &rarr; {after} HU; "
            f"{_num(rec.seconds, '.0f')} s</p>{measures}</div>"
        )
        rows.append(
            f"<tr><td>{key}</td><td>{before}</td><td>{after}</td>"
            f"<td>{_sd_change(quality)}</td>"
            f"<td>{_change(quality.get('nps_mean_frequency_shift'))}</td>"
            f"<td>{_change(quality.get('edge_width_growth'))}</td>"
            f"<td>{_num(rec.seconds, '.0f')}</td></tr>"
        )
    table = (
        "<table><tr><th>study</th><th>noise before (HU)</th><th>noise after (HU)</th>"
        "<th>noise SD change</th><th>NPS mean frequency change</th><th>edge width change</th>"
        f"<th>seconds</th></tr>{''.join(rows)}</table>"
    )
    return parts[0] + table + "".join(parts[1:])


def _svg_curve(
    series: dict[str, list[tuple[float, float]]],
    width: int = 640,
    height: int = 260,
    xlabel: str = "step",
) -> str:
    points = [p for pts in series.values() for p in pts]
    if not points:
        return "<p>no values logged</p>"
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points) or 1
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    y1 = y1 if y1 > y0 else y0 + 1
    pad = 40
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]

    def xy(x: float, y: float) -> str:
        px = pad + (x - x0) / max(x1 - x0, 1e-9) * (width - 2 * pad)
        py = height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)
        return f"{px:.1f},{py:.1f}"

    lines = []
    for i, (name, pts) in enumerate(series.items()):
        colour = colours[i % len(colours)]
        path = " ".join(xy(x, y) for x, y in pts)
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>'
        )
        lines.append(
            f'<text x="{width - pad - 120}" y="{pad + 14 * i}" fill="{colour}" '
            f'font-size="12">{html.escape(name)}</text>'
        )
    axes = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="#444"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#444"/>'
        f'<text x="{pad}" y="{height - 12}" font-size="11">{xlabel} {x0:g}</text>'
        f'<text x="{width - pad - 80}" y="{height - 12}" font-size="11">{xlabel} {x1:g}</text>'
        f'<text x="4" y="{pad}" font-size="11">{y1:.3g}</text>'
        f'<text x="4" y="{height - pad}" font-size="11">{y0:.3g}</text>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        f"{axes}{''.join(lines)}</svg>"
    )


def pretrain_section(run_dir: Path) -> str:
    """Loss curves (training and, when logged, validation) of a ``medssl pretrain`` run."""
    rows = []
    for metrics in sorted(Path(run_dir).rglob("metrics.jsonl")):
        rows += [json.loads(line) for line in metrics.open() if line.strip()]
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key.endswith("loss") and isinstance(value, int | float) and "step" in row:
                series.setdefault(key, []).append((float(row["step"]), float(value)))
    for pts in series.values():
        pts.sort()
    return f"<h2>Pretraining</h2>{_svg_curve(series)}"


def finetune_section(
    dice: dict[str, Any], title: str = "Fine-tuning (nnU-Net v2): Dice per label"
) -> str:
    """A Dice table (``dice.json`` of ``medssl finetune``): per case and mean, per label."""
    out = [f"<h2>{html.escape(title)}</h2>"]
    for part, block in dice.items():
        names = list(block["mean"])
        head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
        body = []
        for case, scores in block["cases"].items():
            cells = "".join(f"<td>{scores.get(n, float('nan')):.4f}</td>" for n in names[:-1])
            body.append(f"<tr><td>{html.escape(case)}</td>{cells}<td></td></tr>")
        mean = "".join(f"<td><b>{block['mean'][n]:.4f}</b></td>" for n in names)
        out.append(
            f"<h3>{html.escape(part)}</h3><table><tr><th>case</th>{head}</tr>"
            f"{''.join(body)}<tr><td><b>mean</b></td>{mean}</tr></table>"
        )
    return "".join(out)


def write_report(
    path: str | Path, title: str, sections: Sequence[str], *, credits: Sequence[str] = ()
) -> Path:
    """Write one self-contained HTML file (atomically); ``credits`` name the sample data."""
    stamp = time.strftime("%Y-%m-%d %H:%M")
    doc = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f'<p class="meta">medssl {__version__}, {stamp}. Studies are named by hashes of their '
        "series UIDs; no patient data is shown.</p>"
        f"{''.join(sections)}"
        + "".join(f'<p class="meta">Data: {html.escape(c)}</p>' for c in credits)
        + "</body></html>\n"
    )
    with atomic_file(path) as tmp:
        tmp.write_text(doc)
    return Path(path)
