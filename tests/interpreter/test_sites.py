import jax
import pytest

import jaxinterp as ji
from tests.interpreter.program import X, program


def test_unknown_site_names_the_closest():
    with pytest.raises(ji.UnknownSiteError, match="Closest sites: carry"):
        ji.capture(program, "carr")(X)
    with pytest.raises(ji.UnknownSiteError, match="inner"):
        ji.intervene(program, {"iner": lambda v: v})(X)


def test_site_names_lists_in_program_order():
    assert ji.site_names(program, X) == ["h", "inner", "pre_relu", "before_vjp", "carry"]


def test_tag_is_free_under_jit():
    f = jax.jit(lambda x: ji.tag(x, "a") * 2)
    assert "jaxinterp_tag" not in f.lower(X).as_text()
