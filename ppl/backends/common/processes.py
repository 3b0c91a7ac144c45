"""Independent jobs (NUTS chains) in forked worker processes, one CPU core each.

A forked child inherits the parent's memory (the compiled model, its potential, a traced
JIT function), so nothing of the user's model is pickled: only each job's index goes in
and each job's result comes back through a pipe, pickled by value (tensors included).  Fork
is used only where it is safe and helps: on Linux, on the CPU (a CUDA context does not
survive a fork), with more than one usable core and more than one job; elsewhere the jobs
run in this process one after another, with the same results (each job must draw from
its own seeded generator, never from a shared stream, so the order of execution does not
change any number).  Each child runs torch with one thread, so ``W`` workers use ``W``
cores.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import traceback

import torch

from ...errors import ModelError

__all__ = ["fork_problem", "map_jobs", "usable_cores"]


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def fork_problem(device: torch.device, jobs: int) -> str | None:
    """Why ``jobs`` jobs on ``device`` run in this process (a sentence), or None where
    forked workers can run them in parallel."""
    if jobs < 2:
        return "one job"
    if not sys.platform.startswith("linux"):
        return f"forked workers are used only on Linux (this is {sys.platform})"
    if torch.device(device).type != "cpu":
        return f"a {torch.device(device).type} device does not survive a fork"
    if usable_cores() < 2:
        return "one CPU core"
    return None


def _child(job_fn, jobs, conn) -> None:
    torch.set_num_threads(1)
    for j in jobs:
        try:
            payload = (j, True, job_fn(j))
        except BaseException as e:  # noqa: BLE001 - sent to the parent, which re-raises it
            payload = (j, False, _portable(e))
        try:  # plain pickle: tensors go by value (torch's shared-memory reductions need the child alive)
            data = pickle.dumps(payload)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            data = pickle.dumps((j, False, ModelError(f"job {j}'s result could not be sent back: {e}")))
        conn.send_bytes(data)
    conn.close()


def _portable(e: BaseException) -> BaseException:
    """``e`` itself when it survives pickling, else a ModelError carrying its text."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any pickling failure
        tb = traceback.format_exception_only(type(e), e)[-1].strip()
        return ModelError(tb)


def map_jobs(job_fn, jobs: list, device, workers: int | None = None):
    """``[job_fn(j) for j in jobs]``, in forked workers where :func:`fork_problem` allows.

    Parameters
    ----------
    job_fn : callable
        ``job_fn(j)`` -> a picklable result; it must not depend on the order in which jobs
        run (seed each job from ``j``).
    jobs : list
        Job keys (small picklable values, e.g. chain indices).
    device : torch.device
        Where the jobs compute (forks only on the CPU).
    workers : int, optional
        At most this many processes (default: the usable cores).

    Returns
    -------
    (results, parallel) : (list, str | None)
        Results in the order of ``jobs``; None when they ran in parallel, else the sentence
        saying why they ran here in turn.

    Raises
    ------
    Whatever a job raised (the first failing job's exception, re-raised in this process).
    """
    why = fork_problem(device, len(jobs))
    if why is not None:
        return [job_fn(j) for j in jobs], why
    n = max(1, min(len(jobs), workers or usable_cores()))
    ctx = multiprocessing.get_context("fork")
    procs, conns, done = [], [], False
    try:
        for w in range(n):
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_child, args=(job_fn, jobs[w::n], send), daemon=True)
            p.start()
            send.close()
            procs.append(p)
            conns.append(recv)
        results = {}
        for w, conn in enumerate(conns):
            for _ in jobs[w::n]:
                try:
                    j, ok, value = pickle.loads(conn.recv_bytes())
                except EOFError:
                    raise ModelError(f"a worker process ended without its result (exit code "
                                     f"{procs[w].exitcode}); run with one process to see the error") from None
                if not ok:
                    raise value
                results[j] = value
        done = True
        return [results[j] for j in jobs], None
    finally:
        for p in procs:
            if done:
                p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for c in conns:
            c.close()
