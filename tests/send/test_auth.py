"""send/auth.py: credentials to headers, token claims, the token's refresh, and the org guard.

The simulator is the token endpoint here: its JWT-shaped tokens are read by the real
Authenticator, never by a copy of its logic."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from batcher.errors import CredentialsError
from batcher.job import AuthKind
from batcher.send.auth import (
    Authenticator,
    Credentials,
    OrgGuard,
    TokenClaims,
    WrongOrg,
    credentials_from_env,
    decode_claims,
)
from tests.simulator_support import FakeClock, profile, running


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return part({"alg": "HS256"}) + "." + part(claims) + ".c2lnbmF0dXJl"


async def test_basic_credentials_are_sent_as_user_and_md5_of_the_password() -> None:
    """Capillary's Basic scheme, read back from the header the way the API reads it."""
    env = {"CAPILLARY_USERNAME": "t.till", "CAPILLARY_PASSWORD": "pw"}
    creds = credentials_from_env("basic", env)
    assert creds == credentials_from_env(
        "basic", {"CAPILLARY_USERNAME": "t.till", "CAPILLARY_PASSWORD_MD5": md5("pw")}
    )
    auth = Authenticator(creds, "http://127.0.0.1:9", refresh_margin_s=0)
    async with aiohttp.ClientSession() as session:
        assert await auth.prepare(session) is None  # Basic: no token, nothing fetched
        headers, token = await auth.headers(session)
    scheme, encoded = headers["Authorization"].split(" ")
    assert (scheme, token) == ("Basic", None)
    assert base64.b64decode(encoded).decode() == f"t.till:{md5('pw')}"
    assert "pw" not in repr(creds) and md5("pw") not in repr(creds)


@pytest.mark.parametrize(
    ("kind", "env", "named"),
    [
        ("basic", {"CAPILLARY_PASSWORD": "pw"}, "CAPILLARY_USERNAME"),
        ("basic", {"CAPILLARY_USERNAME": "u"}, "CAPILLARY_PASSWORD"),
        ("oauth", {"CAPILLARY_CLIENT_KEY": "k"}, "CAPILLARY_CLIENT_SECRET"),
    ],
)
def test_missing_credentials_name_the_variable_and_say_nothing_was_sent(
    kind: AuthKind, env: dict[str, str], named: str
) -> None:
    with pytest.raises(CredentialsError) as missing:
        credentials_from_env(kind, env)
    assert named in str(missing.value) and "nothing was sent" in str(missing.value)
    assert missing.value.exit_code == 2


def test_claims_are_decoded_without_a_signature_check() -> None:
    token = jwt({"org_id": 51234, "client_id": "k", "default_till": "t.till", "exp": 1.8e9})
    assert decode_claims(token) == TokenClaims(51234, "k", "t.till", 1.8e9)
    assert decode_claims(jwt({"org_id": "51234"})) == TokenClaims(org_id=51234)
    for opaque in ("opaque-token", "a.b", "a.!!!.c", "a." + jwt({})[:0] + "W10.c"):
        assert decode_claims(opaque) in (None, TokenClaims())


async def test_token_exp_is_used_for_refreshing_before_ttl_seconds() -> None:
    """The simulator's ttlSeconds is whole seconds (0 for a 0.5 s token); exp is exact."""
    clock = FakeClock()
    async with (
        running(profile(auth={"token_ttl_seconds": 0.5}), clock=clock) as c,
        aiohttp.ClientSession() as session,
    ):
        auth = Authenticator(
            Credentials("oauth", client_key="demo-key", client_secret="demo-secret"),
            c.sim.base_url,
            refresh_margin_s=0,
            clock=clock,
        )
        claims = await auth.prepare(session)
        assert claims is not None and claims.org_id == 50001
        first, _ = await auth.headers(session)
        clock.now += 0.4
        assert (await auth.headers(session))[0] == first
        clock.now += 0.2  # past exp, long before the 300 s fallback of ttlSeconds = 0
        assert (await auth.headers(session))[0] != first
        snap = await c.state("?pairs=0")
    assert snap["counters"]["tokens_issued"] == 2


def test_a_token_for_another_org_is_refused_before_sending() -> None:
    guard = OrgGuard(expected=200)
    with capture_logs() as events, pytest.raises(WrongOrg) as refused:
        guard.from_token(TokenClaims(org_id=100, till="t"))
    assert refused.value.exit_code == 2
    assert "org 100" in str(refused.value) and "org 200" in str(refused.value)
    assert "nothing was sent" in str(refused.value)
    assert [e["event"] for e in events] == ["run.wrong_org"]


def test_answers_name_the_org_and_a_wrong_one_stops_the_run() -> None:
    guard = OrgGuard(expected=200)
    assert guard.from_answer({"org_id": "200", "till": "t.till"}, answered=True) is None
    assert guard.as_json() == {
        "org_id": 200,
        "till": "t.till",
        "expected_org_id": 200,
        "seen_in": "response headers",
    }
    stop = guard.from_answer({"org_id": "100"}, answered=True)
    assert stop is not None and stop.exit_code == 3
    assert "org 100" in stop.message and "org 200" in stop.message


def test_no_org_header_is_a_warning_once_and_no_stop() -> None:
    guard = OrgGuard(expected=200)
    with capture_logs() as events:
        for _ in range(3):
            assert guard.from_answer({}, answered=True) is None
    assert [e["event"] for e in events] == ["org.not_reported"]
    assert not guard.known
    with capture_logs() as events:  # no expected org: nothing to warn about
        assert OrgGuard(expected=None).from_answer({}, answered=True) is None
    assert events == []
