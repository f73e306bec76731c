"""The verdict on the paper's claims, computed from the committed tidy CSVs alone -> results/REPORT.md.

    python scripts/report.py [--results results] [--out results/REPORT.md]     (make report)

Reads ``<results>/<study>/runs.csv`` and ``meta.json`` of the CPU studies (Figures 1-3 protocols on MNIST and
Fashion-MNIST, and the Path-SGD family studies); a study not yet run is listed as such. The same CSVs give the
same file: no clock, no randomness. Every rule that turns numbers into a verdict is written in the report beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
STUDIES = {  # study -> (dataset label, dropout)
    "fig2_mnist": ("MNIST", 0.0), "fig2_fashion_mnist": ("Fashion-MNIST", 0.0),
    "fig3_mnist": ("MNIST", 0.5), "fig3_fashion_mnist": ("Fashion-MNIST", 0.5),
}
NAMES = {"pathsgd": "Path-SGD", "sgd": "SGD", "adagrad": "AdaGrad"}
FAMILY_STUDIES = {  # beyond the paper: each Path variant against its base method
    "family_mnist": "MNIST, MLP", "family_fashion_mnist": "Fashion-MNIST, MLP",
    "family_convnet_fashion_mnist": "Fashion-MNIST, conv net",
}
PAIRS = [("pathsgd", "sgd"), ("pathsgd_momentum", "sgd_momentum"), ("path_adagrad", "adagrad"), ("path_adam", "adam")]
FAMILY_NAMES = {**NAMES, "pathsgd_momentum": "Path-SGD + momentum", "sgd_momentum": "SGD + momentum",
                "path_adagrad": "Path-AdaGrad", "path_adam": "Path-Adam", "adam": "Adam"}
UNAFFECTED_FLOOR = 0.005  # half a point of test error: the selection's tolerance, the floor of "unaffected"
METRICS = {"train_loss": "training cross-entropy", "train_error": "training error", "test_error": "test error"}
QUOTES = {  # the paper's own sentences (section 5), each claim's source
    "C1": "\"the unbalanced initialization considerably hurts the performance of SGD and AdaGrad\"",
    "C2": "\"Since the curves were exactly the same we only show a single curve\" (Path-SGD, balanced and unbalanced)",
    "C3a": "\"even in the balanced settings, not only does Path-SGD often get to the same value of objective function, "
           "training and test error faster\"",
    "C3b": "\"the final generalization error for Path-SGD is sometimes considerably lower than SGD and AdaGrad\"",
    "D": "\"We observe that except for MNIST, Path-SGD convergences much faster than SGD or AdaGrad\" (with dropout; "
         "on MNIST: not much faster)",
}


def interval(values) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds (nan half-width for one value)."""
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    if len(v) == 1:
        return float(v[0]), math.nan, math.nan
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def fmt_ci(values) -> str:
    m, lo, hi = interval(values)
    if not np.isfinite(m):
        return "n/a"
    return f"{m:.4g}" + ("" if not np.isfinite(lo) else f" [{lo:.4g}, {hi:.4g}]")


def finals(runs: pd.DataFrame) -> pd.DataFrame:
    """The final runs' curves, one row per (optimizer, init, seed, epoch)."""
    return runs[runs["phase"] == "final"].sort_values(["optimizer", "init", "seed", "epoch"])


def last(runs: pd.DataFrame, optimizer: str, init: str, diverged_as_inf: bool = True) -> dict[int, pd.Series]:
    """Per seed, the run's last row; with ``diverged_as_inf`` a diverged run's metrics are inf (it counts as worst),
    else as recorded when it stopped (a broken network's test error, e.g. 0.9)."""
    out = {}
    for seed, run in runs[(runs["optimizer"] == optimizer) & (runs["init"] == init)].groupby("seed"):
        row = run.iloc[-1].copy()
        row["diverged"] = bool((run["status"] == "diverged").any())
        if row["diverged"] and diverged_as_inf:
            for m in METRICS:
                row[m] = math.inf
        out[int(seed)] = row
    return out


def hurt_by_init(runs: pd.DataFrame, opt: str) -> tuple[list[bool], list[float], list[float]]:
    """Per seed: is ``opt``'s unbalanced run hurt (C1's rule), and its final cross-entropy and test error differences."""
    bal, unb = last(runs, opt, "balanced"), last(runs, opt, "unbalanced")
    seeds = sorted(set(bal) & set(unb))
    d_ce = [unb[s]["train_loss"] - bal[s]["train_loss"] for s in seeds]
    d_te = [unb[s]["test_error"] - bal[s]["test_error"] for s in seeds]
    hurt = [not np.isfinite(unb[s]["test_error"]) or unb[s]["train_loss"] >= 2 * bal[s]["train_loss"]
            or unb[s]["test_error"] >= bal[s]["test_error"] + 0.01 for s in seeds]
    return hurt, d_ce, d_te


def claim_c1(runs: pd.DataFrame) -> tuple[str, list[str]]:
    lines = ["| optimizer | seeds hurt | final cross-entropy, unbalanced - balanced | final test error, unbalanced - balanced |",
             "|---|---:|---:|---:|"]
    verdicts = []
    for opt in ("sgd", "adagrad"):
        hurt, d_ce, d_te = hurt_by_init(runs, opt)
        diverged = sum(not np.isfinite(d) for d in d_te)
        note = f" ({diverged} diverged)" if diverged else ""
        lines.append(f"| {NAMES[opt]} | {sum(hurt)}/{len(hurt)}{note} | {fmt_ci(d_ce)} | {fmt_ci(d_te)} |")
        verdicts.append("holds" if hurt and all(hurt) else "does not hold" if not any(hurt) else "inconclusive")
    verdict = "holds" if set(verdicts) == {"holds"} else "does not hold" if set(verdicts) == {"does not hold"} else "inconclusive"
    return verdict, lines


def init_differences(runs: pd.DataFrame, opt: str) -> tuple[dict[str, pd.Series], dict[str, float]]:
    """Per quantity (test error; log10 training cross-entropy): the largest difference over epochs between ``opt``'s
    unbalanced and balanced curves, per seed, and the seed-to-seed spread of its balanced curves (the range across
    seeds at an epoch, median over the epochs after the init; nan for one seed)."""
    mine = runs[runs["optimizer"] == opt]
    bal, unb = (mine[mine["init"] == init].pivot_table(index="epoch", columns="seed", values=["test_error", "train_loss"])
                for init in ("balanced", "unbalanced"))
    diffs, spreads = {}, {}
    for metric, transform in (("test_error", lambda v: v), ("train_loss", np.log10)):
        b, u = transform(bal[metric]), transform(unb[metric])
        diffs[metric] = (u - b).abs().max(axis=0)  # per seed
        spreads[metric] = float((b.max(axis=1) - b.min(axis=1))[b.index > 0].median()) if b.shape[1] > 1 else math.nan
    return diffs, spreads


def claim_c2(runs: pd.DataFrame) -> tuple[str, list[str]]:
    diffs, spreads = init_differences(runs, "pathsgd")
    lines = ["| quantity | largest difference over epochs, unbalanced vs balanced, per seed | seed-to-seed spread (balanced, median over epochs) |",
             "|---|---|---:|"]
    ok = []
    for metric, what in (("test_error", "test error"), ("train_loss", "log10 training cross-entropy")):
        spread = spreads[metric]
        ok += [d <= spread for d in diffs[metric]] + [None if d <= 2 * spread else False for d in diffs[metric]]
        lines.append(f"| {what} | " + ", ".join(f"seed {s}: {d:.4f}" for s, d in diffs[metric].items()) + f" | {spread:.4f} |")
    within = [x for x in ok if x is not None]
    verdict = "holds" if all(within) else "does not hold" if ok.count(False) == len(ok) else "inconclusive"
    if not np.isfinite(spreads["test_error"]):
        verdict = "inconclusive"
        lines.append("")
        lines.append("One seed: no seed-to-seed spread to measure the difference against.")
    return verdict, lines


def claim_d(runs: pd.DataFrame, label: str) -> tuple[str, list[str]]:
    """C3a's rule with "much faster" = at most half the epochs; MNIST is the paper's exception, so there the claim
    holds when Path-SGD is *not* much faster."""
    verdict, lines = claim_c3a(runs, factor=2.0)
    if label == "MNIST":
        verdict = {"holds": "does not hold", "does not hold": "holds"}.get(verdict, verdict)
        lines += ["", "On MNIST the paper expects no such speed-up: the verdict is whether Path-SGD is *not* much faster."]
    return verdict, lines


def time_to_target(runs: pd.DataFrame, metric: str) -> tuple[float, dict[str, tuple[float, float, int]]]:
    """The common target (the worst of the optimizers' best values of the mean curve over seeds, balanced init)
    and, per optimizer, (epochs, seconds) for its mean curve to first reach it, and how many seeds reach it."""
    bal = runs[(runs["init"] == "balanced") & (runs["epoch"] > 0)]
    mean = bal.pivot_table(index="epoch", columns="optimizer", values=metric, aggfunc="mean")
    seconds = bal.pivot_table(index="epoch", columns="optimizer", values="seconds", aggfunc="mean")
    target = float(mean.min().max())
    out = {}
    for opt in mean.columns:
        hit = mean.index[mean[opt] <= target + 1e-12]
        seeds = bal[(bal["optimizer"] == opt) & (bal[metric] <= target + 1e-12)]["seed"].nunique()
        out[opt] = (float(hit[0]), float(seconds.loc[hit[0], opt]), seeds) if len(hit) else (math.inf, math.inf, seeds)
    return target, out


def claim_c3a(runs: pd.DataFrame, factor: float = 1.0) -> tuple[str, list[str]]:
    n = runs["seed"].nunique()
    lines = ["| quantity | target | " + " | ".join(f"{NAMES[o]}: epoch, seconds (seeds reaching)" for o in NAMES)
             + " | faster |", "|---|---:|" + "---|" * len(NAMES) + "---|"]
    results = []
    for metric, what in METRICS.items():
        target, reach = time_to_target(runs, metric)
        cells = [f"{reach[o][0]:.0f}, {reach[o][1]:.0f} s ({reach[o][2]}/{n})" for o in NAMES]
        others = min(reach[o][0] for o in NAMES if o != "pathsgd")
        faster = reach["pathsgd"][0] * factor < others if factor == 1.0 else reach["pathsgd"][0] * factor <= others
        slower = reach["pathsgd"][0] > others
        results.append("holds" if faster else "does not hold" if slower else "inconclusive")
        lines.append(f"| {what} | {target:.4f} | " + " | ".join(cells)
                     + f" | {'Path-SGD' if faster else 'not Path-SGD' if slower else 'tie'} |")
    verdict = "holds" if set(results) == {"holds"} else "does not hold" if set(results) == {"does not hold"} else "inconclusive"
    return verdict, lines


def claim_c3b(runs: pd.DataFrame) -> tuple[str, list[str]]:
    ps = last(runs, "pathsgd", "balanced", diverged_as_inf=False)
    lines = ["| Path-SGD minus | final test error difference (paired by seed), mean [95% CI] | paired t-test p | diverged runs |",
             "|---|---:|---:|---:|"]
    verdicts = []
    for opt in ("sgd", "adagrad"):
        other = last(runs, opt, "balanced", diverged_as_inf=False)
        seeds = sorted(set(ps) & set(other))
        d = [ps[s]["test_error"] - other[s]["test_error"] for s in seeds]
        m, lo, hi = interval(d)
        p = stats.ttest_1samp(d, 0.0).pvalue if len(d) > 1 and np.all(np.isfinite(d)) and np.std(d) > 0 else math.nan
        broken = sum(ps[s]["diverged"] for s in seeds) + sum(other[s]["diverged"] for s in seeds)
        lines.append(f"| {NAMES[opt]} | {fmt_ci(d)} | {p:.3f} | {broken} |")
        verdicts.append("holds" if hi < 0 else "does not hold" if lo > 0 else "inconclusive")
    verdict = "holds" if set(verdicts) == {"holds"} else "does not hold" if "does not hold" in verdicts else "inconclusive"
    return verdict, lines


def family_pair(runs: pd.DataFrame, variant: str, base: str) -> tuple[dict[str, str], list[str]]:
    """One Path variant against its base method: the verdicts (by the family rules) and the table row."""
    pair = runs[runs["optimizer"].isin([variant, base])]
    n = pair["seed"].nunique()
    cells, faster = [], []
    for metric in ("train_loss", "test_error"):
        target, reach = time_to_target(pair, metric)
        (ev, sv, _), (eb, sb, _) = reach[variant], reach[base]
        cells.append(f"{target:.4g}: {ev:.0f} / {eb:.0f} ep, {sv:.0f} / {sb:.0f} s")
        faster.append(FAMILY_NAMES[variant] if ev < eb else FAMILY_NAMES[base] if eb < ev else "tie")
    v, b = last(pair, variant, "balanced", diverged_as_inf=False), last(pair, base, "balanced", diverged_as_inf=False)
    seeds = sorted(set(v) & set(b))
    d = [v[s]["test_error"] - b[s]["test_error"] for s in seeds]
    _, lo, hi = interval(d)
    if len(d) == 1:
        lower = "lower (one seed)" if d[0] < 0 else "higher (one seed)" if d[0] > 0 else "equal (one seed)"
    else:
        lower = "lower" if hi < 0 else "higher" if lo > 0 else "inconclusive"
    diffs, spreads = init_differences(pair, variant)
    bound = float(np.nanmax([spreads["test_error"], UNAFFECTED_FLOOR]))  # the floor alone for one seed
    unaffected = bool(len(diffs["test_error"])) and bool((diffs["test_error"] <= bound).all())
    hurt, _, d_te = hurt_by_init(pair, base)
    diverged = sum(not np.isfinite(x) for x in d_te)
    verdicts = {"faster": " / ".join(dict.fromkeys(faster)), "final": lower,
                "unaffected": "yes" if unaffected else "no", "hurt": f"{sum(hurt)}/{len(hurt)}"}
    row = (f"| {FAMILY_NAMES[variant]} vs {FAMILY_NAMES[base]} | {cells[0]} | {cells[1]} | {fmt_ci(d)} ({lower}) | "
           + ", ".join(f"{x:.4f}" for x in diffs["test_error"]) + f" (bound {bound:.4f}) | {sum(hurt)}/{len(hurt)}"
           + (f" ({diverged} diverged)" if diverged else "") + f" | {n} |")
    return verdicts, [row]


FAMILY_RULES = """## Rules for the family (written before the numbers are read)

Each Path variant is set against its base method (Path-SGD vs SGD, Path-SGD + momentum vs SGD + momentum,
Path-AdaGrad vs AdaGrad, Path-Adam vs Adam), each with the step size its own sweep chose by the paper's rule.

- **Faster**: for training cross-entropy and for test error, the common target is the worse of the pair's two best
  values of their mean curves over seeds (balanced init); the method whose mean curve reaches it in fewer epochs
  is faster (seconds of training beside it, with the caveat of C3a: a shared machine whose load varied).
- **Final test error**: the variant's minus the base's, balanced init, paired by seed; mean and 95% t-interval.
  Lower if the interval lies below 0, higher if above, otherwise inconclusive; with one seed, the sign is reported.
- **Unaffected by the unbalanced init**: every seed's largest difference over epochs between the variant's
  unbalanced and balanced test-error curves is within the bound: the balanced seed-to-seed spread (as in C2),
  or half a point (0.005) where the spread is smaller or there is one seed.
- **Base hurt by the unbalanced init**: C1's rule per seed (diverged, or at least twice the balanced final training
  cross-entropy, or at least one point higher final test error); the count of hurt seeds is reported.
"""


def family_report(results: Path) -> tuple[list[str], list[str], list[str]]:
    """The family section: the setting of each study, the summary table and the numbers."""
    setting, body = [], []
    summary = ["| pair | study | faster to the target (training cross-entropy / test error) | final test error | "
               "variant unaffected by the init | base hurt by the init |", "|---|---|---|---|---|---|"]
    for study, label in FAMILY_STUDIES.items():
        path = results / study / "runs.csv"
        if not path.exists():
            setting.append(f"- `{study}` ({label}): not run yet.")
            continue
        runs = finals(pd.read_csv(path))
        setting.append(_setting_line(results, study, label, runs))
        rows = []
        for variant, base in PAIRS:
            if not {variant, base} <= set(runs["optimizer"]):
                continue
            verdicts, lines = family_pair(runs, variant, base)
            rows += lines
            summary.append(f"| {FAMILY_NAMES[variant]} vs {FAMILY_NAMES[base]} | {label} | {verdicts['faster']} | "
                           f"{verdicts['final']} | {verdicts['unaffected']} | {verdicts['hurt']} |")
        body += [f"### {label}", "",
                 "| pair | target cross-entropy: epochs, seconds (variant / base) | target test error: epochs, seconds "
                 "(variant / base) | final test error, variant - base, mean [95% CI] | variant's largest test-error "
                 "difference, unbalanced vs balanced, per seed | base's seeds hurt | seeds |",
                 "|---|---|---|---|---|---|---:|", *rows, ""]
    return setting, summary, body


def figure1_report(results: Path) -> list[str]:
    """Figure 1(a) at the paper's width: C1's rule for SGD alone (one seed), with the epoch-by-epoch curves."""
    path = results / "fig1_mnist" / "runs.csv"
    head = ["", "## Figure 1(a) at the paper's width: SGD on MNIST, 2 x 4000, balanced vs unbalanced", ""]
    if not path.exists():
        return head + ["- `fig1_mnist`: not run yet."]
    runs = finals(pd.read_csv(path))
    hurt, d_ce, d_te = hurt_by_init(runs, "sgd")
    curves = runs.pivot_table(index="epoch", columns="init", values=["train_loss", "test_error"])
    return head + [_setting_line(results, "fig1_mnist", "MNIST, SGD", runs), "",
                   f"C1's rule for SGD: {sum(hurt)} of {len(hurt)} seeds hurt by the unbalanced init, "
                   f"{sum(not np.isfinite(d) for d in d_te)} of them diverged (final training "
                   f"cross-entropy, unbalanced - balanced: {fmt_ci(d_ce)}; test error: {fmt_ci(d_te)}).", "",
                   "| epoch | cross-entropy, balanced | cross-entropy, unbalanced | test error, balanced | test error, unbalanced |",
                   "|---:|---:|---:|---:|---:|",
                   *(f"| {e} | {r[('train_loss', 'balanced')]:.4g} | {r[('train_loss', 'unbalanced')]:.4g} | "
                     f"{r[('test_error', 'balanced')]:.4f} | {r[('test_error', 'unbalanced')]:.4f} |"
                     for e, r in curves.iterrows())]


def _setting_line(results: Path, study: str, label: str, runs: pd.DataFrame) -> str:
    meta_path = results / study / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    widths = ", ".join(str(w) for w in sorted(runs["width"].unique()))
    return (f"- `{study}` ({label}): width {widths}, {int(runs['epoch'].max())} final epochs, "
            f"seeds {', '.join(str(s) for s in sorted(runs['seed'].unique()))}; commit {str(meta.get('commit', '?'))[:7]}, "
            f"pipeline wall time {meta.get('pipeline_seconds', '?')} s (`{meta.get('command', '?')}`)")


README_START, README_END = "<!-- verdict table: scripts/report.py -->", "<!-- end of the verdict table -->"
README_FAMILY_START, README_FAMILY_END = "<!-- family table: scripts/report.py -->", "<!-- end of the family table -->"
RULES = """## Rules (written before the numbers are read)

- **C1** (no dropout): a seed is *hurt* when its unbalanced run diverged, or ended with at least twice the balanced
  run's training cross-entropy, or at least one point (0.01) higher test error. Holds if every seed of both SGD and
  AdaGrad is hurt; does not hold if no seed of either is; otherwise inconclusive.
- **C2** (no dropout): for each seed, the largest difference over all epochs between Path-SGD's unbalanced and
  balanced curves (test error; log10 training cross-entropy), against the seed-to-seed spread of the balanced
  curves (the range across seeds at an epoch, median over the epochs after the init). Holds if every difference
  is within the spread; does not hold if every difference exceeds twice the spread; otherwise inconclusive.
- **C3a** (balanced init): the target of a quantity is the worst of the three optimizers' best values of their
  mean curves over seeds; the first epoch at which each mean curve reaches it (and the mean seconds of training
  then; how many single seeds ever reach it is shown beside). Holds for a quantity if Path-SGD's mean curve gets
  there in fewer epochs than both others, does not hold if later than one of them; the claim holds if it holds
  for all three quantities, does not hold if it fails for all three, and is inconclusive otherwise. The seconds
  are wall time on a shared 2-core machine whose load varied between runs (other runs and work beside them): read
  the epochs.
- **C3b** (balanced init): the final test error of Path-SGD minus SGD's and minus AdaGrad's, paired by seed; mean,
  95% t-interval, paired t-test; a diverged run counts with the test error it had when it stopped. Holds if both
  intervals lie below 0; does not hold if either lies above 0; otherwise inconclusive.
- **Dropout remark** (Figure 3 protocol): C3a's rule with "much faster" read as at most half the epochs of the
  faster of SGD and AdaGrad, on every quantity. On Fashion-MNIST the claim holds if Path-SGD is much faster; on
  MNIST, the paper's exception, it holds if Path-SGD is *not* much faster.
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=REPO / "results")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "REPORT.md")
    ap.add_argument("--readme", type=Path, default=None, help="also write the verdict table into this README")
    args = ap.parse_args(argv)
    out = ["# Does Path-SGD's evidence come back? A verdict computed from the committed CSVs", "",
           "Written by `python scripts/report.py` (`make report`) from `results/<study>/runs.csv` alone.", ""]
    summary = ["| claim | dataset | verdict |", "|---|---|---|"]
    body = []
    setting = []
    for study, (label, dropout) in STUDIES.items():
        path = args.results / study / "runs.csv"
        if not path.exists():
            setting.append(f"- `{study}`: not run yet.")
            continue
        runs = finals(pd.read_csv(path))
        setting.append(_setting_line(args.results, study, f"{label}, dropout {dropout:g}", runs))
        claims = [("C1", claim_c1), ("C2", claim_c2), ("C3a", claim_c3a), ("C3b", claim_c3b)] if dropout == 0 else \
                 [("D", lambda r: claim_d(r, label)), ("C3b", claim_c3b)]
        for name, fn in claims:
            verdict, lines = fn(runs)
            summary.append(f"| {name}: {QUOTES[name]} | {label}{', dropout' if dropout else ''} | **{verdict}** |")
            body += [f"### {name} on {label}{' with dropout 0.5' if dropout else ''}: {verdict}", "", QUOTES[name], "",
                     *lines, ""]
    out += ["## Our setting, and how it departs from the paper's", "",
            "The paper trains 2 x 4000 ReLU units for an unstated number of epochs on MNIST, CIFAR-10, CIFAR-100 and SVHN. "
            "Here: MNIST and Fashion-MNIST (the two image datasets this offline CPU machine has), a narrower net and few "
            "epochs (below), alpha chosen on one seed by the paper's rule, three seeds for every final cell. Every "
            "verdict holds for this setting only; a verdict against the paper is a result about this setting, not a "
            "claim that the paper is wrong at its own scale.", "", *setting, "", "## Verdicts", "", *summary, "", RULES,
            "## The numbers", "", *body]
    out += figure1_report(args.results)
    family_setting, family_summary, family_body = family_report(args.results)
    out += ["", "## Beyond the paper: Path-SGD with momentum, Path-AdaGrad and Path-Adam", "",
            "The paper's closing suggestion, tested: does the path geometry help each base method, and does each Path "
            "variant keep Path-SGD's indifference to the unbalanced init while its base method does not? The same "
            "caveat of setting as above: narrow nets, few epochs, this machine.", "", *family_setting, "",
            *family_summary, "", FAMILY_RULES, "### The numbers", "", *family_body]
    args.out.write_text("\n".join(out).rstrip() + "\n")
    print(f"wrote {args.out}")
    if args.readme is not None:  # the README shows the verdict tables between their markers
        text = args.readme.read_text()
        for (first, last_marker), table in (((README_START, README_END), summary),
                                            ((README_FAMILY_START, README_FAMILY_END), family_summary)):
            if first in text:
                start, end = text.index(first) + len(first), text.index(last_marker)
                text = text[:start] + "\n" + "\n".join(table) + "\n" + text[end:]
        args.readme.write_text(text)
        print(f"updated the verdict tables in {args.readme}")


if __name__ == "__main__":
    main()
