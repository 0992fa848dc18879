"""Is the Hugging Face Hub reachable? Asked once per process, answered in well under a second.

Without this, every registry model that is not cached costs huggingface_hub's five retries with
back-off (about 25 s) when the network is unreachable: at start-up, on each model switch, in the
CLI and the API. `offline_reason()` answers instead:
- `HF_HUB_OFFLINE` set (read from huggingface_hub at call time, so its own switch is honoured);
- otherwise one TCP connection to the Hub's host (or to the HTTPS proxy when one is configured),
  made in a daemon thread and waited for at most `PROBE_TIMEOUT_S`, so a hanging DNS lookup cannot
  hold the caller either. The answer is kept for the life of the process: after the network
  comes back, restart (the studio also keeps the untrained stand-in it fell back to).

The kept answer is this module's one piece of state; `forget()` clears it (tests).
"""
from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

PROBE_TIMEOUT_S = 0.8

_lock = threading.Lock()
_answer: list[str | None] = []          # [] not asked yet; [None] online; [reason] offline


def _env_offline() -> bool:
    import huggingface_hub.constants as hc
    return bool(getattr(hc, "HF_HUB_OFFLINE", False))


def probe_target() -> tuple[str, int]:
    """(host, port) a connection to which means the Hub can be asked: the HTTPS proxy when set, else the endpoint."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return parts.hostname or "", parts.port or 8080
    import huggingface_hub.constants as hc
    parts = urlsplit(getattr(hc, "ENDPOINT", None) or "https://huggingface.co")
    return parts.hostname or "huggingface.co", parts.port or (443 if parts.scheme == "https" else 80)


def _probe(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to host:port opens within `timeout`, else the reason it did not."""
    result: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as e:
            result.append(f"{host}:{port} cannot be reached ({e.strerror or type(e).__name__})")

    worker = threading.Thread(target=connect, name="hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return result[0] if result else f"{host}:{port} did not answer within {timeout:g} s"


def offline_reason(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the Hub cannot be reached (None when it can); probes at most once per process."""
    if _env_offline():
        return "HF_HUB_OFFLINE is set"
    with _lock:
        if not _answer:
            _answer.append(_probe(*probe_target(), timeout))
        return _answer[0]


def forget() -> None:
    """Drop the kept answer so the next call probes again."""
    with _lock:
        _answer.clear()
