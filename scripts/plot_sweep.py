#!/usr/bin/env python3
"""Draws kvstream sweep's figure: perplexity against KV bytes used, one line per policy (and per KV
dtype when the sweep has a dtype axis: colour = policy, line style = dtype).

Usage: plot_sweep.py SWEEP_JSON OUT_PNG   (kvstream sweep calls it; stdlib + matplotlib only)
Exit status 3 when matplotlib cannot be imported, so kvstream can warn instead of failing.
"""
import json
import math
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter
except ImportError as e:
    print(f"plot_sweep.py: {e}", file=sys.stderr)
    sys.exit(3)

# One fixed style per policy, so figures from different runs compare at a glance.
STYLE = {
    "full": dict(color="black", marker="*", markersize=13),
    "window": dict(color="tab:red", marker="v"),
    "sinks": dict(color="tab:blue", marker="o"),
    "hidden-sinks": dict(color="tab:green", marker="s"),
    "h2o": dict(color="tab:purple", marker="D"),
}


# Line style and marker fill per KV dtype, when a sweep has several.
DTYPE_STYLE = {
    "f32": dict(linestyle="-"),
    "f16": dict(linestyle="--"),
    "q8": dict(linestyle="-.", markerfacecolor="white"),
    "q4": dict(linestyle=":", markerfacecolor="white"),
}


def human_bytes(b, _pos=None):
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= scale:
            v = b / scale
            return f"{v:.0f} {unit}" if v >= 10 or v == int(v) else f"{v:.1f} {unit}"
    return f"{b:.0f} B"


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        sweep = json.load(f)
    points = sweep["points"]
    dtypes = sorted({p.get("kv_dtype", "f32") for p in points}, key=lambda d: list(DTYPE_STYLE).index(d)
                    if d in DTYPE_STYLE else 99)
    many_dtypes = len(dtypes) > 1

    def curve_name(p):
        if not many_dtypes:
            return p["policy"]
        pinned = p.get("pinned_dtype", p.get("kv_dtype"))
        suffix = "" if pinned == p.get("kv_dtype") else f", {pinned} pinned"
        return f"{p['policy']} {p.get('kv_dtype')}{suffix}"

    by_policy = {}  # curve name -> points
    for p in points:
        by_policy.setdefault(curve_name(p), []).append(p)

    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    budgeted = [p["ppl"] for p in points if p["policy"] != "full" and math.isfinite(p["ppl"])]
    ppls = budgeted or [p["ppl"] for p in points if math.isfinite(p["ppl"])]
    lo, hi = (min(ppls), max(ppls)) if ppls else (1.0, 10.0)
    # PPL spans orders of magnitude once a policy breaks (window past its limits, tiny budgets):
    # a log axis keeps the good policies readable then.
    log_y = hi / max(lo, 1e-9) > 4
    ylim = (lo / 1.06, hi * 1.12) if log_y else (lo - 0.06 * (hi - lo + 0.1), hi + 0.12 * (hi - lo + 0.1))
    # Lines that coincide (hidden-sinks pins nothing when no token passes the detector, and then
    # equals sinks) would hide each other: say so in the legend and dash the later one.
    seen_curves = {}  # policy -> (xs, ys)
    labelled = []  # (log10 x, log10 y) of budget labels already drawn, to avoid piling them up

    def label_budget(p, color):
        key = (math.log10(p["kv_bytes"]), math.log10(max(p["ppl"], 1e-9)))
        if any(abs(key[0] - k[0]) < 0.06 and abs(key[1] - k[1]) < 0.02 for k in labelled):
            return
        labelled.append(key)
        ax.annotate(str(p["budget"]), (p["kv_bytes"], p["ppl"]), textcoords="offset points", xytext=(5, 5),
                    fontsize=7, color=color)

    for policy, pts in by_policy.items():
        pts.sort(key=lambda p: p["kv_bytes"])
        xs = [p["kv_bytes"] for p in pts]
        ys = [p["ppl"] for p in pts]
        style = dict(STYLE.get(pts[0]["policy"], dict(marker="o")))
        if many_dtypes:
            style.update(DTYPE_STYLE.get(pts[0].get("kv_dtype"), {}))
        if pts[0]["policy"] == "full":
            y = ys[0]
            if y > ylim[1]:
                # Far off the scale (the model past its training context): a marker on the top edge
                # and the value in the legend, instead of a y axis that squashes every other line.
                ax.plot(xs, [ylim[1]], clip_on=False,
                        label=f"{policy} (no eviction): ppl {y:.4g}, off scale",
                        **{**style, "linestyle": "none", "marker": "^", "markersize": 10})
            else:
                ax.plot(xs, ys, label=f"{policy} (no eviction)", **{**style, "linestyle": "none"})
                ax.axhline(y, color="black", linewidth=0.8, linestyle=":", zorder=0)
            continue
        label = policy
        twin = next((other for other, (oxs, oys) in seen_curves.items()
                     if oxs == xs and all(abs(a - b) <= 2e-3 * b for a, b in zip(ys, oys))), None)
        if twin is not None:
            label = f"{policy} (within 0.2% of {twin})"
            style.update(linestyle="--", markerfacecolor="none", markersize=10)
        # A point equal to an earlier policy's (same memory, PPL within 0.2%) is drawn hollow and
        # larger, so the earlier one stays visible inside it.
        same = [any(x in oxs and abs(y - oys[oxs.index(x)]) <= 2e-3 * y for oxs, oys in seen_curves.values())
                for x, y in zip(xs, ys)]
        seen_curves[policy] = (xs, ys)
        if twin is None:
            style["markevery"] = [i for i, s in enumerate(same) if not s] or None
        ax.plot(xs, ys, linewidth=1.8, label=label, **style)
        if twin is None and any(same):
            hollow = {k: v for k, v in style.items() if k not in ("markevery", "markersize")}
            ax.plot([x for x, s in zip(xs, same) if s], [y for y, s in zip(ys, same) if s], linestyle="none",
                    markerfacecolor="none", markersize=10, markeredgewidth=1.5, **hollow)
        for p in pts:
            label_budget(p, style.get("color", "gray"))
    ax.set_ylim(*ylim)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(human_bytes))
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(
            lambda v, _p: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
    ax.set_xlabel("KV cache memory used (peak pages + q4 key copies, all layers; log scale; "
                  "numbers on points = budget in tokens)")
    ax.set_ylabel("perplexity" + (" (log scale)" if log_y else "") + " — lower is better")
    src = os.path.basename(sweep["source"])
    first = points[0] if points else {}
    ax.set_title(f"Perplexity vs KV memory: {src}, {sweep['tokens_scored']:,} scored tokens\n"
                 f"{','.join(dtypes)} KV, {first.get('page_tokens', '?')}-token pages, "
                 f"{first.get('positions', '?')} positions", fontsize=11)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    # Not "best": the full policy's marker sits in the top right corner, often off the data.
    ax.legend(title="policy" + (" and KV dtype" if many_dtypes else ""), loc="center right",
              fontsize=8 if many_dtypes else 9)
    fig.tight_layout()
    fig.savefig(sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
