"""The public surface is what ``__all__`` says, and every name in it resolves (httpx's
``tests/test_exported_members.py``)."""

from __future__ import annotations

import importlib

import pytest

import router


def test_router_all_names_resolve_and_are_public() -> None:
    for name in router.__all__:
        assert not name.startswith("_")
        assert getattr(router, name) is not None, name


def test_the_drop_in_surface_is_exported() -> None:
    for name in ("HybridClient", "AsyncHybridClient", "RouteInfo", "HybridGateError"):
        assert name in router.__all__


@pytest.mark.parametrize("package", ["local_models", "training", "router.errors"])
def test_package_all_is_complete(package: str) -> None:
    module = importlib.import_module(package)
    exported = set(module.__all__)
    for name in exported:
        assert hasattr(module, name), f"{package}.__all__ names {name!r}, which it lacks"
    public_classes = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and isinstance(v, type) and v.__module__.startswith(package)
    }
    assert public_classes <= exported, f"{package}: not in __all__: {public_classes - exported}"
