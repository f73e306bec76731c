"""Figure 1(b, c): the toy updates, computed by the package's SGD and PathSGD."""

import pandas as pd
import pytest

from pathsgd.toy import TOY_COLUMNS, toy_table, write_toy_csv


@pytest.fixture(scope="module")
def toy():
    return pd.DataFrame(toy_table())


def weights(toy, panel, network, state):
    sel = toy[(toy.panel == panel) & (toy.network == network) & (toy.state == state) & (toy.kind == "weight")]
    return sel.sort_values(["layer", "dst", "src"])["value"].to_numpy()


def outputs(toy, panel, network, state):
    sel = toy[(toy.panel == panel) & (toy.network == network) & (toy.state == state) & (toy.kind == "output")]
    return sel.sort_values("dst")["value"].to_numpy()


def test_chain_sgd_blows_up_the_small_weight_and_pathsgd_does_not(toy):
    assert weights(toy, "b", "balanced", "init") == pytest.approx([1, 1])
    assert weights(toy, "b", "rescaled", "init") == pytest.approx([0.1, 10])
    # SGD: w1 += w2 x, w2 += w1 x (delta = -1, step 1)
    assert weights(toy, "b", "balanced", "sgd") == pytest.approx([2, 2])
    assert weights(toy, "b", "rescaled", "sgd") == pytest.approx([10.1, 10.1])
    # Path-SGD divides by gamma(w1) = w2^2 and gamma(w2) = w1^2: the rescaling of the balanced update.
    assert weights(toy, "b", "balanced", "pathsgd") == pytest.approx([2, 2])
    assert weights(toy, "b", "rescaled", "pathsgd") == pytest.approx([0.2, 20])
    assert outputs(toy, "b", "rescaled", "sgd") == pytest.approx([102.01])
    assert outputs(toy, "b", "rescaled", "pathsgd") == pytest.approx(outputs(toy, "b", "balanced", "pathsgd"))


def test_two_layer_net_functions_differ_after_sgd_but_not_after_pathsgd(toy):
    # Same function before any update.
    assert outputs(toy, "c", "rescaled", "init") == pytest.approx(outputs(toy, "c", "balanced", "init"))
    sgd_b, sgd_r = outputs(toy, "c", "balanced", "sgd"), outputs(toy, "c", "rescaled", "sgd")
    assert sgd_b == pytest.approx([36, 36])
    assert sgd_r[0] > 10 * sgd_b[0]
    assert outputs(toy, "c", "rescaled", "pathsgd") == pytest.approx(outputs(toy, "c", "balanced", "pathsgd"))
    # Path-SGD's rescaled weights are the rescaling (unit 0: in x0.1, out /0.1) of its balanced weights.
    bal, res = weights(toy, "c", "balanced", "pathsgd"), weights(toy, "c", "rescaled", "pathsgd")
    # order: layer 1 (dst, src) = (0,0), (0,1), (1,0), (1,1); layer 2 (dst, src) the same
    factor = [0.1, 0.1, 1, 1, 10, 1, 10, 1]
    assert res == pytest.approx(bal * factor)


def test_toy_csv_round_trips(tmp_path):
    path = write_toy_csv(tmp_path / "fig1" / "toy.csv")
    back = pd.read_csv(path)
    assert list(back.columns) == TOY_COLUMNS
    assert set(back.state) == {"init", "sgd", "pathsgd"}
    assert set(back.panel) == {"b", "c"}
