"""The paper's network: a fully connected ReLU MLP with biases, dropout on hidden units."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """ReLU MLP ``in_features -> hidden[0] -> ... -> hidden[-1] -> num_classes``.

    The paper trains 2 x 4000 hidden units (the default). Every layer is an ``nn.Linear`` with a
    bias; ``layers`` holds them in order, so ``layers[l]`` feeds hidden layer ``l``. ``dropout`` is
    the probability of *dropping* a hidden unit during training (the paper retains units with
    probability 0.5, i.e. ``dropout=0.5``); inputs are never dropped (the paper does not say it
    drops them). The forward pass flattens its input to ``[N, in_features]`` and returns logits.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (4000, 4000),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        sizes = [in_features, *hidden, num_classes]
        for name, value in (("in_features", in_features), ("num_classes", num_classes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: it must be a positive integer")
        if any(not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"hidden={list(hidden)!r} is invalid: every width must be a positive integer")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout={dropout!r} is invalid: the drop probability must lie in [0, 1)")
        self.dropout = float(dropout)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    @property
    def hidden(self) -> tuple[int, ...]:
        return tuple(layer.out_features for layer in self.layers[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
            if self.dropout > 0.0:
                x = F.dropout(x, self.dropout, self.training)
        return self.layers[-1](x)

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}"


class ConvNet(nn.Module):
    """A small all-ReLU convolutional net without batch normalization, for Path-SGD beyond MLPs:

    ``conv 3x3 -> ReLU -> avg-pool 2 -> x + conv(ReLU(conv(x))) -> ReLU -> avg-pool 2 -> linear``

    (``channels`` channels throughout, zero padding). Its inputs may come flattened, as the runner's data do:
    ``forward`` views them as ``image_shape`` (channels, height, width). Path-SGD's gamma comes from the |w|^p twin
    (``PathSGD(model, lr, input_shape=(C * H * W,))``): the residual sum and the pooling are edges of the DAG too.
    """

    def __init__(self, image_shape: Sequence[int], num_classes: int, channels: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        if dropout:  # the runner's model group has the key for every model, so that a study may sweep it
            raise ValueError(f"dropout={dropout!r} is invalid: the conv net has no dropout; use dropout=0.0")
        c_in, height, width = (int(v) for v in image_shape)
        if min(c_in, height, width, channels, num_classes) < 1 or height < 4 or width < 4:
            raise ValueError(f"image_shape={tuple(image_shape)!r}, channels={channels}: needs positive sizes and "
                             "images of at least 4 x 4 (two 2 x 2 poolings)")
        self.image_shape = (c_in, height, width)
        self.stem = nn.Conv2d(c_in, channels, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.block = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(channels, channels, 3, padding=1))
        self.head = nn.Linear(channels * (height // 4) * (width // 4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, *self.image_shape)
        x = self.pool(F.relu(self.stem(x)))
        x = F.relu(x + self.block(x))
        return self.head(self.pool(x).flatten(1))
