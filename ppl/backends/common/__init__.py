"""What several backends share, below them all:

* ``discrete``: the compiled elimination plan of the discrete latents
  (:class:`~ppl.backends.common.discrete.DiscretePlan`), used by exact inference, EM's
  E-step, max-product MAP and the potential's sum over discrete latents;
* ``elimination``: whether elimination over the discrete latents can run, and the table
  posterior of a plan's tables;
* ``logjoint``: the log joint as a differentiable function of latent and ``ppl.param``
  values (what point estimators optimise);
* ``pointopt``: optimisers for point estimates over blocks of tensors;
* ``potential``: the log density in unconstrained space with the discrete latents summed
  out (Laplace, Pathfinder, NUTS, ChEES, and importance weights), also at many points in
  one run;
* ``chains``: R-hat, ESS, E-BFMI and the verdict of a sampler's chains, and when a sampler
  applies (NUTS, ChEES);
* ``jit``: a ``torch.jit`` trace of a log density, kept only where it matches the model;
* ``importance``: importance weights of an approximation against the potential, Pareto
  smoothing, PSIS resampling and their trust verdict;
* ``quadratic``: the structural test of a log joint that is a quadratic form in given
  latents (CAVI's Gaussian and binary paths);
* ``routing``: the sentences backends share when ``method="auto"`` chooses them;
* ``runtime``: run placement (device, dtype, seeded random streams, data);
* ``params``: the ``ppl.param`` values a learning backend starts from and leaves behind;
* ``modules``: ``pyro.module`` networks left as every call found them, run with a
  posterior's learned weights, and written back on request (``load_module_weights``);
* ``distributed``: data-parallel runs (the data plate's shards and the collectives);
* ``streaming``: fits over a stream of minibatches of the data plate (the loop, step sizes,
  batch checks, structures compiled once per batch shape, the verdict), used by online EM;
  ``svi_stream``: stochastic variational inference for CAVI's conjugate models on it.
"""
