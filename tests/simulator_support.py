"""What the simulator tests share: a fake clock, the Basic header, bodies, a running server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from batcher.send.contract import basic_header, md5_hex
from batcher.simulator.profile import Profile
from batcher.simulator.server import Simulator
from tests.conftest import profile_with

DELINK = "/v2/partnerProgram/deLinkCustomer"
TOKEN = "/v3/oauth/token/generate"
STATE = "/__simulator/state"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def basic(user: str = "demo.till", password: str = "demo-password") -> dict[str, str]:
    return {"Authorization": basic_header(user, md5_hex(password))}


def body(*customers: tuple[Any, list[str]], identifier: str = "mobile") -> dict[str, Any]:
    return {
        "deLinkCustomers": [
            {
                "customer": {identifier: value},
                "deLinkFromPartnerPrograms": [{"partnerProgramName": p} for p in programs],
            }
            for value, programs in customers
        ]
    }


def profile(**sections: Any) -> Profile:
    """A small clean profile (20 customers, all linked), overridden by TOML-shaped sections."""
    return profile_with({"seed": 1, "state": {"customers": 20, "program_count": 3}}, sections)


class Client:
    """A plain aiohttp client against a running simulator (never batcher's own sender)."""

    def __init__(self, sim: Simulator, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session

    async def delink(
        self,
        payload: Any,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        timeout_s: float = 5.0,
    ) -> tuple[int, dict[str, str], Any]:
        hdrs = basic() if headers is None else headers
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": payload}
        async with self.session.post(
            self.sim.base_url + DELINK,
            headers=hdrs,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            **kwargs,
        ) as resp:
            text = await resp.text()
            try:
                parsed: Any = await resp.json(content_type=None)
            except ValueError:
                parsed = text
            return resp.status, dict(resp.headers), parsed

    async def token(self, key: str = "demo-key", secret: str = "demo-secret") -> tuple[int, Any]:
        async with self.session.post(
            self.sim.base_url + TOKEN, json={"key": key, "secret": secret}
        ) as resp:
            return resp.status, await resp.json()

    async def state(self, query: str = "") -> Any:
        async with self.session.get(self.sim.base_url + STATE + query) as resp:
            return await resp.json()


@asynccontextmanager
async def running(
    prof: Profile | None = None, *, clock: Callable[[], float] | None = None
) -> AsyncIterator[Client]:
    sim = Simulator(prof or profile(), clock=clock) if clock else Simulator(prof or profile())
    async with sim, aiohttp.ClientSession() as session:
        yield Client(sim, session)
