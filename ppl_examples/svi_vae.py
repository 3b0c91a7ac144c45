"""A variational autoencoder on scikit-learn's handwritten digits, with ``method="svi"``.

The data: scikit-learn's ``load_digits`` (1797 images of 8 × 8 pixels, 16 grey levels),
binarised at "> 7 of 16", so each image is a vector v of 64 bits.  It ships with
scikit-learn, so this runs offline.  A fixed random split keeps some images out of
training.

The model (Kingma & Welling 2014; Goodfellow et al. 2016, §20.10.3): per image a latent
code ``z ~ Normal(0, I)`` of a few dimensions, and a decoder network g that turns z into the
Bernoulli logits of the 64 pixels::

    with ppl.plate("data", len(x)):
        z = ppl.sample("z", Normal(0, I).to_event(1))
        ppl.sample("obs", Bernoulli(logits=g(z)).to_event(1), obs=x)

The decoder's weights are registered with ``pyro.module("decoder", g)`` inside the model,
so SVI learns them (maximum likelihood of θ through the ELBO) together with the guide.
``ppl.infer`` leaves both networks as it found them and returns the learned weights in
``post.params`` (``"decoder$$$out.weight"``, ...); ``post.load_module_weights()`` writes
them into the networks, which the held-out scores and the figure then run directly.

The guide is *amortised* (Goodfellow et al. 2016, §19.5, learned approximate inference):
instead of a separate q(z_n) with its own parameters for every image, an encoder network
f maps an image to the mean and scale of its Gaussian q(z | v) = Normal(f_μ(v), f_σ(v)).
Inference for a new image is then one forward pass.  The guide is a plain function with
the model's arguments, passed as ``guide=callable``; ``pyro.module("encoder", f)`` inside it
registers the encoder.  SVI maximises the ELBO (eq. 19.1)::

    L(q) = Σ_n E_q(z | v_n)[log p(v_n | z) + log p(z) − log q(z | v_n)]
         = Σ_n log p(v_n) − KL(q(z | v_n) ‖ p(z | v_n))

with reparameterised gradients (z = μ + σ·ε), jointly in the decoder's θ and the encoder's
φ: learning the model and learning to do inference in it at the same time.

Minibatches (``subsample_size=B``): each step draws B of the N training images, slices the
model's argument ``x`` (its first dim is N) for the model and the guide alike, and scales
their log densities by N / B, so the step's ELBO estimate is unbiased for the full data
(Hoffman et al. 2013).  Both the model and the guide take the plate's size from the data
(``ppl.plate("data", len(x))``).  An epoch is N / B steps; ``post.history`` holds the
per-step estimates (each for all N images), averaged here per epoch.

What is printed: the ELBO per epoch (it rises as θ and φ are learned), the final ELBO
re-estimated on the training set with its standard error, in nats and in nats per image,
and on the held-out images the per-image ELBO and the importance-weighted bound of Burda
et al. (2016; K draws of q(z | v) per image, ``log (1/K) Σ_k p(v, z_k) / q(z_k | v)``),
which is closer to log p(v): the gap is what the Gaussian guide misses of p(z | v).
The backend's own IWAE and PSIS k̂ are over all N images jointly (one weight is a product
of N per-image weights), so they say little here; they are printed for completeness.

The PNG (``--out``, default ``demo_output/``, file ``svi_vae.png``): held-out digits above
their reconstructions (the decoder's pixel probabilities at the encoder's mean code),
digits drawn from the prior through the decoder (z ~ N(0, I), pixel probabilities shown),
and the encoder's mean codes of the held-out images coloured by their digit class (z
itself in two dimensions, else its first two principal components): the classes, never
shown to the model, form clusters in the code space.

References: D. P. Kingma and M. Welling, Auto-encoding variational Bayes, ICLR 2014;
I. Goodfellow, Y. Bengio and A. Courville, Deep Learning, MIT Press 2016, §19.5 and
§20.10.3; M. D. Hoffman et al., Stochastic variational inference, JMLR 2013; Y. Burda,
R. Grosse and R. Salakhutdinov, Importance weighted autoencoders, ICLR 2016.

Run: ``python ppl_examples/svi_vae.py`` (``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn

import ppl
import ppl.distributions as dist

try:  # run as a script (python ppl_examples/...) or as a module
    from _figures import mosaic
    from _threads import limit_threads
except ImportError:  # pragma: no cover
    from ppl_examples._figures import mosaic
    from ppl_examples._threads import limit_threads

PIXELS = 64


class Encoder(nn.Module):
    """q(z | v): an image (64 bits) -> the mean and scale of a Gaussian over z."""

    def __init__(self, latent_dim, hidden):
        super().__init__()
        self.hidden = nn.Linear(PIXELS, hidden)
        self.loc = nn.Linear(hidden, latent_dim)
        self.scale = nn.Linear(hidden, latent_dim)

    def forward(self, x):
        h = torch.tanh(self.hidden(x))
        return self.loc(h), nn.functional.softplus(self.scale(h)) + 1e-4


class Decoder(nn.Module):
    """p(v | z): a latent code -> the Bernoulli logits of the 64 pixels."""

    def __init__(self, latent_dim, hidden):
        super().__init__()
        self.hidden = nn.Linear(latent_dim, hidden)
        self.out = nn.Linear(hidden, PIXELS)

    def forward(self, z):
        return self.out(torch.tanh(self.hidden(z)))


def make_vae(encoder, decoder, latent_dim):
    """The model and its amortised guide; both take the images ``x`` (N × 64) and read N
    from them, so that minibatches of ``x`` shrink the plate."""

    @ppl.model
    def vae(x):
        pyro.module("decoder", decoder)
        with ppl.plate("data", len(x)):
            z = ppl.sample("z", dist.Normal(x.new_zeros(latent_dim), 1.0).to_event(1))
            ppl.sample("obs", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with ppl.plate("data", len(x)):
            loc, scale = encoder(x)
            ppl.sample("z", dist.Normal(loc, scale).to_event(1))

    return vae, guide


def load(test_size, seed):
    """Binarised digits (float32, N × 64) and labels, split into train and held-out sets."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data > 7).astype(np.float32)
    perm = np.random.RandomState(seed).permutation(len(x))
    test, train = perm[:test_size], perm[test_size:]
    return torch.from_numpy(x[train]), torch.from_numpy(x[test]), digits.target[train], digits.target[test]


def per_image_log_weights(model, guide, x, k):
    """``log p(v_n, z_k) − log q(z_k | v_n)`` for K draws per image, shape (K, N): the
    model and guide run once under an outer plate of K particles, and each site's log
    density is kept per image (not summed over the data plate)."""
    with torch.no_grad(), pyro.plate("particles", k, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    log_w = 0.0
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] == "sample" and not site_is_subsample(site):
                log_w = log_w + sign * site["log_prob"]
    return log_w


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent-dim", type=int, default=4, help="dimension of z (2 to 8 work well)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden units of the encoder and of the decoder")
    parser.add_argument("--epochs", type=int, default=120, help="passes over the training images (of N / B steps)")
    parser.add_argument("--batch-size", type=int, default=100, help="images per SVI step (subsample_size)")
    parser.add_argument("--lr", type=float, default=0.005, help="Adam learning rate")
    parser.add_argument("--test-size", type=int, default=297, help="images held out of training")
    parser.add_argument("--iwae-k", type=int, default=100, help="draws per held-out image of its IWAE bound")
    parser.add_argument("--elbo-particles", type=int, default=200, help="draws of the final ELBO re-estimate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--out", default="demo_output/", help="directory of the PNG")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 epochs, 64 hidden units, fewer draws")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = min(args.epochs, 8)
        args.hidden = min(args.hidden, 64)
        args.lr = max(args.lr, 0.01)
        args.iwae_k = min(args.iwae_k, 20)
        args.elbo_particles = min(args.elbo_particles, 50)
    with limit_threads(args.threads):
        _run(args)


def _run(args):
    start = time.perf_counter()
    x_train, x_test, _, y_test = load(args.test_size, args.seed)
    n, b = len(x_train), min(args.batch_size, len(x_train))
    steps_per_epoch = max(1, round(n / b))
    with torch.random.fork_rng():  # the networks' initial weights, without touching the caller's RNG
        torch.manual_seed(args.seed)
        encoder, decoder = Encoder(args.latent_dim, args.hidden), Decoder(args.latent_dim, args.hidden)
    vae, guide = make_vae(encoder, decoder, args.latent_dim)
    print(f"digits: {n} training and {len(x_test)} held-out images, 8x8 binarised at > 7 of 16; "
          f"latent dim {args.latent_dim}, {args.hidden} hidden units")
    print(f"SVI: batch {b} ({steps_per_epoch} steps per epoch), {args.epochs} epochs, Adam lr {args.lr}, "
          f"seed {args.seed}, threads {args.threads or 'default'}\n")

    num_steps = args.epochs * steps_per_epoch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ppl.ConvergenceWarning)  # a fixed number of epochs: tol=0 runs every step
        post = ppl.infer(vae, {"x": x_train}, method="svi", guide=guide, subsample_size=b, num_steps=num_steps,
                         lr=args.lr, tol=0.0, elbo_particles=args.elbo_particles, seed=args.seed, progress=False)
    # ppl.infer leaves the networks as it found them (the learned weights are in post.params, which
    # post.sample / post.predictive use); the held-out scores and the figure below run the networks
    # directly, so write the learned weights into them
    post.load_module_weights()

    history = torch.tensor(post.history[:num_steps], dtype=torch.float64)
    per_epoch = history.reshape(args.epochs, steps_per_epoch).mean(1)
    shown = sorted({0, args.epochs - 1, *np.linspace(0, args.epochs - 1, 11).round().astype(int).tolist()})
    print(f"ELBO per epoch (mean of the epoch's {steps_per_epoch} minibatch estimates, each scaled to all {n} "
          "training images):")
    print(f"  {'epoch':>5} {'ELBO (nats)':>13} {'nats/image':>11}")
    for e in shown:
        print(f"  {e + 1:>5} {float(per_epoch[e]):13.1f} {float(per_epoch[e]) / n:11.3f}")
    print()

    d = post.diagnostics
    print(f"final ELBO ({d['elbo_particles']} draws, all {n} training images): {post.elbo:.1f} ± {d['elbo_se']:.1f} "
          f"nats = {post.elbo / n:.3f} ± {d['elbo_se'] / n:.3f} nats/image")
    print(f"  (backend's joint bounds over the {n} images: IWAE {d['iwae_bound']:.1f}, PSIS k̂ {d['psis_khat']:.2f}; "
          "one weight is a product of N per-image weights)")
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        log_w = per_image_log_weights(vae, guide, x_test, args.iwae_k).double()
    elbo_img = log_w.mean(0)
    iwae_img = torch.logsumexp(log_w, 0) - math.log(args.iwae_k)
    se = float(elbo_img.std() / math.sqrt(len(x_test)))
    print(f"held-out {len(x_test)} images: ELBO {float(elbo_img.mean()):.3f} ± {se:.3f} nats/image (se over the "
          f"images), IWAE bound (K={args.iwae_k}) {float(iwae_img.mean()):.3f} nats/image")
    print(f"SVI {d['num_steps']} steps, {d['seconds_per_step'] * 1000:.1f} ms per step")

    path = plot(args, encoder, decoder, x_test, y_test)
    if path:
        print(f"\nwrote {path}")
    print(f"total wall time {time.perf_counter() - start:.1f} s")


def plot(args, encoder, decoder, x_test, y_test, n_show=20, n_prior=60, cols=10):
    """Write the PNG (see the module docstring); return its path, or None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print("\nmatplotlib is not installed (pip install matplotlib): no PNG written")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        loc, _ = encoder(x_test)
        recon = torch.sigmoid(decoder(loc[:n_show]))
        gen = torch.Generator().manual_seed(args.seed)
        prior = torch.sigmoid(decoder(torch.randn(n_prior, args.latent_dim, generator=gen)))
    # rows of `cols` held-out digits, each followed by the row of their reconstructions
    rows = [block for i in range(0, n_show, cols) for block in (x_test[i:i + cols], recon[i:i + cols])]
    fig = plt.figure(figsize=(14, 4.4))
    grid = fig.add_gridspec(1, 3, width_ratios=[1.0, 1.0, 0.95])
    ax = fig.add_subplot(grid[0])
    ax.imshow(1 - mosaic(torch.cat(rows), cols=cols, pad=2, gap=0.0), cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_yticks([4 + 10 * r for r in range(len(rows))], ["digit", "recon."] * (len(rows) // 2), fontsize=8)
    ax.set_xticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title("held-out digits and their reconstructions\n(pixel probabilities at the encoder's mean)",
                 fontsize=9)
    ax = fig.add_subplot(grid[1])
    ax.imshow(1 - mosaic(prior, cols=cols, pad=2, gap=0.0), cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_title("samples from the prior through the decoder\nz ~ N(0, I), pixel probabilities", fontsize=9)
    ax.axis("off")
    ax = fig.add_subplot(grid[2])
    z = loc.numpy().astype(np.float64)
    if z.shape[1] > 2:  # the plane of the two principal components of the codes
        centred = z - z.mean(0)
        z = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
        where, labels = f"first two principal components of the {args.latent_dim}-dim codes", ("PC 1", "PC 2")
    else:
        z = np.column_stack([z, np.zeros(len(z))]) if z.shape[1] == 1 else z
        where, labels = "z itself", ("z[0]", "z[1]")
    points = ax.scatter(z[:, 0], z[:, 1], c=y_test, cmap="tab10", s=9, vmin=-0.5, vmax=9.5)
    fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
    ax.set_title(f"encoder means of the held-out digits\n({where})", fontsize=9)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    fig.suptitle(f"VAE on the binarised digits: latent dim {args.latent_dim}, {args.epochs} epochs of SVI",
                 fontsize=11)
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "svi_vae.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
