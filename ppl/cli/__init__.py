"""The command line: ``python -m ppl analyze|infer|compare|methods``.

Runs :func:`ppl.analyze`, :func:`ppl.infer` and :func:`ppl.compare` on a model defined
in a Python file and data read from ``.csv`` / ``.npz`` files, and prints what they
return.  See ``docs/cli.md`` and ``python -m ppl --help``.

Conventions
-----------
* ``FILE.py:MODEL`` imports ``FILE.py`` as a module and takes its attribute ``MODEL``: a
  ``@ppl.model`` or a plain model function.  Without ``:MODEL`` the file must hold exactly
  one ``@ppl.model``.  ``package.module:MODEL`` imports an installed module instead.
* ``--data FILE.npz``: every array is a data entry under its key; ``--data FILE.csv``:
  every column is one, under its header name.  ``--data-matrix NAME`` binds a whole
  numeric CSV as one ``(N, D)`` tensor instead.  ``--set key=value`` adds scalars.
  Floating values become float64 tensors (float32 with ``--float32``), integers int64,
  text columns stay text (state names of Bayesian-network sites), 0-d arrays become
  Python numbers.
* Exit status: 0 on success, 2 for a usage error (arguments, files, model lookup, an
  unknown method or option name), 1 when ppl refuses or fails (a :class:`ppl.PPLError`
  such as ``DataError`` or ``UnsupportedModelError``, or an unexpected exception).  The
  message is one line on stderr; ``--traceback`` re-raises instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np
import torch

from .. import __version__
from ..api import ANALYSIS_OPTIONS, analyze, auto_order, compare, compile, infer, methods as method_table
from ..backends.registry import get_backend, registered_backends
from ..errors import BackendNotFoundError, DataError, PPLError

from .jsonout import analysis_json, comparison_json, dumps, methods_json, posterior_json
from .loading import find_models, load_data, load_model, read_csv, read_csv_matrix, read_npz
from .output import format_posterior, one_line, summary_table
from .plots import check_directory, plot_comparison, plot_posterior
from .values import EXIT_FAILURE, EXIT_USAGE, PROG, UsageError, parse_assignments, parse_bytes, parse_option_value, parse_value

__all__ = [
    "main",
    "build_parser",
    "UsageError",
    "load_model",
    "find_models",
    "load_data",
    "read_csv",
    "read_csv_matrix",
    "read_npz",
    "parse_value",
    "parse_assignments",
    "parse_option_value",
    "parse_bytes",
    "summary_table",
    "format_posterior",
]


# ----------------------------------------------------------------- commands
def _bind(args):
    model, label = load_model(args.model)
    data = load_data(args.data or (), matrices=args.data_matrix or (), float32=args.float32,
                     sets=parse_assignments(args.set, "--set"))
    return model, label, data


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} tensor {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"text array {value.shape}"
    return repr(value)


def _compile(model, data):
    """``ppl.compile``; a DataError also lists the data entries the command line read."""
    try:
        return compile(model, data)
    except DataError as e:
        read = "; ".join(f"{k}: {_describe(v)}" for k, v in data.items()) or "nothing"
        raise DataError(f"{one_line(e)} [data read: {read}]") from e


def _methods_arg(text: str) -> list:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise UsageError("--methods is empty; give e.g. exact,cavi,svi or all")
    return names


def _check_options(method: str, options: dict):
    backend = get_backend(method)
    unknown = [k for k in options if k not in backend.options and k not in ANALYSIS_OPTIONS]
    if unknown:
        raise UsageError(f"method '{method}' takes no option(s) {unknown}; its options: {sorted(backend.options)} "
                         f"(python -m ppl methods {method} describes them)")


def _seed(args):
    if args.seed is not None:
        import pyro

        if not 0 <= args.seed <= 2**32 - 1:  # numpy's range, as the seed option of ppl.infer
            raise UsageError(f"--seed {args.seed}: the seed must be an integer in [0, 2**32 - 1]")

        pyro.set_rng_seed(args.seed)


def cmd_analyze(args) -> int:
    """``python -m ppl analyze``: print :func:`ppl.analyze` of the model and data."""
    model, label, data = _bind(args)
    graph = _compile(model, data)
    kwargs = {"heuristic": args.heuristic}
    if args.memory_budget is not None:
        kwargs["memory_budget"] = parse_bytes(args.memory_budget)
    analysis = analyze(graph, **kwargs)
    if args.json:
        print(dumps(analysis_json(analysis, label, graph=args.graph)))
        return 0
    if args.graph:
        print(graph)
        print()
    print(analysis)
    return 0


def cmd_infer(args) -> int:
    """``python -m ppl infer``: run :func:`ppl.infer` and print the posterior's report."""
    options = parse_assignments(args.option, "--option", parse_option_value)
    method = args.method
    if method != "auto":
        get_backend(method)  # unknown method: BackendNotFoundError before any work
        _check_options(method, options)
    if args.max_rows < 0:
        raise UsageError("--max-rows must be >= 0")
    if args.plot:
        check_directory(args.plot)
    model, label, data = _bind(args)
    _seed(args)
    if args.seed is not None and "seed" not in options:
        takers = [get_backend(method)] if method != "auto" else list(registered_backends().values())
        if all("seed" in b.options for b in takers):
            options["seed"] = args.seed
    graph = _compile(model, data)
    sites = [s.strip() for s in args.sites.split(",") if s.strip()] if args.sites else None
    if sites:
        unknown = [s for s in sites if s not in graph.latent()]
        if unknown:
            raise UsageError(f"--sites {unknown}: not latent sites of the model; latent sites: {graph.latent()}")
    try:
        post = infer(graph, method=method, **options)
    except TypeError as e:
        if "unknown option" in str(e):
            raise UsageError(one_line(e)) from e
        raise
    if sites:
        missing = [s for s in sites if s not in post.sites]
        if missing:
            print(f"note: {missing} not described by this posterior; it describes {post.sites}", file=sys.stderr)
            sites = [s for s in sites if s in post.sites]
    plots = plot_posterior(post, args.plot, sites) if args.plot else None
    if args.json:
        _print_json(posterior_json(post, label, sites, args.diagnostics), plots)
        return 0
    print(format_posterior(post, label, sites, args.max_rows, args.diagnostics))
    _print_plots(plots)
    return 0


def cmd_compare(args) -> int:
    """``python -m ppl compare``: run :func:`ppl.compare` and print its table."""
    raw = parse_assignments(args.option, "--option", lambda k, v: (k, v))
    common, scoped = {}, {}
    for key, (_, text) in raw.items():
        method, dot, name = key.rpartition(".")
        if dot:
            scoped.setdefault(method, {})[name] = parse_option_value(name, text)
        else:
            common[key] = parse_option_value(key, text)
    methods = "all" if args.methods.strip() == "all" else _methods_arg(args.methods)
    if args.plot:
        check_directory(args.plot)
    if methods != "all":
        for m in methods:
            get_backend(m)
    for m in scoped:
        get_backend(m)
    model, label, data = _bind(args)
    _seed(args)
    graph = _compile(model, data)
    if methods == "all" and (common or scoped or args.seed is not None):
        methods = [n for n, (ok, _) in analyze(graph).backends.items() if ok]
    if methods != "all":
        for m in scoped:
            if m not in methods:
                raise UsageError(f"--option {m}.KEY=...: method '{m}' is not among the methods compared {methods}")
        if args.seed is not None and "seed" not in common and all("seed" in get_backend(m).options for m in methods):
            common["seed"] = args.seed
        for m in methods:
            _check_options(m, {**common, **scoped.get(m, {})})
        methods = [(m, scoped[m]) if scoped.get(m) else m for m in methods]
    kwargs = {"reference": args.reference} if args.reference else {}
    try:
        table = compare(graph, methods=methods, **kwargs, **common)
    except TypeError as e:
        if "unknown option" in str(e):
            raise UsageError(one_line(e)) from e
        raise
    except ValueError as e:
        if args.reference and not isinstance(e, PPLError):
            raise UsageError(f"--reference {args.reference}: {one_line(e)}") from e
        raise
    plots = plot_comparison(table, args.plot) if args.plot else None
    if args.json:
        _print_json(comparison_json(table, label), plots)
        return 0
    print(f"model: {label}")
    print(table)
    _print_plots(plots)
    return 0


def _print_json(doc: dict, plots=None):
    """``--json``: the document, with the PNGs written by ``--plot`` listed under ``plots``."""
    if plots is not None:
        doc["plots"] = plots
    print(dumps(doc))


def _print_plots(paths):
    """``--plot`` without ``--json``: the PNGs written, after the report."""
    if paths is not None:
        print(f"plots written ({len(paths)}):")
        for path in paths:
            print(f"  {path}")


def cmd_methods(args) -> int:
    """``python -m ppl methods [NAME]``: list the registered methods and their declared
    options (name, default, accepted values, doc), in the order ``auto`` tries them."""
    if args.markdown:
        from .methods_doc import options_page

        print(options_page(), end="")
        return 0
    table = method_table(args.name) if args.name else method_table()
    if args.json:
        print(dumps(methods_json(table)))
        return 0
    for i, (name, info) in enumerate(table.items()):
        if i:
            print()
        print(f"{name}: {info['summary']}")
        rows = info["options"]
        if rows:
            print("  options (--option KEY=VALUE):")
            width = max(len(r[0]) for r in rows)
            for key, default, accepted, doc in rows:
                print(f"    {key:<{width}}  {doc} (default {default}; {accepted})")
    if not args.name:
        print(f"\nauto: the first that applies, in the order {', '.join(auto_order())} "
              "(python -m ppl analyze MODEL says which apply and why)")
    return 0


# ------------------------------------------------------------------ parser
class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (plus the help hint) and status 2."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


_FORMATTER = argparse.RawDescriptionHelpFormatter

_TOP_EPILOG = """\
a model file, e.g. model.py:
  import torch, ppl
  import ppl.distributions as dist

  @ppl.model
  def mixture(x, K=2):
      weights = ppl.param("weights", torch.ones(K) / K, constraint=dist.constraints.simplex)
      locs = ppl.param("locs", torch.linspace(-2.0, 2.0, K))
      with ppl.plate("data", len(x)):
          z = ppl.sample("z", dist.Categorical(weights))
          ppl.sample("obs", dist.Normal(locs[z], 1.0), obs=x)

and data.csv with a column named x (a model argument) - column, .npz key and --set names
are the model's argument names or the names of sample sites to observe.

examples:
  python -m ppl analyze model.py:mixture --data data.csv
  python -m ppl infer   model.py:mixture --data data.csv --method exact
  python -m ppl infer   model.py:mixture --data data.csv --method em --option max_iter=50
  python -m ppl compare model.py:mixture --data data.csv --methods exact,cavi,em
  python -m ppl methods                    # registered methods and their options

after pip install, `ppl` is the same command (ppl infer ... = python -m ppl infer ...);
--json prints one JSON document instead of the text report (analyze, infer, compare,
methods); --plot DIR writes PNGs (infer, compare).

the model file is imported, so its module-level code runs, as with python FILE.py: point
ppl only at files you trust. Data files are read as data (.npz without pickles); nothing
in them is run.

exit status: 0 ok, 2 usage error (arguments, files, model name, unknown method/option),
1 ppl refused or failed (DataError, UnsupportedModelError, ...). Full guide: docs/cli.md
"""

_DATA_HELP = """\
data conventions:
  .csv: one entry per column, named by its header line; .npz: one entry per array, named by
  its key (np.savez("data.npz", x=..., y=...)); --set adds scalars. Each name is an argument
  of the model function or a sample site to observe. Floats become float64 tensors (float32
  with --float32), integers int64, text columns stay text (state names); empty / NA cells
  (a blank line between rows too) are missing values, which ppl reports as a DataError
  naming the column, row and line. --data-matrix NAME reads the whole numeric CSV
  as one (N, D) tensor NAME instead (e.g. a mixture's x).
"""


def _common(parser):
    parser.add_argument("model", metavar="FILE.py[:MODEL]",
                        help="the model: a @ppl.model (or plain model function) MODEL defined in FILE.py; "
                             "MODEL may be left out when the file defines exactly one @ppl.model")
    g = parser.add_argument_group("data")
    g.add_argument("--data", action="append", metavar="FILE", help=".csv or .npz data file (repeatable)")
    g.add_argument("--data-matrix", action="append", metavar="NAME[=FILE.csv]",
                   help="bind a whole numeric CSV as one (N, D) float tensor NAME (header line skipped)")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra data entry, e.g. --set K=3 (repeatable)")
    g.add_argument("--float32", action="store_true", help="floating data as float32 (default float64)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document on stdout instead of the text report (NaN -> null, "
                             "infinities -> \"inf\" / \"-inf\")")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error (debugging)")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m ppl`` argument parser (subcommands analyze, infer, compare, methods)."""
    parser = _Parser(
        prog=PROG, formatter_class=_FORMATTER, epilog=_TOP_EPILOG,
        description="ppl from the shell: analyse a probabilistic model, run inference on it, or compare "
                    "inference methods,\non a model written in a Python file and data from .csv / .npz files.")
    parser.add_argument("--version", action="version", version=f"ppl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "analyze", help="structure, treewidth, memory, and which methods apply and why",
        formatter_class=_FORMATTER,
        description="Print ppl.analyze(model, data): variables, plates, the moral graph, an elimination order, "
                    "the treewidth bound,\nthe largest table and its memory, and for every method whether it "
                    "applies and why.",
        epilog=_DATA_HELP + "\nexamples:\n"
               "  python -m ppl analyze model.py:mixture --data data.csv\n"
               "  python -m ppl analyze gmm.py:gmm --data points.csv --data-matrix x --set K=3 --graph\n")
    _common(p)
    p.add_argument("--heuristic", choices=["min_fill", "min_degree"], default="min_fill",
                   help="elimination-order heuristic (default min_fill)")
    p.add_argument("--memory-budget", metavar="BYTES", help="largest exact table allowed, e.g. 2GiB (default 2 GiB)")
    p.add_argument("--graph", action="store_true", help="also print the factor graph (variables and factors)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "infer", help="run one inference method and summarise the posterior",
        formatter_class=_FORMATTER,
        description="Run ppl.infer(model, data, method=...) and print the method, why it was chosen, the ELBO / "
                    "log evidence,\nconvergence, time, learned params and a table of posterior mean, sd and "
                    "quantiles per latent site.",
        epilog=_DATA_HELP + "\noptions of a method (python -m ppl methods NAME lists them):\n"
               "  --option KEY=VALUE      int, float, true/false, none, a JSON list/object, or text;\n"
               "                          dtype=float32|float64, memory_budget=2GiB\n"
               "\nexamples:\n"
               "  python -m ppl infer model.py:mixture --data data.csv --method exact\n"
               "  python -m ppl infer model.py:mixture --data data.csv          # method auto\n"
               "  python -m ppl infer coin.py:coin --data flips.npz --method svi --option num_steps=500 --seed 0\n"
               "  python -m ppl infer model.py:mixture --data data.csv --sites z --max-rows 5\n"
               "  python -m ppl infer model.py:mixture --data data.csv --method exact --json --plot plots/\n")
    _common(p)
    p.add_argument("--method", "-m", default="auto", metavar="METHOD",
                   help=f"{', '.join(registered_backends())}, or auto (default): the first that applies")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="option of the method (repeatable)")
    p.add_argument("--seed", type=int, help="random seed (Pyro/torch/numpy, and the method's seed option)")
    p.add_argument("--sites", metavar="A,B", help="latent sites to summarise (default all)")
    p.add_argument("--max-rows", type=int, default=10, metavar="N",
                   help="summary rows per site (elements of a plated site; default 10, 0: no table)")
    p.add_argument("--diagnostics", action="store_true",
                   help="also print why other methods were passed over, and the method's diagnostics")
    p.add_argument("--plot", metavar="DIR",
                   help="write a PNG of each latent site's marginal (--sites: those) into DIR (created if missing)")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser(
        "compare", help="run several methods and tabulate bound, log evidence, error and time",
        formatter_class=_FORMATTER,
        description="Print ppl.compare(model, data, methods=...): one row per method with the log evidence, the "
                    "ELBO,\nthe MAP log joint, the largest marginal error against exact, seconds and convergence.",
        epilog=_DATA_HELP + "\noptions:\n"
               "  --option KEY=VALUE         given to every method (each must take it)\n"
               "  --option METHOD.KEY=VALUE  given to one method, e.g. --option svi.num_steps=500\n"
               "\nexamples:\n"
               "  python -m ppl compare model.py:mixture --data data.csv --methods exact,cavi,em\n"
               "  python -m ppl compare model.py:mixture --data data.csv --methods all --option svi.num_steps=300\n"
               "  python -m ppl compare model.py:mixture --data data.csv --methods exact,cavi --json --plot plots/\n")
    _common(p)
    p.add_argument("--methods", default="all", metavar="A,B,...|all",
                   help="comma-separated methods, or all (default): every method that applies")
    p.add_argument("--option", "-o", action="append", metavar="[METHOD.]KEY=VALUE", help="method option (repeatable)")
    p.add_argument("--seed", type=int, help="random seed (Pyro/torch/numpy, and each method's seed option)")
    p.add_argument("--reference", metavar="LABEL",
                   help="row the errors are measured against (default: exact if it ran)")
    p.add_argument("--plot", metavar="DIR",
                   help="write DIR/compare_bound.png (bounds per iteration) and DIR/compare_SITE.png "
                        "(marginals overlaid) (DIR created if missing)")
    p.set_defaults(func=cmd_compare)

    _add_methods(sub)
    return parser


def _add_methods(sub):
    """The ``methods`` subcommand's parser."""
    p = sub.add_parser("methods", help="list the registered inference methods and their options",
                       formatter_class=_FORMATTER, description="List the registered methods and their options.",
                       epilog="examples:\n  python -m ppl methods\n  python -m ppl methods svi\n")
    p.add_argument("name", nargs="?", metavar="METHOD", help="only this method")
    p.add_argument("--markdown", action="store_true", help="print the docs' options page (docs/options.md)")
    p.add_argument("--json", action="store_true", help="print the methods and their options as one JSON document")
    p.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_methods)


# -------------------------------------------------------------------- main
def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {category.__name__}: {one_line(message)}", file=file or sys.stderr)


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``).

    Also the ``ppl`` console script (``[project.scripts] ppl = "ppl.cli:main"``), whose
    wrapper exits with the status returned.

    Parameters
    ----------
    argv : list[str], optional
        The arguments after the program name.

    Returns
    -------
    int
        The exit status: 0 ok, 1 ppl refused or failed, 2 usage error, 130 interrupted.
        Errors are one line on stderr, never raised, unless ``--traceback`` is given.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, argparse's usage errors
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.func(args)
        except (UsageError, BackendNotFoundError) as e:
            if args.traceback:
                raise
            _error(one_line(e))
            return EXIT_USAGE
        except PPLError as e:
            if args.traceback:
                raise
            _error(one_line(e))
            return EXIT_FAILURE
        except KeyboardInterrupt:
            if args.traceback:
                raise
            _error("interrupted")
            return 130
        except BrokenPipeError:  # e.g. piped into head: the reader has gone
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_FAILURE
        except Exception as e:  # noqa: BLE001 - a readable line; --traceback shows the rest
            if args.traceback:
                raise
            _error(f"{type(e).__name__}: {one_line(e)} (unexpected; rerun with --traceback for details)")
            return EXIT_FAILURE


def _error(message: str):
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr)
