"""The step's capture modes (``pathsgd.engine.train_epoch(capture=...)``) compute what the eager step does.

Torch alone (no Hydra): the GPU check runs this file on a machine without the runner's dependencies.
"""

from __future__ import annotations

import pytest
import torch

from pathsgd import MLP, PathSGD
from pathsgd.engine import CAPTURE_MODES, train_epoch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def model_and_optimizer(optimizer: str, device: str, dropout: float = 0.5):
    torch.manual_seed(0)
    model = MLP(20, 10, hidden=(32, 32), dropout=dropout).to(device)
    if optimizer == "pathsgd":
        opt = PathSGD(model, 1e-2)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=1e-1)
    else:
        opt = torch.optim.Adagrad(model.parameters(), lr=1e-2)
    return model, opt


def epochs(optimizer: str, device: str, capture, n_epochs: int = 3):
    model, opt = model_and_optimizer(optimizer, device)
    gen = torch.Generator(device=device).manual_seed(1)
    data = torch.Generator().manual_seed(2)
    x = torch.rand(230, 20, generator=data).to(device)  # 230: the last batch of 50 is smaller
    y = torch.randint(0, 10, (230,), generator=data).to(device)
    torch.manual_seed(3)
    losses = torch.stack([train_epoch(model, opt, x, y, 50, gen, capture=capture) for _ in range(n_epochs)])
    return losses, model


def test_graph_on_the_cpu_is_the_eager_step():
    eager, m_eager = epochs("pathsgd", "cpu", None)
    graph, m_graph = epochs("pathsgd", "cpu", "graph")
    assert torch.equal(eager, graph)
    assert all(torch.equal(a, b) for a, b in zip(m_eager.parameters(), m_graph.parameters()))


@pytest.mark.slow  # seconds of training or subprocesses: make test-slow (CI runs it)
def test_compile_equals_eager_to_float32_rounding():
    try:  # whether inductor works here at all (a C++ toolchain)
        torch.compile(lambda t: t * 2.0)(torch.ones(3))
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"torch.compile is not usable here: {type(err).__name__}: {err}")
    eager, m_eager = epochs("pathsgd", "cpu", None, 2)
    compiled, m_compiled = epochs("pathsgd", "cpu", "compile", 2)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    for a, b in zip(m_eager.parameters(), m_compiled.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_an_unknown_capture_mode_is_an_error():
    model, opt = model_and_optimizer("sgd", "cpu")
    with pytest.raises(ValueError, match="capture='cudagraph' is unknown"):
        train_epoch(model, opt, torch.rand(4, 20), torch.zeros(4, dtype=torch.long), 2, torch.Generator(),
                    capture="cudagraph")
    assert CAPTURE_MODES == (None, "graph", "compile")


@needs_cuda
@pytest.mark.parametrize("optimizer", ["pathsgd", "sgd", "adagrad"])
def test_cuda_graph_equals_eager(optimizer):
    eager, m_eager = epochs(optimizer, "cuda", None)
    graph, m_graph = epochs(optimizer, "cuda", "graph")
    torch.testing.assert_close(graph, eager, rtol=1e-5, atol=1e-6)
    for a, b in zip(m_eager.parameters(), m_graph.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
