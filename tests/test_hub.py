"""pipeline.weights.hub: offline is detected once, quickly, and then no network call is attempted.

The network is made unreachable by replacing socket.create_connection (counted) and
huggingface_hub's download (which must never be reached once the probe said offline).
"""
from __future__ import annotations

import contextlib
import socket
import threading

import huggingface_hub
import huggingface_hub.constants as hf_constants
import pytest

from pipeline.weights import hub, registry
from pipeline.weights.registry import WeightsUnavailable


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch, tmp_path):
    hub.forget()
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    yield
    hub.forget()


@pytest.fixture
def calls(monkeypatch):
    """Counts of connection attempts and Hub downloads; the network is unreachable."""
    counts = {"connect": 0, "download": 0}

    def unreachable(address, timeout=None, **kw):
        counts["connect"] += 1
        raise socket.gaierror(-2, "Name or service not known")

    def download(*a, **kw):
        counts["download"] += 1
        raise AssertionError("hf_hub_download was called although the Hub is known to be offline")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return counts


def test_offline_is_probed_once_and_no_download_is_attempted(calls):
    for name in ("depth-anything-v2-small", "depth-anything-v2-base", "depth-anything-v2-small"):
        with pytest.raises(WeightsUnavailable) as e:
            registry.resolve(name)
        assert "offline" in str(e.value) and "huggingface.co:443 cannot be reached" in str(e.value)
        assert "--checkpoint /path/to/" in str(e.value)
    assert calls == {"connect": 1, "download": 0}


def test_hf_hub_offline_is_honoured_without_any_probe(calls, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailable, match="HF_HUB_OFFLINE is set"):
        registry.resolve("depth-anything-v1-small")
    assert registry.availability("depth-anything-v2-large") == \
        "not cached, and the Hub is offline (HF_HUB_OFFLINE is set)"
    assert calls == {"connect": 0, "download": 0}


def test_availability_answers_from_the_probe_without_downloading(calls):
    reason = registry.availability("depth-anything-v2-metric-indoor-small")
    assert reason.startswith("not cached, and the Hub is offline (huggingface.co:443 cannot be reached")
    assert registry.availability("depth-anything-v2-small") == reason
    assert calls == {"connect": 1, "download": 0}


def test_a_hanging_lookup_does_not_hold_the_caller(monkeypatch):
    release = threading.Event()

    def hang(address, timeout=None, **kw):
        release.wait(30)                      # a DNS lookup that never answers (released at the end)
        raise OSError("late")

    monkeypatch.setattr(socket, "create_connection", hang)
    try:
        assert hub.offline_reason(timeout=0.05) == "huggingface.co:443 did not answer within 0.05 s"
    finally:
        release.set()


def test_online_the_download_goes_ahead(monkeypatch, tmp_path):
    opened = []

    @contextlib.contextmanager
    def reachable(address, timeout=None, **kw):
        opened.append(address)
        yield object()

    weights = tmp_path / "depth_anything_v2_vits.pth"
    weights.write_bytes(b"w")
    monkeypatch.setattr(socket, "create_connection", reachable)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **kw: str(weights))
    assert hub.offline_reason() is None and registry.availability("depth-anything-v2-small") is None
    assert registry.resolve("depth-anything-v2-small") == weights
    assert opened == [("huggingface.co", 443)]


def test_the_probe_goes_to_the_proxy_when_one_is_set(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert hub.probe_target() == ("proxy.internal", 3128)
