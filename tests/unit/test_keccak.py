"""``_eip712.keccak`` calls pycryptodome directly: it must equal eth-hash's Keccak-256."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from eth_hash.auto import keccak as eth_keccak
from hypothesis import given
from hypothesis import strategies as st

import agentguard._eip712 as eip712
from agentguard._eip712 import _keccak_cffi, _keccak_object, keccak


def test_known_vectors() -> None:
    assert keccak(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert keccak(b"transfer(address,uint256)")[:4].hex() == "a9059cbb"


def test_equals_eth_hash_across_block_boundaries() -> None:
    rng = random.Random(7)
    for size in [*range(0, 300), 1023, 1024, 1025, 65536]:
        data = rng.randbytes(size)
        assert keccak(data) == eth_keccak(data)


@given(st.binary(max_size=2048))
def test_equals_eth_hash(data: bytes) -> None:
    assert keccak(data) == eth_keccak(data)


def test_accepts_bytes_like() -> None:
    assert keccak(bytearray(b"abc")) == keccak(memoryview(b"abc")) == eth_keccak(b"abc")


def test_the_cffi_calls_equal_the_hash_object() -> None:
    """``_keccak_cffi`` (pycryptodome's C functions called directly) against its hash object:
    the same digest for bytes-like input, the same error type for anything else."""
    assert keccak is _keccak_cffi  # this virtualenv's pycryptodome uses cffi
    rng = random.Random(11)
    for size in [*range(0, 280), 4096, 100_000]:
        data = rng.randbytes(size)
        assert _keccak_cffi(data) == _keccak_object(data)
        assert _keccak_cffi(bytearray(data)) == _keccak_object(bytearray(data))
        assert _keccak_cffi(memoryview(data)) == _keccak_object(memoryview(data))
    strided = memoryview(b"abcdef")[::2]
    hostile: list[object] = [5, "abc", None, 2.5, [1, 2], strided, object()]
    for value in hostile:
        outcomes = []
        for hash_ in (_keccak_cffi, _keccak_object):
            try:
                outcomes.append(hash_(value))  # type: ignore[arg-type]
            except Exception as exc:
                outcomes.append(type(exc))
        assert outcomes[0] == outcomes[1], value


class _Changed:
    """pycryptodome's private keccak functions as a release might change them."""

    def __init__(self, how: str) -> None:
        self._lib, self._how = eip712._lib, how

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._lib, name)
        if self._how == "signature" and name == "keccak_init":
            return lambda holder, capacity: real(holder, capacity, 24)  # rounds dropped
        if self._how == "padding" and name == "keccak_digest":
            return lambda state, out, size, padding: real(state, out, size, 0x06)  # SHA-3's
        if self._how == "silent" and name == "keccak_absorb":
            return lambda state, data, size: 0  # absorbs nothing, reports success
        return real


@pytest.mark.parametrize("how", ["signature", "padding", "silent", "gone"])
def test_a_changed_private_api_falls_back_to_the_hash_object(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr(eip712, "_lib", None if how == "gone" else _Changed(how))
    chosen = eip712._fastest()
    assert chosen is _keccak_object
    for data in (b"", b"abc", bytes(range(256)) * 3):
        assert chosen(data) == eth_keccak(data)


def test_the_intact_private_api_is_kept() -> None:
    assert eip712._fastest() is _keccak_cffi
    with pytest.MonkeyPatch.context() as m:
        m.setattr(eip712, "_ffi", None)
        assert eip712._fastest() is _keccak_object


def test_an_import_with_changed_private_functions_hashes_right() -> None:
    """The whole import in a fresh interpreter, pycryptodome's ``keccak_digest`` changed (as
    agentguard calls it; its hash object is unchanged) before agentguard loads: the fallback is
    what every module binds, and the type hashes are right."""
    code = (
        "import sys\n"
        "import Crypto.Hash.keccak as k\n"
        "real = k._raw_keccak_lib\n"
        "class Lib:\n"
        "    def __getattr__(self, name):\n"
        "        fn = getattr(real, name)\n"
        "        def changed(s, o, n, p):\n"
        "            ours = sys._getframe(1).f_globals['__name__'] == 'agentguard._eip712'\n"
        "            return fn(s, o, n, 0x06 if ours else p)\n"
        "        return changed if name == 'keccak_digest' else fn\n"
        "k._raw_keccak_lib = Lib()\n"
        "from eth_hash.auto import keccak as eth\n"
        "import agentguard._eip712 as e, agentguard._intent as i\n"
        "assert e.keccak is e._keccak_object and i.keccak is e._keccak_object\n"
        "assert e.INTENT_TYPEHASH == eth(e.INTENT_TYPE.encode()) == k.new(data=e.INTENT_TYPE.encode(), digest_bits=256).digest()\n"
        "assert e._keccak_cffi(b'abc') != eth(b'abc')  # the change is real\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_threads_hash_on_their_own_state() -> None:
    """Each thread keeps its own Keccak state: many threads hashing at once, each message of
    another length, every digest equal to eth-hash's."""
    import threading

    rng = random.Random(5)
    messages = [rng.randbytes(rng.randrange(0, 600)) for _ in range(64)]
    wrong: list[bytes] = []
    start = threading.Barrier(8)

    def work(offset: int) -> None:
        start.wait()
        for i in range(400):
            data = messages[(i * 7 + offset) % len(messages)]
            if _keccak_cffi(data) != eth_keccak(data):
                wrong.append(data)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


def test_a_hash_inside_a_hash_leaves_the_outer_one_right(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hash that starts while another is between its C calls on the same thread (as a signal
    handler's could) gets its own state: both digests stay right."""
    inner: list[bytes] = []
    interrupted: list[bool] = []

    def interrupting(fn: Callable[..., int]) -> Callable[..., int]:
        def absorb(state: Any, data: Any, size: int) -> int:
            if not interrupted:
                interrupted.append(True)
                inner.append(_keccak_cffi(b"inner message"))
            return int(fn(state, data, size))

        return absorb

    _absorb_replaced(monkeypatch, interrupting)
    assert _keccak_cffi(b"outer message") == eth_keccak(b"outer message")
    assert inner == [eth_keccak(b"inner message")]
    assert _keccak_cffi(b"after") == eth_keccak(b"after")


def test_hashes_in_signal_handlers_stay_right() -> None:
    """A real interval timer fires a handler that hashes between any two bytecodes of the
    main thread's hashes (with a state taken out or not): every digest of both stays right."""
    import signal

    if not hasattr(signal, "setitimer"):
        pytest.skip("no interval timer")
    rng = random.Random(13)
    wrong: list[bytes] = []
    fired: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        data = bytes([len(fired) % 256]) * (len(fired) % 300)
        fired.append(1)
        if _keccak_cffi(data) != eth_keccak(data):
            wrong.append(data)

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
        for _ in range(20_000):
            data = rng.randbytes(rng.randrange(0, 400))
            if _keccak_cffi(data) != eth_keccak(data):
                wrong.append(data)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert fired and not wrong


def test_a_failed_call_mid_hash_leaves_later_hashes_right(monkeypatch: pytest.MonkeyPatch) -> None:
    """An absorb that took half a message and then failed raises, and the half-filled state is
    never reused: the next hashes on this thread are right."""
    calls: list[int] = []

    def half_then_fail(fn: Callable[..., int]) -> Callable[..., int]:
        def absorb(state: Any, data: Any, size: int) -> int:
            calls.append(1)
            if len(calls) % 2:
                fn(state, data, size // 2)
                return 5  # a failure code after half the message went in
            return int(fn(state, data, size))

        return absorb

    _absorb_replaced(monkeypatch, half_then_fail)
    rng = random.Random(19)
    for _ in range(50):
        data = rng.randbytes(rng.randrange(1, 500))
        with pytest.raises(ValueError):
            _keccak_cffi(data)
        assert _keccak_cffi(data) == eth_keccak(data)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork")
def test_a_fork_with_a_state_taken_out_hashes_right_on_both_sides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``os.fork`` between a hash's C calls (the state taken out): the child's hashes and the
    parent's unfinished one are all right."""
    import os

    real = eip712._lib
    children: list[int] = []

    def fork_while_absorbing(fn: Callable[..., int]) -> Callable[..., int]:
        def absorb(state: Any, data: Any, size: int) -> int:
            result = int(fn(state, data, size))
            pid = os.fork()
            if pid == 0:  # the child: its own hashes from here
                eip712._lib = real
                ok = all(_keccak_cffi(m) == eth_keccak(m) for m in (b"", b"c" * 137))
                os._exit(0 if ok else 3)
            children.append(os.waitpid(pid, 0)[1])
            return result

        return absorb

    _absorb_replaced(monkeypatch, fork_while_absorbing)
    assert _keccak_cffi(b"p" * 200) == eth_keccak(b"p" * 200)
    assert children == [0]


def _absorb_replaced(
    monkeypatch: pytest.MonkeyPatch, wrap: Callable[[Callable[..., int]], Callable[..., int]]
) -> None:
    """pycryptodome's functions with ``keccak_absorb`` replaced by ``wrap(real absorb)``."""
    real = eip712._lib

    class Replaced:
        def __getattr__(self, name: str) -> Any:
            fn = getattr(real, name)
            return wrap(fn) if name == "keccak_absorb" else fn

    monkeypatch.setattr(eip712, "_lib", Replaced())
