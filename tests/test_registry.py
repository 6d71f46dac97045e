import subprocess
import sys

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


def test_providers_load_on_first_lookup(tmp_path, monkeypatch):
    """A plug-in registry imports its provider modules (by name) on the first lookup, once, and not before."""
    reg: Registry = Registry("widget", providers=["delia_test_widgets"])
    (tmp_path / "delia_test_widgets.py").write_text(
        "import sys\nREG = sys.modules['__reg__']\nREG.add('spoon', 1, help='a spoon')\n"
        "assert 'spoon' in REG  # a lookup while the provider loads does not import it again\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "__reg__", reg)
    assert "delia_test_widgets" not in sys.modules  # creating the registry imports nothing
    assert reg.get("spoon") == 1 and "delia_test_widgets" in sys.modules
    assert list(reg) == ["spoon"] and len(reg) == 1 and reg.describe() == [("spoon", "a spoon")]
    with pytest.raises(RegistryError, match="known: spoon"):  # a second import would raise "already registered"
        reg.get("fork")
    monkeypatch.delitem(sys.modules, "delia_test_widgets")


def test_plugin_registries_find_their_providers():
    """The stages find the methods' transforms and eval hooks by name; nothing imports delia.methods first."""
    code = ("import sys\nfrom delia.experiments.stages import TRANSFORMS\nfrom delia.registry import registry\n"
            "assert 'delia.methods' not in sys.modules\n"
            "assert 'fact_qa' in TRANSFORMS and 'dmt_stage2' in TRANSFORMS and 'translation_chat' in TRANSFORMS\n"
            "assert 'delia.methods' in sys.modules\n"
            "assert 'icl' in registry('eval prompt hook') and 'arithmetic' in registry('eval decoder')\n"
            "assert 'delia' in registry('method')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
