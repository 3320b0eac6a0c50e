"""Planning: group valid pairs per customer and pack them into requests, streamed.

Invariant: a request never names the same customer twice. A customer with more programs than
`programs_per_customer` is split into chunks; chunk k of every customer goes in round k, and
requests are numbered round by round, so two chunks of one customer never share a request.
Within a round customers keep the order of their first appearance, and programs keep input
order: the same pairs always give the same requests. A plan too big to sort in memory
(`spill_plan`) is made of buckets of customers, each planned so on its own.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from batcher.send.contract import Entry, build_body

# Rows turned into Python objects at a time while streaming requests.
_SLICE_ROWS = 65_536
# A plan of more pairs than this that cannot follow the input order is built on disk, a bucket
# of customers of about this many pairs at a time (see spill_plan): ~150 MB of memory.
BUCKET_PAIRS = 1_000_000
# A plan's pairs (an empty frame of them for a plan that holds none).
_PLAN_SCHEMA = {
    "_key": pl.Int64,
    "_customer": pl.String,
    "_program": pl.String,
    "_request": pl.Int64,
}

# The pairs to send (_key, _customer, _program), in _key order, a bounded batch at a time; each
# call reads them again from the start.
PairBatches = Callable[[], Iterator[pl.DataFrame]]


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One request: its entries and, aligned with each entry's programs, the rows' `_key`s."""

    index: int
    entries: tuple[Entry, ...]
    keys: tuple[tuple[int, ...], ...]
    identifier: str = "mobile"

    def body(self, identifier: str | None = None) -> dict[str, object]:
        """The request body exactly as sent."""
        return build_body(identifier or self.identifier, self.entries)


@dataclass(frozen=True, slots=True)
class PlanFigures:
    """How many pairs, customers and requests a plan has."""

    pairs: int
    customers: int
    requests: int


@dataclass(frozen=True, slots=True)
class Plan:
    """`pairs` is sorted in send order: _request, then customer, then input order.

    Columns: _key, _customer, _program, _request (Int64, 0-based). A streamed plan (see
    `stream_plan`) holds no pairs: `batches` reads them again, in input order, which is then
    the send order, and `pair_count` counts them. A spilled plan (see `spill_plan`) holds
    none either: `spilled` are files of such rows, in send order, and `pair_count` counts them.
    """

    pairs: pl.DataFrame
    customers: int
    requests: int
    customers_per_request: int
    programs_per_customer: int
    batches: PairBatches | None = None
    pair_count: int = 0
    spilled: tuple[Path, ...] = ()

    @property
    def figures(self) -> PlanFigures:
        held = self.batches is None and not self.spilled
        return PlanFigures(
            self.pairs.height if held else self.pair_count, self.customers, self.requests
        )

    def _slices(self) -> Iterator[pl.DataFrame]:
        """The plan's rows in send order with their _request, a bounded slice at a time."""
        if self.batches is None:
            for part in (self.pairs,) if not self.spilled else map(pl.read_ipc, self.spilled):
                for start in range(0, part.height, _SLICE_ROWS):
                    yield part.slice(start, _SLICE_ROWS)
            return
        # Customers come together and none is split: customer n (counted in input order) goes
        # in request n // customers_per_request, as build_plan would put it.
        customers = 0
        last: str | None = None
        for batch in self.batches():
            if batch.height == 0:
                continue
            new = pl.col("_customer").ne_missing(pl.col("_customer").shift(1, fill_value=last))
            numbered = batch.with_columns(
                _request=(customers + new.cast(pl.Int64).cum_sum() - 1)
                // self.customers_per_request
            )
            customers += int(numbered.select(new.sum()).item())
            last = batch.get_column("_customer")[-1]
            for start in range(0, numbered.height, _SLICE_ROWS):
                yield numbered.slice(start, _SLICE_ROWS)

    def iter_requests(self, identifier: str) -> Iterator[PlannedRequest]:
        """Build requests lazily, a slice of the plan at a time."""
        index = -1
        entries: list[Entry] = []
        keys: list[tuple[int, ...]] = []
        customer: str | None = None
        programs: list[str] = []
        entry_keys: list[int] = []
        for part in self._slices():
            for request, cust, program, key in zip(
                part.get_column("_request").to_list(),
                part.get_column("_customer").to_list(),
                part.get_column("_program").to_list(),
                part.get_column("_key").to_list(),
                strict=True,
            ):
                if request != index or cust != customer:
                    if customer is not None:
                        entries.append(Entry(customer, tuple(programs)))
                        keys.append(tuple(entry_keys))
                    programs, entry_keys, customer = [], [], cust
                if request != index:
                    if entries:
                        yield PlannedRequest(index, tuple(entries), tuple(keys), identifier)
                    entries, keys, index = [], [], request
                programs.append(program)
                entry_keys.append(key)
        if customer is not None:
            entries.append(Entry(customer, tuple(programs)))
            keys.append(tuple(entry_keys))
            yield PlannedRequest(index, tuple(entries), tuple(keys), identifier)


def stream_plan(
    batches: PairBatches, customers_per_request: int, programs_per_customer: int
) -> Plan | None:
    """The plan of the pairs `batches` gives, holding none of them, when the input order is the
    send order: each customer's pairs come together and none has more than
    `programs_per_customer` (an export sorted by customer, the usual mass delink). None
    otherwise: then `build_plan` sorts them in memory.

    One pass over the pairs keeps a 64-bit hash per customer (8 bytes, not the pairs' 48).
    """
    if customers_per_request < 1 or programs_per_customer < 1:
        raise ValueError("customers_per_request and programs_per_customer must be positive")
    heads: list[pl.Series] = []  # the hash of each run of one customer's pairs
    pairs, open_run, longest = 0, 0, 0
    last: str | None = None
    previous_key = -1
    for batch in batches():
        if batch.height == 0:
            continue
        keys = batch.get_column("_key")
        if keys[0] <= previous_key or not keys.is_sorted():
            return None
        previous_key = keys[-1]
        pairs += batch.height
        runs = batch.get_column("_customer").rle()
        lengths = runs.struct.field("len").cast(pl.Int64)
        values = runs.struct.field("value")
        if last is not None and values[0] == last:  # the batch goes on with the last customer
            open_run += int(lengths[0])
            lengths, values = lengths.slice(1), values.slice(1)
        if values.len():
            longest = max(longest, open_run, int(lengths.max() or 0))  # type: ignore[arg-type]
            open_run = int(lengths[-1])
            heads.append(values.hash())
            last = values[-1]
        if max(longest, open_run) > programs_per_customer:
            return None  # a customer is split over rounds: the send order is not input order
    customers = sum(h.len() for h in heads)
    if customers and pl.concat(heads).n_unique() != customers:
        return None  # a customer comes back later (or two share a hash): not input order
    return Plan(
        pairs=pl.DataFrame(schema=_PLAN_SCHEMA),
        customers=customers,
        requests=-(-customers // customers_per_request),
        customers_per_request=customers_per_request,
        programs_per_customer=programs_per_customer,
        batches=batches,
        pair_count=pairs,
    )


def plan_pairs(
    batches: PairBatches,
    expected_pairs: int,
    customers_per_request: int,
    programs_per_customer: int,
    folder: Path,
) -> Plan:
    """The plan of the pairs `batches` gives (about `expected_pairs` of them): streamed when the
    input order is the send order, else built in memory, or on disk in `folder` when there are
    more than BUCKET_PAIRS of them."""
    streamed = stream_plan(batches, customers_per_request, programs_per_customer)
    if streamed is not None:
        return streamed
    if expected_pairs > BUCKET_PAIRS:
        return spill_plan(
            batches, expected_pairs, customers_per_request, programs_per_customer, folder
        )
    return build_plan(pl.concat(batches()), customers_per_request, programs_per_customer)


def spill_plan(
    batches: PairBatches,
    expected_pairs: int,
    customers_per_request: int,
    programs_per_customer: int,
    folder: Path,
) -> Plan:
    """`build_plan` for more pairs than memory should sort, in input order or not.

    The pairs are split by a hash of their customer into buckets of about BUCKET_PAIRS pairs
    (from `expected_pairs`), written to `folder` as they are read; each bucket is then planned
    by `build_plan` on its own and written back, its requests numbered after the previous
    bucket's. A customer is in one bucket, so no request names it twice and its chunks stay a
    round apart; customers are sent bucket by bucket, each bucket in order of first appearance.
    Memory holds one batch, then one bucket; the same pairs give the same plan.
    """
    if customers_per_request < 1 or programs_per_customer < 1:
        raise ValueError("customers_per_request and programs_per_customer must be positive")
    shutil.rmtree(folder, ignore_errors=True)  # a killed run's plan
    folder.mkdir(parents=True)
    buckets = max(1, -(-expected_pairs // BUCKET_PAIRS))
    written: list[list[Path]] = [[] for _ in range(buckets)]
    for n, batch in enumerate(batches()):
        if batch.height == 0:
            continue
        bucket = (pl.col("_customer").hash(seed=0) % buckets).alias("_bucket")
        parts = batch.with_columns(bucket).partition_by("_bucket", as_dict=True, include_key=False)
        for (b,), part in parts.items():
            path = folder / f"in-{b:05d}-{n:06d}.arrow"
            part.write_ipc(path, compression="uncompressed")
            written[int(b)].append(path)
    spilled: list[Path] = []
    customers = requests = pairs = 0
    for b, paths in enumerate(written):
        if not paths:
            continue
        plan = build_plan(
            pl.concat([pl.read_ipc(p) for p in paths]), customers_per_request, programs_per_customer
        )
        for p in paths:
            p.unlink()
        path = folder / f"plan-{b:05d}.arrow"
        plan.pairs.with_columns(pl.col("_request") + requests).write_ipc(path, compression="lz4")
        spilled.append(path)
        customers += plan.customers
        requests += plan.requests
        pairs += plan.pairs.height
    return Plan(
        pairs=pl.DataFrame(schema=_PLAN_SCHEMA),
        customers=customers,
        requests=requests,
        customers_per_request=customers_per_request,
        programs_per_customer=programs_per_customer,
        pair_count=pairs,
        spilled=tuple(spilled),
    )


def _by_first_appearance(pairs: pl.LazyFrame, customer: pl.Expr) -> pl.DataFrame:
    numbered = pairs.with_columns(_first=pl.col("_key").min().over(customer)).collect()
    # Often each customer's rows already come together (an export sorted by customer): then
    # the order is already right, and sorting would only copy every pair (480 MB at 10M).
    if numbered.get_column("_first").is_sorted():
        return numbered
    return numbered.sort("_first", maintain_order=True)  # stable: rows keep input order


def build_plan(pairs: pl.DataFrame, customers_per_request: int, programs_per_customer: int) -> Plan:
    """Plan requests for `pairs` (columns _key, _customer, _program; any subset of valid rows)."""
    if customers_per_request < 1 or programs_per_customer < 1:
        raise ValueError("customers_per_request and programs_per_customer must be positive")
    base = pairs.lazy().select(pl.col("_key").cast(pl.Int64), "_customer", "_program")
    if not pairs.get_column("_key").is_sorted():  # source's pairs are; sorting them is a copy
        base = base.sort("_key")
    # Customer order is first appearance: a customer is known by its first row's _key. Grouping
    # on a 64-bit hash of the customer is much cheaper than on the string; a collision would
    # merge two customers, which the check below sees, and then the exact grouping runs.
    ordered = _by_first_appearance(base, pl.col("_customer").hash())
    same_customer = pl.col("_customer") == pl.col("_customer").shift(1)
    same_first = pl.col("_first") == pl.col("_first").shift(1)
    if ordered.select((same_customer == same_first).all()).item() not in (True, None):
        ordered = _by_first_appearance(base, pl.col("_customer"))
    # Rows of one customer are now contiguous and in input order: number them without hashing.
    index = pl.int_range(pl.len(), dtype=pl.Int64)
    new_customer = pl.col("_first") != pl.col("_first").shift(1, fill_value=-1)
    ordered = ordered.with_columns(
        _new_customer=new_customer,
        _round=(index - pl.when(new_customer).then(index).forward_fill()) // programs_per_customer,
    )
    rounds = 0 if ordered.height == 0 else int(ordered.get_column("_round").max())  # type: ignore[arg-type]
    if rounds > 0:
        # Chunk k of every customer goes in round k (only needed when some customer is split).
        ordered = ordered.sort("_round", "_first", "_key")
    new_round = pl.col("_round") != pl.col("_round").shift(1, fill_value=-1)
    new_entry = new_round | (pl.col("_first") != pl.col("_first").shift(1, fill_value=-1))
    entry = new_entry.cast(pl.Int64).cum_sum() - 1
    entry_in_round = entry - pl.when(new_round).then(entry).forward_fill()
    slot = entry_in_round // customers_per_request
    new_request = new_round | (slot != slot.shift(1, fill_value=-1))
    planned = ordered.select(
        "_key",
        "_customer",
        "_program",
        _request=new_request.cast(pl.Int64).cum_sum() - 1,
    )
    requests = 0 if planned.height == 0 else int(planned.get_column("_request").max()) + 1  # type: ignore[arg-type]
    return Plan(
        pairs=planned,
        customers=int(ordered.get_column("_new_customer").sum()),
        requests=requests,
        customers_per_request=customers_per_request,
        programs_per_customer=programs_per_customer,
    )


def plan_figures(
    pairs: pl.DataFrame,
    customers_per_request: int,
    programs_per_customer: int,
    *,
    preview_requests: int = 0,
    customer_key: pl.Expr | None = None,
) -> tuple[PlanFigures, Plan]:
    """What `build_plan` would give, counted without building it, plus its first requests.

    For `validate`, which reports the figures and shows a few request bodies but sends
    nothing: the counts come from the pairs per customer, and the preview is the plan of the
    first customers only, whose first requests are the full plan's first requests (round 0
    packs customers in order of first appearance).

    `customer_key`: an integer that tells customers apart exactly (see
    `batcher.input.source.exact_customer_key`); the pairs per customer are then counted by
    sorting it, several times cheaper than grouping on the customer's text.
    """
    per_customer = _pairs_per_customer(pairs, customer_key)
    chunks = (per_customer + programs_per_customer - 1) // programs_per_customer
    requests = 0
    for k in range(int(chunks.max() or 0)):  # type: ignore[arg-type]
        in_round = int((chunks > k).sum())
        requests += -(-in_round // customers_per_request)
    figures = PlanFigures(pairs.height, per_customer.len(), requests)
    first = _first_customers(pairs, preview_requests * customers_per_request)
    preview = build_plan(
        pairs.filter(pl.col("_customer").is_in(first.implode())),
        customers_per_request,
        programs_per_customer,
    )
    return figures, preview


def _pairs_per_customer(pairs: pl.DataFrame, customer_key: pl.Expr | None) -> pl.Series:
    """How many pairs each customer has (in no particular order)."""
    if customer_key is not None and pairs.height:
        keys = pairs.select(customer_key).to_series()
        if keys.null_count() == 0:  # else not the customers it was meant for: grouped below
            # Equal keys are one customer (the key is exact, not a hash): runs of the sort.
            return keys.sort().rle().struct.field("len").cast(pl.Int64)
    return pairs.lazy().group_by("_customer").len().collect().get_column("len").cast(pl.Int64)


def _first_customers(pairs: pl.DataFrame, wanted: int) -> pl.Series:
    """The first `wanted` distinct customers in input order, reading no more rows than needed."""
    customers = pairs.get_column("_customer")
    rows = max(wanted * 4, 1024)
    while True:
        first = customers.head(rows).unique(maintain_order=True)
        if first.len() >= wanted or rows >= customers.len():
            return first.head(wanted)
        rows *= 4
