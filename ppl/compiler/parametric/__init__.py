"""Factor tables as functions of the ``ppl.param`` values θ, re-evaluated without
re-running the model.

One enumerated run of the model with every ``ppl.param`` replaced by a
:class:`~ppl.compiler.probe.Probe` shows, for every factor, whether each parameter of
its distribution is a *gather* of θ (``loc[z]``: entry ``e`` is θ element ``i(e)``), a
constant, or some other function of θ.  A factor whose distribution parameters are all
gathers or constants is *fast*: its log table at any θ is
``Family(**{slot: θ[i]}).log_prob(value)``, and factors with the same family and shapes
(the ``T`` emission factors of a ``markov`` loop) are stacked and evaluated as one batch.
Every other factor is *slow*: its table is recomputed by a model run with the new θ
substituted (exact for any model code, but a full trace per evaluation).

Layouts follow :func:`ppl.compiler.tables.factor_layout`: plates (global order), then the
factor's discrete latents (scope order), then the slot's own trailing dims (Independent
dims, then the parameter's event dims); size 1 where a tensor is constant.

This is what the EM backend's E-step (tables at the new θ) and M-step (closed forms
over gathers; expected complete-data log-likelihood for L-BFGS) are built on.

Modules: :mod:`.space` (θ as a flat vector), :mod:`.groups` (templates and stacked
groups), :mod:`.templates` (reading a factor of the probe run), :mod:`.evaluator` (the
probe run and the evaluation at a new θ).  The messengers the probe run uses are in
:mod:`ppl.compiler.handlers`.
"""

from ..handlers import SubstituteLatents
from .evaluator import ParametricTables, parametric_tables
from .groups import FactorGroup, FactorTemplate
from .space import ParamSpace
from .templates import FAMILY_SLOTS, slot_event_rank

__all__ = ["SubstituteLatents", "ParamSpace", "FactorTemplate", "FactorGroup", "ParametricTables", "parametric_tables",
           "slot_event_rank", "FAMILY_SLOTS"]
