"""The test bed's free ports: outside the kernel's client-port range, never handed out twice,
never one that something holds."""

from __future__ import annotations

import random
import socket

import pytest

from testbed import services


def test_ports_come_from_below_the_client_port_range() -> None:
    low = services._client_ports_from()
    ports = [services.free_port() for _ in range(200)]
    assert all(services._LOWEST <= p < low for p in ports)


def test_no_port_is_handed_out_twice() -> None:
    ports = [services.free_port() for _ in range(500)]
    runs = [services.free_run(6) for _ in range(50)]
    taken = ports + [p for base in runs for p in range(base, base + 6)]
    assert len(taken) == len(set(taken))


def test_a_port_someone_holds_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        held = holder.getsockname()[1]
        draws = iter([held, held + 1])
        # The first draw is the held port (wherever the kernel put it), the next its neighbour.
        monkeypatch.setattr(services, "_LOWEST", min(held, services._LOWEST))
        monkeypatch.setattr(random, "randrange", lambda *_: next(draws))
        monkeypatch.setattr(services, "_client_ports_from", lambda: held + 100)
        assert services.free_port() == held + 1
