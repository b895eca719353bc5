"""The launcher believes only its own processes' health answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agentguard import ConfigurationError
from agentguard.network import launcher
from agentguard.network.launcher import ReferenceNetwork

pytestmark = pytest.mark.integration


class _Impostor(BaseHTTPRequestHandler):
    """Answers every health check as a gateway would (another network's, or anyone's)."""

    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "operators": 3, "pid": 1}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_health_answer_from_another_server_is_not_success(
    impostor: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the launcher took any 200 from /health on its port as its own gateway started,
    and `network up` printed success while another server held the port. Here the port check
    is skipped (as when the other server binds between the check and the gateway's start),
    so only the health answer's pid can tell."""
    monkeypatch.setattr(launcher, "_check_port_free", lambda port: None)
    net = ReferenceNetwork(operators=1, port=impostor, state_dir=tmp_path / "net")
    with pytest.raises(ConfigurationError, match="answered by another server"):
        net.start()
    net.stop()
    assert not (tmp_path / "net" / "run.json").exists()
    assert net.gateway_pid is None
