"""``outcome``'s redirect check, which reads a request's headers only for a response that was a
redirect or came from another URL (and renders a request's URL only when it is not the very
object the payment was sent with), against the check it had before, which read every
response's request headers first: the same verdict for seeded random and hostile chains."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from agentguard.x402._answer import _redirected

HEADER, VALUE = "PAYMENT-SIGNATURE", "eyJwYWlkIjp0cnVlfQ=="
URLS = ["http://shop.test/paid", "http://shop.test/paid?x=1", "http://evil.test/paid",
        "http://shop.test/other", "HTTP://SHOP.TEST/paid"]  # fmt: skip


def _before(response: httpx.Response, paid: Any) -> bool:
    """The check as it was: every response whose request carried the payment."""
    carried = [
        r for r in (*response.history, response)
        if r.request.headers.get(paid.payment.header) == paid.payment.value
    ]  # fmt: skip
    return any(r.has_redirect_location or str(r.request.url) != paid.url for r in carried)


def _response(rng: random.Random) -> httpx.Response:
    headers: dict[str, str] = {}
    carried = rng.random()
    if carried < 0.6:
        headers[HEADER] = VALUE
    elif carried < 0.8:
        headers[HEADER.lower()] = rng.choice([VALUE + "x", "", VALUE.lower()])
    request = httpx.Request("GET", rng.choice(URLS), headers=headers)
    status = rng.choice([200, 200, 402, 500, 301, 302, 303, 307, 308, 304])
    answer: dict[str, str] = {}
    if rng.random() < 0.5:
        answer["location"] = rng.choice(URLS)
    return httpx.Response(status, headers=answer, request=request)


def _case(seed: int) -> tuple[httpx.Response, Any]:
    rng = random.Random(seed)
    chain = [_response(rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    chain[-1].history = chain[:-1]
    url = rng.choice(URLS[:2])
    # the URL object the payment was sent with (``Paid.sent_url``): one of the chain's own,
    # an equal fresh one, or none; a request still carrying it is not rendered again
    sent = [r.request.url for r in chain if str(r.request.url) == url]
    paid = SimpleNamespace(
        url=url,
        sent_url=rng.choice([None, httpx.URL(url), *sent]),
        payment=SimpleNamespace(header=HEADER, value=VALUE),
    )
    return chain[-1], paid


@pytest.mark.parametrize("seed", range(300))
def test_the_fast_path_gives_the_old_verdict(seed: int) -> None:
    final, paid = _case(seed)
    assert _redirected(final, paid) is _before(final, paid)


def test_the_cases_cover_every_verdict_with_and_without_history() -> None:
    seen = {(_before(final, paid), not final.history) for final, paid in map(_case, range(300))}
    assert seen == {(True, True), (True, False), (False, True), (False, False)}
