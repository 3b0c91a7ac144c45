"""Exponential-family forms of the Gaussian log densities, for evaluating many
(data point, component) pairs with matrix products.

``log N(x | μ, Σ) = -½ (x-μ)ᵀ Λ (x-μ) - ½ log|Σ| - (D/2) log 2π`` with ``Λ = Σ⁻¹``
(Bishop 2006, eq. 2.43).  Writing ``Λ = Aᵀ A`` with ``A = L⁻¹`` (``Σ = L Lᵀ``), the
quadratic form is ``‖A x - A μ‖²``: one product of the data with every component's
``A`` (a GEMM when data and components vary along different dims), instead of a
triangular solve per (data point, component) pair.  The diagonal case (Normal with
Independent dims) is ``Σ_d λ_d x_d² - 2 λ_d μ_d x_d + λ_d μ_d²`` (sufficient statistics
``x, x²`` against natural parameters ``λμ, -λ/2``; eq. 2.220 ff.).

Tensors are *compact*: leading dims broadcast against each other and are size 1 where a
tensor is constant (data vary along plates, parameters along latents);
:func:`broadcast_einsum` contracts them without materialising the broadcast.
"""

from __future__ import annotations

import math
import string

import torch

from .shapes import broadcast_shapes

__all__ = ["broadcast_einsum", "pair_contract", "normal_log_prob", "mvn_log_prob", "mvn_expected_log_prob", "uniform_simplex"]

_LETTERS = string.ascii_lowercase


def broadcast_einsum(operands, out_tail: str = "", keep=None, rank: int = None) -> torch.Tensor:
    """Product of ``operands`` summed over their trailing dims not in ``out_tail``.

    Parameters
    ----------
    operands : list[tuple[torch.Tensor, str]]
        Each tensor has broadcastable leading dims, then one trailing dim per upper-case
        letter of its string.
    out_tail : str
        Trailing letters kept in the output.
    keep : collection of int, optional
        Leading dims (counted from the left of the common rank) to keep; default all.
        The others are summed.
    rank : int, optional
        The common number of leading dims (default: the largest among the operands).

    Returns
    -------
    torch.Tensor
        Leading dims: the kept ones, size 1 where no operand varies along them; then
        ``out_tail``.
    """
    rank = max(t.dim() - len(tl) for t, tl in operands) if rank is None else rank
    keep = range(rank) if keep is None else keep
    if len(operands) > 2:  # torch.einsum contracts pairwise: bound the pairwise intermediate
        chunked = _chunked_einsum(operands, out_tail, list(keep), rank)
        if chunked is not None:
            return chunked
    return _einsum_once(operands, out_tail, keep, rank)


def _einsum_once(operands, out_tail: str, keep, rank: int) -> torch.Tensor:
    """The body of :func:`broadcast_einsum`: one ``torch.einsum`` call."""
    specs, tensors, present, sizes = [], [], set(), {}
    for t, tl in operands:
        e = t.dim() - len(tl)
        t = t.reshape((1,) * (rank - e) + tuple(t.shape))
        dims = [d for d in range(rank) if t.shape[d] != 1]
        t = t.reshape(tuple(t.shape[d] for d in dims) + tuple(t.shape[rank:]))
        specs.append("".join(_LETTERS[d] for d in dims) + tl)
        tensors.append(t)
        present.update(dims)
        for d in dims:
            sizes[d] = t.shape[dims.index(d)]
    out = [d for d in keep if d in present]
    res = torch.einsum(",".join(specs) + "->" + "".join(_LETTERS[d] for d in out) + out_tail, *tensors)
    shape = [sizes[d] if d in present else 1 for d in keep]
    return res.reshape(tuple(shape) + tuple(res.shape[len(out):]))


#: Elements (data x every other dim) a summed einsum of three or more operands may span before
#: the summed data dim is taken in chunks: torch.einsum contracts pairwise, and a grouped
#: sum such as Σ_n w_nk x_nd x_ne would otherwise hold an (N, K, D) intermediate.
EINSUM_CHUNK = 1 << 24


def _chunked_einsum(operands, out_tail: str, keep: list, rank: int):
    """:func:`broadcast_einsum` as a sum of chunks along its widest summed leading dim, when
    the operands span more than :data:`EINSUM_CHUNK` elements; ``None`` otherwise."""
    leads, letters = [], {}
    for t, tl in operands:
        lead = tuple(t.shape[: t.dim() - len(tl)])
        leads.append((1,) * (rank - len(lead)) + lead)
        for c, n in zip(tl, t.shape[t.dim() - len(tl):]):
            letters[c] = max(letters.get(c, 1), int(n))
    span = broadcast_shapes(*leads)
    summed = [d for d in range(rank) if d not in keep and span[d] > 1]
    if not summed or math.prod(span) * math.prod(letters.values()) <= EINSUM_CHUNK:
        return None
    d = max(summed, key=lambda k: span[k])
    rows = max(1, EINSUM_CHUNK // max(1, math.prod(span) * math.prod(letters.values()) // span[d]))
    total = None
    for start in range(0, span[d], rows):
        n = min(rows, span[d] - start)
        part_ops = []
        for (t, tl), lead in zip(operands, leads):
            if lead[d] > 1:
                t = t.reshape(lead + tuple(t.shape[t.dim() - len(tl):])).narrow(d, start, n)
            part_ops.append((t, tl))
        part = _einsum_once(part_ops, out_tail, keep, rank)
        total = part if total is None else total + part
    return total


def pair_contract(a: torch.Tensor, b: torch.Tensor, n_tail: int) -> torch.Tensor:
    """``Σ_tail a * b`` over the last ``n_tail`` dims, leading dims broadcast.

    When ``a`` and ``b`` vary along different leading dims (data along plates, parameters
    along latents and components) this is one matrix product ``A Bᵀ`` of the flattened
    tensors, whose backward is also one product each way (``torch.einsum`` routes it
    through a batched product that is several times slower backward for a tall data
    operand); otherwise :func:`broadcast_einsum`.

    Returns
    -------
    torch.Tensor
        The broadcast leading shape, size 1 where neither varies."""
    rank = max(a.dim(), b.dim()) - n_tail
    a = a.reshape((1,) * (rank + n_tail - a.dim()) + tuple(a.shape))
    b = b.reshape((1,) * (rank + n_tail - b.dim()) + tuple(b.shape))
    da = [d for d in range(rank) if a.shape[d] != 1]
    db = [d for d in range(rank) if b.shape[d] != 1]
    tail = tuple(broadcast_shapes(a.shape[rank:], b.shape[rank:]))
    if set(da) & set(db) or tuple(a.shape[rank:]) != tail or tuple(b.shape[rank:]) != tail:
        letters = string.ascii_uppercase[:n_tail]
        return broadcast_einsum([(a, letters), (b, letters)])
    k = math.prod(tail)
    a2 = a.reshape(tuple(a.shape[d] for d in da) + tail).reshape(-1, k)
    b2 = b.reshape(tuple(b.shape[d] for d in db) + tail).reshape(-1, k)
    out = (a2 @ b2.T).reshape(tuple(a.shape[d] for d in da) + tuple(b.shape[d] for d in db))
    order = da + db
    out = out.permute([order.index(d) for d in sorted(order)]) if order != sorted(order) else out
    shape = [a.shape[d] if d in da else b.shape[d] if d in db else 1 for d in range(rank)]
    return out.reshape(shape)


def _event_sum(t: torch.Tensor, n_event: int, count: int) -> torch.Tensor:
    """Sum over the last ``n_event`` dims of a compact tensor, counting broadcast copies."""
    dims = tuple(range(-n_event, 0))
    return t.sum(dim=dims) * (count // math.prod(t.shape[-n_event:]))


def normal_log_prob(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, n_event: int) -> torch.Tensor:
    """``Σ_{last n_event dims} log N(x | loc, scale²)`` for compact broadcastable tensors.

    Returns the broadcast batch shape (compact where all inputs are size 1)."""
    if n_event == 0:
        return -((x - loc) ** 2) / (2 * scale * scale) - scale.log() - 0.5 * math.log(2 * math.pi)
    event = tuple(broadcast_shapes(x.shape, loc.shape, scale.shape)[-n_event:])
    count = math.prod(event)
    if tuple(x.shape[-n_event:]) != event:
        x = x.expand(tuple(x.shape[:-n_event]) + event)
    tail = string.ascii_uppercase[:n_event]
    lam = scale.pow(-2).expand(tuple(scale.shape[:-n_event]) + event)
    quad = (broadcast_einsum([(x * x, tail), (lam, tail)])
            - 2 * broadcast_einsum([(x, tail), (lam * loc, tail)])
            + _event_sum(lam * loc * loc, n_event, count))
    return -0.5 * quad - _event_sum(scale.log(), n_event, count) - 0.5 * count * math.log(2 * math.pi)


def mvn_log_prob(x: torch.Tensor, loc: torch.Tensor, scale_tril: torch.Tensor, xx: torch.Tensor = None):
    """``log N(x | loc, L Lᵀ)`` for compact broadcastable ``x (..., D)``, ``loc (..., D)``,
    ``scale_tril (..., D, D)``.  With ``xx = x xᵀ`` (``(..., D, D)``, data constants) the
    quadratic form is ``⟨xxᵀ, Λ⟩ - 2 xᵀΛμ + μᵀΛμ``: two matrix products and no
    ``(data × component × D)`` intermediate."""
    d = x.shape[-1]
    eye = torch.eye(d, dtype=scale_tril.dtype, device=scale_tril.device)
    half_logdet = scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    if xx is not None:
        prec = torch.cholesky_inverse(scale_tril) if scale_tril.dim() == 2 else \
            torch.cholesky_inverse(scale_tril.reshape(-1, d, d)).reshape(scale_tril.shape)
        pmu = torch.einsum("...de,...e->...d", prec, loc)
        quad = (broadcast_einsum([(xx, "DE"), (prec, "DE")]) - 2 * broadcast_einsum([(x, "D"), (pmu, "D")])
                + (pmu * loc).sum(-1))
    else:
        a = torch.linalg.solve_triangular(scale_tril, eye.expand_as(scale_tril), upper=False)  # L⁻¹
        amu = torch.einsum("...de,...e->...d", a, loc)
        quad = _mahalanobis(a, x, amu)
    return -0.5 * quad - half_logdet - 0.5 * d * math.log(2 * math.pi)


#: Elements the ``(data × component × D)`` temporary of :func:`_mahalanobis` may hold before
#: the data are taken in chunks (32 MiB at float64: it stays in cache, and no fresh pages
#: are faulted in for every call).
MAHALANOBIS_CHUNK = 1 << 22


def _mahalanobis(a: torch.Tensor, x: torch.Tensor, amu: torch.Tensor) -> torch.Tensor:
    """``‖L⁻¹x − L⁻¹μ‖²`` for compact broadcastable ``a = L⁻¹ (..., D, D)``, ``x (..., D)``,
    ``amu = L⁻¹μ (..., D)``; over many data points it goes in chunks along the widest batch
    dim of ``x`` along which ``a`` and ``amu`` do not vary (the same numbers)."""
    rank = max(a.dim() - 2, x.dim() - 1, amu.dim() - 1)

    def batch(t, tail):
        return (1,) * (rank - (t.dim() - tail)) + tuple(t.shape[: t.dim() - tail])

    bx, ba, bm = batch(x, 1), batch(a, 2), batch(amu, 1)
    full = broadcast_shapes(bx, ba, bm)
    dims = [i for i in range(rank) if bx[i] > 1 and ba[i] == 1 and bm[i] == 1]
    total = math.prod(full) * x.shape[-1]
    if not dims or total <= MAHALANOBIS_CHUNK:
        return (broadcast_einsum([(a, "DE"), (x, "E")], "D") - amu).pow(2).sum(-1)
    i = max(dims, key=lambda k: bx[k])
    xi = i - (rank - (x.dim() - 1))  # the dim in x itself
    rows = max(1, MAHALANOBIS_CHUNK // max(1, total // bx[i]))
    parts = []
    for start in range(0, bx[i], rows):
        xc = x.narrow(xi, start, min(rows, bx[i] - start))
        parts.append((broadcast_einsum([(a, "DE"), (xc, "E")], "D", rank=rank) - amu).pow(2).sum(-1))
    return torch.cat(parts, dim=i)


def mvn_expected_log_prob(x, prec, prec_loc, quad, logdet, xx=None) -> torch.Tensor:
    """``E[log N(x | μ, Λ⁻¹)]`` from the expected natural statistics of the parameters
    (Bishop 2006, eq. 10.64): ``½E ln|Λ| - ½⟨x xᵀ, EΛ⟩ + xᵀE[Λμ] - ½E[μᵀΛμ] - (D/2) ln 2π``.

    Parameters
    ----------
    x : torch.Tensor
        ``(..., D)`` compact data.
    prec, prec_loc, quad, logdet : torch.Tensor
        ``E[Λ] (..., D, D)``, ``E[Λμ] (..., D)``, ``E[μᵀΛμ] (...)``, ``E ln|Λ| (...)``,
        compact and broadcastable with ``x``'s batch dims.
    xx : torch.Tensor, optional
        ``x xᵀ`` (``(..., D, D)``); without it ``xᵀ E[Λ] x`` is formed by one product.

    Returns
    -------
    torch.Tensor
        The broadcast batch shape (nats)."""
    d = x.shape[-1]
    if xx is not None:
        sq = pair_contract(xx, prec, 2)
    else:
        sq = broadcast_einsum([(x, "D"), (prec, "DE"), (x, "E")])
    lin = pair_contract(x, prec_loc, 1)
    return 0.5 * logdet - 0.5 * sq + lin - 0.5 * quad - 0.5 * d * math.log(2 * math.pi)


def uniform_simplex(shape, generator=None, dtype=torch.float64) -> torch.Tensor:
    """Rows drawn uniformly from the probability simplex: Dirichlet(1, ..., 1) along the
    last dim, as normalised standard exponentials (Devroye 1986, §XI.4.1).

    Parameters
    ----------
    shape : tuple[int, ...]
        Output shape; the last dim is the number of categories.
    generator : torch.Generator, optional
    dtype : torch.dtype

    Returns
    -------
    torch.Tensor
        Shape ``shape``, non-negative, each last-dim row summing to 1.
    """
    e = -torch.log1p(-torch.rand(tuple(shape), generator=generator, dtype=dtype))  # Exp(1) draws
    return e / e.sum(-1, keepdim=True)
