#!/usr/bin/env python3
"""Draws kvstream inspect's figures from its dump.

Usage: plot_inspect.py DIR/inspect.json   (kvstream inspect calls it)
Reads inspect.json (shape, raw float32 attention files, token pieces) and sinks.json beside it, and
writes beside them:
  attention_layer<L>.png  one subplot per head: attention of each query (row) on each key
                          (column), log colour scale; triangles under the key axis mark the sinks
                          of that head (red: initial, first --sinks positions; blue: hidden)
  sinks_overview.png      per (layer, head) row: mean attention each key received, as a multiple
                          of the uniform share, with the reported sinks marked
Needs matplotlib and numpy (Debian's python3-matplotlib depends on python3-numpy); exits with
status 3 when they cannot be imported, so kvstream can warn instead of failing.
"""
import json
import math
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D
except ImportError as e:
    print(f"plot_inspect.py: {e}", file=sys.stderr)
    sys.exit(3)

INITIAL_COLOR = "red"
HIDDEN_COLOR = "deepskyblue"
# Attention below this is drawn as the darkest colour: a query spreading evenly over 1000 keys
# gives each 1e-3, so 1e-4 keeps every visible structure while hiding numerical dust.
VMIN = 1e-4


def short(piece, width=8):
    text = piece.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def load(meta_path):
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    folder = os.path.dirname(os.path.abspath(meta_path))
    with open(os.path.join(folder, "sinks.json"), encoding="utf-8") as f:
        sinks = json.load(f)
    return meta, sinks, folder


def head_sinks(sinks):
    """{(layer, head): (initial positions, hidden positions)}"""
    return {(h["layer"], h["head"]): (h["initial"], h["hidden"]) for h in sinks["per_head"]}


def mark_sinks(ax, initial, hidden, size=7):
    # Just above the image, pointing down at the key's column: outside the image so they never hide
    # attention, and clear of the tick labels under it.
    trans = ax.get_xaxis_transform()  # x in data, y in axes coordinates
    for xs, color in ((initial, INITIAL_COLOR), (hidden, HIDDEN_COLOR)):
        if xs:
            ax.plot(xs, [1.025] * len(xs), "v", color=color, markersize=size, transform=trans, clip_on=False,
                    markeredgecolor="black", markeredgewidth=0.5)


def legend_handles(marker="v", hidden_color=HIDDEN_COLOR):
    return [Line2D([], [], marker=marker, linestyle="none", color=INITIAL_COLOR, markeredgecolor="black",
                   label="initial sink (first --sinks positions)"),
            Line2D([], [], marker=marker, linestyle="none", color=hidden_color, markeredgecolor="black",
                   label="hidden sink")]


def plot_layer(meta, sinks, folder, layer, per_head):
    H, T = meta["n_heads"], meta["n_tokens"]
    att = np.fromfile(os.path.join(folder, meta["files"][layer]), dtype="<f4").reshape(H, T, T)
    cols = min(4, H)
    rows = math.ceil(H / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.3 * rows + 0.9), squeeze=False, dpi=110)
    cmap = plt.get_cmap("magma").copy()
    cmap.set_bad("white")  # NaN: key not visible (future or evicted)
    norm = LogNorm(vmin=VMIN, vmax=1.0)
    image = None
    for h in range(rows * cols):
        ax = axes[h // cols][h % cols]
        if h >= H:
            ax.axis("off")
            continue
        a = np.clip(att[h], VMIN, 1.0)  # NaN stays NaN
        image = ax.imshow(a, cmap=cmap, norm=norm, interpolation="nearest", aspect="equal")
        initial, hidden = per_head.get((layer, h), ([], []))
        mark_sinks(ax, initial, hidden)
        n = len(initial) + len(hidden)
        ax.set_title(f"head {h}" + (f"  ({n} sink{'s' if n != 1 else ''})" if n else ""), fontsize=10, pad=12)
        ax.tick_params(labelsize=7)
        if h // cols == rows - 1:
            ax.set_xlabel("key position", fontsize=8)
        if h % cols == 0:
            ax.set_ylabel("query position", fontsize=8)
    src = os.path.basename(meta["source"])
    cache = meta["cache"]
    fig.suptitle(f"Layer {layer} attention, {src}, {T} tokens, policy {cache['policy']}\n"
                 f"row = query, column = key (log colour; white = not visible); ▼ = sink in that head after "
                 f"the last token (alpha {sinks['alpha']:g}, at least {sinks['min_age']} tokens old)",
                 fontsize=11)
    fig.legend(handles=legend_handles(), loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.035, 0.93, 0.98))
    cax = fig.add_axes((0.945, 0.12, 0.012, 0.72))
    fig.colorbar(image, cax=cax, label="attention probability")
    out = os.path.join(folder, f"attention_layer{layer}.png")
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_overview(meta, sinks, folder, per_head):
    L, H, T = meta["n_layers"], meta["n_heads"], meta["n_tokens"]
    share = np.zeros((L * H, T))
    for layer in range(L):
        att = np.fromfile(os.path.join(folder, meta["files"][layer]), dtype="<f4").reshape(H, T, T)
        visible = ~np.isnan(att)
        n_keys = visible.sum(axis=2, keepdims=True)  # keys each query saw
        scaled = np.where(visible, att * n_keys, 0.0)
        seen = np.maximum(visible.sum(axis=1), 1)  # queries that saw each key
        share[layer * H:(layer + 1) * H] = scaled.sum(axis=1) / seen
    fig, ax = plt.subplots(figsize=(min(24, 4 + T / 22), 2 + 0.22 * L * H), dpi=110)
    cmap = plt.get_cmap("viridis").copy()
    image = ax.imshow(np.clip(share, 1e-2, None), cmap=cmap, norm=LogNorm(vmin=1e-2, vmax=max(share.max(), 10)),
                      aspect="auto", interpolation="nearest")
    # Hidden sinks in white: the blue of the heatmaps vanishes on viridis.
    for (layer, h), (initial, hidden) in per_head.items():
        y = layer * H + h
        for xs, color in ((initial, INITIAL_COLOR), (hidden, "white")):
            ax.plot(xs, [y] * len(xs), "D", color=color, markersize=5, markeredgecolor="black",
                    markeredgewidth=0.6)
    ax.set_yticks(range(L * H))
    ax.set_yticklabels([f"L{l} H{h}" for l in range(L) for h in range(H)], fontsize=6)
    for layer in range(1, L):
        ax.axhline(layer * H - 0.5, color="white", linewidth=0.8)
    # Label the reported sinks with their text on the key axis (the tokens are the point).
    positions = sorted({s["pos"] for s in sinks["sinks"]})
    if positions and len(positions) <= 60:
        ax.set_xticks(positions)
        ax.set_xticklabels([f"{p} {short(meta['tokens'][p])}" for p in positions], rotation=90, fontsize=6)
    young = T - sinks["min_age"] - 0.5
    if young > 0:
        ax.axvspan(young, T - 0.5, facecolor="none", edgecolor="white", hatch="//", linewidth=0, alpha=0.5)
        ax.axvline(young, color="white", linestyle="--", linewidth=1)
    top = ax.secondary_xaxis("top")  # plain positions on top; the bottom axis names the sinks
    top.tick_params(labelsize=7)
    ax.set_xlabel(f"key position (hatched: the {sinks['min_age']} newest tokens, not judged: local attention)")
    ax.set_ylabel("(layer, head)")
    src = os.path.basename(meta["source"])
    ax.set_title(f"Mean attention each key received, in multiples of the uniform share 1/N: {src}, {T} tokens; "
                 f"{len(sinks['sinks'])} sinks (◆ red: initial, ◆ white: hidden)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01, label="× uniform share")
    fig.tight_layout()
    out = os.path.join(folder, "sinks_overview.png")
    fig.savefig(out)
    plt.close(fig)
    return out


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    meta, sinks, folder = load(sys.argv[1])
    per_head = head_sinks(sinks)
    for layer in range(meta["n_layers"]):
        plot_layer(meta, sinks, folder, layer, per_head)
    plot_overview(meta, sinks, folder, per_head)
    return 0


if __name__ == "__main__":
    sys.exit(main())
