"""Alpha selection: the paper's "reaches the minimum error faster" rule, on hand-made sweep tables."""

import math

import pandas as pd
import pytest

from pathsgd.selection import chosen_alpha, select_alphas, select_cell


def curve(alpha, errors, status="completed", seed=0, **cell):
    """Rows of one run: validation error per epoch, epoch 0 first."""
    return [
        dict(alpha=alpha, epoch=e, val_error=v, status=status, seed=seed, **cell) for e, v in enumerate(errors)
    ]


def table(*runs):
    return pd.DataFrame([row for run in runs for row in run])


def test_first_to_reach_target_within_tolerance_wins_over_lowest_error():
    runs = table(
        curve(1, [0.9, 0.30, 0.200, 0.100]),  # lowest error (0.100), but only at epoch 3
        curve(2, [0.9, 0.104, 0.104, 0.104]),  # within 0.005 of 0.100 at epoch 1
        curve(3, [0.9, 0.50, 0.40, 0.30]),
    )
    sel = select_cell(runs, tolerance=0.005)
    assert sel["alpha"] == 2
    assert sel["target_val_error"] == pytest.approx(0.100)
    assert sel["epoch_reached"] == 1
    assert sel["status"] == "selected"
    # With no tolerance the only alpha that reaches the minimum is the one that set it.
    assert select_cell(runs, tolerance=0.0)["alpha"] == 1


def test_ties_go_to_lower_final_error_then_smaller_alpha():
    runs = table(
        curve(4, [0.9, 0.101, 0.150]),
        curve(5, [0.9, 0.100, 0.120]),
        curve(6, [0.9, 0.102, 0.120]),
    )
    # All reach within 0.005 of 0.100 at epoch 1; 5 and 6 end at 0.120; 5 is smaller.
    assert select_cell(runs, tolerance=0.005)["alpha"] == 5
    runs = table(curve(7, [0.9, 0.1, 0.1]), curve(3, [0.9, 0.1, 0.1]))
    assert select_cell(runs)["alpha"] == 3


def test_diverged_alphas_neither_set_target_nor_win():
    runs = table(
        curve(0, [0.9, 0.01, float("nan")], status="diverged"),  # best error before blowing up
        curve(1, [0.9, 0.20, 0.10]),
        curve(2, [0.9, 0.30, 0.20]),
    )
    sel = select_cell(runs)
    assert sel["alpha"] == 1
    assert sel["target_val_error"] == pytest.approx(0.10)
    assert sel["diverged"] == "0"
    assert sel["grid"] == "0 1 2"


def test_edge_of_grid_is_flagged():
    inner = table(curve(1, [0.9, 0.5]), curve(2, [0.9, 0.1]), curve(3, [0.9, 0.5]))
    assert select_cell(inner)["at_edge"] is False
    edge = table(curve(1, [0.9, 0.5]), curve(2, [0.9, 0.3]), curve(3, [0.9, 0.1]))
    assert select_cell(edge)["at_edge"] is True
    # The grid is what was swept, diverged alphas included: a choice next to a diverged end is not at the edge.
    div = table(curve(0, [0.9, math.nan], status="diverged"), curve(1, [0.9, 0.1]), curve(2, [0.9, 0.5]))
    assert select_cell(div)["at_edge"] is False


def test_all_diverged_gives_no_alpha():
    runs = table(curve(0, [0.9, math.nan], status="diverged"), curve(1, [0.9, math.inf], status="diverged"))
    sel = select_cell(runs)
    assert sel["alpha"] is None
    assert sel["status"] == "all_diverged"
    assert sel["diverged"] == "0 1"


def test_one_diverged_seed_marks_the_alpha_and_seeds_are_averaged():
    runs = table(
        curve(1, [0.9, 0.10], seed=0),
        curve(1, [0.9, 0.30], seed=1),  # mean 0.20
        curve(2, [0.9, 0.15], seed=0),
        curve(2, [0.9, 0.15], seed=1),
        curve(3, [0.9, 0.01], seed=0),
        curve(3, [0.9, math.nan], seed=1, status="diverged"),
    )
    sel = select_cell(runs)
    assert sel["alpha"] == 2
    assert sel["diverged"] == "3"


def test_empty_validation_rows_are_ignored():
    runs = table(curve(1, [math.nan, 0.4, 0.2]), curve(2, [math.nan, 0.2, 0.2]))
    assert select_cell(runs)["alpha"] == 2


def test_select_alphas_per_cell_and_per_init():
    rows = []
    for ds, best in (("mnist", 2), ("svhn", 3)):
        for opt in ("sgd", "pathsgd"):
            for a in (1, 2, 3):
                err = 0.1 if a == best else 0.5
                rows += curve(a, [0.9, err], dataset=ds, optimizer=opt, dropout=0.0, init="balanced")
    rows += curve(1, [0.9, 0.1], dataset="mnist", optimizer="sgd", dropout=0.0, init="unbalanced")
    rows += curve(2, [0.9, 0.5], dataset="mnist", optimizer="sgd", dropout=0.0, init="unbalanced")
    sweep = pd.DataFrame(rows)

    sel = select_alphas(sweep[sweep["init"] == "balanced"])
    assert len(sel) == 4
    assert set(sel["init"]) == {"all"}
    assert chosen_alpha(sel, "mnist", "sgd", 0.0, "unbalanced") == 2
    assert chosen_alpha(sel, "svhn", "pathsgd", 0.0, "balanced") == 3
    assert chosen_alpha(sel, "svhn", "pathsgd", 0.5, "balanced") is None

    per_init = select_alphas(sweep, per_init=True)
    assert chosen_alpha(per_init, "mnist", "sgd", 0.0, "unbalanced") == 1
    assert chosen_alpha(per_init, "mnist", "sgd", 0.0, "balanced") == 2


def test_selection_table_round_trips_through_csv(tmp_path):
    sweep = table(
        curve(0, [0.9, math.nan], status="diverged", dataset="d", optimizer="sgd", dropout=0.0, init="balanced"),
        curve(1, [0.9, math.nan], status="diverged", dataset="e", optimizer="sgd", dropout=0.0, init="balanced"),
        curve(2, [0.9, 0.2], dataset="d", optimizer="sgd", dropout=0.0, init="balanced"),
    )
    sel = select_alphas(sweep)
    sel.to_csv(tmp_path / "selection.csv", index=False)
    back = pd.read_csv(tmp_path / "selection.csv")
    assert chosen_alpha(back, "d", "sgd", 0.0, "balanced") == 2
    assert chosen_alpha(back, "e", "sgd", 0.0, "balanced") is None
    assert back.set_index("dataset").loc["e", "status"] == "all_diverged"


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="tolerance"):
        select_cell(table(curve(1, [0.5])), tolerance=-1)
    with pytest.raises(ValueError, match="val_error"):
        select_cell(pd.DataFrame({"alpha": [1], "epoch": [0], "status": ["completed"]}))


def test_epoch_zero_the_common_init_neither_sets_nor_reaches_the_target():
    # The initial network (epoch 0, the same for every alpha) already has the best error: counting it,
    # every alpha would "reach" the target at epoch 0 and tie.
    runs = table(
        curve(1, [0.100, 0.300, 0.150]),
        curve(2, [0.100, 0.120, 0.110]),  # sets the target 0.110 at epoch 2
        curve(3, [0.100, 0.200, 0.112]),
    )
    sel = select_cell(runs, tolerance=0.005)
    assert sel["target_val_error"] == pytest.approx(0.110)
    assert sel["epoch_reached"] == 2
    assert sel["alpha"] == 2  # alpha 2 and 3 reach it at epoch 2; alpha 2 ends lower


def test_runner_up_margin_and_close_call():
    # Two seeds. On the mean curves alpha 2 reaches the target (0.100) at epoch 2, alpha 1 at epoch 3: decided by
    # one epoch. Seed by seed, alpha 1 reaches it at epochs 1 and 3: a spread of two epochs, more than the margin.
    fast = [0.9, 0.2, 0.104, 0.104, 0.104]
    runs = table(
        curve(2, fast, seed=0), curve(2, fast, seed=1),
        curve(1, [0.9, 0.104, 0.100, 0.100, 0.100], seed=0), curve(1, [0.9, 0.3, 0.3, 0.104, 0.100], seed=1),
    )
    sel = select_cell(runs)
    assert (sel["alpha"], sel["runner_up"], sel["decided_by"], sel["margin"]) == (2, 1, "epochs", 1)
    assert sel["seed_spread"] == 2 and sel["close_call"] is True and sel["seeds"] == 2
    # The same choice with both seeds of alpha 1 late: decided by more than the seeds disagree.
    slow = [0.9, 0.3, 0.3, 0.104, 0.100]
    sel = select_cell(table(curve(2, fast, seed=0), curve(2, fast, seed=1), curve(1, slow, seed=0), curve(1, slow, seed=1)))
    assert (sel["alpha"], sel["margin"], sel["seed_spread"], sel["close_call"]) == (2, 1, 0, False)


def test_tie_in_epochs_is_decided_by_final_error_against_its_seed_spread():
    runs = table(
        curve(3, [0.9, 0.100, 0.101], seed=0), curve(3, [0.9, 0.100, 0.111], seed=1),  # final mean 0.106
        curve(4, [0.9, 0.100, 0.107], seed=0), curve(4, [0.9, 0.100, 0.107], seed=1),  # final mean 0.107
    )
    sel = select_cell(runs)
    assert sel["alpha"] == 3 and sel["decided_by"] == "final_val_error"
    assert sel["margin"] == pytest.approx(0.001) and sel["seed_spread"] == pytest.approx(0.010)
    assert sel["close_call"] is True
    # An exact tie goes to the smaller alpha, and is always a close call.
    tie = select_cell(table(curve(5, [0.9, 0.1, 0.1]), curve(6, [0.9, 0.1, 0.1])))
    assert (tie["alpha"], tie["decided_by"], tie["margin"], tie["close_call"]) == (5, "alpha", 0, True)


def test_a_per_init_check_never_picks_the_final_alpha():
    sweep = table(curve(1, [0.9, 0.1], optimizer="sgd", init="balanced", dataset="mnist", dropout=0.0),
                  curve(2, [0.9, 0.5], optimizer="sgd", init="balanced", dataset="mnist", dropout=0.0))
    unbalanced = table(curve(5, [0.9, 0.2], optimizer="sgd", init="unbalanced", dataset="mnist", dropout=0.0))
    selection = pd.concat([select_alphas(sweep), select_alphas(unbalanced, per_init=True, role="per_init_check")])
    assert list(selection["role"]) == ["main", "per_init_check"]
    assert chosen_alpha(selection, "mnist", "sgd", 0.0, "unbalanced") == 1  # the main choice, made on balanced
