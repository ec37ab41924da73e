"""report.html: an evaluation run to look at, in one self-contained page (docs/method.md §5).

Per class: the metrics with the paper's figures, the image ROC and PR curves, the pixel ROC and
PRO curves (from the metric code itself, `winclip.metrics`), the score histograms of good and
defective images, and a gallery of the worst false positives and false negatives; above them,
summary.md as HTML. Plots are matplotlib SVGs (no pyplot state), pictures JPEG, all inline as
base64 data URIs; the page has no script and loads nothing, so it opens from disk. The same run
gives the same bytes (no dates, fixed SVG ids).
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

from ...files import atomic_write
from ...inspection.render import colorize
from ...metrics.pixel import PRO_MAX_FPR
from ..results import (
    METRIC_NAMES,
    METRICS,
    PAPER_DATASETS,
    PIXEL_METRICS,
    format_cell,
    paper_table,
    paper_value,
    seed_values,
    summary_markdown,
)
from .collect import GALLERY_SIZE, ClassSection, GalleryItem, ReportData, Setting, collect, setting_name

REPORT_FILE = "report.html"
COLOURS = ("#1c5d99", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#5f3dc4", "#0b7285", "#e67700")
GOOD_COLOUR, DEFECT_COLOUR = "#1c7ed6", "#e03131"
JPEG_QUALITY = 85
HISTOGRAM_BINS = 20
AXES_MARGINS = (0.6, 0.25)  # inches left of the first and right of the last axes (fixed: no layout engine)
SVG_STYLE: dict[RcKeyType, Any] = {"svg.hashsalt": "winclip-report", "svg.fonttype": "none", "font.size": 9}
CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #212529; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ced4da; padding: 0.2em 0.5em; text-align: left; }
th { background: #f1f3f5; }
img.plot { max-width: 100%; height: auto; display: block; }
.notes li { color: #862e1c; }
.random { background: #fff3bf; border: 2px solid #e67700; padding: 0.5em 1em; font-weight: bold; }
section.class { border-top: 3px solid #343a40; margin-top: 2em; }
.gallery { margin-bottom: 1em; }
.gallery .strip { display: flex; flex-wrap: wrap; gap: 0.6em; align-items: flex-start; margin-bottom: 0.4em; }
.gallery .strip p { flex-basis: 100%; margin: 0.2em 0; font-size: 0.85em; }
.gallery img { height: 120px; width: auto; }
.gallery figure { margin: 0; border: 1px solid #dee2e6; padding: 0.3em; font-size: 0.75em; max-width: 380px; }
.gallery figure.mistake { border-color: #e03131; }
.gallery figcaption { word-break: break-all; }
.legend img { height: 14px; width: 240px; vertical-align: middle; }
nav a { margin-right: 0.8em; }
"""


@dataclass(frozen=True)
class Report:
    """A written report: where, the notes it carries (one line each), and how many class sections."""

    path: Path
    notes: tuple[str, ...]
    classes: int


def write_report(
    run_dir: str | Path, out: str | Path | None = None, *, device: str | None = None, gallery: int = GALLERY_SIZE
) -> Report:
    """Write ``<run_dir>/report.html`` (or ``out``) from the finished run in ``run_dir``; nothing is encoded.

    ``device`` scores the maps again (None: the run's own when this machine has it, else the CPU).
    """
    data = collect(run_dir, device=device, gallery=gallery)
    path = Path(out) if out is not None else Path(run_dir) / REPORT_FILE
    page = render_page(data)
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return Report(path, data.notes, len(data.sections))


def render_page(data: ReportData) -> str:
    """The whole page."""
    title = f"WinCLIP report: {data.dataset}"
    parts = [f"<h1>{_esc(title)}</h1>", f"<p>Run folder: <code>{_esc(str(data.run_dir))}</code></p>"]
    if data.record is not None and data.record.random_weights:
        parts.append('<p class="random">RANDOM WEIGHTS (--pretrained none): every figure below is meaningless.</p>')
    if data.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_esc(n)}</li>" for n in data.notes) + "</ul>")
    parts.append(_legend())
    parts.append("<nav>" + "".join(f'<a href="#class-{i}">{_esc(s.name)}</a>' for i, s in enumerate(data.sections)))
    parts.append("</nav>")
    parts.append("<details open><summary>Summary (summary.md)</summary>" + markdown_html(_summary(data)) + "</details>")
    parts += [_section(data, i, section) for i, section in enumerate(data.sections)]
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{_esc(title)}</title>\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<style>{CSS}</style>\n</head>\n'
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _summary(data: ReportData) -> str:
    """summary.md as the run wrote it, or made again from the rows when it is gone."""
    path = data.run_dir / "summary.md"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    record = data.record
    return summary_markdown(data.dataset, data.rows, record.settings if record else (), record.notes if record else ())


def _legend() -> str:
    """How to read the plots and the gallery, with the colour scale."""
    strip = colorize(np.tile(np.linspace(0.0, 1.0, 240), (14, 1)), 0.5)
    shown = "the zero-shot row and, for each K, the row of the first seed"
    return (
        f"<p>Curves, histograms and gallery show {shown}; the tables show mean ± std over all seeds. Image ROC "
        "and PR curves come from scores.npz, pixel ROC and PRO (up to FPR "
        f"{PRO_MAX_FPR:g}) from the run's maps scored again from its feature cache; the legends give the "
        "areas under them, as in results.csv.</p>"
        f'<p class="legend">Heat maps: 0 <img alt="colour scale" src="{_png(Image.fromarray(strip))}"> 1, '
        "anchored at each setting's threshold t (yellow, mid-scale), the row's image F1-max threshold; ground "
        "truth outlined in white.</p>"
    )


def _section(data: ReportData, index: int, section: ClassSection) -> str:
    name = _esc(section.name)
    parts = [f'<section class="class" id="class-{index}" data-class="{name}">', f"<h2>{name}</h2>"]
    parts.append(_metrics_table(data, section.name))
    with matplotlib.rc_context(SVG_STYLE):
        curves, histograms = _svg(_curves_figure(section)), _svg(_histograms(section))
    parts.append(f'<img class="plot curves" alt="{name}: curves" src="{curves}">')
    parts.append(f'<img class="plot histograms" alt="{name}: score histograms" src="{histograms}">')
    parts.append(f"<h3>Worst false positives and false negatives ({name})</h3>")
    for setting in section.settings:
        parts.append(_gallery(setting))
    parts.append("</section>")
    return "\n".join(parts)


def _metrics_table(data: ReportData, cls: str) -> str:
    """Metric × setting for one class, percent, mean ± std over seeds and the paper's figure when it has one."""
    table = paper_table() if data.dataset in PAPER_DATASETS else {}
    classes = list(dict.fromkeys(r.cls for r in data.rows))
    shots = sorted({r.shots for r in data.rows if r.cls == cls})
    head = "".join(f"<th>{k}-shot</th>" for k in shots)
    lines = [f'<table class="metrics"><tr><th>metric</th>{head}</tr>']
    for metric in METRICS:
        values = [seed_values(data.rows, metric, cls, k) for k in shots]
        if not any(values):
            continue
        cells = [
            format_cell(v, paper_value(table, data.dataset, metric, cls, k, classes))
            for v, k in zip(values, shots, strict=True)
        ]
        lines.append(f"<tr><th>{METRIC_NAMES[metric]}</th>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
    return "\n".join([*lines, "</table>"])


def _curves_figure(section: ClassSection) -> Figure:
    """Image ROC, image PR, pixel ROC and PRO (FPR up to PRO_MAX_FPR), one line per setting."""
    fig = Figure(figsize=(13, 3.4))
    axes = fig.subplots(1, 4, gridspec_kw=_margins(13))
    titles = ("image ROC", "image precision-recall", "pixel ROC", f"PRO (FPR ≤ {PRO_MAX_FPR:g})")
    labels = (("FPR", "TPR"), ("recall", "precision"), ("FPR", "TPR"), ("FPR", "per-region overlap"))
    for ax, title, (x, y) in zip(axes, titles, labels, strict=True):
        ax.set(title=title, xlabel=x, ylabel=y, ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[3].set_xlim(0, PRO_MAX_FPR)
    for colour, s in zip(COLOURS * len(section.settings), section.settings, strict=False):
        name, m = setting_name(s.row), s.row.metrics
        axes[0].plot(s.roc.x, s.roc.y, color=colour, label=f"{name}: {_pct(m.get('image_auroc'))}")
        axes[1].plot(s.pr.x, s.pr.y, color=colour, drawstyle="steps-pre", label=f"{name}: {_pct(m.get('image_aupr'))}")
        if s.pixel is not None:
            axes[2].plot(s.pixel.roc.x, s.pixel.roc.y, color=colour, label=f"{name}: {_pct(m.get('pixel_auroc'))}")
            axes[3].plot(s.pixel.pro.x, s.pixel.pro.y, color=colour, label=f"{name}: {_pct(m.get('pixel_pro'))}")
    for ax, metric in zip(axes, ("image_auroc", "image_aupr", "pixel_auroc", "pixel_pro"), strict=True):
        if ax.lines:
            ax.legend(loc="lower right", fontsize=7, title=f"area ({METRIC_NAMES[metric]})", title_fontsize=7)
        else:
            ax.text(0.5, 0.5, _missing_pixels(section), ha="center", va="center", transform=ax.transAxes, wrap=True)
    return fig


def _margins(width: float) -> dict[str, float]:
    """Subplot margins of a figure ``width`` inches wide, room for the axis labels."""
    left, right = AXES_MARGINS
    return {"left": left / width, "right": 1 - right / width, "bottom": 0.17, "top": 0.9, "wspace": 0.3}


def _missing_pixels(section: ClassSection) -> str:
    if not any(m in s.row.metrics for s in section.settings for m in PIXEL_METRICS):
        return "no masks: no pixel metrics"
    return "not scored again:\nsee the notes above"


def _histograms(section: ClassSection) -> Figure:
    """Image scores of good and defective test images per setting, with its threshold."""
    n = len(section.settings)
    width = max(4.0, 3.2 * n)
    fig = Figure(figsize=(width, 2.7))
    axes = fig.subplots(1, n, squeeze=False, gridspec_kw=_margins(width))[0]
    for ax, s in zip(axes, section.settings, strict=True):
        scores, labels = np.array(s.row.scores), np.array(s.row.labels)
        low, high = float(scores.min()), float(scores.max())
        bins = np.linspace(low, high if high > low else low + 1e-3, HISTOGRAM_BINS + 1)
        ax.hist(scores[labels == 0], bins=bins, color=GOOD_COLOUR, alpha=0.6, label=f"good ({np.sum(labels == 0)})")
        ax.hist(scores[labels == 1], bins=bins, color=DEFECT_COLOUR, alpha=0.6, label=f"defective ({np.sum(labels)})")
        ax.axvline(s.threshold, color="black", linestyle="--", linewidth=1, label=f"t = {s.threshold:.4f}")
        ax.set(title=setting_name(s.row), xlabel="image score", ylabel="images")
        ax.legend(fontsize=7, loc="best")
    return fig


def _gallery(setting: Setting) -> str:
    """The setting's worst false positives, then its worst false negatives, each a strip of figures."""
    name = _esc(setting_name(setting.row))
    head = f"<h4>{name}: t = {setting.threshold:.4f}</h4>"
    if not setting.rescored:
        return f'{head}<p class="missing">No gallery: the run was not scored again (see the notes above).</p>'
    strips = [
        f'<div class="strip"><p>{title}</p>{"".join(_item(i, setting.threshold) for i in items)}</div>'
        for title, items in (
            ("Good images with the highest scores (false positives where ≥ t):", setting.false_positives),
            ("Defective images with the lowest scores (false negatives where &lt; t):", setting.false_negatives),
        )
        if items
    ]
    return f'{head}<div class="gallery" data-setting="{name}">{"".join(strips)}</div>'


def _item(item: GalleryItem, threshold: float) -> str:
    """Photo and overlay side by side; captioned with what the threshold makes of it."""
    flagged = item.score >= threshold
    verdict = {
        (0, True): "false positive",
        (0, False): "good, below t",
        (1, False): "false negative",
        (1, True): "defective, above t",
    }[(item.label, flagged)]
    mistake = " mistake" if flagged != bool(item.label) else ""
    kind = "fp" if item.label == 0 else "fn"
    alt = _esc(item.path)
    return (
        f'<figure class="{kind}{mistake}"><img alt="{alt}" src="{_jpeg(item.photo)}"> '
        f'<img alt="{alt}: heat map" src="{_jpeg(item.overlay)}">'
        f"<figcaption>{verdict}, score {item.score:.4f}<br>{alt}</figcaption></figure>"
    )


def markdown_html(text: str) -> str:
    """The Markdown of summary.md as HTML: headings (one level down), bullets, pipe tables, paragraphs."""
    out: list[str] = []
    block: list[str] = []  # lines of the current table or list
    kind = ""

    def close() -> None:
        nonlocal kind
        if kind == "table":
            out.append(_table_html(block))
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(b)}</li>" for b in block) + "</ul>")
        block.clear()
        kind = ""

    for line in text.splitlines():
        now = "table" if line.startswith("|") else "list" if line.startswith("- ") else ""
        if now != kind:
            close()
            kind = now
        if now == "table":
            block.append(line)
        elif now == "list":
            block.append(line[2:])
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 6)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    close()
    return "\n".join(out)


def _table_html(lines: Sequence[str]) -> str:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
    head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
    cells = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{head}</tr>{cells}</table>"


def _inline(text: str) -> str:
    """Escaped text with **bold** and `code`."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", _esc(text))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f}"


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _svg(fig: Figure) -> str:
    """A figure as a deterministic SVG data URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _jpeg(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
