"""A griffe extension for the API reference: Sphinx roles in docstrings become links or code.

ppl's docstrings cross-reference in reStructuredText roles (``:class:`~ppl.errors.ModelError```,
``:func:`ppl.infer```, ``:meth:`Posterior.sample```, ``:math:`x^2```), which ``help()`` readers
know; mkdocstrings renders Markdown, where they would show raw. This extension rewrites every
docstring of the loaded package before it is rendered (the source files are untouched):

* ``:class:`` / ``:func:`` / ``:meth:`` / ``:attr:`` / ``:mod:`` / ``:exc:`` / ``:data:`` /
  ``:obj:`` (also with a ``py:`` domain) whose target griffe resolves in the docstring's scope
  become an optional autorefs reference to the object's canonical path: a link where the object
  is rendered in the reference, plain code where it is not (``mkdocs build --strict`` never
  fails on them). A target griffe cannot resolve (another library, a typo) is plain code.
* The text shown is Sphinx's: the last name with ``~`` (``~ppl.errors.ModelError`` shows
  ``ModelError``), the whole dotted name without, the title of ``title <target>``.
* ``:math:`` and any other role become inline code (the site has no math renderer: no CDN).

Registered in ``mkdocs.yml`` under the python handler's ``options: extensions:``.
"""

from __future__ import annotations

import html
import re
from typing import Callable

import griffe

__all__ = ["SphinxRoles", "rewrite_roles", "LINK_ROLES"]

#: The roles that name a Python object (Sphinx's ``py`` domain).
LINK_ROLES = frozenset({"class", "func", "meth", "attr", "mod", "exc", "data", "obj"})

_ROLE = re.compile(r"(?<![\w`]):(?:py:)?(?P<role>[a-z]+):`(?P<content>[^`]+)`(?!`)")
_TITLED = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)


def rewrite_roles(text: str, resolve: Callable[[str], str | None]) -> str:
    """Rewrite the Sphinx roles of a docstring as Markdown for mkdocstrings.

    Parameters
    ----------
    text : str
        The docstring.
    resolve : callable
        ``resolve(target)`` gives the canonical dotted path of a role's target (the target as
        written, ``~`` and a trailing ``()`` removed), or ``None`` when it cannot be resolved.

    Returns
    -------
    str
        The docstring with each object role as ``<autoref identifier="PATH" optional>`TEXT`</autoref>``
        (a link when PATH is rendered, code otherwise) or `` `TEXT` `` when unresolved, and every
        other role as `` `CONTENT` ``.
    """

    def one(match: re.Match) -> str:
        role, content = match["role"], " ".join(match["content"].split())
        if role not in LINK_ROLES:
            return _code(content)
        shown, target = _shown_and_target(content)
        if target.startswith("!"):  # Sphinx: no link
            return _code(shown.lstrip("!"))
        path = resolve(target.lstrip("~.").removesuffix("()"))
        if path is None:
            return _code(shown)
        return f'<autoref identifier="{html.escape(path)}" optional>{_code(shown)}</autoref>'

    return _ROLE.sub(one, text)


def _shown_and_target(content: str) -> tuple[str, str]:
    """The text Sphinx shows for a role's content, and its target."""
    titled = _TITLED.match(content)
    if titled and titled["title"]:
        return titled["title"], "".join(titled["target"].split())
    content = "".join(content.split())  # a dotted name broken over lines
    if content.startswith("~"):
        return content.lstrip("~").removesuffix("()").rsplit(".", 1)[-1], content
    return content.lstrip("."), content


def _code(text: str) -> str:
    """``text`` as Markdown inline code (backticks inside it are fenced by longer runs)."""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _resolver(obj: griffe.Object, collection: griffe.ModulesCollection) -> Callable[[str], str | None]:
    """A ``resolve`` for :func:`rewrite_roles` in the scope of ``obj``'s docstring: the first
    name is looked up as Python would (members, the module's imports, parents), then the whole
    target as an absolute path; the answer is the canonical path of a loaded object."""

    def resolve(target: str) -> str | None:
        head, _, rest = target.partition(".")
        candidates = []
        try:
            scoped = obj.resolve(head)
        except (griffe.GriffeError, KeyError, ValueError):
            scoped = None
        if scoped:
            candidates.append(f"{scoped}.{rest}" if rest else scoped)
        candidates.append(target)
        for path in candidates:
            try:
                return collection[path].canonical_path
            except (griffe.GriffeError, KeyError, ValueError, AttributeError):
                continue
        return None

    return resolve


def _objects(obj: griffe.Object):
    """``obj`` and its members, recursively (aliases skipped: their targets are visited where
    they are defined)."""
    yield obj
    for member in list(obj.members.values()):
        if not member.is_alias:
            yield from _objects(member)


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx roles of every docstring of a loaded package (see the module's text)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        """Rewrite each docstring of ``pkg`` once the whole package is loaded (so that names
        imported from other modules resolve)."""
        for obj in _objects(pkg):
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = rewrite_roles(obj.docstring.value, _resolver(obj, loader.modules_collection))
