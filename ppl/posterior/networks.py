"""``post.load_module_weights()``: the learned ``pyro.module`` weights written into the
user's networks, on request (a ppl call itself leaves them as it found them:
:mod:`ppl.backends.common.modules`)."""

from __future__ import annotations

__all__ = ["NetworkWeights"]


class NetworkWeights:
    """The member of :class:`~ppl.posterior.base.Posterior` that hands the learned network
    weights to the user's ``torch.nn.Module`` objects."""

    def load_module_weights(self, modules=None) -> list:
        """Write the learned ``pyro.module`` weights of this posterior into the networks.

        ``ppl.infer`` leaves every network registered with ``pyro.module`` (by the model or
        by a callable guide) as it found it; the weights it learned are in ``params`` under
        Pyro's keys ``"name$$$p"`` (module ``name``, parameter ``p``, e.g.
        ``"decoder$$$out.weight"``), and the posterior's own runs of the model and guide
        (``sample``, ``predictive``, ``mean``, ``to_arviz``, ``init=post``) use them.  Call
        this to use the trained networks directly, as after a plain Pyro run.  The
        parameters are the same tensor objects afterwards, their values replaced (no
        autograd record; ``.grad`` is left as it is).

        Parameters
        ----------
        modules : dict[str, torch.nn.Module], optional
            Pyro module name -> the network to write its learned weights into (e.g.
            ``{"decoder": decoder}``); learned weights of names left out are not written.
            Default: every network the fit registered, as this posterior remembers them (not
            kept by ``save`` / pickling: a loaded posterior needs ``modules``).

        Returns
        -------
        list[str]
            The ``"name$$$p"`` keys written.

        Raises
        ------
        UnsupportedModelError
            ``params`` holds no network weight (the method learned none, or the model
            registers no ``pyro.module``), or, without ``modules``, the posterior does not
            know a network (a loaded posterior).
        OptionError
            ``modules`` is not a dict of names to ``torch.nn.Module``; a name with no learned
            weight; a network lacking a learned parameter ``p``, or whose parameter's shape
            differs from the learned weight's (the network changed since the fit).  Nothing is
            written then.
        """
        from ..backends.common.modules import load_module_weights

        return load_module_weights(self, modules)
