import pytest

from selfsup.errors import RegistryError
from selfsup.registry import Provider, Registry


def make_registry() -> Registry:
    r = Registry()
    r.register("critic", "dot", lambda: "dot", summary="dot product")
    r.register("critic", "cosine", lambda: "cos", summary="cosine")
    r.register("estimator", "infonce", lambda: "nce", summary="InfoNCE")
    return r


def test_unknown_name_lists_close_matches():
    r = make_registry()
    with pytest.raises(RegistryError) as err:
        r.get("critic", "cosin")
    message = str(err.value)
    assert "unknown critic 'cosin'" in message
    assert "Did you mean 'cosine'" in message
    assert "Known critics: cosine, dot" in message


def test_unknown_kind_is_an_error():
    with pytest.raises(RegistryError, match="unknown component kind 'critc'.*'critic'"):
        make_registry().get("critc", "dot")


def test_duplicate_name_raises_and_keeps_the_first():
    r = make_registry()
    with pytest.raises(RegistryError, match="duplicate critic name 'dot'"):
        r.register("critic", "dot", lambda: "other")
    assert r.create("critic", "dot") == "dot"


def test_list_with_wildcards_and_kind():
    r = make_registry()
    assert [e.name for e in r.list("critic")] == ["cosine", "dot"]
    assert [e.name for e in r.list("critic", "co*")] == ["cosine"]
    assert [(e.kind, e.name) for e in r.list(pattern="*n*")] == [("critic", "cosine"), ("estimator", "infonce")]


def test_providing_attributes_and_rolls_back_on_error():
    r = Registry()
    with r.providing(Provider("pkg-a", "1.0")):
        r.register("critic", "a", lambda: 1)
    assert str(r.get("critic", "a").provider) == "pkg-a 1.0"
    with pytest.raises(RuntimeError):
        with r.providing(Provider("pkg-b", "2.0")):
            r.register("critic", "b", lambda: 2)
            raise RuntimeError("plugin broke half-way")
    assert ("critic", "b") not in r
    assert ("critic", "a") in r


def test_summary_defaults_to_first_docstring_line():
    r = Registry()

    def factory():
        """First line.

        More text."""

    assert r.register("critic", "f", factory).summary == "First line."
