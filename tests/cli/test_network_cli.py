"""``agentguard network up|status|down`` and ``policy ...`` against a real network started by the
CLI in another process, and Python code attached to it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Running, cli, free_port, start_network, stop_network

pytestmark = pytest.mark.integration

USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
SHOP = "0x3333333333333333333333333333333333333333"
AGENT = "0x1111111111111111111111111111111111111111"


def _client(n: int) -> str:
    return "0x" + f"{n:040x}"


def _simulate(
    running: Running, client: str, to: str, amount: str
) -> subprocess.CompletedProcess[str]:
    """`agentguard policy simulate` of a transfer from AGENT."""
    state = ["--state-dir", str(running.state_dir)]
    return cli(
        "policy", "simulate", "--policy-client", client,
        "--from", AGENT, "--to", to, "--amount", amount, *state,
    )  # fmt: skip


def test_up_reports_where_the_network_is(running: Running) -> None:
    text = "".join(running.output)
    assert f"gateway:   {running.url}/rpc" in text
    assert "operator-0 ready" in text and "gateway ready" in text  # the progress steps
    assert f"ReferenceNetwork.attach({str(running.state_dir)!r})" in text
    done = cli("network", "status", "--state-dir", str(running.state_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"running:   {running.url}/rpc" in done.stdout
    assert done.stdout.count(" up\n") == 2


def test_a_second_network_on_a_taken_port_fails_and_writes_nothing(
    running: Running, tmp_path: Path
) -> None:
    """Before: the second `network up` printed success, its health check answered by the
    first network's gateway."""
    other = tmp_path / "other"
    done = cli("network", "up", "--state-dir", str(other), "--port", str(running.port))
    assert done.returncode == 2
    assert f"port {running.port} on 127.0.0.1 is already in use" in done.stderr
    assert "gateway:" not in done.stdout and "Traceback" not in done.stderr
    assert not other.exists()
    assert cli("network", "status", "--state-dir", str(running.state_dir)).returncode == 0


def test_a_second_network_from_the_same_folder_is_refused(running: Running) -> None:
    done = cli("network", "up", "--state-dir", str(running.state_dir), "--port", str(free_port()))
    assert done.returncode == 2
    assert "a network is already running from" in done.stderr


def test_a_port_held_by_any_other_program_is_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = cli("network", "up", "--state-dir", str(tmp_path / "net"), "--port", str(port))
    assert done.returncode == 2 and "already in use" in done.stderr
    assert not (tmp_path / "net").exists()


def test_register_list_show_and_simulate(running: Running) -> None:
    client = _client(0xC11)
    state = ["--state-dir", str(running.state_dir)]
    registered = cli(
        "policy",
        "register",
        "--policy-client",
        client,
        "--policy",
        "agent_spend",
        "--budget",
        "5 USDC per call",
        "--budget",
        "20 USDC per day",
        "--params",
        json.dumps({"allowed_recipients": [SHOP]}),
        *state,
    )
    assert registered.returncode == 0, registered.stderr
    policy_id = registered.stdout.split("policy_id: ")[1].split()[0]

    listed = cli("policy", "list", *state)
    assert f"{client.lower()}  agent_spend" in listed.stdout and policy_id in listed.stdout

    shown = json.loads(cli("policy", "show", client, "--json", *state).stdout)
    assert shown["policy_id"] == policy_id and shown["policy"] == "agent_spend"
    assert shown["params"]["max_per_tx"] == {USDC.lower(): "5000000"}
    assert shown["params"]["allowed_recipients"] == [SHOP]

    def simulate(to: str, amount: str) -> subprocess.CompletedProcess[str]:
        return _simulate(running, client, to, amount)

    allowed = simulate(SHOP, "1 USDC")
    assert (allowed.returncode, allowed.stdout.strip()) == (0, "allow")
    too_much = simulate(SHOP, "6 USDC")
    assert too_much.returncode == 1
    assert too_much.stdout.startswith("deny: ") and "max_per_tx" in too_much.stdout
    elsewhere = simulate("0x4444444444444444444444444444444444444444", "1 USDC")
    assert elsewhere.returncode == 1 and "allowed_recipients" in elsewhere.stdout


def test_simulate_an_unknown_client_or_a_bad_intent_is_an_error(running: Running) -> None:
    state = ["--state-dir", str(running.state_dir)]
    unknown = cli(
        "policy", "simulate", "--policy-client", _client(0xDEAD), "--intent", "{}", *state
    )
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    bad = cli("policy", "show", _client(0xDEAD), *state)
    assert bad.returncode == 2 and "no policy client" in bad.stderr


def test_python_code_attaches_to_the_cli_network(running: Running) -> None:
    """Python code gets the URL, operators and keys from the state folder (no secrets.json read
    by hand), is attested by the network, and leaves it running."""
    code = f"""
from agentguard import Guard, TransactionIntent
from agentguard.network import ReferenceNetwork

with ReferenceNetwork.attach({str(running.state_dir)!r}) as net:
    policy_id = net.register_policy_client({_client(0xA77)!r}, "agent_spend",
                                           {{"max_per_tx": {{"{USDC.lower()}": "5000000"}}}})
    guard = Guard.connect(net.url, policy_client={_client(0xA77)!r}, policy_id=policy_id,
                          operators=net.operator_addresses, api_key=net.api_key)
    intent = TransactionIntent.erc20_transfer(
        sender={AGENT!r}, token={USDC!r}, recipient={SHOP!r}, amount=1_000_000, chain_id=8453)
    print(len(guard.authorize(intent).signers))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"  # both operators signed it
    assert cli("network", "status", "--state-dir", str(running.state_dir)).returncode == 0


def test_attach_without_a_running_network_says_what_to_do(tmp_path: Path) -> None:
    from agentguard import ConfigurationError
    from agentguard.network import ReferenceNetwork

    with pytest.raises(ConfigurationError, match="agentguard network up --state-dir"):
        ReferenceNetwork.attach(tmp_path)
    done = cli("network", "status", "--state-dir", str(tmp_path))
    assert done.returncode == 1 and done.stdout.startswith("not running:")


def test_down_stops_a_network_started_by_up(tmp_path: Path) -> None:
    net = start_network(tmp_path / "net", free_port(), operators=1)
    try:
        state = ["--state-dir", str(net.state_dir)]
        done = cli("network", "down", *state)
        assert done.returncode == 0, done.stdout + done.stderr
        assert net.process.wait(30) == 0
        assert not (net.state_dir / "run.json").exists()
        assert cli("network", "status", *state).returncode == 1
        assert cli("network", "down", *state).returncode == 1
    finally:
        stop_network(net)


def test_a_policys_reason_cannot_rewrite_the_terminal(running: Running, tmp_path: Path) -> None:
    """A custom policy (or a gateway) whose refusal reason carries terminal escapes and a bidi
    override: `policy simulate` shows them as visible escapes, so a reason cannot erase the
    screen or disguise "deny" as something else."""
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "policy_metadata.json").write_text(
        json.dumps({"name": "hostile", "entrypoint": "hostile.allow", "description": "x"})
    )
    (folder / "policy.rego").write_text(
        "package hostile\n\nimport rego.v1\n\ndefault allow := false\n\n"
        "reasons contains `\x1b[2J\x1b[1;1Hallow \u202eyned` if true\n"  # raw string: raw bytes
    )
    client = _client(0xE5C)
    state = ["--state-dir", str(running.state_dir)]
    registered = cli(
        "policy", "register", "--policy-client", client, "--policy", str(folder), *state
    )
    assert registered.returncode == 0, registered.stderr
    done = _simulate(running, client, SHOP, "1 USDC")
    assert done.returncode == 1, done.stderr
    assert "\x1b" not in done.stdout and "\u202e" not in done.stdout
    assert done.stdout.startswith("deny: \\x1b[2J\\x1b[1;1Hallow \\u202eyned")


def test_attach_refuses_a_folder_others_may_write(tmp_path: Path) -> None:
    """A shared folder where another user planted network.json (a gateway URL of theirs) and
    run.json (a process id for `network down` to signal): refused before either is read."""
    from agentguard import ConfigurationError
    from agentguard.network import ReferenceNetwork

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "network.json").write_text("{}")
    (shared / "secrets.json").write_text("{}")
    shared.chmod(0o777)
    with pytest.raises(ConfigurationError, match="writable by other users"):
        ReferenceNetwork.attach(shared)
    done = cli("network", "down", "--state-dir", str(shared))
    assert done.returncode == 1 and "writable by other users" in done.stdout


def test_down_signals_only_the_process_that_runs_the_gateway(running: Running) -> None:
    """run.json rewritten to name another process of the user: `network down` would have sent
    it SIGTERM; the gateway's parent is not that process, so nothing is signalled."""
    run = running.state_dir / "run.json"
    original = run.read_text()
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.write_text(json.dumps({**json.loads(original), "owner_pid": victim.pid}))
        done = cli("network", "down", "--state-dir", str(running.state_dir))
        assert done.returncode == 1 and "not the process that runs" in done.stderr
        assert victim.poll() is None
    finally:
        run.write_text(original)
        victim.kill()
        victim.wait()
    assert cli("network", "status", "--state-dir", str(running.state_dir)).returncode == 0


def _processes_using(folder: Path) -> list[int]:
    """Pids whose command line names ``folder`` (the operators and gateway of that network)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(folder) in cmdline and "agentguard.network." in cmdline:
                found.append(int(proc.name))
    return found


def test_sigterm_while_starting_leaves_no_process_behind(tmp_path: Path) -> None:
    """Before: SIGTERM before the network was up killed `network up` at once, orphaning the
    operators it had started."""
    import signal

    folder = tmp_path / "net"
    process = subprocess.Popen(
        [sys.executable, "-m", "agentguard.cli", "network", "up", "--state-dir", str(folder),
         "--port", str(free_port()), "--operators", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert process.stdout is not None
    while "keys ready" not in (line := process.stdout.readline()):
        assert line, "network up ended before its keys were ready"
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 130
    assert "stopped while starting" in process.stdout.read()
    assert _processes_using(folder) == []
