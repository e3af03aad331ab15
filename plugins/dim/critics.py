"""Deep InfoMax's learned critics: separable ("encode and dot") and concat-and-convolve.

Both are ordinary :class:`~selfsup.interfaces.Critic` s on vectors and also score a global
vector against every position of a local feature map:

=================  ===========================================  ============================
method             inputs                                       output
=================  ===========================================  ============================
``forward``        query ``[N, Dq]``, keys ``[M, Dk]``          ``[N, M]`` all pairs
``pair``           query ``[N, Dq]``, key ``[N, Dk]``           ``[N]`` aligned pairs
``score_local``    query ``[N, Dq]``, local map ``[M, Dk, H, W]``  ``[N, M, H*W]``
=================  ===========================================  ============================

A 1x1 convolution is a linear layer applied at every position, so the same weights score
vectors and local maps: a map ``[M, C, H, W]`` is read as ``M*H*W`` vectors of width C.

Input widths may be given to the constructor or left to :meth:`LearnedCritic.setup`, which
the objective that owns the critic calls once it knows its encoder's widths (like
``NegativeSampler.setup``). :func:`score_local_map` scores a local map with *any* critic
(dot, cosine, bilinear fall back to treating positions as keys). Under torch.distributed,
:func:`score_global_batch` and ``score_local_map(..., gather=True)`` score this process's
queries against the keys of every process.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from selfsup import distributed
from selfsup.interfaces import Critic


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def map_to_vectors(local: Tensor) -> Tensor:
    """``[M, C, H, W]`` -> ``[M * H * W, C]``, position-major within each sample."""
    m, c = local.shape[:2]
    return local.reshape(m, c, -1).transpose(1, 2).reshape(-1, c)


class EmbeddingNet(nn.Module):
    """MLP on the last dimension, plus a linear shortcut: ``[..., in_dim] -> [..., out_dim]``.

    ``h = block(x) + shortcut(x)`` where block is ``num_hidden_layers`` x (Linear-[BN]-ReLU)
    followed by a Linear. On a local map this is the stack of 1x1 convolutions of
    cortex_DIM's ``MI1x1ConvNet``; on vectors it is its ``MIFCNet``. The shortcut starts as
    a noisy identity (as in cortex_DIM) when ``out_dim >= in_dim``. ``layer_norm`` adds a
    LayerNorm on the output (cortex_DIM does so for local embeddings).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int,
        num_hidden_layers: int = 1,
        shortcut: bool = True,
        batch_norm: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_positive(in_dim=in_dim, out_dim=out_dim, hidden_dim=hidden_dim)
        if num_hidden_layers < 0:
            raise ValueError(f"num_hidden_layers must be >= 0, got {num_hidden_layers}")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(num_hidden_layers):
            layers.append(nn.Linear(width, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU())
            width = hidden_dim
        layers.append(nn.Linear(width, out_dim))
        self.block = nn.Sequential(*layers)
        self.shortcut = nn.Linear(in_dim, out_dim, bias=False) if shortcut else None
        if self.shortcut is not None and out_dim >= in_dim:
            with torch.no_grad():
                self.shortcut.weight.uniform_(-0.01, 0.01)
                self.shortcut.weight[:in_dim, :in_dim].fill_diagonal_(1.0)
        self.norm = nn.LayerNorm(out_dim) if layer_norm else None

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])  # BatchNorm1d needs [rows, features]
        h = self.block(flat)
        if self.shortcut is not None:
            h = h + self.shortcut(flat)
        if self.norm is not None:
            h = self.norm(h)
        return h.reshape(*lead, h.shape[-1])


class LearnedCritic(Critic):
    """A critic with networks whose input widths are known late (see :meth:`setup`)."""

    #: The conformance kit scores plain vectors; give it the widths up front.
    conformance_params = {"query_dim": 8, "key_dim": 8}

    def __init__(self) -> None:
        super().__init__()
        self.query_dim: int | None = None
        self.key_dim: int | None = None

    def _setup_if_given(self, query_dim: int | None, key_dim: int | None) -> None:
        """Constructors end with this: build now when both widths are known."""
        if (query_dim is None) != (key_dim is None):
            raise ValueError("give both query_dim and key_dim, or neither (the objective then calls setup)")
        if query_dim is not None and key_dim is not None:
            self.setup(query_dim, key_dim)

    def setup(self, query_dim: int, key_dim: int) -> None:
        """Build the networks for query width ``query_dim`` and key width ``key_dim``.

        A second call with the same widths does nothing; other widths raise ValueError.
        """
        _check_positive(query_dim=query_dim, key_dim=key_dim)
        if self.query_dim is not None:
            if (self.query_dim, self.key_dim) != (query_dim, key_dim):
                raise ValueError(
                    f"{type(self).__name__} was built for query width {self.query_dim} and key width "
                    f"{self.key_dim}, not {query_dim} and {key_dim}; leave query_dim/key_dim unset to let "
                    "the objective choose"
                )
            return
        self.query_dim, self.key_dim = int(query_dim), int(key_dim)
        self._build(self.query_dim, self.key_dim)

    def _build(self, query_dim: int, key_dim: int) -> None:
        raise NotImplementedError

    def _check_ready(self) -> None:
        if self.query_dim is None:
            raise RuntimeError(
                f"{type(self).__name__} has no input widths yet: pass query_dim and key_dim, or call setup()"
            )

    def score_local(self, query: Tensor, local: Tensor) -> Tensor:
        """query ``[N, Dq]``, local map ``[M, Dk, H, W]`` -> scores ``[N, M, H*W]``."""
        m, positions = local.shape[0], local.shape[2] * local.shape[3]
        return self.forward(query, map_to_vectors(local)).view(query.shape[0], m, positions)


class SeparableCritic(LearnedCritic):
    """Encode and dot: ``f(query) . g(key) / T`` with MLP embedding nets (DIM's default critic).

    f and g are :class:`EmbeddingNet` s (hidden layers of ``hidden_dim``, output
    ``embedding_dim``, linear shortcut); on a local map g is a stack of 1x1 convolutions.
    Costs O((N + M) * embedding_dim) network evaluations plus one ``[N, E] x [E, M]``
    product. The temperature T defaults to ``sqrt(embedding_dim)`` (a scaled dot product,
    so the first scores are O(1) instead of saturating the estimator; cortex_DIM uses 1).
    BatchNorm in the hidden layers follows cortex_DIM; Poole et al.'s MI benchmark critic
    is ``shortcut=False, batch_norm=False, num_hidden_layers=2, temperature=1``.
    """

    def __init__(
        self,
        query_dim: int | None = None,
        key_dim: int | None = None,
        hidden_dim: int = 512,
        embedding_dim: int = 512,
        num_hidden_layers: int = 1,
        shortcut: bool = True,
        batch_norm: bool = True,
        layer_norm: bool = False,
        temperature: float | None = None,
    ) -> None:
        super().__init__()
        _check_positive(hidden_dim=hidden_dim, embedding_dim=embedding_dim)
        if num_hidden_layers < 0:
            raise ValueError(f"num_hidden_layers must be >= 0, got {num_hidden_layers}")
        if temperature is None:
            temperature = math.sqrt(embedding_dim)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.hidden_dim, self.embedding_dim = hidden_dim, embedding_dim
        self.num_hidden_layers = num_hidden_layers
        self.options = {"shortcut": shortcut, "batch_norm": batch_norm, "layer_norm": layer_norm}
        self.temperature = float(temperature)
        self._setup_if_given(query_dim, key_dim)

    def _build(self, query_dim: int, key_dim: int) -> None:
        def net(width: int) -> EmbeddingNet:
            return EmbeddingNet(width, self.embedding_dim, self.hidden_dim, self.num_hidden_layers, **self.options)

        self.query_net = net(query_dim)
        self.key_net = net(key_dim)

    def embed_query(self, query: Tensor) -> Tensor:
        """``[N, Dq]`` -> ``[N, E]``."""
        self._check_ready()
        return self.query_net(query)

    def embed_keys(self, keys: Tensor) -> Tensor:
        """``[..., Dk]`` -> ``[..., E]``."""
        self._check_ready()
        return self.key_net(keys)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return self.embed_query(query) @ self.embed_keys(keys).T / self.temperature  # [N, E] x [E, M]

    def pair(self, query: Tensor, key: Tensor) -> Tensor:
        return (self.embed_query(query) * self.embed_keys(key)).sum(-1) / self.temperature  # [N]

    def score_local(self, query: Tensor, local: Tensor, gather: bool = False) -> Tensor:
        """query ``[N, Dq]``, local map ``[M, Dk, H, W]`` -> ``[N, M, H*W]``; with ``gather``,
        ``[N, W*M, H*W]`` against the maps of every process (embedded before the gather)."""
        q = self.embed_query(query)  # [N, E]
        k = self.embed_keys(local.flatten(2).transpose(1, 2))  # [M, HW, C] -> [M, HW, E]
        if gather:
            k = distributed.gather_with_grad(k)  # [W*M, HW, E]
        return torch.einsum("ne,mpe->nmp", q, k) / self.temperature  # [N, M, HW]


class ConcatCritic(LearnedCritic):
    """Concat and score: an MLP on ``[query, key]`` for every pair (DIM's concat-and-convolve).

    On a local map the global vector is tiled, concatenated with every position and passed
    through 1x1 convolutions down to one score per position. The first layer is split as
    ``W [q; k] = W_q q + W_k k`` so all N x M pairs cost one ``[N, M, hidden]`` sum rather
    than N x M concatenations; the remaining ``num_hidden_layers - 1`` hidden layers run on
    every pair (O(N * M * hidden^2) work).
    """

    def __init__(
        self,
        query_dim: int | None = None,
        key_dim: int | None = None,
        hidden_dim: int = 512,
        num_hidden_layers: int = 2,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_positive(hidden_dim=hidden_dim, num_hidden_layers=num_hidden_layers)
        self.hidden_dim, self.num_hidden_layers, self.batch_norm = hidden_dim, num_hidden_layers, batch_norm
        self._setup_if_given(query_dim, key_dim)

    def _build(self, query_dim: int, key_dim: int) -> None:
        self.first = nn.Linear(query_dim + key_dim, self.hidden_dim)  # weight [H, Dq + Dk]
        rest: list[nn.Module] = [nn.BatchNorm1d(self.hidden_dim)] if self.batch_norm else []
        rest.append(nn.ReLU())
        for _ in range(self.num_hidden_layers - 1):
            rest.append(nn.Linear(self.hidden_dim, self.hidden_dim))
            if self.batch_norm:
                rest.append(nn.BatchNorm1d(self.hidden_dim))
            rest.append(nn.ReLU())
        rest.append(nn.Linear(self.hidden_dim, 1))
        self.rest = nn.Sequential(*rest)

    def _head(self, pre_activation: Tensor) -> Tensor:
        """First-layer outputs ``[..., H]`` -> scores ``[...]``.

        Layers run on the ``[N, M, H]`` tensor as it is (only BatchNorm needs rows): on the
        CPU this is several times faster than flattening to ``[N*M, H]`` first.
        """
        h = pre_activation
        for layer in self.rest:
            if isinstance(layer, _BatchNorm):  # BatchNorm1d, or a split / global one put in its place
                h = layer(h.reshape(-1, self.hidden_dim)).reshape(h.shape)
            else:
                h = layer(h)
        return h.squeeze(-1)

    def _split_first(self, query: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        self._check_ready()
        w_query, w_key = self.first.weight.split([self.query_dim, self.key_dim], dim=1)  # type: ignore[list-item]
        return query @ w_query.T + self.first.bias, keys @ w_key.T  # [N, H], [M, H]

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        a, b = self._split_first(query, keys)
        return self._head(a.unsqueeze(1) + b.unsqueeze(0))  # [N, M, H] -> [N, M]

    def pair(self, query: Tensor, key: Tensor) -> Tensor:
        a, b = self._split_first(query, key)
        return self._head(a + b)  # [N]


def score_global_batch(critic: Critic, query: Tensor, keys: Tensor) -> Tensor:
    """Similarities of this process's queries ``[N, Dq]`` to the keys of every process
    ``[N, Dk]`` each -> ``[N, W*N]`` (``[N, N]`` in one process; keys gathered with gradients,
    rank order, so column ``rank*N + i`` is query i's own key).

    A :class:`SeparableCritic` embeds its keys before they are gathered, so its batch norm
    sees this process's rows, as every other batch norm does.
    """
    if isinstance(critic, SeparableCritic):
        embedded = distributed.gather_with_grad(critic.embed_keys(keys))  # [W*N, E]
        scores = critic.embed_query(query) @ embedded.T / critic.temperature  # [N, E] x [E, W*N]
        return scores if critic.higher_is_similar else -scores
    return critic.similarity(query, distributed.gather_with_grad(keys))


def score_local_map(critic: Critic, query: Tensor, local: Tensor, gather: bool = False) -> Tensor:
    """Scores of every global vector against every position of every local map.

    query ``[N, D]``, local ``[M, C, H, W]`` -> ``[N, M, H*W]`` similarities (higher = more
    similar). Critics with a ``score_local`` method use it; any other critic (dot, cosine,
    bilinear) scores the ``M*H*W`` position vectors as keys, so C must fit its key width.
    gather: under torch.distributed, score against the maps of every process (gathered with
    gradients, in rank order): ``[N, W*M, H*W]``; a :class:`SeparableCritic` embeds them first.
    """
    if local.dim() != 4:
        raise ValueError(f"local map must be [M, C, H, W], got shape {tuple(local.shape)}")
    if isinstance(critic, SeparableCritic):
        scores = critic.score_local(query, local, gather=gather)
        return scores if critic.higher_is_similar else -scores
    if gather:
        local = distributed.gather_with_grad(local)  # [W*M, C, H, W]
    if hasattr(critic, "score_local"):
        scores = critic.score_local(query, local)
        return scores if critic.higher_is_similar else -scores
    m, positions = local.shape[0], local.shape[2] * local.shape[3]
    return critic.similarity(query, map_to_vectors(local)).view(query.shape[0], m, positions)


def setup_critic(critic: Critic, query_dim: int, key_dim: int) -> None:
    """Give a critic its input widths if it builds its networks late (no-op otherwise)."""
    if isinstance(critic, LearnedCritic):
        critic.setup(query_dim, key_dim)
