"""Timing, machine-description and table helpers shared by the benchmark scripts.

Nothing here runs at import time; the scripts call these from their ``main()``.
Tables print as GitHub-flavoured Markdown so a run's output can be pasted into
``docs/benchmarks.md`` verbatim.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "gaussian_mixture_sample",
    "Timer",
    "time_once",
    "time_repeated",
    "machine_info",
    "print_machine",
    "markdown_table",
    "fmt_seconds",
    "fmt_ratio",
    "fmt_sci",
    "add_repo_to_path",
    "write_json",
    "limit_threads",
]


def add_repo_to_path() -> None:
    """Put the repository root first on ``sys.path`` so ``import ppl`` picks up this
    checkout when a script is run as ``python benchmarks/<name>.py``."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)


def limit_threads(n: int) -> str:
    """Limit torch's intra-op threads and the BLAS/OpenMP pools of numpy and friends
    (through threadpoolctl, when installed) to ``n``; ``n <= 0`` keeps the libraries'
    defaults.  Returns a short description for the machine line.

    The benchmarks default to one thread: the peers (pgmpy's numpy einsum, hmmlearn's
    C loop) are effectively single-threaded, and on a machine shared with other work
    torch's OpenMP pool can stall for seconds when its threads are descheduled.
    """
    import torch

    if n <= 0:
        return f"library defaults (torch {torch.get_num_threads()})"
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return f"torch {n} (BLAS pools not limited: threadpoolctl missing)"
    return f"{n} (torch, BLAS, OpenMP)"


# --------------------------------------------------------------------------- timing
class Timer:
    """Context manager measuring wall-clock seconds (``time.perf_counter``).

    >>> with Timer() as t:
    ...     pass
    >>> t.seconds >= 0
    True
    """

    def __enter__(self):
        self._start = time.perf_counter()
        self.seconds = float("nan")
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._start
        return False


def time_once(fn: Callable, *args, **kwargs):
    """Call ``fn(*args, **kwargs)`` once; return ``(seconds, result)``."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def time_repeated(fn: Callable, repeat: int = 7, min_repeat: int = 3, budget_s: float = 20.0):
    """Time ``repeat`` calls of ``fn()`` and return ``(median seconds, all times, last result)``.

    Stops early (after at least ``min_repeat`` calls) once the calls so far have taken
    ``budget_s`` seconds, so slow cases do not dominate a run.  No warm-up call is made
    here: callers that want a warm measurement call ``fn`` once before.
    """
    times, out = [], None
    total = 0.0
    for i in range(max(repeat, 1)):
        start = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - start
        times.append(dt)
        total += dt
        if i + 1 >= min_repeat and total >= budget_s:
            break
    return statistics.median(times), times, out


# --------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(extra_versions: Sequence[str] = (), threads: str | None = None) -> dict:
    """A description of the machine and the library versions a result depends on.

    Parameters
    ----------
    extra_versions : sequence of str
        Importable module names whose ``__version__`` to report (besides torch and numpy).
    threads : str, optional
        What :func:`limit_threads` said.

    Returns
    -------
    dict
        ``cpu``, ``cores`` (logical CPUs), ``cores_usable`` (this process's affinity),
        ``threads``, ``load_1min_at_start``, ``python``, ``platform``, ``date`` and
        ``versions``.
    """
    import numpy
    import torch

    versions = {"torch": torch.__version__, "numpy": numpy.__version__}
    for name in extra_versions:
        try:
            mod = __import__(name)
            versions[name] = getattr(mod, "__version__", "?")
        except ImportError:
            versions[name] = "not installed"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    load = _load()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "threads": threads or f"torch {torch.get_num_threads()}",
        "load_1min_at_start": round(load, 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "versions": versions,
    }


def print_machine(info: dict) -> None:
    """Print :func:`machine_info` as a few readable lines."""
    vers = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    print(f"Machine: {info['cpu']}, {info['cores']} logical cores ({info['cores_usable']} usable); "
          f"threads: {info['threads']}; 1-min load average at start {info['load_1min_at_start']}, "
          f"now {_load():.2f}")
    print(f"Software: Python {info['python']}, {vers}; {info['platform']}")
    print(f"Date: {info['date']}")


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return float("nan")


# --------------------------------------------------------------------------- tables
def fmt_seconds(s) -> str:
    """Seconds with 3 significant digits (``"-"`` for None, ``"n/a"`` for NaN)."""
    if s is None:
        return "-"
    if isinstance(s, str):
        return s
    if math.isnan(s):
        return "n/a"
    if s >= 100:
        return f"{s:.0f}"
    if s >= 1e-3:
        return f"{s:.3g}"
    return f"{s:.2e}"


def fmt_ratio(r) -> str:
    """A speed ratio such as ``12.3x`` (``"-"`` for None)."""
    if r is None or (isinstance(r, float) and math.isnan(r)):
        return "-"
    if r >= 100:
        return f"{r:.0f}x"
    return f"{r:.3g}x"


def fmt_sci(x) -> str:
    """A small number such as an error in ``1.2e-15`` form (``"-"`` for None)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.1e}"


def markdown_table(rows: Sequence[dict], columns: Sequence[str], title: str | None = None,
                   notes: Sequence[str] = ()) -> str:
    """Format ``rows`` (dicts of already formatted strings or numbers) as a Markdown
    table with the given column order, an optional bold title and notes underneath."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    out = []
    if title:
        out += [f"**{title}**", ""]
    out.append(line(columns))
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += [line(row) for row in cells]
    if notes:
        out.append("")
        out += [f"- {n}" for n in notes]
    return "\n".join(out)


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` (results plus machine info) as indented JSON."""
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)


def add_common_args(parser) -> None:
    """The options every benchmark script takes: ``--threads`` and ``--json``."""
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads (0: the libraries' defaults); see _common.limit_threads")
    parser.add_argument("--json", default=None, help="also write raw results to this JSON file")


def start(args, extra_versions: Sequence[str]):
    """Put the repo on the path, limit threads, print the machine; returns ``(ppl, info)``."""
    add_repo_to_path()
    import ppl

    threads = limit_threads(args.threads)
    info = machine_info(extra_versions=extra_versions, threads=threads)
    print_machine(info)
    print()
    return ppl, info


def source_state() -> str:
    """The checkout's commit, and whether ppl/ has uncommitted changes (read-only git calls)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "ppl"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return f"commit {head or '?'}" + (" + uncommitted changes under ppl/" if dirty else "")


def gaussian_mixture_sample(n: int, d: int, k: int, seed: int, concentration: float, spread: float, floor: float):
    """``n`` points from a seeded mixture of ``k`` full-covariance Gaussians in ``d`` dimensions.

    weights ~ Dirichlet(concentration·1); means ~ N(0, spread² I); covariances
    ``A Aᵀ / d + floor·I`` with ``A`` standard normal.  The mixture is drawn before the points,
    so different ``n`` with one ``seed`` share it.

    Returns ``(X (n, d) float64 C-contiguous, truth)`` with truth ``weights, means, covs, z``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(concentration * np.ones(k))
    means = rng.normal(0.0, spread, size=(k, d))
    a = rng.normal(size=(k, d, d))
    covs = a @ a.transpose(0, 2, 1) / d + floor * np.eye(d)
    z = rng.choice(k, size=n, p=weights)
    chol = np.linalg.cholesky(covs)
    x = means[z] + np.einsum("nij,nj->ni", chol[z], rng.normal(size=(n, d)))
    return np.ascontiguousarray(x), {"weights": weights, "means": means, "covs": covs, "z": z}

