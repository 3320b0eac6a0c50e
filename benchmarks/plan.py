"""Benchmark `batcher validate` on 10 million pairs against a bare polars yardstick.

    uv run python benchmarks/plan.py            # generate (once) into benchmarks/data/, then time
    uv run python benchmarks/plan.py --rows 1000000 --trials 1
    uv run python benchmarks/plan.py --bad      # 70% of the rows rejected or duplicates

Each measurement runs in a fresh Python process that reports its own elapsed time after its
imports (polars for the yardstick; polars and batcher for ours: until 2026-11-28 23:15 UTC ours
also counted batcher's import, about 0.6 s, while the yardstick did not count polars') and peak
RSS, so one measurement's memory never hides in another's; the imports are printed too, with
the ratio of the two including them. The yardstick is
a bare polars scan + unique + group_by of the same file; the target is ours <= 1.5x of it,
under 10 s and under 2 GB for 10M rows on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
PROGRAMS = 50


def generate(rows: int, customers: int, *, bad: bool = False) -> dict[str, Path]:
    """Deterministic pairs: customer i has mobile 9198{i:08d}, spread over 50 programs.

    `bad`: the worst input for memory: in each ten rows, four malformed mobiles (rejected) and
    six pairs; the second half of the file repeats the first half's pairs (3 of 10 rows are
    duplicates of a row millions of rows earlier, in another chunk), so 70% of the rows go to
    the rejects file and every chunk of the second half is rewritten."""
    import polars as pl

    DATA.mkdir(exist_ok=True)
    stem = f"pairs-bad-{rows}" if bad else f"pairs-{rows}"
    paths = {"csv": DATA / f"{stem}.csv", "parquet": DATA / f"{stem}.parquet"}
    if all(p.exists() for p in paths.values()):
        return paths
    i = pl.int_range(rows, dtype=pl.Int64)
    base = i % (rows // 2) if bad else i
    # A multiplicative scramble spreads a customer's rows through the file, as real exports do.
    customer = (base * 7919) % customers
    program = (base // customers + 2 * (base % 25)) % PROGRAMS + 1
    mobile = pl.lit("9198") + customer.cast(pl.String).str.zfill(8)
    frame = pl.select(
        mobile=pl.when(i % 10 < 4).then(pl.lit("12ab") + i.cast(pl.String)).otherwise(mobile)
        if bad
        else mobile,
        partner_program_name=pl.lit("partner-") + program.cast(pl.String).str.zfill(2),
        requested_by=pl.lit("benchmark"),
    )
    frame.write_csv(paths["csv"])
    frame.write_parquet(paths["parquet"])
    return paths


def _child(kind: str, path: Path) -> None:
    """Run one measurement in this process and print its figures as JSON."""
    started = time.perf_counter()
    import polars as pl

    if kind == "ours":
        from batcher.job import load_job
        from batcher.runs.validate import validate
    # Each side's clock starts once its libraries are imported (polars for the yardstick, polars
    # and batcher for ours): the work is compared, and the imports are reported beside it.
    imports = time.perf_counter() - started
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    if kind == "ours":
        job_file = DATA / f"bench-{path.suffix[1:]}.toml"
        job_file.write_text(
            f'name = "bench"\n[input]\npath = "{path.name}"\n[api]\nbase_url = "simulator"\n'
            f'[output]\ndir = "{DATA / "output"}"\n'
        )
        validate(load_job(job_file))
    else:
        csv = path.suffix == ".csv"
        lf = pl.scan_csv(path, infer_schema=False) if csv else pl.scan_parquet(path)
        (
            lf.unique(subset=["mobile", "partner_program_name"])
            .group_by("mobile")
            .agg(pl.len())
            .collect()
        )
    elapsed = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    peak_mb = usage.ru_maxrss / 1024
    print(
        json.dumps(
            {"seconds": elapsed, "cpu_seconds": cpu, "peak_rss_mb": peak_mb, "imports": imports}
        )
    )


def measure(kind: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument(
        "--bad", action="store_true", help="an input of 40%% rejects and 30%% duplicates"
    )
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]))
        return
    t0 = time.perf_counter()
    paths = generate(args.rows, args.rows // 2, bad=args.bad)
    print(
        f"data: {args.rows:,} rows{' (70% rejects and duplicates)' if args.bad else ''} "
        f"({time.perf_counter() - t0:.1f} s to generate or find)"
    )
    for fmt, path in paths.items():
        # Alternate ours and the yardstick and keep each one's fastest trial (with its peak
        # RSS): on a shared machine the fastest trial is the least disturbed.
        trials = [(measure("ours", path), measure("yardstick", path)) for _ in range(args.trials)]
        ours = min((o for o, _ in trials), key=lambda m: m["seconds"])
        yard = min((y for _, y in trials), key=lambda m: m["seconds"])
        ratio = ours["seconds"] / yard["seconds"]
        # CPU seconds (all threads, user + system) are what a loaded machine distorts least.
        ours_cpu = min(o["cpu_seconds"] for o, _ in trials)
        yard_cpu = min(y["cpu_seconds"] for _, y in trials)
        print(
            f"{fmt:8} ours {ours['seconds']:6.2f} s "
            f"{args.rows / ours['seconds'] / 1e6:5.2f} M rows/s "
            f"peak {ours['peak_rss_mb']:6.0f} MB | yardstick {yard['seconds']:6.2f} s "
            f"peak {yard['peak_rss_mb']:6.0f} MB | ratio {ratio:.2f} | CPU s ours "
            f"{ours_cpu:.2f}, yardstick {yard_cpu:.2f}, ratio {ours_cpu / yard_cpu:.2f} | "
            f"imports ours {ours['imports']:.2f} s, yardstick {yard['imports']:.2f} s; with them "
            f"{(ours['seconds'] + ours['imports']) / (yard['seconds'] + yard['imports']):.2f} | "
            f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
            flush=True,
        )


if __name__ == "__main__":
    main()
