"""An RPC node may lie: its answer is read by web3 (``json.loads``) inside agentguard's wallet.

The wallet's contract for a node that fails before signing is ``NodeUnavailable``. web3 pulls
in py_ecc, which raises the interpreter's recursion limit to 100,000 at import, so CPython's
C JSON decoder follows a deeply nested answer far past what the C stack holds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]

_CHILD = """
import http.server, sys, threading

class Deep(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b"[" * 1_000_000  # 1 MB: any node answer size limit lets it through
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Deep)
threading.Thread(target=server.serve_forever, daemon=True).start()

from web3 import Web3
from agentguard import NodeUnavailable
from agentguard.wallet._chain import _node_read

w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{server.server_port}"))
try:
    with _node_read("reading the pending nonce"):
        w3.eth.get_transaction_count("0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "pending")
except NodeUnavailable as exc:
    print("refused:", exc.message)
"""


def test_a_deeply_nested_node_answer_is_node_unavailable() -> None:
    """Run in a child, which the crash kills: exit -11 before ``agentguard/_recursion.py``
    brought py_ecc's limit back down (web3 is imported first here, as a user would)."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, cwd=_ROOT, timeout=120
    )
    assert done.returncode == 0 and "refused:" in done.stdout, (done.returncode, done.stderr[-300:])
