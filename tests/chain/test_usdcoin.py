"""UsdCoin: USDC's metadata and EIP-712 domain, ERC-20, EIP-3009 in the (v,r,s) and bytes forms."""

from __future__ import annotations

import secrets

from coincurve import PrivateKey

from agentguard._attestation import sign_attestation
from agentguard.chain import (
    DEV_ACCOUNTS,
    token_domain_separator,
    transact,
    transfer_authorization_digest,
)
from agentguard.chain.eip3009 import RECEIVE_WITH_AUTHORIZATION_TYPE
from tests.chain.helpers import (
    FACILITATOR,
    OUTSIDER,
    OWNER,
    PAYEE,
    Env,
    events,
    high_s,
    reverts,
)

PAYER = DEV_ACCOUNTS[5]
PAYER_KEY = PrivateKey(bytes.fromhex(PAYER.private_key[2:]))


def _authorization(env: Env, *, value: int = 2_500_000, **overrides: object) -> dict[str, object]:
    auth: dict[str, object] = {
        "from_": PAYER.address,
        "to": PAYEE,
        "value": value,
        "valid_after": 0,
        "valid_before": env.now() + 600,
        "nonce": secrets.token_bytes(32),
    }
    auth.update(overrides)
    return auth


def _sign(env: Env, auth: dict[str, object], key: PrivateKey = PAYER_KEY) -> bytes:
    digest = transfer_authorization_digest(token=env.token.address, chain_id=8453, **auth)  # type: ignore[arg-type]
    return sign_attestation(key, digest)  # 65 bytes r‖s‖v, the same ECDSA form


def _args(auth: dict[str, object]) -> list[object]:
    return [auth[k] for k in ("from_", "to", "value", "valid_after", "valid_before", "nonce")]


def _vrs(signature: bytes) -> list[object]:
    return [signature[64], signature[:32], signature[32:64]]


def _fund_payer(env: Env, amount: int = 10_000_000) -> None:
    transact(env.w3, env.token.functions.mint(PAYER.address, amount), sender=OWNER)


def test_metadata_and_domain_match_usdc_on_base(env: Env) -> None:
    t = env.token.functions
    assert (t.name().call(), t.symbol().call(), t.version().call(), t.decimals().call()) == (
        "USD Coin",
        "USDC",
        "2",
        6,
    )
    expected = token_domain_separator(
        token=env.token.address, chain_id=8453, name="USD Coin", version="2"
    )
    assert t.DOMAIN_SEPARATOR().call() == expected


def test_mint_is_owner_only(env: Env) -> None:
    with reverts("NotOwner", OUTSIDER):
        env.token.functions.mint(OUTSIDER, 1).transact({"from": OUTSIDER})
    supply = env.token.functions.totalSupply().call()
    transact(env.w3, env.token.functions.mint(OUTSIDER, 7), sender=OWNER)
    assert env.usdc(OUTSIDER) == 7
    assert env.token.functions.totalSupply().call() == supply + 7


def test_erc20_transfer_approve_transfer_from(env: Env) -> None:
    _fund_payer(env, 100)
    t = env.token.functions
    receipt = transact(env.w3, t.transfer(PAYEE, 40), sender=PAYER.address)
    (event,) = events(env.token, "Transfer", receipt)
    assert event == {"from": PAYER.address, "to": PAYEE, "value": 40}
    with reverts("InsufficientBalance", PAYER.address, 60, 61):
        t.transfer(PAYEE, 61).transact({"from": PAYER.address})
    transact(env.w3, t.approve(OUTSIDER, 50), sender=PAYER.address)
    with reverts("InsufficientAllowance", OUTSIDER, 50, 51):
        t.transferFrom(PAYER.address, OUTSIDER, 51).transact({"from": OUTSIDER})
    transact(env.w3, t.transferFrom(PAYER.address, OUTSIDER, 30), sender=OUTSIDER)
    assert t.allowance(PAYER.address, OUTSIDER).call() == 20
    assert (env.usdc(PAYER.address), env.usdc(PAYEE), env.usdc(OUTSIDER)) == (30, 40, 30)
    with reverts("ZeroAddress"):
        t.transfer("0x" + "00" * 20, 1).transact({"from": PAYER.address})


def test_transfer_with_authorization_vrs_settles_once(env: Env) -> None:
    _fund_payer(env)
    auth = _authorization(env)
    signature = _sign(env, auth)
    nonce = auth["nonce"]
    assert env.token.functions.authorizationState(PAYER.address, nonce).call() is False
    call = env.token.functions.transferWithAuthorization(*_args(auth), *_vrs(signature))
    receipt = transact(env.w3, call, sender=FACILITATOR)
    (used,) = events(env.token, "AuthorizationUsed", receipt)
    assert used == {"authorizer": PAYER.address, "nonce": nonce}
    (moved,) = events(env.token, "Transfer", receipt)
    assert moved == {"from": PAYER.address, "to": PAYEE, "value": 2_500_000}
    assert env.usdc(PAYEE) == 2_500_000
    assert env.token.functions.authorizationState(PAYER.address, nonce).call() is True
    with reverts("AuthorizationAlreadyUsed", PAYER.address, nonce):
        call.transact({"from": FACILITATOR})


def test_transfer_with_authorization_bytes_form_accepts_eoa_signatures(env: Env) -> None:
    _fund_payer(env)
    auth = _authorization(env)
    call = env.token.functions.transferWithAuthorization(*_args(auth), _sign(env, auth))
    transact(env.w3, call, sender=FACILITATOR)
    assert env.usdc(PAYEE) == 2_500_000


def test_authorization_refusals(env: Env) -> None:
    _fund_payer(env)
    now = env.now()
    late = _authorization(env, valid_after=now + 3600)
    with reverts("AuthorizationNotYetValid"):
        env.token.functions.transferWithAuthorization(*_args(late), _sign(env, late)).call()
    expired = _authorization(env, valid_before=now)
    with reverts("AuthorizationExpired"):
        env.token.functions.transferWithAuthorization(*_args(expired), _sign(env, expired)).call()

    auth = _authorization(env)
    good = _sign(env, auth)
    stranger = _sign(env, auth, PrivateKey(secrets.token_bytes(32)))
    for bad in (stranger, high_s(good), good[:64], good[:64] + b"\x01"):
        with reverts("InvalidSignature", PAYER.address):
            env.token.functions.transferWithAuthorization(*_args(auth), bad).call()
    tampered = {**auth, "value": auth["value"] + 1}  # type: ignore[operator]
    with reverts("InvalidSignature", PAYER.address):
        env.token.functions.transferWithAuthorization(*_args(tampered), *_vrs(good)).call()
    with reverts("InsufficientBalance"):
        big = _authorization(env, value=10**12)
        env.token.functions.transferWithAuthorization(*_args(big), _sign(env, big)).call()
    # The untampered authorization is valid: each refusal came from its one change.
    transact(
        env.w3,
        env.token.functions.transferWithAuthorization(*_args(auth), good),
        sender=FACILITATOR,
    )
    assert env.usdc(PAYEE) == 2_500_000


def test_receive_with_authorization_is_for_the_payee_and_its_own_type(env: Env) -> None:
    _fund_payer(env)
    auth = _authorization(env)
    receive_sig = _sign(env, {**auth, "primary_type": RECEIVE_WITH_AUTHORIZATION_TYPE})
    receive = env.token.functions.receiveWithAuthorization
    with reverts("CallerMustBePayee", FACILITATOR, PAYEE):
        receive(*_args(auth), receive_sig).transact({"from": FACILITATOR})
    # a transfer authorization does not work as a receive authorization
    with reverts("InvalidSignature", PAYER.address):
        receive(*_args(auth), _sign(env, auth)).transact({"from": PAYEE})
    receipt = transact(env.w3, receive(*_args(auth), receive_sig), sender=PAYEE)
    assert events(env.token, "AuthorizationUsed", receipt) == [
        {"authorizer": PAYER.address, "nonce": auth["nonce"]}
    ]
    assert env.usdc(PAYEE) == 2_500_000
    # one nonce space for both forms
    with reverts("AuthorizationAlreadyUsed", PAYER.address, auth["nonce"]):
        env.token.functions.transferWithAuthorization(*_args(auth), _sign(env, auth)).transact(
            {"from": FACILITATOR}
        )
