"""What the probe run finds for each factor (:class:`FactorTemplate`), and the fast
factors stacked into batches evaluated at any θ at once (:class:`FactorGroup`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...ops import expfam
from ..zeros import exact_log_prob

__all__ = ["FactorTemplate", "FactorGroup"]


@dataclass
class FactorTemplate:
    """One factor, from the probe run.

    Attributes
    ----------
    name : str
    family : str
    cls : type
        The distribution class to rebuild.
    slots : dict[str, tuple[str, torch.Tensor]]
        Slot -> ``("gather", positions)`` or ``("const", values)``, in the factor layout.
    value : torch.Tensor
        The site's value (observed data, or the enumerated support), factor layout.
    n_re : int
        Dims reinterpreted as event dims (``Independent``).
    mask : torch.BoolTensor or None
        Factor layout, batch dims only.
    scale : float
    plates, vars : tuple[str, ...]
    sizes : tuple[int, ...]
        Table shape.
    deps : frozenset[str]
        Params the table depends on.
    slow : str or None
        Why the table cannot be rebuilt from slots (``None`` if it can).
    """

    name: str
    family: str
    cls: type = None
    slots: dict = field(default_factory=dict)
    value: torch.Tensor = None
    n_re: int = 0
    mask: torch.Tensor = None
    scale: float = 1.0
    plates: tuple = ()
    vars: tuple = ()
    sizes: tuple = ()
    deps: frozenset = frozenset()
    slow: str = None
    masked_fill: float = 0.0  # log table entry of masked-out copies (-log K for a latent's own factor)
    scales: dict = field(default_factory=dict)  # slot -> constant factor of a scaled gather (CAVI probes)
    value_gather: bool = False  # the value is a gather of θ (a substituted latent's own factor)

    def key(self):
        """Templates with equal keys are evaluated as one stacked batch."""
        slots = tuple((s, k, tuple(t.shape), t.dtype) for s, (k, t) in sorted(self.slots.items()))
        slots += tuple((s, tuple(t.shape)) for s, t in sorted(self.scales.items()))
        mask = None if self.mask is None else tuple(self.mask.shape)
        return (self.cls, slots, tuple(self.value.shape), self.value.dtype, self.value_gather, self.n_re, mask,
                self.scale,
                self.plates, len(self.vars), self.sizes, self.masked_fill)


@dataclass
class FactorGroup:
    """Fast factors with the same key, stacked along a leading dim of size ``G``
    (size 1 where all members agree).

    Attributes
    ----------
    members : list[str]
        Factor names, in stacking order.
    template : FactorTemplate
        The first member (family, n_re, layout); its slots and value replaced by the stacks.
    slots : dict[str, tuple[str, torch.Tensor]]
    value : torch.Tensor
    mask : torch.Tensor or None
    deps : frozenset[str]
    """

    members: list
    template: FactorTemplate
    slots: dict
    value: torch.Tensor
    mask: torch.Tensor
    deps: frozenset
    stats: dict = field(default_factory=dict)  # value-derived constants (x xᵀ)
    scales: dict = field(default_factory=dict)  # slot -> stacked factors of scaled gathers

    def observed(self, theta_flat: torch.Tensor) -> torch.Tensor:
        """The members' values: the data or enumerated support, or θ's elements for the
        factors of substituted latents."""
        return theta_flat[self.value] if self.template.value_gather else self.value

    def arguments(self, theta_flat: torch.Tensor) -> dict:
        """Slot -> the distribution argument at θ (gathers, scaled gathers, constants)."""
        kw = {s: (theta_flat[t] if k == "gather" else t) for s, (k, t) in self.slots.items()}
        for s, c in self.scales.items():
            kw[s] = kw[s] * c
        return kw

    def distribution(self, theta_flat: torch.Tensor):
        """The members' base distribution at θ, batch shape ``(G,) + layout``."""
        return self.template.cls(**self.arguments(theta_flat), validate_args=False)

    def log_tables(self, theta_flat: torch.Tensor) -> torch.Tensor:
        """Log tables of every member at θ: shape ``(G,) + sizes`` (G possibly broadcast 1)."""
        t = self.template
        lp = self._gaussian(theta_flat)
        if lp is None:
            fn, value = self.distribution(theta_flat), self.observed(theta_flat)
            lp = exact_log_prob(fn, value, fn.log_prob(value))
            if t.n_re:
                lp = lp.sum(dim=tuple(range(-t.n_re, 0)))
        return self.finish(lp)

    def expected_log_tables(self, thetas: list) -> torch.Tensor:
        """The average of :meth:`log_tables` over the θ's in ``thetas`` (equal weights; CAVI's
        sigma points), shape ``(G,) + sizes``.

        For a MultivariateNormal of a floating value the average is taken of the parameters'
        natural statistics ``(Λ, Λμ, μᵀΛμ, ln|Λ|)`` (small: no data dims), and the table is
        ``½E ln|Λ| - ½⟨x xᵀ, EΛ⟩ + xᵀE[Λμ] - ½E[μᵀΛμ] - (D/2) ln 2π`` (Bishop 2006, eq.
        10.64): exact for any θ's, since the log density is linear in those statistics, and
        one pass over the data instead of one per θ."""
        t = self.template
        x = self.value
        if t.value_gather or not (t.family == "MultivariateNormal" and t.n_re == 0 and x.is_floating_point()
                                  and len(thetas) > 1):
            return sum(self.log_tables(f) for f in thetas) / len(thetas)
        acc = None
        for flat in thetas:
            kw = self.arguments(flat)
            loc = kw["loc"]
            if "precision_matrix" in kw:
                prec = kw["precision_matrix"]
            else:
                tril = kw["scale_tril"] if "scale_tril" in kw else torch.linalg.cholesky(kw["covariance_matrix"])
                prec = torch.cholesky_inverse(tril.reshape((-1,) + tril.shape[-2:])).reshape(tril.shape)
            pl = torch.einsum("...de,...e->...d", prec, loc)
            stats = (prec, pl, (pl * loc).sum(-1), torch.logdet(prec))
            acc = stats if acc is None else tuple(a + b for a, b in zip(acc, stats))
        return self.mvn_table_from_statistics(*(a / len(thetas) for a in acc))

    def mvn_table_from_statistics(self, prec, prec_loc, quad, logdet) -> torch.Tensor:
        """The members' expected MultivariateNormal log tables from the expected natural
        statistics of their arguments, ``E[Λ]``, ``E[Λμ]``, ``E[μᵀΛμ]``, ``E ln|Λ|``, laid
        out like the slots (:func:`ppl.ops.expfam.mvn_expected_log_prob`)."""
        return self.finish(expfam.mvn_expected_log_prob(self.value, prec, prec_loc, quad, logdet, self.outer()))

    def finish(self, lp: torch.Tensor) -> torch.Tensor:
        """Mask, scale and broadcast the members' log-probabilities (``(G,) +`` a layout that
        broadcasts to ``sizes``) to ``(G,) + sizes``."""
        t = self.template
        if self.mask is not None:
            lp = torch.where(self.mask, lp, torch.full((), t.masked_fill, dtype=lp.dtype, device=lp.device))
        if t.scale != 1.0:
            lp = lp * t.scale
        return lp.expand((len(self.members),) + t.sizes)

    def outer(self):
        """``x xᵀ`` of the (constant) MultivariateNormal values, computed once, or None
        when it would take more than 512 MiB."""
        x = self.value
        if self.stats.get("xx") is None and "xx" not in self.stats:
            ok = x.is_floating_point() and x.numel() * x.shape[-1] * x.element_size() <= 2 ** 29
            self.stats["xx"] = x.unsqueeze(-1) * x.unsqueeze(-2) if ok else None
        return self.stats["xx"]

    def _gaussian(self, theta_flat):
        """Normal / MultivariateNormal tables by matrix products (:mod:`ppl.ops.expfam`),
        or None for other families."""
        t = self.template
        kw = self.arguments(theta_flat)
        x = self.value
        if t.family == "Normal" and x.is_floating_point():
            return expfam.normal_log_prob(x, kw["loc"], kw["scale"], t.n_re)
        if t.family == "MultivariateNormal" and t.n_re == 0 and x.is_floating_point():
            if "covariance_matrix" in kw:
                tril = torch.linalg.cholesky(kw["covariance_matrix"])
            elif "scale_tril" in kw:
                tril = kw["scale_tril"]
            else:
                tril = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(kw["precision_matrix"])))
            return expfam.mvn_log_prob(x, kw["loc"], tril, self.outer())
        return None
