"""Hugging Face hub access that fails fast and in one line.

* ``HF_HUB_OFFLINE=1`` (or ``HF_DATASETS_OFFLINE=1``): only the local datasets cache is tried.
* otherwise a quick TCP probe of the hub host (or the HTTPS proxy, when set; 3 s) runs first; when it fails, only the cache is tried
  (``datasets`` itself would retry for ~25 s before giving up).
Every failure becomes a ``UserError`` naming the dataset and how to use local files instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
from urllib.parse import urlparse

from wanda_engine.errors import UserError

from .base import one_line, quiet_datasets

_TRUE = {"1", "true", "yes", "on"}
_PROBE: dict[str, bool] = {}


def offline_env() -> bool:
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _host() -> tuple[str, int]:
    """The host a hub request connects to first: the HTTPS proxy when one is set, else the hub endpoint."""
    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(k)), "")
    if proxy:
        url = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        if url.hostname:
            return url.hostname, url.port or (443 if url.scheme == "https" else 80)
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Quick and offline-safe: False under HF_HUB_OFFLINE=1, else one cached TCP connect to the hub host."""
    if offline_env():
        return False
    host, port = _host()
    key = f"{host}:{port}"
    if key not in _PROBE:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                _PROBE[key] = True
        except OSError:
            _PROBE[key] = False
    return _PROBE[key]


def hub_state() -> str:
    """Words for messages: why the hub is not used."""
    if offline_env():
        return next(f"{k}={os.environ[k]}" for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
                    if os.environ.get(k, "").strip().lower() in _TRUE)
    host, _ = _host()
    return f"{host} unreachable"


@contextlib.contextmanager
def _cache_only():
    """Make ``datasets``/``huggingface_hub`` behave as under HF_HUB_OFFLINE=1 for one call."""
    import datasets.config as dconfig
    import huggingface_hub.constants as hconst

    saved = (dconfig.HF_HUB_OFFLINE, hconst.HF_HUB_OFFLINE)
    dconfig.HF_HUB_OFFLINE = hconst.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        dconfig.HF_HUB_OFFLINE, hconst.HF_HUB_OFFLINE = saved


def load_hub_dataset(what: str, hint: str, path: str, name: str | None = None, **kwargs):
    """``datasets.load_dataset(path, name, **kwargs)`` or a one-line UserError ending with ``hint``.

    ``what`` names the source in messages (e.g. "wikitext2 train split"); ``hint`` says how to proceed
    without the hub (e.g. "pass --data_dir DIR containing wikitext2/wiki.train.raw").
    """
    label = f"{path}" + (f" ({name})" if name else "")
    online = hub_reachable()
    try:
        with quiet_datasets() as datasets, (contextlib.nullcontext() if online else _cache_only()):
            return datasets.load_dataset(path, name, **kwargs)
    except UserError:
        raise
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError...)
        if online:
            why = f"loading Hugging Face dataset {label} failed: {one_line(exc)}"
        else:
            why = f"Hugging Face dataset {label} is not in the local cache and the hub is not used ({hub_state()})"
        raise UserError(f"{what}: {why}; {hint}") from None
