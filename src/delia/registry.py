"""Small typed registries for interchangeable parts (engines, diversifiers, methods, metrics)."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from delia.errors import UserError

T = TypeVar("T")


class RegistryError(UserError, KeyError):
    """Unknown or duplicate registry name. The message is the whole explanation."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want plain text
        return str(self.args[0])


class Registry(Generic[T]):
    """A name -> object table. Duplicate names raise; unknown names suggest close matches.

    A registry that a lower layer looks up and a higher layer fills (methods, transforms, eval hooks) names
    its `providers`: modules, by name, imported on the first lookup. The lower layer thus never imports the
    plug-ins (the import graph keeps pointing down) and still finds them without the caller importing them.

    Args:
        kind: what the registry holds ("engine", "method", ...), used in error messages and `delia ls`.
        providers: modules whose import fills the registry, imported once, on the first lookup.
    """

    def __init__(self, kind: str, providers: Iterable[str] = ()) -> None:
        self.kind = kind
        self.providers: list[str] = list(providers)
        self._loaded = 0  # how many providers have been imported
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def _load(self) -> None:
        # Count before importing: a provider that looks the registry up while it loads must not recurse.
        while self._loaded < len(self.providers):
            self._loaded += 1
            try:
                importlib.import_module(self.providers[self._loaded - 1])
            except BaseException:  # a broken provider fails every lookup, not only the first
                self._loaded -= 1
                raise

    def register(self, name: str, help: str | None = None) -> Callable[[T], T]:
        """Decorator that registers an object under `name`."""

        def deco(obj: T) -> T:
            self.add(name, obj, help=help)
            return obj

        return deco

    def add(self, name: str, obj: T, help: str | None = None) -> None:
        if name in self._items:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj
        doc = help or (getattr(obj, "__doc__", None) or "").strip().splitlines()
        self._help[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._items), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            known = ", ".join(sorted(self._items)) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r}{hint} (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(sorted(self._items))

    def __len__(self) -> int:
        self._load()
        return len(self._items)

    def describe(self) -> list[tuple[str, str]]:
        """(name, one-line help) pairs, sorted by name."""
        self._load()
        return [(n, self._help[n]) for n in sorted(self._items)]


# All registries, by kind, so `delia ls` can list them. Modules add themselves on import.
REGISTRIES: dict[str, Registry] = {}

# The plug-in registries: looked up by a lower layer, filled by the modules named here (loaded on first lookup).
# Whoever calls `registry(kind)` first, stage or plug-in, gets the same registry with these providers.
PROVIDERS: dict[str, tuple[str, ...]] = {
    "method": ("delia.methods",),  # looked up by experiments.plan
    "transform": ("delia.methods",),  # data transforms of a recipe's steps; run by experiments.stages
    "eval prompt hook": ("delia.methods.hooks",),  # the baselines' prompt rewrites; applied by evaluation.run
    "eval decoder": ("delia.methods.hooks",),  # the baselines' decoders (CTG); called by evaluation.run
    "train validator": ("delia.evaluation.validation",),  # model selection's scorer; called by training
}


def registry(kind: str, providers: Iterable[str] = ()) -> Registry:
    """Return the registry for `kind`, creating it once (with its `PROVIDERS` and any `providers` given)."""
    if kind not in REGISTRIES:
        REGISTRIES[kind] = Registry(kind, PROVIDERS.get(kind, ()))
    reg = REGISTRIES[kind]
    reg.providers += [p for p in providers if p not in reg.providers]
    return reg
