"""Backend kind name -> its class (imported on first use, so a kind's
module only loads when a backend of that kind is configured)."""

from __future__ import annotations

import importlib

from .base import Backend

#: kind -> "module:Class" under this package.
_KINDS: dict[str, str] = {
    "comfyui": "comfyui:ComfyUI",
    "a1111": "a1111:A1111",
    "ollama": "ollama:Ollama",
    "openai": "openai:OpenAICompatible",
    "http": "http_probe:HttpProbe",
}


def backend_class(kind: str) -> type[Backend]:
    """The class implementing ``kind`` (one of ``config.KINDS``)."""
    try:
        module, cls = _KINDS[kind].split(":")
    except KeyError:
        raise ValueError(f"unknown backend kind {kind!r}: expected one of {', '.join(_KINDS)}") from None
    found = getattr(importlib.import_module(f".{module}", __package__), cls)
    assert isinstance(found, type) and issubclass(found, Backend)
    return found
