"""Collectors: health, queue, processing time and resources from the
backends themselves (ComfyUI, AUTOMATIC1111/Forge, Ollama,
OpenAI-compatible servers, plain HTTP), polled by background workers."""

from .base import SIGNALS, Backend, Capabilities
from .config import CONFIG_ENV, DEFAULT_BACKENDS, KINDS, BackendConfig, default_config_path, load_config, parse_config
from ..net import is_loopback
from .http import ERROR_TYPES, HttpClient, ProbeError, Response

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_BACKENDS",
    "ERROR_TYPES",
    "KINDS",
    "SIGNALS",
    "Backend",
    "BackendConfig",
    "Capabilities",
    "HttpClient",
    "ProbeError",
    "Response",
    "default_config_path",
    "is_loopback",
    "load_config",
    "parse_config",
]
