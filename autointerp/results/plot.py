"""scores.png: mean score per method with 95% CI error bars, grouped by hook point
(layer) as in Cunningham et al. 2023, Figure 2, with the simulator self-test
verdict drawn on the figure so the plot cannot travel without it."""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")  # headless: the CLI and the tests never open a window

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.text import Text  # noqa: E402

WARNING_FACE, PASS_FACE, NOTE_FACE = "#ffd6d6", "#e3f2e3", "#eeeeee"
EDGES = {WARNING_FACE: "#b00000", PASS_FACE: "#2e7d32", NOTE_FACE: "#888888"}


def _base_method(label: str) -> str:
    """'pca (lexical)' and 'pca' share a colour, so a reference sits visibly beside its method."""
    return label.split(" (")[0]


def _ordered(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(hook, rows) groups in layer order; in each, a method's lexical reference right
    after its LLM row, methods in the table's order."""
    rank = {m: i for i, m in enumerate(dict.fromkeys(table.method.map(_base_method)))}
    groups = []
    for hook, rows in table.groupby("hook", sort=False, dropna=False):
        key = rows.method.map(lambda m: rank[_base_method(m)]) * 2 + rows.reference.astype(int)
        groups.append((str(hook), rows.iloc[key.argsort(kind="stable")]))
    return sorted(groups, key=lambda g: (g[1].layer.min(), g[0]))


def _tick_label(row, scorer_in_title: bool) -> str:
    label = "lexical" if row.reference and _base_method(row.method) != row.method else row.method
    if not scorer_in_title and not row.reference:
        label += f" ({row.explainer} / {row.simulator})"
    return f"{textwrap.fill(label, 14)}\nn={row.n_scored}"


def _draw_verdicts(fig: Figure, verdicts: list[str], plot_h: float) -> list[Text]:
    """One boxed text per verdict stacked above the plot (red: a failed self-test, green:
    a pass, grey: a note).
    The figure grows by the measured height of the boxes, so nothing overlaps."""
    renderer = fig.canvas.get_renderer()
    width = int(fig.get_figwidth() * 12.5)  # characters per line at 9 pt
    artists = []
    for line in verdicts:
        face = (WARNING_FACE if line.startswith("WARNING") else
                PASS_FACE if line.startswith("Self-test passed") else NOTE_FACE)
        artists.append(fig.text(
            0.02, 0.0, textwrap.fill(line, width=width), va="top", ha="left", fontsize=9,
            fontweight="bold" if face == WARNING_FACE else "normal",
            bbox={"boxstyle": "round", "facecolor": face, "edgecolor": EDGES[face]}))
    heights = [a.get_window_extent(renderer).height / fig.dpi + 0.2 for a in artists]
    total = plot_h + sum(heights) + 0.15
    fig.set_figheight(total)
    y = 1.0 - 0.15 / total
    for artist, h in zip(artists, heights, strict=True):
        artist.set_y(y)
        y -= h / total
    fig.subplots_adjust(top=(plot_h - 0.7) / total, bottom=0.8 / total)
    return artists


YLABELS = {"simulation": "score: corr(simulated, true activation)",
           "detection": "detection: balanced accuracy (chance 0.5)",
           "fuzzing": "fuzzing: balanced accuracy (chance 0.5)"}


def plot_scores(table: pd.DataFrame, verdicts: list[str]) -> tuple[Figure, list[Text]]:
    """The figure, one panel per scorer, and the self-test text artists drawn on it
    (returned so callers and tests can check the warning is really there)."""
    scorers = list(dict.fromkeys(table.scorer)) if "scorer" in table else ["simulation"]
    plot_h = 4.8
    widths = [max(7.0, 0.9 * int((table.get("scorer", "simulation") == s).sum()) + 1.5)
              for s in scorers]
    fig, axes = plt.subplots(1, len(scorers), figsize=(sum(widths), plot_h), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    artists = _draw_verdicts(fig, verdicts, plot_h)
    for i, (ax, scorer) in enumerate(zip(axes[0], scorers, strict=True)):
        rows = table[table.scorer == scorer] if "scorer" in table else table
        _panel(ax, rows, scorer, len(scorers) > 1, legend=i == len(scorers) - 1)
    return fig, artists


def _panel(ax, table: pd.DataFrame, scorer: str, several: bool, legend: bool) -> None:
    groups = _ordered(table)
    llm = table[~table.reference]
    scorers = set(zip(llm.explainer, llm.simulator, strict=True))
    scorer_in_title = len(scorers) == 1
    colours = {m: plt.cm.tab10(i % 10) for i, m in
               enumerate(dict.fromkeys(_base_method(m) for m in table.method))}
    x, ticks, labels = 0.0, [], []
    for hook, rows in groups:
        start = x
        for row in rows.itertuples(index=False):
            _bar(ax, x, row, colours[_base_method(row.method)])
            ticks.append(x)
            labels.append(_tick_label(row, scorer_in_title))
            x += 1.0
        if len(groups) > 1:
            ax.text((start + x - 1) / 2, 1.01, hook, ha="center", va="bottom", fontsize=10,
                    fontweight="bold", transform=ax.get_xaxis_transform())
            ax.axvline(x - 0.25, color="#999999", lw=0.8, ls=":")
        x += 0.5
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_xlim(-0.75, x - 0.75)
    ax.set_ylabel(YLABELS.get(scorer, scorer))
    if scorer != "simulation":
        ax.axhline(0.5, color="#b00000", lw=0.8, ls="--")  # chance
    title = (f"{scorer}: mean score per method, 95% bootstrap CI" if several else
             "Mean interpretability score per method, 95% bootstrap CI")
    if scorer_in_title:
        explainer, simulator = next(iter(scorers))
        line = f"explainer {explainer}, simulator {simulator}"
        # Panels side by side: wrapped, so one panel's title never runs into the next.
        title += "\n" + (textwrap.fill(line, 60) if several else line)
    ax.set_title(title, fontsize=10 if several else 11, pad=18 if len(groups) > 1 else 6)
    if legend and table.reference.any():  # once, right of the last panel
        ax.legend(handles=[Patch(facecolor="#dddddd", edgecolor="black", label="LLM explanation"),
                           Patch(facecolor="white", edgecolor="black", hatch="///",
                                 label="lexical reference (token identity only)")],
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.12)  # room for the value labels above the error bars


def save_scores(table: pd.DataFrame, verdicts: list[str], path) -> None:
    fig, _ = plot_scores(table, verdicts)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)  # the CLI and demo make one figure per call; do not keep them alive


def _bar(ax, x: float, row, colour) -> None:
    mean = 0.0 if math.isnan(row.score_mean) else row.score_mean
    if row.reference:  # hatched and hollow: a reference line, not a contender
        ax.bar(x, mean, width=0.7, facecolor="white", edgecolor=colour, hatch="///", lw=1.5)
    else:
        ax.bar(x, mean, width=0.7, color=colour)
    if not math.isnan(row.score_lo):
        ax.errorbar(x, mean, yerr=[[mean - row.score_lo], [row.score_hi - mean]],
                    fmt="none", ecolor="black", capsize=4, lw=1.2)
    top = mean if math.isnan(row.score_hi) else max(mean, row.score_hi)
    text = "n/a" if math.isnan(row.score_mean) else f"{row.score_mean:.2f}"
    ax.annotate(text, (x, top if mean >= 0 else min(mean, row.score_lo if not
                math.isnan(row.score_lo) else mean)), xytext=(0, 3 if mean >= 0 else -11),
                textcoords="offset points", ha="center", fontsize=8)
