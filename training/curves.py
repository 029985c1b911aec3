"""learning_curves.png beside history.csv: the losses and the monitored metric per epoch, training and validation."""

import io
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no global figure state, and the Agg canvas without a display
from matplotlib.ticker import MaxNLocator

from kerasline.files import write_bytes_atomic

PANEL_INCHES = (5.0, 3.5)
MARGIN_INCHES = (0.6, 0.15)  # left (tick labels), right: fixed margins cost nothing, a layout engine ~0.2 s a plot


def plot_learning_curves(path: Path, history: list[dict], monitor: str | None) -> None:
    """One panel of every loss (a GAN has two), one of the monitored metric unless it is a loss; a validation
    curve is dashed, in its training curve's colour. Written atomically: a reader never sees half a PNG."""
    names = list(dict.fromkeys(name for row in history for name in row if name != "epoch"))
    panels = _panels(names, monitor)
    if not panels:
        return
    width = PANEL_INCHES[0] * len(panels)
    figure = Figure(figsize=(width, PANEL_INCHES[1]))
    figure.subplots_adjust(left=MARGIN_INCHES[0] / width, right=1 - MARGIN_INCHES[1] / width, bottom=0.14, top=0.96)
    bases = list(dict.fromkeys(name.removeprefix("val_") for name in names))
    epochs = [row["epoch"] + 1 for row in history]
    for axes, panel in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        for name in panel:
            values = [row.get(name, float("nan")) for row in history]
            colour = f"C{bases.index(name.removeprefix('val_')) % 10}"
            style = "--" if name.startswith("val_") else "-"
            axes.plot(epochs, values, style, color=colour, marker="o", markersize=3, label=name)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100)
    write_bytes_atomic(path, out.getvalue())


def _panels(names: list[str], monitor: str | None) -> list[list[str]]:
    losses = [name for name in names if name.endswith("loss")]
    panels = [losses] if losses else []
    if monitor in names and monitor not in losses:
        panels.append([name for name in (monitor.removeprefix("val_"), monitor) if name in names])
    return panels
