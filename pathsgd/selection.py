"""Step-size selection: the paper's "the one that reaches the minimum error faster" (section 5).

For one cell (dataset, optimizer, dropout, and init when each init is tuned separately) the sweep holds one
learning curve of validation error per alpha (averaged over seeds when there are several).

* target: the lowest validation error that any non-diverged alpha reached at any epoch after the first
  update (epoch >= 1; epoch 0 is the common initial network);
* each non-diverged alpha *reaches* the target at the first epoch where its validation error is within
  ``tolerance`` of it (errors are fractions, so the default 0.005 is half a percentage point);
* the chosen alpha reaches it first; ties go to the lower final validation error, then to the smaller alpha.

How close the call was is recorded beside it: the runner-up (the next alpha in that order), what decided
between them (``epochs``, ``final_val_error`` or, for an exact tie, ``alpha``), the margin in that unit, and
the seed-to-seed spread in the same unit (the range over seeds of each seed's own epoch of reaching the
target, or of its final validation error, the larger of the two alphas' ranges). A choice whose margin is
zero or smaller than that spread is a ``close_call``: another draw of seeds could have picked the runner-up.

Diverged alphas neither set the target nor can be chosen; they are listed in the ``diverged`` column (runs
that never finished, status failed/incomplete/running, are excluded the same way and listed in ``failed``). A choice at either end of the swept grid is flagged (``at_edge``): the best step size
may lie outside it. When every alpha diverged the cell gets no alpha (empty) and no final run.

Works on the tidy table of :mod:`pathsgd.reproduce` (one row per run and epoch), pandas only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

DEFAULT_TOLERANCE = 0.005
CELL_KEYS = ("dataset", "optimizer", "dropout")
# A sweep row counts when its run finished: "completed". Everything else ("diverged", "failed", "incomplete")
# is excluded from the target and from the choice.
USABLE_STATUS = "completed"

SELECTION_COLUMNS = [*CELL_KEYS, "init", "alpha", "target_val_error", "epoch_reached", "final_val_error", "tolerance",
                     "at_edge", "grid", "diverged", "failed", "status", "runner_up", "runner_up_epoch",
                     "runner_up_final_val_error", "decided_by", "margin", "seed_spread", "close_call", "seeds", "role"]
# role: "main" picks the final runs' alpha; "per_init_check" is a choice made for the report alone (each init of
# an optimizer tuned on its own, beside a main choice made on the balanced init).
MAIN_ROLE = "main"


def _alphas_str(alphas: Sequence[float]) -> str:
    """``"0 0.5 3"``: the alphas sorted, integers without ``.0``."""
    return " ".join(str(int(a)) if float(a).is_integer() else repr(float(a)) for a in sorted(alphas))


def select_cell(runs: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Choose alpha for one cell from its sweep rows.

    ``runs`` has columns ``alpha, epoch, val_error, status`` (``seed`` optional): one row per run and epoch.
    Returns a dict with keys ``alpha`` (float, or None when every alpha diverged), ``target_val_error``,
    ``epoch_reached``, ``final_val_error``, ``at_edge``, ``grid``, ``diverged``, ``failed`` and ``status``
    (``selected`` | ``all_diverged`` | ``no_finished_run`` | ``empty``).
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    missing = {"alpha", "epoch", "val_error", "status"} - set(runs.columns)
    if missing:
        raise ValueError(f"sweep rows lack columns {sorted(missing)}")
    grid = sorted(float(a) for a in runs["alpha"].dropna().unique())
    result = {"alpha": None, "target_val_error": math.nan, "epoch_reached": math.nan, "final_val_error": math.nan,
              "tolerance": tolerance, "at_edge": False, "grid": _alphas_str(grid), "diverged": "", "failed": "",
              "status": "empty", "runner_up": math.nan, "runner_up_epoch": math.nan,
              "runner_up_final_val_error": math.nan, "decided_by": "", "margin": math.nan, "seed_spread": math.nan,
              "close_call": False, "seeds": int(runs["seed"].nunique()) if "seed" in runs else 1}
    if not grid:
        return result

    # An alpha is usable when every one of its runs (seeds) completed; one diverged seed marks the alpha.
    status_by_alpha = runs.groupby("alpha")["status"].agg(lambda s: set(s.dropna()))
    usable = sorted(float(a) for a, st in status_by_alpha.items() if st == {USABLE_STATUS})
    diverged = {float(a) for a, st in status_by_alpha.items() if "diverged" in st}
    failed = set(grid) - set(usable) - diverged
    result["diverged"] = _alphas_str(diverged)
    result["failed"] = _alphas_str(failed)
    if not usable:
        result["status"] = "all_diverged" if not failed else "no_finished_run"
        return result

    # Epoch 0 is the shared initial network: no alpha "reached" anything there, so it neither sets the
    # target nor counts as reaching it (else every alpha would tie when the init is already near the best).
    ok = runs[runs["alpha"].isin(usable) & (runs["epoch"] >= 1)]
    # Mean over seeds at each (alpha, epoch); epochs without a validation value are ignored.
    curves = (ok.dropna(subset=["val_error"]).groupby(["alpha", "epoch"], as_index=False)["val_error"].mean()
              .sort_values(["alpha", "epoch"]))
    if curves.empty:  # completed runs without validation values: nothing to select on
        return result
    target = float(curves["val_error"].min())
    candidates = []
    for alpha, curve in curves.groupby("alpha"):
        hit = curve[curve["val_error"] <= target + tolerance + 1e-12]
        if hit.empty:  # cannot happen for the alpha that set the target; others may never get close
            continue
        candidates.append((float(hit["epoch"].iloc[0]), float(curve["val_error"].iloc[-1]), float(alpha)))
    candidates.sort()
    epoch_reached, final_val, alpha = candidates[0]
    result.update(alpha=alpha, target_val_error=target, epoch_reached=epoch_reached, final_val_error=final_val,
                  at_edge=alpha in (grid[0], grid[-1]), status="selected")
    if len(candidates) > 1:
        result.update(_closeness(ok, target + tolerance + 1e-12, candidates[0], candidates[1]))
    return result


def _closeness(ok: pd.DataFrame, threshold: float, chosen: tuple, runner_up: tuple) -> dict:
    """The runner-up, what decided against it, by how much, and the seed-to-seed spread in that unit."""
    (e1, f1, a1), (e2, f2, a2) = chosen, runner_up
    decided_by, margin = ("epochs", e2 - e1) if e2 > e1 else ("final_val_error", f2 - f1) if f2 > f1 else ("alpha", 0.0)
    seed = ok["seed"] if "seed" in ok else pd.Series(0, index=ok.index)
    spreads = []
    for alpha in (a1, a2):
        runs = ok[ok["alpha"] == alpha].dropna(subset=["val_error"]).assign(seed=seed).sort_values("epoch")
        if decided_by == "epochs":  # each seed's own first epoch within reach of the (mean-curve) target
            per_seed = runs.groupby("seed").apply(
                lambda r: float(r["epoch"][r["val_error"] <= threshold].min()) if (r["val_error"] <= threshold).any()
                else math.inf, include_groups=False)
        else:
            per_seed = runs.groupby("seed")["val_error"].last()
        spreads.append(math.nan if len(per_seed) < 2 else 0.0 if per_seed.nunique() == 1
                       else float(per_seed.max() - per_seed.min()))  # inf when a seed never reaches it
    spread = max(spreads) if not all(math.isnan(x) for x in spreads) else math.nan
    return dict(runner_up=a2, runner_up_epoch=e2, runner_up_final_val_error=f2, decided_by=decided_by,
                margin=float(margin), seed_spread=spread, close_call=bool(margin == 0 or margin < spread))


def select_alphas(sweep: pd.DataFrame, tolerance: float = DEFAULT_TOLERANCE, per_init: bool = False,
                  role: str = MAIN_ROLE) -> pd.DataFrame:
    """One row per cell: the selection table written to ``selection.csv``.

    ``sweep`` is the tidy table restricted to the sweep phase. Cells are (dataset, optimizer, dropout), plus
    init when ``per_init`` (then each init gets its own alpha; otherwise the ``init`` column reads ``all``
    and the choice applies to every init of the cell). ``role`` is written in every row: ``main`` choices
    pick the final runs' alpha (:func:`chosen_alpha`), any other role is recorded for the report alone.
    """
    keys = [*CELL_KEYS, "init"] if per_init else list(CELL_KEYS)
    rows = []
    if not sweep.empty:
        for key, group in sweep.groupby(keys, sort=True, dropna=False):
            row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
            row.setdefault("init", "all")
            row.update(select_cell(group, tolerance), role=role)
            rows.append(row)
    table = pd.DataFrame(rows, columns=SELECTION_COLUMNS)
    table["alpha"] = pd.to_numeric(table["alpha"], errors="coerce")
    return table


def chosen_alpha(selection: pd.DataFrame, dataset: str, optimizer: str, dropout: float, init: str) -> float | None:
    """The alpha that ``selection`` assigns to a final-phase cell, or None (no usable alpha, no final run)."""
    sel = selection[(selection["dataset"] == dataset) & (selection["optimizer"] == optimizer)
                    & (selection["dropout"].astype(float) == float(dropout))]
    if "role" in sel:  # a selection file from before roles holds main choices only
        sel = sel[sel["role"].fillna(MAIN_ROLE) == MAIN_ROLE]
    exact = sel[sel["init"] == init]
    sel = exact if not exact.empty else sel[sel["init"] == "all"]
    if sel.empty or pd.isna(sel["alpha"].iloc[0]):
        return None
    return float(sel["alpha"].iloc[0])
