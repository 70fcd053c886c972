"""Exported names live at their public path: ``runpod_queue.Job``, not ``runpod_queue._models.Job``.

Each public module calls ``publish(globals())`` after its ``__all__``; the classes and functions it exports
get that module as ``__module__``, as httpx and openai-python do. Reprs, tracebacks and docs then name the
path users import from, and pickles refer to it, so renaming a private module never breaks a stored pickle.

Where several public modules export one object, the package root wins (``runpod_queue.JournalError``, not
``runpod_queue.batch.JournalError``) whatever was imported first, and a public module never hands an object
over to another non-root one (``runpod_queue.testing.Emulator`` stays ``runpod_queue.emulator.Emulator``).

The price, as for httpx's and openai's classes: ``inspect.getsource`` of a moved class looks for it in the
public module's file and fails. Documentation tools that parse the files (griffe, mkdocstrings) are not
affected.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable, Mapping
from typing import Any

ROOT = "runpod_queue"


def _is_private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))


def _ours(module: str) -> bool:
    return module == ROOT or module.startswith(ROOT + ".")


def _root_exports() -> frozenset[str]:
    # Empty while the root package is still executing its own imports: its closing publish() runs after.
    root = sys.modules.get(ROOT)
    return frozenset(getattr(root, "__all__", ()))


def relocate(value: object, module: str) -> None:
    """Give ``value`` (a class or function of this package) ``module`` as its ``__module__`` when that is
    its better public home: the root, or any public module for an object defined in a private one."""
    if not isinstance(value, type | types.FunctionType):
        return
    current = getattr(value, "__module__", None)
    if not isinstance(current, str) or not _ours(current) or current in (module, ROOT):
        return
    if module == ROOT or _is_private(current):
        if isinstance(value, type):
            _resolve_annotations(value, vars(sys.modules[current]))
        value.__module__ = module


def _resolve_annotations(cls: type, namespace: Mapping[str, Any]) -> None:
    """Evaluate the class's string annotations (``from __future__ import annotations``) where they were
    written. ``typing.get_type_hints``, pydantic and cattrs look names up in ``sys.modules[cls.__module__]``:
    after the move that is the public module, which lacks the defining module's imports (``Mapping``,
    ``httpx``). A name imported only for type checkers stays a string, as it was before."""
    annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 - updated in place, not a copy
    fields = getattr(cls, "__dataclass_fields__", {})
    for name, annotation in annotations.items():
        if not isinstance(annotation, str):
            continue
        try:
            resolved = eval(annotation, dict(namespace), dict(vars(cls)))  # noqa: S307 - our own annotations
        except Exception:  # noqa: S112 - unresolvable as written (a type checker's import): keep the string
            continue
        annotations[name] = resolved
        if name in fields and fields[name].type == annotation:
            fields[name].type = resolved


def publish(namespace: Mapping[str, Any], lazy: Iterable[tuple[str, str]] = ()) -> None:
    """Relocate every name in ``namespace["__all__"]`` (call it once, after ``__all__``, in each public
    module). ``lazy`` are (name, module) pairs loaded on first use (PEP 562): those already imported are
    relocated now; the module's ``__getattr__`` relocates the others when it loads them."""
    module = namespace["__name__"]
    target = {name: ROOT if name in _root_exports() else module for name in namespace["__all__"]}
    for name, home in target.items():
        if name in namespace:
            relocate(namespace[name], home)
    for name, source in lazy:
        loaded = sys.modules.get(source)
        if loaded is not None and hasattr(loaded, name):
            relocate(getattr(loaded, name), target.get(name, module))
