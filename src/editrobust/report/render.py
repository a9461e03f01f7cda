"""Writing a matplotlib figure as PNG and PDF (and its numbers as CSV), all or nothing."""

from __future__ import annotations

import io

import pandas as pd
from matplotlib.figure import Figure

from editrobust.io import atomic_path, write_csv


def figure_bytes(fig: Figure, fmt: str, dpi: int) -> bytes:
    buf = io.BytesIO()
    # No creation date / software stamp: the same inputs give the same files.
    metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
    return buf.getvalue()


def write_figure(fig: Figure, data: pd.DataFrame, png, pdf, csv, dpi: int = 150) -> None:
    """Render both formats first, so a rendering error leaves none of the three files written."""
    rendered = {png: figure_bytes(fig, "png", dpi), pdf: figure_bytes(fig, "pdf", dpi)}
    for path, content in rendered.items():
        with atomic_path(path) as tmp:
            tmp.write_bytes(content)
    write_csv(csv, data)
