"""Matplotlib canvases embedded in Qt (the drawing code is shared with the reports)."""
from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

from emclassify.cv_report import draw_confusion, draw_curves


class Canvas(FigureCanvasQTAgg):
    def __init__(self, width: float = 5, height: float = 3):
        super().__init__(Figure(figsize=(width, height), layout="tight"))

    def clear(self) -> None:
        self.figure.clear()
        self.draw_idle()


class CompositionChart(Canvas):
    """Per-class raw percentages (bars) and adjusted percentages with 95 % intervals (points)."""

    def show_summary(self, summary: dict, unit: str = "files") -> None:
        """unit: what was classified ("files", or "particles" in a micrograph run)."""
        fig = self.figure
        fig.clear()
        ax = fig.add_subplot(1, 1, 1)
        classes = list(summary["counts"])
        x = np.arange(len(classes))
        raw = [summary["percentages"][c] for c in classes]
        ax.bar(x, raw, color="#8fb3d9", label="raw %")
        adj = summary.get("adjusted", {}).get("classes")
        if adj and all(adj[c]["percent"] is not None for c in classes):
            est = np.array([adj[c]["percent"] for c in classes])
            lo = np.array([adj[c]["ci95"][0] for c in classes])
            hi = np.array([adj[c]["ci95"][1] for c in classes])
            ax.errorbar(x, est, yerr=[est - lo, hi - est], fmt="o", color="#c0392b", capsize=4,
                        label="adjusted % (95 % interval)")
        ax.set_xticks(x, classes, rotation=20, ha="right")
        ax.set_ylabel(f"% of classified {unit}")
        ax.set_ylim(0, 118)  # head room above 100 % so the legend never covers a bar
        ax.set_yticks(range(0, 101, 20))
        ax.legend(fontsize=8, loc="upper center", ncols=2, frameon=False)
        ax.grid(axis="y", alpha=0.3)
        self.draw_idle()


class CurvesChart(Canvas):
    def show_history(self, history, best_epoch: int = 0) -> None:
        self.figure.clear()
        draw_curves(self.figure, [history], [best_epoch])
        self.draw_idle()


class ConfusionChart(Canvas):
    def show_matrix(self, cm, classes, title: str = "") -> None:
        self.figure.clear()
        draw_confusion(self.figure, cm, classes, title)
        self.draw_idle()
