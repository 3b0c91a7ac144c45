"""The API reference's griffe extension (docs/griffe_sphinx_roles.py): the docstrings' Sphinx
roles become autorefs links (optional: code where the object is not rendered) or inline code."""

import importlib.util
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def roles():
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("griffe_sphinx_roles", ROOT / "docs" / "griffe_sphinx_roles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


KNOWN = {
    "ppl.errors.ModelError": "ppl.errors.ModelError",
    "ppl.infer": "ppl.api.infer",
    "Posterior.sample": "ppl.posterior.base.Posterior.sample",
}


def link(path, text):
    return f'<autoref identifier="{path}" optional>`{text}`</autoref>'


@pytest.mark.parametrize("text, expected", [
    (":class:`~ppl.errors.ModelError`", link("ppl.errors.ModelError", "ModelError")),
    (":exc:`ppl.errors.ModelError`", link("ppl.errors.ModelError", "ppl.errors.ModelError")),
    (":func:`ppl.infer`", link("ppl.api.infer", "ppl.infer")),
    (":py:func:`~ppl.infer()`", link("ppl.api.infer", "infer")),
    (":meth:`Posterior.sample`", link("ppl.posterior.base.Posterior.sample", "Posterior.sample")),
    (":meth:`draws <Posterior.sample>`", link("ppl.posterior.base.Posterior.sample", "draws")),
    (":meth:`!Posterior.sample`", "`Posterior.sample`"),
    (":class:`~pandas.DataFrame`", "`DataFrame`"),            # not resolvable: code, no link
    (":mod:`ppl.nowhere`", "`ppl.nowhere`"),
    (":math:`x^2 + \\sigma_k`", "`x^2 + \\sigma_k`"),
    (":ref:`some-label`", "`some-label`"),                     # an unknown role: code
    (":class:`~ppl.errors.\n    ModelError`", link("ppl.errors.ModelError", "ModelError")),
])
def test_rewrite_one_role(roles, text, expected):
    assert roles.rewrite_roles(text, KNOWN.get) == expected


def test_rewrite_keeps_the_rest(roles):
    doc = textwrap.dedent("""\
        Run it; see :func:`ppl.infer` and :meth:`Posterior.sample`.

        Raises
        ------
        ModelError
            When ``x`` is bad (:class:`~ppl.errors.ModelError`); `code` and a:b:`c` stay.
        """)
    out = roles.rewrite_roles(doc, KNOWN.get)
    assert ":func:" not in out and ":meth:" not in out and ":class:" not in out
    assert "Raises\n------\nModelError\n" in out
    assert "``x``" in out and "`code` and a:b:`c` stay." in out
    assert link("ppl.api.infer", "ppl.infer") in out


def test_extension_resolves_in_the_docstrings_scope(roles, tmp_path):
    """Loaded by griffe with the extension: short names resolve through the module's imports
    and the class's members, package-level aliases to where the object is defined."""
    import griffe

    pkg = tmp_path / "rolepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""Top: :func:`rolepkg.infer`."""\nfrom rolepkg.api import infer\n')
    (pkg / "errors.py").write_text('class ModelError(Exception):\n    """Bad model."""\n')
    (pkg / "api.py").write_text(textwrap.dedent('''\
        from rolepkg.errors import ModelError


        def infer():
            """Raise :class:`~rolepkg.errors.ModelError` or :class:`ModelError`; :func:`torch.zeros`."""


        class Post:
            """See :meth:`sample` and :meth:`Post.sample`, :math:`a_b`."""

            def sample(self):
                """Draw; cf. :meth:`sample`."""
        '''))
    loaded = griffe.load("rolepkg", search_paths=[str(tmp_path)], extensions=griffe.load_extensions(roles.SphinxRoles))
    assert loaded.docstring.value == "Top: " + link("rolepkg.api.infer", "rolepkg.infer") + "."
    assert loaded["api.infer"].docstring.value == (
        f'Raise {link("rolepkg.errors.ModelError", "ModelError")} or {link("rolepkg.errors.ModelError", "ModelError")}'
        "; `torch.zeros`.")
    assert loaded["api.Post"].docstring.value == (
        f'See {link("rolepkg.api.Post.sample", "sample")} and {link("rolepkg.api.Post.sample", "Post.sample")}'
        ", `a_b`.")
    assert loaded["api.Post.sample"].docstring.value == f'Draw; cf. {link("rolepkg.api.Post.sample", "sample")}.'
