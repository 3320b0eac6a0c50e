"""How many 1-customer delinks per second the simulator answers on one core (target: 4,000).

    uv run python benchmarks/simulator_load.py [--seconds 3] [--concurrency 32]
    uv run python benchmarks/simulator_load.py --cli [--log-every-request] [--seconds 5]

The server runs in a subprocess pinned to one core (where the OS allows), with faults, latency
and the quota off; the load comes from this process (pinned to another core) over 32 keep-alive
connections speaking raw HTTP/1.1, so the client is not what is measured.

With --cli, as an operator runs it instead: `batcher simulate --profile jobs/simulator/clean.toml`
(its log on, sampled unless --log-every-request), driven by a plain aiohttp client (standard
asyncio loop, 8 connections) posting 1-customer bodies, neither pinned: the same 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import time
from typing import Any

from batcher.send.contract import basic_header, md5_hex

DELINK = "/v2/partnerProgram/deLinkCustomer"


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and core < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {core})


def _serve(port_out: Any, stop: Any) -> None:
    _pin(0)
    from batcher.simulator.profile import profile_from_dict
    from batcher.simulator.server import Simulator

    async def main() -> None:
        prof = profile_from_dict({"seed": 1, "state": {"customers": 1_000_000, "program_count": 5}})
        sim = Simulator(prof)
        await sim.start()
        port_out.put(sim.base_url)
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        port_out.put(sim.snapshot(pairs=False)["counters"])
        await sim.stop()

    asyncio.run(main())


def _request(host: str, i: int) -> bytes:
    auth = basic_header("demo.till", md5_hex("demo-password"))
    payload = json.dumps(
        {
            "deLinkCustomers": [
                {
                    "customer": {"mobile": f"9198{i:08d}"},
                    "deLinkFromPartnerPrograms": [{"partnerProgramName": "partner-01"}],
                }
            ]
        }
    ).encode()
    head = (
        f"POST {DELINK} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def _worker(host: str, port: int, first: int, deadline: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = first
    while time.monotonic() < deadline:
        writer.write(_request(host, i))
        i += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            counts[1] += 1
        counts[0] += 1
    writer.close()
    await writer.wait_closed()


async def _load(base_url: str, seconds: float, concurrency: int) -> tuple[int, int, float]:
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    counts = [0, 0]
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(
        *(_worker(host, int(port), k * 100_000, deadline, counts) for k in range(concurrency))
    )
    return counts[0], counts[1], time.monotonic() - started


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cli_load(seconds: float, concurrency: int, every_request: bool) -> None:
    """`batcher simulate` in its own process, a plain aiohttp client in this one."""
    import subprocess
    import sys
    import threading

    import aiohttp

    command = [sys.executable, "-m", "batcher.cli", "simulate", "--port", "0"]
    command += ["--profile", "jobs/simulator/clean.toml"]
    command += ["--log-every-request"] if every_request else []
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    server = subprocess.Popen(
        command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().split(" on ", 1)[1].split(" ", 1)[0]
        # Read its log as a terminal would, so that the pipe never fills.
        threading.Thread(target=server.stdout.read, daemon=True).start()
        headers = {
            "Authorization": basic_header("demo.till", md5_hex("demo-password")),
            "Content-Type": "application/json",
        }

        async def post_until(deadline: float) -> int:
            done = 0
            connector = aiohttp.TCPConnector(limit=concurrency)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def worker(k: int) -> None:
                    nonlocal done
                    i = k
                    while time.monotonic() < deadline:
                        customer = {"mobile": f"9198{i % 2000:08d}"}
                        programs = [{"partnerProgramName": "partner-01"}]
                        body = json.dumps(
                            {
                                "deLinkCustomers": [
                                    {"customer": customer, "deLinkFromPartnerPrograms": programs}
                                ]
                            }
                        ).encode()
                        url = base_url + DELINK
                        async with session.post(url, data=body, headers=headers) as r:
                            await r.read()
                        done += 1
                        i += concurrency

                await asyncio.gather(*(worker(k) for k in range(concurrency)))
            return done

        started, cpu_before = time.monotonic(), _cpu_s(server.pid)
        done = asyncio.run(post_until(started + seconds))
        elapsed, cpu_s = time.monotonic() - started, _cpu_s(server.pid) - cpu_before
        load = "/".join(f"{x:.1f}" for x in os.getloadavg()[:2])
        kind = "every request logged" if every_request else "sampled log"
        # On a shared machine the wall-clock rate says more about the neighbours than about the
        # server; its CPU time per request does not: 1 / that is its rate on a core of its own.
        print(
            f"batcher simulate ({kind}): {done / elapsed:,.0f} requests/s to a plain aiohttp "
            f"client ({done} in {elapsed:.1f} s, concurrency {concurrency}; load {load}); "
            f"server CPU {1000 * cpu_s / max(done, 1):.3f} ms a request = "
            f"{done / max(cpu_s, 1e-9):,.0f} requests per CPU-second"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--cli", action="store_true", help="`batcher simulate`, aiohttp client")
    parser.add_argument("--log-every-request", action="store_true", help="with --cli")
    args = parser.parse_args()
    if args.cli:
        _cli_load(args.seconds, min(args.concurrency, 8), args.log_every_request)
        return
    ctx = multiprocessing.get_context("spawn")
    port_out, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(port_out, stop))
    server.start()
    try:
        base_url = port_out.get(timeout=30)
        _pin(1)
        done, bad, elapsed = asyncio.run(_load(base_url, args.seconds, args.concurrency))
        stop.set()
        counters = port_out.get(timeout=30)
    finally:
        stop.set()
        server.join(timeout=10)
        if server.is_alive():
            server.terminate()
    print(
        f"{done / elapsed:,.0f} requests/s ({done} in {elapsed:.1f} s, {bad} not 200, "
        f"concurrency {args.concurrency}, server on one core); "
        f"server counted {counters['requests']}"
    )


if __name__ == "__main__":
    main()
