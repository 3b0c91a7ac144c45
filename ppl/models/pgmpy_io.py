"""Bayesian networks in and out of pgmpy, a fast BIF reader, and the bundled networks.

- :func:`from_pgmpy` converts a pgmpy discrete Bayesian network to a ppl model.
- :func:`read_bif` parses a BIF file (the Bayesian Interchange Format of the bnlearn
  repository) straight into a ppl model, without pgmpy.
- :func:`example_network` loads one of the bnlearn networks that pgmpy bundles
  (``pgmpy/utils/example_models/<name>.bif.gz``) with :func:`read_bif`, offline;
  :func:`load_pgmpy_example` loads the same file as a pgmpy network with pgmpy's own
  reader, offline.

Why a reader of our own: on these machines (2 cores) ``import pgmpy`` takes about 4 s and
pgmpy 1.1.2's ``BIFReader`` takes about 1.7 s on andes and 8.5 s on munin; ``read_bif``
parses munin in well under a second and never imports pgmpy.  Its tables are checked
against pgmpy's reader in ``tests/test_models_bn.py``.

pgmpy is an optional dependency (``pip install 'ppl[pgmpy]'``): it is imported only inside
the functions that need it.  :func:`example_network` needs pgmpy *installed* (the files
live in its package directory) but does not import it.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import re
from pathlib import Path

import numpy as np

from ..dsl import Model
from ..errors import ModelError, OptionError
from .bn import bayesian_network

__all__ = ["from_pgmpy", "read_bif", "example_network", "load_pgmpy_example", "available_examples"]

_PGMPY_HINT = "pip install 'ppl[pgmpy]'"
_EXAMPLE_DIR = ("utils", "example_models")


# --------------------------------------------------------------------------- pgmpy
def from_pgmpy(network, name: str | None = None) -> Model:
    """Convert a pgmpy discrete Bayesian network to a ppl :class:`~ppl.dsl.Model`.

    Accepts ``pgmpy.models.DiscreteBayesianNetwork`` and the older ``BayesianNetwork`` /
    ``BayesianModel`` classes (duck-typed: anything with ``.nodes()`` and ``.get_cpds()``
    returning ``TabularCPD``-like objects).  Node names and state names are kept exactly;
    node ``X``'s ``i``-th state in pgmpy is category ``i`` of site ``X``.

    Each ``TabularCPD`` (``.variable``, ``.variables = [variable, *evidence]``,
    ``.cardinality``, ``.get_values()`` of shape ``(card(variable), prod(card(evidence)))``,
    ``.state_names``) becomes a table of shape ``(card(e_1), ..., card(e_k),
    card(variable))`` for :func:`~ppl.models.bayesian_network`.  If a CPD lists a parent's
    states in another order than the parent's own CPD, its axis is permuted to match.

    Parameters
    ----------
    network : pgmpy DiscreteBayesianNetwork (or BayesianNetwork / BayesianModel)
        A network whose every node has a ``TabularCPD``.
    name : str, optional
        Model name; defaults to the network's ``name`` when it has a meaningful one,
        else ``"bayesian_network"``.

    Returns
    -------
    Model
        As :func:`~ppl.models.bayesian_network` returns (``cpds``, ``nodes``,
        ``cardinalities``, ``state_names``); ties in the topological order follow
        ``network.nodes()``.

    Raises
    ------
    TypeError
        If ``network`` has no ``get_cpds``/``nodes`` methods, or a CPD is not tabular.
    ModelError
        If a node has no CPD, a CPD's state names for a parent do not match the parent's
        own, or :func:`~ppl.models.bayesian_network` rejects the tables (rows not summing
        to 1, ...).
    """
    if not (callable(getattr(network, "get_cpds", None)) and callable(getattr(network, "nodes", None))):
        raise TypeError(
            "from_pgmpy: expected a pgmpy DiscreteBayesianNetwork (an object with .get_cpds() and .nodes()), "
            f"got {type(network).__name__}"
        )
    nodes = [str(n) if not isinstance(n, str) else n for n in network.nodes()]
    cpd_of = {}
    for cpd in network.get_cpds() or []:
        missing = [a for a in ("variable", "variables", "cardinality", "get_values") if not hasattr(cpd, a)]
        if missing:
            raise TypeError(
                f"from_pgmpy: CPD {cpd!r} of type {type(cpd).__name__} is not a pgmpy TabularCPD "
                f"(it lacks {missing}); only discrete (tabular) networks are supported"
            )
        cpd_of[cpd.variable] = cpd
    without = [n for n in nodes if n not in cpd_of]
    if without:
        raise ModelError(
            f"from_pgmpy: node(s) {without} have no CPD; add one with network.add_cpds(TabularCPD(...))"
        )

    state_names = {n: _pgmpy_states(cpd_of[n], n) for n in nodes}
    cpds = {}
    for node in nodes:
        cpd = cpd_of[node]
        variables = list(cpd.variables)
        evidence = variables[1:]
        cards = [int(c) for c in np.atleast_1d(cpd.cardinality)]
        values = np.array(cpd.get_values(), dtype=np.float64).reshape(cards)  # (card(node), card(e_1), ...)
        table = np.moveaxis(values, 0, -1)  # (card(e_1), ..., card(e_k), card(node))
        for axis, parent in enumerate(evidence):
            table = _align_axis(table, axis, node, parent, _pgmpy_states(cpd, parent), state_names[parent])
        cpds[node] = (evidence, table)

    if name is None:
        net_name = getattr(network, "name", None)
        name = net_name if isinstance(net_name, str) and net_name and net_name != "unknown" else "bayesian_network"
    names = {n: s for n, s in state_names.items() if s is not None}
    return bayesian_network(cpds, state_names=names, name=name)


def _pgmpy_states(cpd, var):
    names = getattr(cpd, "state_names", None) or {}
    states = names.get(var)
    return list(states) if states is not None else None


def _align_axis(table, axis, node, parent, child_view, parent_own):
    """Permute ``table``'s ``axis`` so the parent's states come in its own CPD's order."""
    if child_view is None or parent_own is None or child_view == parent_own:
        return table
    if sorted(map(str, child_view)) != sorted(map(str, parent_own)) or len(child_view) != len(parent_own):
        raise ModelError(
            f"from_pgmpy: node '{node}': its CPD names the states of parent '{parent}' {child_view}, "
            f"but '{parent}''s own CPD names them {parent_own}"
        )
    perm = [child_view.index(s) for s in parent_own]
    return np.take(table, perm, axis=axis)


# ---------------------------------------------------------------------------- BIF
_COMMENT_RE = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_NETWORK_RE = re.compile(r"\bnetwork\s+([^{\s]+)\s*\{")
_VARIABLE_RE = re.compile(
    r"\bvariable\s+([^{]+?)\s*\{(.*?)\btype\s+discrete\s*\[\s*(\d+)\s*\]\s*\{([^}]*)\}\s*;([^}]*)\}", re.S
)
_PROBABILITY_RE = re.compile(r"\bprobability\s*\(([^)]*)\)\s*\{([^}]*)\}", re.S)
_ROW_RE = re.compile(r"\(([^)]*)\)(.*)", re.S)
_NUM_SPLIT_RE = re.compile(r"[\s,]+")


def read_bif(source, name: str | None = None) -> Model:
    """Parse a discrete Bayesian network in BIF format into a ppl :class:`~ppl.dsl.Model`.

    A fast reader for the Bayesian Interchange Format used by the bnlearn repository
    (and pgmpy's bundled networks); it does not need pgmpy.  Understood:

    - ``network NAME { ... }`` (the name becomes the model name);
    - ``variable X { type discrete [ n ] { s_1, s_2, ..., s_n }; property ...; }``
      (states separated by commas, or by whitespace when there is no comma);
    - ``probability ( X | P_1, ..., P_k ) { (p_1_state, ..., p_k_state) v_1, ..., v_n;
      ... }`` one row per parent configuration, with an optional ``default v_1, ...,
      v_n;`` for the rows not listed;
    - ``probability ( X ) { table v_1, ..., v_n; }`` and, with parents, ``table``
      listing all ``n * prod(card(P_j))`` values with ``X``'s state varying slowest and
      the last parent fastest (pgmpy's reading of the format);
    - ``//`` and ``/* */`` comments, double quotes around names.

    Numbers may be separated by commas and/or whitespace.  Parent states in rows are
    matched by name (exact, else case-insensitive), node names likewise.

    Parameters
    ----------
    source : str, bytes or os.PathLike
        A path to a ``.bif`` or gzip-compressed ``.bif.gz`` file, or the BIF text itself
        (a ``str`` containing ``{``), or its bytes (gzip-compressed or not).
    name : str, optional
        Model name; defaults to the ``network`` name in the file (unless it is
        ``unknown``), else the file's stem, else ``"bayesian_network"``.

    Returns
    -------
    Model
        As :func:`~ppl.models.bayesian_network` returns: sites named as the BIF
        variables, ``state_names`` from the variable declarations; ties in the
        topological order follow the order of the variable declarations.

    Raises
    ------
    FileNotFoundError
        If ``source`` is a path that does not exist.
    ModelError
        If the text declares no variable, a variable's state count differs from its
        ``[ n ]``, a probability block names an unknown variable or state, a row has the
        wrong number of values, a parent configuration has neither a row nor a
        ``default``, a variable has no or several probability blocks, or
        :func:`~ppl.models.bayesian_network` rejects the tables.  Messages name the
        variable.
    """
    net_name, stem, states, blocks = _parse_bif(source)
    if name is None:
        name = net_name if net_name and net_name != "unknown" else (stem or "bayesian_network")
    cpds = {var: blocks[var] for var in states}  # declaration order breaks topological ties
    return bayesian_network(cpds, state_names=states, name=name)


def _parse_bif(source):
    """Parse BIF into (network name or None, file stem or None, variable -> state names,
    variable -> (parents, raw table of shape (card(P_1), ..., card(P_k), card(X))))."""
    text, stem = _read_source(source)
    if "/*" in text or "//" in text:
        text = _COMMENT_RE.sub("", text)
    if '"' in text:
        text = text.replace('"', " ")

    states: dict[str, list[str]] = {}
    for m in _VARIABLE_RE.finditer(text):
        var = m.group(1).strip()
        declared = int(m.group(3))
        raw = m.group(4)
        names = [s.strip() for s in raw.split(",")] if "," in raw else raw.split()
        names = [s for s in names if s]
        if len(names) != declared:
            raise ModelError(f"BIF variable '{var}': declares [ {declared} ] states but lists {len(names)}: {names}")
        if var in states:
            raise ModelError(f"BIF variable '{var}' is declared twice")
        states[var] = names
    if not states:
        raise ModelError("read_bif: no 'variable X { type discrete [ n ] { ... }; }' declaration found")
    lookup = _Lookup(states)

    blocks: dict[str, tuple[list, np.ndarray]] = {}
    for m in _PROBABILITY_RE.finditer(text):
        var, parents = _parse_header(m.group(1), lookup)
        if var in blocks:
            raise ModelError(f"BIF variable '{var}' has more than one probability block")
        blocks[var] = (parents, _parse_table(var, parents, m.group(2), states, lookup))
    missing = [v for v in states if v not in blocks]
    if missing:
        raise ModelError(f"BIF variable(s) {missing} have no 'probability ( ... )' block")

    match = _NETWORK_RE.search(text)
    return (match.group(1).strip() if match else None), stem, states, blocks


def _read_source(source) -> tuple[str, str | None]:
    """(BIF text, file stem or None) from a path, text or bytes."""
    if isinstance(source, bytes):
        data = gzip.decompress(source) if source[:2] == b"\x1f\x8b" else source
        return data.decode("utf-8"), None
    if isinstance(source, str) and "{" in source:
        return source, None
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"read_bif: expected a path, BIF text or bytes, got {type(source).__name__}")
    path = Path(source)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    stem = path.name.split(".")[0] or None
    return data.decode("utf-8"), stem


class _Lookup:
    """Variable and state names: exact match, else case-insensitive (as pgmpy does)."""

    def __init__(self, states):
        self.states = states
        self.var_lower = {v.lower(): v for v in states}
        self.state_index = {v: {s: i for i, s in enumerate(ss)} for v, ss in states.items()}
        self.state_lower = {v: {s.lower(): i for i, s in enumerate(ss)} for v, ss in states.items()}

    def var(self, name, context):
        if name in self.states:
            return name
        found = self.var_lower.get(name.lower())
        if found is None:
            raise ModelError(f"BIF probability block {context}: unknown variable '{name}'")
        return found

    def state(self, var, state, context):
        i = self.state_index[var].get(state)
        if i is None:
            i = self.state_lower[var].get(state.lower())
        if i is None:
            raise ModelError(
                f"BIF probability block for '{context}': '{state}' is not a state of parent '{var}' "
                f"(states: {self.states[var]})"
            )
        return i


def _parse_header(header, lookup):
    if "|" in header:
        head, tail = header.split("|", 1)
        var = head.strip()
        parents = [p.strip() for p in tail.split(",") if p.strip()]
    else:  # old style: "probability ( X P1 P2 )"
        words = header.replace(",", " ").split()
        if not words:
            raise ModelError("BIF: empty 'probability ( )' header")
        var, parents = words[0], words[1:]
    var = lookup.var(var, f"'({header.strip()})'")
    return var, [lookup.var(p, f"for '{var}'") for p in parents]


def _numbers(var, text):
    parts = [t for t in _NUM_SPLIT_RE.split(text) if t]
    try:
        return [float(t) for t in parts]
    except ValueError:
        bad = next(t for t in parts if not _is_float(t))
        raise ModelError(f"BIF probability block for '{var}': '{bad}' is not a number") from None


def _is_float(t):
    try:
        float(t)
        return True
    except ValueError:
        return False


def _parse_table(var, parents, body, states, lookup) -> np.ndarray:
    """The block's values as an array of shape (card(P_1), ..., card(P_k), card(var))."""
    card = len(states[var])
    pcards = [len(states[p]) for p in parents]
    shape = tuple(pcards) + (card,)
    table = np.full(shape, np.nan)
    default = None
    for entry in body.split(";"):
        entry = entry.strip()
        if not entry or entry.startswith("property"):
            continue
        row = _ROW_RE.match(entry)
        if row is not None:
            config = [s.strip() for s in row.group(1).split(",")] if "," in row.group(1) else row.group(1).split()
            if len(config) != len(parents):
                raise ModelError(
                    f"BIF probability block for '{var}': row ({row.group(1).strip()}) names {len(config)} parent "
                    f"state(s); expected {len(parents)} for parents {parents}"
                )
            idx = tuple(lookup.state(p, s, var) for p, s in zip(parents, config))
            values = _numbers(var, row.group(2))
            _check_count(var, values, card, f"row ({row.group(1).strip()})")
            table[idx] = values
        elif entry.startswith("table"):
            values = _numbers(var, entry[len("table"):])
            _check_count(var, values, card * int(np.prod(pcards, dtype=np.int64)), "table")
            # the variable's state varies slowest: (card, card(P_1), ..., card(P_k))
            table = np.moveaxis(np.array(values, dtype=np.float64).reshape((card,) + tuple(pcards)), 0, -1)
        elif entry.startswith("default"):
            default = _numbers(var, entry[len("default"):])
            _check_count(var, default, card, "default")
        else:
            raise ModelError(f"BIF probability block for '{var}': cannot parse entry '{entry[:60]}'")
    unset = np.isnan(table).any(-1)
    if unset.any():
        if default is None:
            first = tuple(int(i) for i in np.argwhere(unset)[0]) if parents else ()
            config = ", ".join(states[p][j] for p, j in zip(parents, first))
            raise ModelError(
                f"BIF probability block for '{var}': no row for parent states ({config}) and no 'default'; "
                f"{int(unset.sum())} of {unset.size} parent configuration(s) missing"
            )
        table[unset] = default
    return table


def _check_count(var, values, expected, what):
    if len(values) != expected:
        raise ModelError(
            f"BIF probability block for '{var}': {what} has {len(values)} value(s); expected {expected}"
        )


# ------------------------------------------------------------------ bundled examples
def _example_dir() -> Path:
    """pgmpy's bundled example directory, found without importing pgmpy."""
    try:
        spec = importlib.util.find_spec("pgmpy")
    except (ImportError, ValueError):  # e.g. sys.modules["pgmpy"] is None
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"pgmpy is needed for the bundled example networks: {_PGMPY_HINT}")
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*_EXAMPLE_DIR)


def available_examples() -> list[str]:
    """Names of the discrete networks bundled with the installed pgmpy, sorted.

    With pgmpy 1.1.2: alarm, andes, asia, barley, cancer, child, diabetes, earthquake,
    hailfinder, hepar2, insurance, link, mildew, munin, munin1, munin2, munin3, munin4,
    pathfinder, pigs, sachs, survey, water, win95pts.

    Raises
    ------
    ImportError
        If pgmpy is not installed.
    """
    directory = _example_dir()
    return sorted(p.name[: -len(".bif.gz")] for p in directory.glob("*.bif.gz"))


def _example_path(name: str) -> Path:
    if not isinstance(name, str):
        raise TypeError(f"example network name must be a string, got {type(name).__name__}")
    path = _example_dir() / f"{name}.bif.gz"
    if not path.is_file():
        raise OptionError(f"unknown example network {name!r}; available: {available_examples()}")
    return path


def example_network(name: str) -> Model:
    """Load a bnlearn network bundled with pgmpy as a ppl :class:`~ppl.dsl.Model`, offline.

    Reads ``pgmpy/utils/example_models/<name>.bif.gz`` with :func:`read_bif`; pgmpy must
    be installed but is not imported (munin, 1041 nodes, loads in well under a second,
    against about 12 s for ``import pgmpy`` plus its reader).

    Available names (pgmpy 1.1.2; see :func:`available_examples`), by size as bnlearn
    groups them:

    - small: ``asia``, ``cancer``, ``earthquake``, ``sachs``, ``survey``;
    - medium: ``alarm``, ``barley``, ``child``, ``insurance``, ``mildew``, ``water``;
    - large: ``hailfinder``, ``hepar2``, ``win95pts``;
    - very large: ``andes``, ``diabetes``, ``link``, ``munin``, ``munin1`` ... ``munin4``,
      ``pathfinder``, ``pigs``.

    Parameters
    ----------
    name : str
        Network name, e.g. ``"asia"``, ``"alarm"``, ``"munin"``.

    Returns
    -------
    Model
        As :func:`~ppl.models.bayesian_network` returns, named ``name``.

    Raises
    ------
    OptionError (a ValueError)
        If ``name`` is not a bundled network (the message lists the available names).
    ImportError
        If pgmpy is not installed (the files ship with it).
    """
    return read_bif(_example_path(name), name=name)


def load_pgmpy_example(name: str):
    """Load a bnlearn network bundled with pgmpy as a pgmpy network, offline.

    Uses pgmpy's own ``BIFReader`` on ``pgmpy/utils/example_models/<name>.bif.gz``
    (what the deprecated ``pgmpy.utils.get_example_model`` does, without its warning);
    slow on the big networks (munin: about 8.5 s plus about 4 s to import pgmpy).  Names
    as in :func:`example_network`.

    Parameters
    ----------
    name : str

    Returns
    -------
    pgmpy.models.DiscreteBayesianNetwork

    Raises
    ------
    OptionError (a ValueError)
        If ``name`` is not a bundled network (the message lists the available names).
    ImportError
        If pgmpy is not installed.
    """
    path = _example_path(name)
    try:
        from pgmpy.readwrite import BIFReader
    except ImportError as e:
        raise ImportError(f"pgmpy is needed for load_pgmpy_example: {_PGMPY_HINT}") from e
    with gzip.open(path, "rb") as f:
        text = f.read().decode("utf-8")
    return BIFReader(string=text).get_model()
