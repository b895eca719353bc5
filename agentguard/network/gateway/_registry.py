"""The policy clients this gateway serves: owner-signed registrations, checked and held.

Each client keeps its last ``MAX_VERSIONS`` registrations; a task is evaluated under the newest,
or for a vault, given ``gateway.chain_rpc``, under the one whose policy id the vault pins onchain
(``Clients.current``, ``agentguard.network.pins``). Everything a task needs from its client
that does not depend on the task (the policy id, the windows its params name, the policy
material, the params as hex) is computed once, here, when the client is registered or loaded.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_utils.address import to_checksum_address

from agentguard._exceptions import ConfigurationError
from agentguard._logging import get_logger
from agentguard.network._rpc import probe_unavailable
from agentguard.network.config import ApiKeyEntry, GatewaySettings
from agentguard.network.gateway._auth import require_use
from agentguard.network.gateway._operators import members
from agentguard.network.gateway._params import invalid
from agentguard.network.pins import VaultPins, pinned_index
from agentguard.network.registration import MAX_VERSIONS, Registration
from agentguard.network.state import (
    DEFAULT_WINDOWS,
    PolicyClientRecord,
    State,
    policy_from_spec,
    policy_material,
)
from agentguard.policies import Policy, bundled, load
from agentguard.policies._probe import PolicyRefused, ProbeUnavailable, probe

if TYPE_CHECKING:
    from agentguard.network.usage import ChainUsageCheck

__all__ = ["Clients", "PolicyClient", "validated_params"]

log = get_logger("agentguard.network.gateway")

CLIENT_REFRESH = 2.0  # seconds a replica uses its copy of a client held in a shared state
# The longest window a registration may name: ten years (the bundled schemas allow one). The
# history of every window is kept that long by the gateway's books and by the challenger's
# watch, whose horizon is the longest window of any client, so an owner cannot make either keep
# everything forever (2^62 s was accepted before).
MAX_WINDOW = 10 * 365 * 86400


def history_windows(registration: Registration) -> tuple[int, ...]:
    """The windows ``data.wasm.history`` has for a client: those its params name, plus 3600
    and 86400 unless its policy is a bundled one. Each window sent costs every operator about
    18 input nodes per evaluation, and no bundled policy reads a window its params do not
    name; a custom policy may read the two windows earlier gateways always sent (and, written
    to allow on a missing value, would fail open without them), so it keeps them."""
    named = _windows(registration.params)
    if registration.policy_code_hash in _bundled_code_hashes():
        return named
    return tuple(sorted({*named, *DEFAULT_WINDOWS}))


@functools.cache
def _bundled_code_hashes() -> frozenset[bytes]:
    return frozenset(load(name).code_hash for name in bundled())


def _windows(params: Any) -> tuple[int, ...]:
    """Every ``window_seconds`` value anywhere in the params. An integral float counts as its
    integer: the schemas' ``"integer"`` accepts ``120.0`` and ``format_int`` reads it as
    ``"120"`` (left out, every action of such a client would be denied)."""
    return tuple(sorted({s for v in _window_values(params) if (s := _seconds(v))}))


def _window_values(params: Any) -> Iterator[Any]:
    """The value of every ``window_seconds`` key anywhere in the params, as given."""
    stack = [params]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "window_seconds":
                    yield value
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def _seconds(value: Any) -> int:
    """A window's length from a ``window_seconds`` value: a positive int or integral float
    (not a bool, not a string) up to ``MAX_WINDOW``; 0 for anything else (a policy that
    reads it finds no history and denies)."""
    if type(value) is float and value.is_integer():
        value = int(value)
    return value if type(value) is int and 0 < value <= MAX_WINDOW else 0


def _long_window(params: Any) -> bool:
    """Whether the params name a window longer than ``MAX_WINDOW``: refused at registration,
    and a registration stored before the bound is refused tasks (it gets no history for that
    window, and a policy written to allow on a missing value would fail open)."""
    for value in _window_values(params):
        if type(value) is float and value.is_integer():
            value = int(value)
        if type(value) is int and value > MAX_WINDOW:
            return True
    return False


_LONG_WINDOW = (
    f"a window_seconds is longer than {MAX_WINDOW} s (10 years), the longest a window may be"
)


@dataclass(frozen=True)
class PolicyClient:
    """A registered policy client: shared policy logic + its owner-signed configuration."""

    address: str
    policy: Policy
    registration: Registration
    registration_json: dict[str, Any]
    params: Any
    expire_after: int
    chain_id: int
    policy_id: bytes
    windows: tuple[int, ...]
    material: dict[str, Any]
    params_hex: str
    # the client's part of every operator request (``Bodies``), as JSON object members:
    request_lean: bytes  # what every request carries
    request_registration: bytes  # the owner-signed registration, until the operator holds it
    request_reference: bytes  # then its ``registration_hash`` instead
    registration_hash: bytes  # ``registration.wire_hash``
    request_policy: bytes  # the policy code, until the operator holds it
    long_window: bool = False  # its params name a window longer than MAX_WINDOW: no tasks

    @property
    def code_hash(self) -> bytes:
        return self.policy.code_hash

    @classmethod
    def from_record(cls, record: PolicyClientRecord) -> PolicyClient:
        registration = record.registration
        address = to_checksum_address(registration.policy_client_hex)
        material = policy_material(record.policy)
        registration_json = registration.to_json()
        wire_hash = registration.wire_hash
        fixed: dict[str, Any] = {
            "policy_client": address,
            "policy_code_hash": "0x" + record.policy.code_hash.hex(),
            "params": registration.params,
            "expire_after": registration.expire_after,
        }
        return cls(
            address=address,
            policy=record.policy,
            registration=registration,
            registration_json=registration_json,
            params=registration.params,
            expire_after=registration.expire_after,
            chain_id=registration.chain_id,
            policy_id=registration.policy_id,
            windows=history_windows(registration),
            long_window=_long_window(registration.params),
            material=material,
            params_hex="0x" + registration.params_json.hex(),
            request_lean=members(fixed),
            request_registration=members({"registration": registration_json}),
            request_reference=members({"registration_hash": "0x" + wire_hash.hex()}),
            registration_hash=wire_hash,
            request_policy=members({"policy": material}),
        )


def validated_params(policy: Policy, params: Any) -> None:
    if not isinstance(params, dict):
        raise invalid("params must be a JSON object")
    if not policy.params_schema:
        return
    import jsonschema

    schema = dict(policy.params_schema)
    validator_cls = jsonschema.validators.validator_for(schema)
    try:
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise invalid(f"the policy's params schema is invalid: {exc.message}") from None
    errors = sorted(validator_cls(schema).iter_errors(params), key=lambda e: list(e.path))
    if errors:
        shown = []
        for error in errors[:5]:
            where = "params" + "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path
            )
            shown.append(f"{where}: {error.message}")
        raise invalid("params do not match the policy's schema: " + "; ".join(shown))


class Clients:
    """The registered clients by lower-case address, loaded from ``state`` and kept current
    by ``register``. A client registered (or re-registered) through another gateway replica
    sharing the state is read from there (``State.policy_client``): the first time a request
    names it, and again every ``CLIENT_REFRESH`` seconds on a shared state, so a cap lowered
    through one replica holds on every replica."""

    def __init__(
        self, settings: GatewaySettings, state: State, chain: ChainUsageCheck | None
    ) -> None:
        self._settings = settings
        self._state = state
        self._chain = chain
        self._pins = VaultPins(chain) if chain is not None else None
        self._by_address: dict[str, PolicyClient] = {}  # the newest registration
        self._versions: dict[str, list[PolicyClient]] = {}  # the last few, oldest first
        self._fresh: dict[str, float] = {}  # when a shared state's client is next re-read
        for record in state.policy_clients():
            self._hold(PolicyClient.from_record(record))

    def __iter__(self) -> Iterator[PolicyClient]:
        return iter(list(self._by_address.values()))

    def get(self, address: str) -> PolicyClient | None:
        """The client's newest registration."""
        key = address.lower()
        client = self._by_address.get(key)
        if client is None or (self._state.shared and self._fresh.get(key, 0.0) < time.monotonic()):
            record = self._state.policy_client(key)
            if record is None:
                return client
            # any other registration, not only another version number: an owner taking a
            # vault over from a stranger may sign the stranger's version number
            if client is None or record.registration != client.registration:
                client = self._hold(PolicyClient.from_record(record))
            self._fresh[key] = time.monotonic() + CLIENT_REFRESH
        return client

    def registered(self, address: str) -> PolicyClient:
        client = self.get(address)
        if client is None:
            raise invalid(f"policy client {address} is not registered with this gateway")
        return client

    def usable(self, key: ApiKeyEntry, address: str) -> PolicyClient:
        """The registration a task of ``key`` for ``address`` is evaluated under (``current``)."""
        client = self.get(address)
        if client is None:
            raise invalid(
                f"policy client {address} is not registered with this gateway "
                "(register it with agentguard_registerPolicyClient)"
            )
        require_use(key, address)
        current = self.current(client)
        if current.long_window:
            raise invalid(
                f"policy client {address}: its registration's params name {_LONG_WINDOW}; its "
                "owner registers them again with a shorter one. Nothing was reserved or signed"
            )
        return current

    def current(self, newest: PolicyClient) -> PolicyClient:
        """The registration to evaluate under: ``newest``, except for a vault whose pinned
        ``policyId()`` the chain tells, which is evaluated under the registration with that id
        and refused (nothing reserved, nothing signed) if this gateway holds none."""
        if self._pins is None:
            return newest
        pin = self._pins.pinned(newest.registration)
        if pin is None:
            return newest
        held = self._versions.get(newest.registration.policy_client_hex) or [newest]
        index = pinned_index([c.registration for c in held], pin)
        if index is not None:
            return held[index]
        stored = self._stored_version(newest, pin)
        if stored is not None:
            return stored
        raise invalid(
            f"vault {newest.address} pins policy id 0x{pin.hex()}, and none of its "
            f"registrations held here has it (newest: version {newest.registration.version}, "
            f"policy id 0x{newest.policy_id.hex()}); its owner registers the configuration the "
            "vault pins (a new version) or switches the vault to a registered one. Nothing was "
            "reserved or signed"
        )

    def _stored_version(self, newest: PolicyClient, pin: bytes) -> PolicyClient | None:
        """An older registration of the same owner with policy id ``pin``, from the state's
        versions (``State.policy_version``): this replica may have started after it, or
        dropped it from its last ``MAX_VERSIONS``."""
        record = self._state.policy_version("0x" + pin.hex())
        if record is None:
            return None
        registration = record.registration
        if (
            registration.policy_client != newest.registration.policy_client
            or registration.owner != newest.registration.owner
            or registration.version > newest.registration.version
            or registration.policy_id != pin
        ):
            return None
        return self._hold(PolicyClient.from_record(record))

    def _hold(self, client: PolicyClient) -> PolicyClient:
        """Keep ``client`` among its address's versions (already judged by ``register`` or by
        the state); a registration by another owner (a takeover) drops those before it."""
        key = client.registration.policy_client_hex
        held = [
            c
            for c in self._versions.get(key, [])
            if c.registration.owner == client.registration.owner
            and c.registration.version != client.registration.version
        ]
        held.append(client)
        held.sort(key=lambda c: c.registration.version)
        self._versions[key] = held = held[-MAX_VERSIONS:]
        self._by_address[key] = held[-1]
        return client

    def by_policy_id(self, policy_id: bytes) -> PolicyClient | None:
        return next(
            (c for held in self._versions.values() for c in held if c.policy_id == policy_id),
            None,
        )

    def register(self, params: Mapping[str, Any], *, allow_paths: bool = False) -> PolicyClient:
        """Accept an owner-signed registration (the operators check it again themselves)."""
        if "registration" not in params:
            raise invalid(
                "registration is missing: a policy client's policy, params and expiry must be "
                "signed by its owner (ReferenceNetwork.register_policy_client or "
                "'agentguard network register' produce one)"
            )
        try:
            registration = Registration.from_json(params.get("registration"))
            policy = policy_from_spec(params.get("policy"), allow_paths=allow_paths)
        except ConfigurationError as exc:
            raise invalid(exc.message) from None
        if policy.code_hash != registration.policy_code_hash:
            raise invalid(
                f"the policy hashes to 0x{policy.code_hash.hex()}, not to the registered "
                f"policy_code_hash 0x{registration.policy_code_hash.hex()}"
            )
        validated_params(policy, registration.params)
        if _long_window(registration.params):
            raise invalid(f"params: {_LONG_WINDOW}")
        if registration.chain_id not in self._settings.chain_ids:
            raise invalid(f"chain_id {registration.chain_id} is not served by this gateway")
        try:  # one that crashes or hangs rego-cpp would take down every operator (and simulate)
            probe(policy, registration.params)
        except PolicyRefused as exc:
            raise invalid(str(exc)) from None
        except ProbeUnavailable as exc:  # nothing judged: retryable, unlike a refusal
            raise probe_unavailable("gateway", exc) from None
        # Judged against the state's registration, never a replica's copy of it (up to
        # ``CLIENT_REFRESH`` old): against a stale copy, a replay of the older registration
        # looked like "the same one" and was saved over the newer one for every replica.
        if self._state.shared:
            self._fresh.pop(registration.policy_client_hex, None)
        held = self.get(registration.policy_client_hex)
        try:
            chain_owner = self._check_owner(registration)
            replaces = registration.replaces(
                held.registration if held else None, chain_owner=chain_owner
            )
        except ConfigurationError as exc:
            raise invalid(exc.message) from None
        if held is not None and not replaces:
            return held  # the registration held already: nothing to save
        record = PolicyClientRecord(registration, policy)
        self._state.save_policy_client(record)
        return self._hold(PolicyClient.from_record(record))

    def _check_owner(self, registration: Registration) -> str | None:
        """A contract client (a vault) must be registered by its ``owner()``; returns the
        owner the chain confirmed (``None``: cannot tell)."""
        if self._chain is not None:
            return self._chain.check_owner(registration)
        if not registration.self_owned:
            log.warning(
                "no chain RPC: cannot check the owner of a contract policy client; its "
                "released attestations stay counted (set gateway.chain_rpc)",
                policy_client=registration.policy_client_hex,
            )
        return None
