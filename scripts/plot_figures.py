"""Draw a figure of the paper from the tidy CSVs alone (no run directories, no torch).

    python scripts/plot_figures.py results/fig2 --kind curves --out results/figures/fig2
    python scripts/plot_figures.py results/fig1 --kind fig1 --out results/figures/fig1
    python scripts/plot_figures.py results/family_mnist --kind family --out results/figures/family_mnist

Inputs in the results directory: ``runs.csv`` (one row per run and epoch; see pathsgd/reproduce.py),
``selection.csv`` (chosen alpha per cell) and, for ``--kind fig1``, ``toy.csv`` (pathsgd/toy.py).
Writes ``<out>.png`` and ``<out>.pdf``.

* ``curves`` (Figures 2 and 3): a row per dataset; columns = cross-entropy on the training set, training
  error, test error (final phase, against epoch) and the alpha sensitivity (sweep phase: last validation
  error against alpha, diverged alphas as x at the top, chosen alpha circled). A colour per optimizer;
  balanced init solid, unbalanced dashed (Path-SGD's dashed curve drawn on top of its solid one). A run that
  diverged ends with an x.
* ``fig1``: (a) SGD's training cross-entropy, balanced vs. unbalanced, with its alpha sensitivity; (b), (c)
  the toy networks before and after one SGD and one Path-SGD update, weights on the edges.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts' shared names, however this file is loaded
from optimizer_names import NAMES, PAIRS  # noqa: E402

COLOURS = {"pathsgd": "tab:red", "sgd": "tab:blue", "adagrad": "tab:green", "pathsgd_momentum": "tab:red",
           "sgd_momentum": "tab:blue", "path_adagrad": "tab:red", "path_adam": "tab:red", "adam": "tab:blue"}
OPT_STYLE = {o: (COLOURS[o], NAMES[o]) for o in NAMES}  # colour and legend name per optimizer config name
INIT_STYLE = {"balanced": "-", "unbalanced": "--"}
DATASET_NAMES = {
    "mnist": "MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "svhn": "SVHN",
    "fashion_mnist": "Fashion-MNIST",
}
METRICS = [("train_loss", "cross-entropy (train)"), ("train_error", "training error"), ("test_error", "test error")]


STAND_INS: set[str] = set()  # dataset labels drawn as "stand-in for ...": their data are generated, not the dataset


def _dataset_label(dataset: str) -> str:
    name = DATASET_NAMES.get(dataset, dataset)
    return f"generated stand-in\nfor {name}" if dataset in STAND_INS else name


def _opt(name: str) -> tuple[str, str]:
    return OPT_STYLE.get(name, ("tab:gray", name))


def _order(values, preferred) -> list:
    present = list(dict.fromkeys(values))
    return [v for v in preferred if v in present] + [v for v in present if v not in preferred]


def _error_ylim(final: pd.DataFrame, metric: str) -> tuple[float, float] | None:
    """Zoom on the balanced runs (as the paper does: unbalanced SGD/AdaGrad may fall off the plot)."""
    bal = final[(final["init"] == "balanced") & (final["epoch"] >= 1) & (final["status"] != "diverged")][metric]
    bal = bal[np.isfinite(bal)]
    if bal.empty:
        return None
    top = min(1.0, float(bal.max()) * 1.15 + 0.01)
    return 0.0, top


def plot_curves_row(axes, final: pd.DataFrame, dataset: str, log_loss: bool = True) -> None:
    """Cross-entropy, training error and test error against epoch for one dataset.

    The y-range follows the balanced runs (as in the paper, where unbalanced SGD/AdaGrad "are not even in the
    range of the plot"); runs that end above it are listed in the panel with their last value."""
    data = final[final["dataset"] == dataset]
    for ax, (metric, label) in zip(axes, METRICS):
        optimizers = _order(data["optimizer"], list(OPT_STYLE))
        inits = _order(data["init"], list(INIT_STYLE))
        ends = []  # (legend name, last finite value or nan, diverged)
        for init in inits:  # balanced first, so the dashed unbalanced curves lie on top
            for optimizer in optimizers:
                runs = data[(data["optimizer"] == optimizer) & (data["init"] == init)]
                for dropout, cell in runs.groupby("dropout"):
                    # One curve per cell: the mean over seeds, with a band from the lowest to the highest seed
                    # (finite values only; a seed that diverged is marked x where it stopped).
                    # A diverged seed's rows describe a broken network: marked x where it stopped, not averaged.
                    wide = cell.assign(**{metric: cell[metric].where(cell["status"] != "diverged")}).pivot_table(
                        index="epoch", columns="seed", values=metric, dropna=False)
                    values = wide.to_numpy(float, copy=True)
                    values[~np.isfinite(values)] = np.nan
                    x = wide.index.to_numpy(float)
                    with np.errstate(all="ignore"), warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)  # an epoch where every seed stopped
                        y, lo, hi = np.nanmean(values, 1), np.nanmin(values, 1), np.nanmax(values, 1)
                    color, name = _opt(optimizer)
                    seeds = cell["seed"].nunique()
                    n_diverged = cell.loc[cell["status"] == "diverged", "seed"].nunique()
                    # Every panel names a curve the same way, with the seeds behind its mean.
                    count = f"{seeds - n_diverged} of {seeds} seeds" if n_diverged else f"{seeds} seed" + "s" * (seeds > 1)
                    on_top = optimizer.startswith("path") and init != "balanced"
                    ax.plot(x, y, INIT_STYLE.get(init, ":"), color=color, lw=1.4 if not on_top else 1.8,
                            zorder=3 if on_top else 2, label=f"{name}, {init} ({count})")
                    if values.shape[1] > 1:
                        ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0, zorder=1)
                    for seed, run in cell.groupby("seed"):
                        run = run.sort_values("epoch")
                        values_run = run[metric].to_numpy(float)
                        finite = np.isfinite(values_run)
                        if (run["status"] == "diverged").any() and finite.any():
                            # x at the epoch it diverged in, at its last finite value (a nan loss has no height)
                            ax.plot(float(run["epoch"].iloc[-1]), values_run[finite][-1], "x", color=color, ms=8,
                                    mew=2, zorder=4)
                    finite = np.isfinite(y)
                    what = f"{name}, {init} ({count})"
                    ends.append((what, y[finite][-1] if finite.any() else math.nan, n_diverged == seeds))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        if metric == "train_loss":
            if log_loss and (data[metric] > 0).any():
                ax.set_yscale("log")
                bal = data[(data["init"] == "balanced") & (data["status"] != "diverged") & np.isfinite(data[metric]) & (data[metric] > 0)][metric]
                if not bal.empty:
                    ax.set_ylim(max(bal.min() * 0.5, 1e-6), bal.max() * 3)
        else:
            lim = _error_ylim(data, metric)
            if lim:
                ax.set_ylim(*lim)
        top = ax.get_ylim()[1]
        off = [f"{n}: {'diverged' if d else f'{v:.3g}'}" for n, v, d in ends if d or not v <= top]
        if off:
            # Above the panel, where it covers no curve.
            ax.set_title("off scale (last value):\n" + "\n".join(off), fontsize=7)
        ax.grid(alpha=0.3)


def plot_alpha(ax, runs: pd.DataFrame, selection: pd.DataFrame, dataset: str) -> None:
    """Last validation error of each sweep run against alpha; diverged as x at the top; chosen circled."""
    sweep = runs[(runs["phase"] == "sweep") & (runs["dataset"] == dataset)]
    if sweep.empty:
        ax.set_visible(False)
        return
    last = sweep.sort_values("epoch").groupby(["optimizer", "init", "dropout", "alpha", "seed"], as_index=False).last()
    top = 1.0
    at_edge: list[str] = []
    dropouts = sorted(last["dropout"].unique())
    for k, optimizer in enumerate(_order(last["optimizer"], list(OPT_STYLE))):
        color, name = _opt(optimizer)
        for init in _order(last["init"], list(INIT_STYLE)):
            for dropout in dropouts:
                cell = last[(last["optimizer"] == optimizer) & (last["init"] == init) & (last["dropout"] == dropout)]
                if cell.empty:
                    continue
                ok = cell[cell["status"] == "completed"].groupby("alpha")["val_error"].mean()
                bad = cell[cell["status"] != "completed"]["alpha"].unique()
                label = f"{name} sweep" + (f", {init}" if last["init"].nunique() > 1 else "")
                label += f", dropout {dropout:g}" if len(dropouts) > 1 else ""
                ax.plot(ok.index, ok.values, "o" + INIT_STYLE.get(init, ":"), color=color, ms=4, label=label)
                if len(bad):
                    ax.plot(bad, [top - 0.03 * k] * len(bad), "x", color=color, ms=8, mew=2)  # offset: no overlap
                sel = selection[(selection["dataset"] == dataset) & (selection["optimizer"] == optimizer)
                                & (selection["dropout"] == dropout)]
                sel = sel[sel["init"].isin([init, "all"])]
                if not sel.empty and pd.notna(sel["alpha"].iloc[0]):
                    a = float(sel["alpha"].iloc[0])
                    if a in ok.index:
                        ax.plot([a], [ok.loc[a]], "o", ms=11, mfc="none", mec=color, mew=1.5)
                        if str(sel["at_edge"].iloc[0]) == "True":  # the best step may lie outside the grid
                            at_edge.append(name)
    # The axis spans the alphas that trained; diverged ones beyond it (the smoke studies' -30) are named, not drawn.
    usable = last[last["status"] == "completed"]["alpha"]
    if not usable.empty:
        lo, hi = float(usable.min()) - 0.5, float(usable.max()) + 0.5
        ax.set_xlim(lo, hi)
        outside = sorted(a for a in last["alpha"].unique() if not lo <= a <= hi)
        if outside:
            ax.text(0.02, 0.02, "diverged, off axis: alpha = " + ", ".join(f"{a:g}" for a in outside),
                    transform=ax.transAxes, fontsize=7, ha="left", va="bottom")
    ax.set_xlabel(r"$\alpha$ (step $10^{-\alpha}$)")
    ax.set_ylabel("validation error (last sweep epoch)")
    ax.set_ylim(0, top * 1.05)
    edge = f"\nchosen at the grid's edge: {', '.join(dict.fromkeys(at_edge))}" if at_edge else ""
    ax.set_title("x: diverged, o: chosen" + edge, fontsize=8)
    ax.grid(alpha=0.3)


def _describe(runs: pd.DataFrame) -> str:
    final = runs[runs["phase"] == "final"]
    src = final if not final.empty else runs
    widths = ", ".join(str(w) for w in src["width"].dropna().unique())
    epochs = int(src["epoch"].max()) if src["epoch"].notna().any() else 0
    seeds = src["seed"].nunique()
    spread = f", mean of {seeds} seeds, band: lowest to highest" if seeds > 1 else ", 1 seed"
    return f"width {widths}, {epochs} epochs{spread}"


def figure_curves(results: Path, title: str | None) -> plt.Figure:
    runs = pd.read_csv(results / "runs.csv")
    selection = pd.read_csv(results / "selection.csv")
    final = runs[runs["phase"] == "final"]
    datasets = _order(runs["dataset"], list(DATASET_NAMES))
    fig, axes = plt.subplots(len(datasets), 4, figsize=(17, 3.4 * len(datasets) + 0.6), squeeze=False)
    for row, dataset in zip(axes, datasets):
        plot_curves_row(row[:3], final, dataset)
        plot_alpha(row[3], runs, selection, dataset)
    handles, labels = [], []
    for ax in axes.flat:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    height = fig.get_figheight()
    fig.suptitle(f"{title or results.name} ({_describe(runs)})", y=1.0 - 0.08 / height, fontsize=12)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 1.0 - 0.35 / height),
               ncol=min(len(labels), 6), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0.03, 0, 1, 1 - 0.7 / height))
    label_rows(fig, axes, [_dataset_label(d) for d in datasets], fontsize=12)
    return fig


def label_rows(fig: plt.Figure, axes, labels: list[str], fontsize: int) -> None:
    """Each row's name at the figure's left edge, in the margin tight_layout left free: clear of every axis label."""
    for row, label in zip(axes, labels):
        box = row[0].get_position()
        fig.text(0.008, (box.y0 + box.y1) / 2, label, rotation=90, va="center", ha="center", fontsize=fontsize,
                 fontweight="bold")


def figure_family(results: Path, title: str | None) -> plt.Figure:
    """One row per pair (a Path variant and its base method) of a one-dataset study: the curves and the sweep."""
    runs = pd.read_csv(results / "runs.csv")
    selection = pd.read_csv(results / "selection.csv")
    (dataset,) = runs["dataset"].unique()
    pairs = [pair for pair in PAIRS if set(pair) & set(runs["optimizer"])]
    fig, axes = plt.subplots(len(pairs), 4, figsize=(17, 3.4 * len(pairs) + 0.6), squeeze=False)
    for row, pair in zip(axes, pairs):
        in_pair = runs[runs["optimizer"].isin(pair)]
        plot_curves_row(row[:3], in_pair[in_pair["phase"] == "final"], dataset)
        plot_alpha(row[3], in_pair, selection, dataset)
        # The legend right of the row, the row's name in the left margin: neither covers a curve or a label.
        row[3].legend(*row[0].get_legend_handles_labels(), fontsize=8, loc="upper left", bbox_to_anchor=(1.04, 1.0))
    height = fig.get_figheight()
    name = _dataset_label(dataset)
    heading = title if title and name in title else f"{title or results.name}: {name}"
    fig.suptitle(f"{heading} ({_describe(runs)}; solid balanced, dashed unbalanced init)", y=1.0 - 0.08 / height,
                 fontsize=12)
    fig.tight_layout(rect=(0.03, 0, 1, 1 - 0.4 / height))
    label_rows(fig, axes, [f"{_opt(a)[1]}\nvs {_opt(b)[1]}" for a, b in pairs], fontsize=11)
    return fig


# ----------------------------------------------------------------------------------------------------------
# Figure 1
# ----------------------------------------------------------------------------------------------------------


def draw_network(ax, toy: pd.DataFrame, panel: str, network: str, state: str, ref: pd.DataFrame | None) -> None:
    """Nodes in columns (input, hidden, output), weights written on the edges; red when the update changed a
    weight by more than 5x its old magnitude."""
    sel = toy[(toy["panel"] == panel) & (toy["network"] == network) & (toy["state"] == state)]
    w = sel[sel["kind"] == "weight"]
    out = sel[sel["kind"] == "output"].sort_values("dst")
    n_layers = int(w["layer"].max())
    sizes = [int(w[w["layer"] == 1]["src"].max()) + 1] + [
        int(w[w["layer"] == layer]["dst"].max()) + 1 for layer in range(1, n_layers + 1)
    ]

    def pos(col: int, unit: int) -> tuple[float, float]:
        n = sizes[col]
        return col, ((n - 1) / 2 - unit) * 1.0  # unit 0 on top

    for _, e in w.iterrows():
        layer, src, dst = int(e["layer"]), int(e["src"]), int(e["dst"])
        (x0, y0), (x1, y1) = pos(layer - 1, src), pos(layer, dst)
        old = None
        if ref is not None:
            m = ref[(ref["kind"] == "weight") & (ref["layer"] == layer) & (pd.to_numeric(ref["src"]) == src)
                    & (ref["dst"] == dst)]
            old = float(m["value"].iloc[0]) if not m.empty else None
        blown = old is not None and abs(e["value"]) > 5 * abs(old) + 1e-12
        ax.plot([x0, x1], [y0, y1], "-", color="tab:red" if blown else "0.55", lw=1.2, zorder=1)
        t = 0.28 if src != dst else 0.5  # crossing edges labelled near their source, where they part
        xm, ym = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
        ax.text(xm, ym, f"{e['value']:.3g}", fontsize=7.5, ha="center", va="center", zorder=3,
                color="tab:red" if blown else "black",
                bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.9))
    for col, n in enumerate(sizes):
        for unit in range(n):
            x, y = pos(col, unit)
            ax.plot(x, y, "o", ms=11, mfc="white", mec="black", zorder=2)
    for _, o in out.iterrows():
        x, y = pos(len(sizes) - 1, int(o["dst"]))
        ax.text(x + 0.18, y, f"y={o['value']:.4g}", fontsize=7.5, ha="left", va="center")
    ax.set_xlim(-0.3, len(sizes) - 1 + 0.9)
    half = max(sizes) / 2
    ax.set_ylim(-half, half)
    ax.axis("off")


STATE_TITLES = {"init": "before", "sgd": "after SGD", "pathsgd": "after Path-SGD"}


def figure_fig1(results: Path, title: str | None) -> plt.Figure:
    runs = pd.read_csv(results / "runs.csv")
    selection = pd.read_csv(results / "selection.csv")
    toy = pd.read_csv(results / "toy.csv")
    fig = plt.figure(figsize=(15, 10))
    grid = fig.add_gridspec(5, 6, height_ratios=[1.4, 0.22, 0.45, 0.22, 0.9], hspace=0.35, wspace=0.15)
    ax_a = fig.add_subplot(grid[0, 0:3])
    ax_alpha = fig.add_subplot(grid[0, 4:6])
    final = runs[(runs["phase"] == "final") & (runs["optimizer"] == "sgd")]
    dataset = _order(runs["dataset"], list(DATASET_NAMES))[0]
    for init in _order(final["init"], list(INIT_STYLE)):
        run = final[(final["init"] == init) & (final["dataset"] == dataset)].sort_values("epoch")
        if run.empty:
            continue
        color = "tab:red" if init == "balanced" else "tab:blue"  # the paper: balanced red, unbalanced blue
        loss = run["train_loss"].to_numpy(float)
        finite = np.isfinite(loss)
        diverged = (run["status"] == "diverged").any()
        stopped = f", diverged in epoch {int(run['epoch'].iloc[-1])}" if diverged else ""
        ax_a.plot(run["epoch"][finite], loss[finite], "-", color=color, label=f"SGD, {init} init{stopped}")
        if diverged and finite.any():  # where it stopped: its last finite value
            ax_a.plot(float(run["epoch"].iloc[-1]), loss[finite][-1], "x", color=color, ms=10, mew=2)
    ax_a.set_yscale("log")
    ax_a.set_xlabel("epoch")
    ax_a.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_a.set_ylabel("cross-entropy (train)")
    ax_a.set_title(f"(a) SGD on {_dataset_label(dataset)} ({_describe(runs)})".replace("\n", " "))
    ax_a.legend()
    ax_a.grid(alpha=0.3)
    plot_alpha(ax_alpha, runs, selection, dataset)
    ax_alpha.set_title("SGD step-size sweep (balanced); " + ax_alpha.get_title(), fontsize=9)  # keeps the edge note

    captions = {
        "b": "(b) 1-1-1 chain, x = 1, step 1, dL/dy = -1: weights (1, 1) and its rescaling (0.1, 10)",
        "c": "(c) 2-2-2 net, x = (1, 1), step 1, dL/dy = (-1, -1): all weights 1, and hidden unit 0 rescaled by 0.1",
    }
    for row, panel in ((2, "b"), (4, "c")):
        caption = fig.add_subplot(grid[row - 1, :])
        caption.axis("off")
        caption.text(0.5, 0.0, captions[panel], ha="center", va="bottom", fontsize=10, transform=caption.transAxes)
        for j, (network, state) in enumerate(
            (n, s) for n in ("balanced", "rescaled") for s in ("init", "sgd", "pathsgd")
        ):
            ax = fig.add_subplot(grid[row, j])
            ref = toy[(toy["panel"] == panel) & (toy["network"] == network) & (toy["state"] == "init")]
            draw_network(ax, toy, panel, network, state, ref if state != "init" else None)
            ax.set_title(f"{network}: {STATE_TITLES[state]}", fontsize=9)
    fig.suptitle((title or "Figure 1") + " — red: weights blown up (> 5x) by one update", fontsize=12)
    return fig


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="directory with runs.csv and selection.csv (and toy.csv)")
    parser.add_argument("--kind", choices=("curves", "fig1", "family"), default="curves")
    parser.add_argument("--out", type=Path, help="output path without suffix (default: <results>/../figures/<name>)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--stand-in", nargs="*", default=[], metavar="DATASET",
                        help="dataset labels whose data are generated stand-ins (smoke studies): said in the figure")
    args = parser.parse_args(argv)
    STAND_INS.update(args.stand_in)
    out = args.out or args.results.parent / "figures" / args.results.name
    fig = {"fig1": figure_fig1, "family": figure_family, "curves": figure_curves}[args.kind](args.results, args.title)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".png", ".pdf"):
        fig.savefig(out.with_suffix(suffix), dpi=110, bbox_inches="tight")
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.pdf')}")


if __name__ == "__main__":
    main()
