"""Options declared as data: every declared option of every registered backend refuses a
value of the wrong type with an OptionError naming it; the gaps the issue lists; the
generated docs table equals the declarations; the CLI reads values by the declared type.

Reference: the declarations themselves (``backend.options``) and the values a user would
type; nothing here calls a backend's run.
"""

from __future__ import annotations

import pathlib

import pytest
import torch

import ppl
import ppl.distributions as dist
from ppl.backends.options import Anything, Option, option_table

ROOT = pathlib.Path(__file__).resolve().parents[1]


@ppl.model
def coin(x):
    p = ppl.param("p", torch.tensor(0.5, dtype=torch.float64), constraint=dist.constraints.unit_interval)
    with ppl.plate("data", len(x)):
        z = ppl.sample("z", dist.Bernoulli(p))
        ppl.sample("obs", dist.Normal(z.double() * 2.0, 1.0), obs=x)


DATA = {"x": torch.tensor([0.1, 2.2, 1.9, -0.3], dtype=torch.float64)}

CASES = [(name, opt) for name, backend in ppl.registered_backends().items()
         for opt, decl in backend.options.items() if isinstance(decl, Option) and not isinstance(decl.constraint,
                                                                                                  Anything)]


@pytest.mark.parametrize("method,option", CASES, ids=[f"{m}-{o}" for m, o in CASES])
def test_every_declared_option_refuses_a_wrong_type(method, option):
    with pytest.raises(ppl.OptionError, match=rf"option {option}=") as info:
        ppl.infer(coin, DATA, method=method, **{option: object()})
    assert isinstance(info.value, ValueError)  # OptionError is a ValueError


@pytest.mark.parametrize("method", sorted(ppl.registered_backends()))
@pytest.mark.parametrize("option,value,accepted", [
    ("seed", "abc", "integer"),
    ("seed", -1, "integer in"),
    ("dtype", "float32", "torch.float32"),
    ("memory_budget", "1GiB", "bytes"),
    ("device", "tpu", "cpu"),
])
def test_gaps_of_the_hand_written_checks(method, option, value, accepted):
    """Values hand-written checks used to let through (or crash on) are OptionErrors naming
    the option and what is accepted, for every backend that takes the option."""
    declared = ppl.registered_backends()[method].options
    if option not in declared and option not in ("memory_budget", "dtype"):
        pytest.skip(f"{method} takes no {option}")
    with pytest.raises(ppl.OptionError, match=rf"{option}.*{accepted}"):
        ppl.infer(coin, DATA, method=method, **{option: value})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_an_option_error():
    with pytest.raises(ppl.OptionError, match="CUDA is not available"):
        ppl.infer(coin, DATA, method="exact", device="cuda")


def test_unknown_option_and_an_option_the_method_does_not_take():
    with pytest.raises(ppl.UnknownOptionError, match="progress") as info:
        ppl.infer(coin, DATA, method="exact", progress=True)  # exact has no progress bar
    assert isinstance(info.value, TypeError) and isinstance(info.value, ppl.OptionError)
    assert "it takes: dtype" in str(info.value)


def test_converted_values_reach_the_backend():
    post = ppl.infer(coin, DATA, method="exact", device="cpu", memory_budget=2e9)
    assert post.diagnostics["device"] == "cpu"


def test_third_party_doc_only_options_accept_anything():
    class Echo(ppl.Backend):
        name = "echo"
        options = {"anything": "a doc-only declaration"}

        def check(self, analysis):
            return ppl.backends.Applicability(True, "always")

        def run(self, graph, analysis, **options):
            return ppl.Posterior(self.name, graph=graph, diagnostics={"got": options})

    echo = Echo()
    assert echo.validate_options({"anything": object()}).keys() == {"anything"}
    with pytest.raises(ppl.UnknownOptionError):
        echo.validate_options({"other": 1})


def test_methods_lists_declared_options_with_defaults():
    table = ppl.methods()
    assert list(table) == ppl.api.auto_order()
    rows = {r[0]: r for r in table["em"]["options"]}
    assert rows["max_iter"][1] == "100" and "integer" in rows["max_iter"][2]
    assert table["exact"]["rank"] < table["cavi"]["rank"]


def test_docs_option_tables_match_the_declarations():
    from ppl.cli.methods_doc import options_markdown

    page = (ROOT / "docs" / "options.md").read_text()
    assert options_markdown() in page, ("docs/options.md is out of date: regenerate it with "
                                        "`python -m ppl methods --markdown > docs/options.md`")


def test_option_table_helpers():
    table = option_table(Option("a", Anything(), 1, "doc"))
    assert list(table) == ["a"]
