"""A one-page A4 referral sheet (PDF) for one screening, with the lesion's earlier screenings.

Made with fpdf2 and its built-in core fonts (Helvetica: nothing is downloaded or embedded
from disk), so it works offline on the Pi. The sheet shows the analysed image (the screen
rendition), the decision in words, the probability against the threshold in force at the
time (verdicts only: a no-verdict record shows its reason and no probability, as on every
screen), date, operator, lesion reference, model version and sha256, preprocessing version,
the disclaimer, and the lesion's earlier screenings.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from .decisions import LABELS, NO_VERDICT_REASONS, is_verdict
from .quality import FLAG_MESSAGES
from .store import ScreeningRecord

DISCLAIMER = ("This result comes from an automated model on a screening device; "
              "a clinician decides on referral and treatment. The probability is the model's output, compared "
              "with the decision threshold that was in force when the image was screened.")
MAX_EARLIER = 14  # rows that fit below the result on one page; older ones are counted
THRESHOLD_SOURCE_TEXT = {"model": "model default", "site": "site-calibrated"}


def _text(value: object) -> str:
    """Core PDF fonts speak Latin-1: other characters (free-text references, arrows) become '?'."""
    return str(value).replace("\u2192", "->").replace("\u2013", "-").encode("latin-1", "replace").decode("latin-1")


def _when(iso_utc: str) -> str:
    return datetime.fromisoformat(iso_utc).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def decision_words(record: ScreeningRecord) -> str:
    """The decision in words, with the malignant probability only for a verdict (one table cell)."""
    label = LABELS.get(record.decision, record.decision)
    if not is_verdict(record.decision):
        return label
    return f"{label}, {record.malignant_probability * 100:.1f}%"


def no_verdict_reason(record: ScreeningRecord) -> str:
    if record.decision in NO_VERDICT_REASONS:
        return NO_VERDICT_REASONS[record.decision]
    return " ".join(FLAG_MESSAGES.get(f, f) for f in record.quality_flags) or "The image did not support a verdict."


def sheet(record: ScreeningRecord, image: Path | None, earlier: Sequence[ScreeningRecord], *,
          device: str = "DermaEdge") -> bytes:
    """The PDF bytes. `image`: the screen rendition (JPEG) to print, None when it cannot be read;
    `earlier`: the same lesion's screenings before this one, newest first."""
    from fpdf import FPDF  # imported when a sheet is made: the screening path never needs it

    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_title(_text(f"Referral sheet {record.id}"))
    pdf.set_creator(device)
    pdf.add_page()
    pdf.set_margins(15, 15, 15)
    pdf.set_font("Helvetica", "B", 17)
    pdf.cell(0, 9, "Skin lesion screening: referral sheet", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    pdf.cell(0, 5, _text(f"{device} - printed {datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}"),
             new_x="LMARGIN", new_y="NEXT")
    top = pdf.get_y() + 4

    # The analysed image, left; the facts, right.
    img_w, img_h = 80.0, 60.0
    if image is not None and image.is_file():
        pdf.image(str(image), x=15, y=top, w=img_w, h=img_h, keep_aspect_ratio=True)
    else:
        pdf.rect(15, top, img_w, img_h)
        pdf.set_xy(15, top + img_h / 2 - 3)
        pdf.cell(img_w, 6, "image not available", align="C")
    x = 15 + img_w + 6
    pdf.set_xy(x, top)
    verdict = is_verdict(record.decision)
    pdf.set_font("Helvetica", "B", 15)
    pdf.set_text_color(170, 20, 20) if record.decision == "malignant" else pdf.set_text_color(0, 0, 0)
    pdf.multi_cell(0, 7, _text(LABELS.get(record.decision, record.decision)), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    pdf.set_font("Helvetica", "", 10)
    lines = []
    if verdict:
        lines.append(f"Malignant probability {record.malignant_probability * 100:.1f}% against the threshold "
                     f"{record.threshold * 100:.1f}% in force "
                     f"({THRESHOLD_SOURCE_TEXT.get(record.threshold_source, record.threshold_source)})")
    else:
        lines.append("No verdict: " + no_verdict_reason(record))
    for line in lines:
        pdf.set_x(x)
        pdf.multi_cell(0, 5, _text(line), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    facts = [
        ("Date", _when(record.timestamp)),
        ("Operator", record.operator or "-"),
        ("Lesion reference", record.lesion_ref or "-"),
        ("Model", f"{record.model_version}"),
        ("Preprocessing", f"version {record.preprocessing_version}"),
        ("Record id", record.id),
    ]
    for name, value in facts:
        pdf.set_x(x)
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(30, 5, _text(name))
        pdf.set_font("Courier" if name == "Record id" else "Helvetica", "", 9)
        pdf.multi_cell(0, 5, _text(value), new_x="LMARGIN", new_y="NEXT")

    pdf.set_y(max(pdf.get_y(), top + img_h) + 3)
    pdf.set_font("Helvetica", "B", 9)
    pdf.cell(30, 5, "Model sha256")
    pdf.set_font("Courier", "", 8)
    pdf.cell(0, 5, record.model_sha256, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 7, "Earlier screenings of this lesion", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    if not earlier:
        pdf.cell(0, 5, "None: this is the first screening of this lesion." if record.lesion_ref
                 else "None: no lesion reference was given.", new_x="LMARGIN", new_y="NEXT")
    else:
        widths = (38, 70, 72)
        pdf.set_font("Helvetica", "B", 9)
        for w, head in zip(widths, ("Date", "Decision, malignant probability", "Record id"), strict=True):
            pdf.cell(w, 6, head, border="B")
        pdf.ln()
        pdf.set_font("Helvetica", "", 9)
        for r in earlier[:MAX_EARLIER]:
            pdf.cell(widths[0], 6, _text(_when(r.timestamp)))
            pdf.cell(widths[1], 6, _text(decision_words(r)))
            pdf.set_font("Courier", "", 8)
            pdf.cell(widths[2], 6, _text(r.id))
            pdf.set_font("Helvetica", "", 9)
            pdf.ln()
        if len(earlier) > MAX_EARLIER:
            pdf.cell(0, 6, f"... and {len(earlier) - MAX_EARLIER} older screenings (see the device's follow-up page).",
                     new_x="LMARGIN", new_y="NEXT")

    pdf.set_y(-40)
    pdf.set_draw_color(120, 120, 120)
    pdf.line(15, pdf.get_y(), 195, pdf.get_y())
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(0, 5, "Screening aid, not a diagnosis.", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 8)
    pdf.multi_cell(0, 4, _text(DISCLAIMER), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
