"""What patch and circuit write: curves.csv and the two-panel curves.png (the paper's
Figure 3 style), circuit.json and a circuit.svg that any browser opens offline."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from xml.sax.saxutils import escape

import pandas as pd

from autointerp.causal.curves import CurvePoint

STYLES = {"greedy": "-", "grad": "--", "ig": ":"}


def curves_table(points: list[CurvePoint], warning: str = "") -> pd.DataFrame:
    table = pd.DataFrame([asdict(p) for p in points])
    table["warning"] = warning  # a model that fails the task check is flagged on every row
    return table


def plot_curves(points: list[CurvePoint], path: Path, title: str) -> None:
    """KL to the counterfactual against the number of patched features (left) and against
    the edit magnitude (right), one line per dictionary and selection method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = curves_table(points)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    colours = {d: f"C{i}" for i, d in enumerate(dict.fromkeys(table["dictionary"]))}
    for (dictionary, method), rows in table.groupby(["dictionary", "method"], sort=False):
        if method not in STYLES:
            continue
        rows = rows.sort_values("n_patched")
        for ax, x in zip(axes, ("n_patched", "edit_norm"), strict=True):
            ax.plot(rows[x].clip(lower=0.5), rows["kl"], STYLES[method], color=colours[dictionary],
                    marker=".", label=f"{dictionary} ({method})")
    for ax, xlabel in zip(axes, ("patched features", "mean L2 norm of the edit"), strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("KL(patched || counterfactual)")
        # symlog only when a point reaches 0 (all of a rotation patched): a plain log
        # axis labels its ticks even within one decade
        if table["kl"].min() > 0:
            ax.set_yscale("log")
        else:
            ax.set_yscale("symlog", linthresh=1e-3)
        ax.grid(alpha=0.3)
    # Log on both: a non-orthogonal basis (random directions) can make partial edits
    # hundreds of times larger than the full one, which a linear axis turns into a wall.
    axes[0].set_xscale("log")
    axes[1].set_xscale("log")
    axes[1].legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10, color="red" if "WARNING" in title else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_json(obj: dict, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def circuit_svg(circuit: dict) -> str:
    """Layers bottom (earliest) to top, one box per node, edges labelled with the drop and
    the decoder cosine. Plain SVG: no script, no network."""
    layers = sorted({n["layer"] for n in circuit["nodes"]})
    rows = {layer: [n for n in circuit["nodes"] if n["layer"] == layer] for layer in layers}
    box_w, box_h, gap_x, gap_y = 220, 44, 40, 120
    width = max(len(r) for r in rows.values()) * (box_w + gap_x) + gap_x + 80
    height = len(layers) * (box_h + gap_y) + 60
    where = {}
    for li, layer in enumerate(layers):
        y = height - 40 - box_h - li * (box_h + gap_y)
        for ni, n in enumerate(rows[layer]):
            where[n["id"]] = (80 + gap_x + ni * (box_w + gap_x), y)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<text x="10" y="18" font-size="13">{escape(circuit["title"])}</text>']
    for layer, li in zip(layers, range(len(layers)), strict=True):
        y = height - 40 - box_h - li * (box_h + gap_y) + box_h / 2
        parts.append(f'<text x="10" y="{y}">{escape(rows[layer][0]["hook"])}</text>')
    for e in circuit["edges"]:
        (x1, y1), (x2, y2) = where[e["source"]], where[e["target"]]
        a, b = (x1 + box_w / 2, y1), (x2 + box_w / 2, y2 + box_h)
        parts.append(f'<line x1="{a[0]}" y1="{a[1]}" x2="{b[0]}" y2="{b[1]}" stroke="#555" '
                     f'stroke-width="{1 + 4 * min(1.0, abs(e["exact_drop"]))}"/>')
        parts.append(f'<text x="{(a[0] + b[0]) / 2 + 4}" y="{(a[1] + b[1]) / 2}" fill="#a00">'
                     f'drop {e["exact_drop"]:.0%} cos {e["cosine"]:.2f}</text>')
    for n in circuit["nodes"]:
        x, y = where[n["id"]]
        label = n["label"] if len(n["label"]) <= 34 else n["label"][:33] + "…"
        parts.append(f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" '
                     f'fill="#eef3fb" stroke="#346"/>')
        parts.append(f'<text x="{x + 6}" y="{y + 17}">{escape(n["dictionary"])} #{n["feature"]}</text>')
        parts.append(f'<text x="{x + 6}" y="{y + 34}" fill="#333">{escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
