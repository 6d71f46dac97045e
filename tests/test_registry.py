import pytest

from delia.registry import Registry, RegistryError


def test_register_get_and_duplicates():
    reg: Registry = Registry("engine")

    @reg.register("transformers", help="local HF models")
    def make():
        return 1

    assert reg.get("transformers") is make
    assert list(reg) == ["transformers"] and "transformers" in reg
    assert reg.describe() == [("transformers", "local HF models")]
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("transformers", object())


def test_unknown_name_suggests_close_match():
    reg: Registry = Registry("method")
    reg.add("delia", 1)
    reg.add("neftune", 2)
    with pytest.raises(RegistryError) as e:
        reg.get("delai")
    assert "did you mean 'delia'" in str(e.value)
    assert "known: delia, neftune" in str(e.value)
