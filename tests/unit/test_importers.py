"""Importers of public shop datasets: mapping details, validity, determinism, counts.

The excerpts under tests/data are real rows (see tests/data/README.md). The last tests
run over the full slices in ../shared/data when that folder is present.
"""

from __future__ import annotations

import csv
import gzip
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from stream.cli import main
from stream.domain.events import decode
from stream.domain.timeutil import DAY, MINUTE, parse_ts
from stream.importers import Stats, run_import
from stream.importers.common import ImportFailed

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
SHARED = (REPO / ".." / "shared" / "data").resolve()
REES46 = DATA / "rees46_2019-Oct_excerpt.csv"
TAOBAO = DATA / "taobao_UserBehavior_excerpt.csv"
OLIST = DATA / "olist"
EXCERPTS = {"rees46": [REES46], "taobao": [TAOBAO], "olist": [OLIST]}


def load(path: Path) -> list[dict[str, Any]]:
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    return [orjson.loads(line) for line in raw.splitlines()]


def convert(dataset: str, sources: list[Path], out: Path, **kw: Any) -> tuple[list[Any], Stats]:
    stats = run_import(dataset, sources, out, **kw)
    return load(out), stats


def check_valid_and_sorted(events: list[dict[str, Any]]) -> None:
    """Every event passes the contract; ids are unique; order is (time, user, id)."""
    keys = []
    for ev in events:
        parsed = decode(orjson.dumps(ev), None)
        keys.append((parsed.ts, parsed.user_id, parsed.event_id))
    assert keys == sorted(keys)
    assert len({k[2] for k in keys}) == len(keys)


def by_id(events: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    found = [ev for ev in events if ev["event_id"].endswith(suffix)]
    assert len(found) == 1, suffix
    return found[0]


def find(events: list[dict[str, Any]], **fields: Any) -> list[dict[str, Any]]:
    return [ev for ev in events if all(ev.get(k) == v for k, v in fields.items())]


# -- every dataset ---------------------------------------------------------------------


@pytest.mark.parametrize("dataset", sorted(EXCERPTS))
def test_every_event_validates_and_two_runs_are_byte_identical(
    dataset: str, tmp_path: Path
) -> None:
    events, stats = convert(dataset, EXCERPTS[dataset], tmp_path / "a.jsonl")
    assert events and stats.written == len(events)
    check_valid_and_sorted(events)
    run_import(dataset, EXCERPTS[dataset], tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    # gzip output: the same bytes each run (no name or time in the header), same events
    run_import(dataset, EXCERPTS[dataset], tmp_path / "c.jsonl.gz")
    run_import(dataset, EXCERPTS[dataset], tmp_path / "d.jsonl.gz")
    assert (tmp_path / "c.jsonl.gz").read_bytes() == (tmp_path / "d.jsonl.gz").read_bytes()
    assert (
        gzip.decompress((tmp_path / "c.jsonl.gz").read_bytes())
        == (tmp_path / "a.jsonl").read_bytes()
    )
    # spilling sorted runs to disk (and merging them in two passes) changes nothing
    run_import(dataset, EXCERPTS[dataset], tmp_path / "e.jsonl", run_size=2)
    assert (tmp_path / "e.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".import-")]


# -- REES46 ------------------------------------------------------------------------------


def test_rees46_rows_become_events(tmp_path: Path) -> None:
    events, stats = convert("rees46", [REES46], tmp_path / "out.jsonl")
    # the first row: a view of a product without category_code
    view = find(events, user_id="541312140", sku="44600062", ts="2019-10-01T00:00:00.000Z")
    assert len(view) == 1
    assert {k: v for k, v in view[0].items() if k != "event_id"} == {
        "type": "detail_view",
        "user_id": "541312140",
        "ts": "2019-10-01T00:00:00.000Z",
        "sku": "44600062",
        "category": "uncategorized.2103807459595387724",
        "price": 35.79,
        "session": "72d76fde-8bb3-4e00-8c23-a032dfed738c",
    }
    assert view[0]["event_id"].startswith("rees46-")
    assert view[0]["event_id"].endswith("-detail_view")

    # two separate adds of one product (02:24:07, 02:24:12) are two cart_add events
    adds = find(events, type="cart_add", user_id="555110488", sku="1004856")
    assert [a["ts"] for a in adds] == ["2019-10-01T02:24:07.000Z", "2019-10-01T02:24:12.000Z"]
    assert adds[0]["category"] == "electronics.smartphone"
    assert adds[0]["price"] == 130.76 and adds[0]["qty"] == 1

    # a purchase row: the whole funnel, 1 ms apart, paid
    funnel = [
        ev for ev in find(events, user_id="555110488") if ev["ts"].startswith("2019-10-01T02:22:11")
    ]
    assert [ev["type"] for ev in funnel] == [
        "checkout_start",
        "checkout_submit",
        "order_created",
        "payment_success",
        "order_paid",
    ]
    assert [ev["ts"][-6:] for ev in funnel] == ["1.000Z", "1.001Z", "1.002Z", "1.003Z", "1.004Z"]
    item = {"sku": "1004750", "category": "electronics.smartphone", "price": 197.43, "qty": 1}
    start, submit, created, success, paid = funnel
    assert start["items"] == created["items"] == [item]
    assert {ev["amount"] for ev in funnel} == {197.43}
    assert start["checkout_id"] == submit["checkout_id"] == created["checkout_id"]
    assert submit["order_id"] == created["order_id"] == success["order_id"] == paid["order_id"]
    assert parse_ts(created["pay_deadline"]) == parse_ts(created["ts"]) + 30 * MINUTE
    assert len({ev["event_id"].rpartition("-")[0] for ev in funnel}) == 1

    # the three repeated rows (5 extra copies) are written once; the cut-off row is skipped
    assert stats.duplicates == 5
    assert len(find(events, user_id="537717675", ts="2019-10-01T02:46:53.000Z")) == 1
    assert stats.skipped == Counter({"wrong number of columns (want 9; a cut-off row?)": 1})
    assert stats.rows == 165


def test_rees46_counts_match_the_source_rows(tmp_path: Path) -> None:
    events, stats = convert("rees46", [REES46], tmp_path / "out.jsonl")
    check_rees46_counts([REES46], Counter(ev["type"] for ev in events), stats)


def check_rees46_counts(files: list[Path], types: Counter[str], stats: Stats) -> None:
    distinct: set[tuple[str, ...]] = set()
    rows = 0
    for path in files:
        with path.open(newline="") as f:
            reader = csv.reader(f)
            next(reader)
            for row in reader:
                rows += 1
                if len(row) == 9:
                    distinct.add(tuple(row))
    kinds = Counter(row[1] for row in distinct)
    assert stats.rows == rows
    assert types["detail_view"] == kinds["view"]
    assert types["cart_add"] == kinds["cart"]
    assert types["cart_remove"] == kinds["remove_from_cart"]
    for step in ("checkout_start", "checkout_submit", "order_created", "payment_success"):
        assert types[step] == kinds["purchase"], step
    assert types["order_paid"] == kinds["purchase"]
    assert stats.duplicates == rows - sum(stats.skipped.values()) - len(distinct)


def test_rees46_reads_several_files_to_the_same_events(tmp_path: Path) -> None:
    lines = REES46.read_text().splitlines(keepends=True)
    half = len(lines) // 2
    (tmp_path / "a.csv").write_text("".join(lines[:half]))
    (tmp_path / "b.csv").write_text(lines[0] + "".join(lines[half:]))
    with gzip.open(tmp_path / "b.csv.gz", "wt") as f:
        f.write(lines[0] + "".join(lines[half:]))
    run_import("rees46", [REES46], tmp_path / "whole.jsonl")
    stats = run_import("rees46", [tmp_path / "a.csv", tmp_path / "b.csv"], tmp_path / "parts.jsonl")
    assert stats.files == 2
    assert (tmp_path / "parts.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    run_import("rees46", [tmp_path / "a.csv", tmp_path / "b.csv.gz"], tmp_path / "gz.jsonl")
    assert (tmp_path / "gz.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()


def test_rees46_rows_it_cannot_map_are_counted(tmp_path: Path) -> None:
    header = REES46.read_text().splitlines()[0]
    good = "2019-10-01 00:00:01 UTC,{kind},17200506,2053013559792632471,,,{price},5191,s-1"
    src = tmp_path / "odd.csv"
    src.write_text(
        "\n".join(
            [
                header,
                good.format(kind="view", price=""),  # a view without a price is fine
                good.format(kind="remove_from_cart", price="9.5"),
                good.format(kind="cart", price=""),
                good.format(kind="cart", price="-1"),
                good.format(kind="wishlist", price="1"),
                good.replace("2019-10-01 00:00:01 UTC", "yesterday").format(kind="view", price=1),
            ]
        )
        + "\n"
    )
    events, stats = convert("rees46", [src], tmp_path / "out.jsonl")
    remove, view = sorted(events, key=lambda ev: ev["type"])
    assert (view["type"], remove["type"]) == ("detail_view", "cart_remove")
    assert "price" not in view
    assert remove["price"] == 9.5
    assert remove["category"] == "uncategorized.2053013559792632471"
    assert stats.skipped == Counter(
        {
            "no price on a cart row": 1,
            "bad price": 1,
            "unknown event_type 'wishlist'": 1,
            "bad event_time": 1,
        }
    )


def test_a_file_of_another_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match="missing column"):
        run_import("rees46", [OLIST / "olist_orders_dataset.csv"], tmp_path / "out.jsonl")
    with pytest.raises(ImportFailed, match="not a Taobao UserBehavior file"):
        run_import("taobao", [REES46], tmp_path / "out.jsonl")
    with pytest.raises(ImportFailed, match="no orders table"):
        run_import("olist", [TAOBAO], tmp_path / "out.jsonl")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(TAOBAO.read_bytes() + "1,2,3,pv,1511863283\n\xe9,\xe9".encode("latin-1"))
    with pytest.raises(ImportFailed, match="failed: 'utf-8' codec"):
        run_import("taobao", [latin1], tmp_path / "out.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin1.csv"]  # nothing half-written


# -- Taobao ----------------------------------------------------------------------------


def test_taobao_rows_become_events(tmp_path: Path) -> None:
    events, stats = convert("taobao", [TAOBAO], tmp_path / "out.jsonl")
    # 1001081,3329009,1264320,pv,1511863283
    view = find(events, user_id="1001081", sku="3329009")
    assert [{k: v for k, v in ev.items() if k != "event_id"} for ev in view] == [
        {
            "type": "detail_view",
            "user_id": "1001081",
            "ts": "2017-11-28T10:01:23.000Z",
            "sku": "3329009",
            "category": "taobao.1264320",
            "timezone": "Asia/Shanghai",
        }
    ]
    adds = find(events, type="cart_add")
    assert adds and all(a["price"] == 1.0 and a["qty"] == 1 for a in adds)
    # two buy rows of one shopper in one second: one paid order of two items
    funnel = [
        ev for ev in find(events, user_id="1001081") if ev["ts"][:19] == "2017-11-28T10:10:47"
    ]
    assert [ev["type"] for ev in funnel] == [
        "checkout_start",
        "checkout_submit",
        "order_created",
        "payment_success",
        "order_paid",
    ]
    created = funnel[2]
    assert created["items"] == [
        {"sku": "3182093", "category": "taobao.1264320", "price": 1.0, "qty": 1},
        {"sku": "2415830", "category": "taobao.4921617", "price": 1.0, "qty": 1},
    ]
    assert created["amount"] == 2.0
    # rows: 4 favourites and 4 rows outside the dataset's dates are skipped
    assert stats.rows == 206
    assert stats.skipped == Counter(
        {
            "fav (favourite): no such event in the contract": 4,
            "outside the dataset's dates (2017-11-25..12-03 Beijing time)": 4,
        }
    )
    assert not find(events, user_id="1000944", ts="2017-11-24T12:18:41.000Z")
    check_taobao_counts([TAOBAO], events, stats)


def check_taobao_counts(files: list[Path], events: list[dict[str, Any]], stats: Stats) -> None:
    lo, hi = 1_511_539_200, 1_512_316_800  # 2017-11-25 and 2017-12-04, 00:00 Beijing time
    kinds: Counter[str] = Counter()
    buy_groups: set[tuple[str, str]] = set()
    outside = 0
    for path in files:
        with path.open(newline="") as f:
            for user_id, _, _, kind, stamp in csv.reader(f):
                if lo <= int(stamp) < hi:
                    kinds[kind] += 1
                    if kind == "buy":
                        buy_groups.add((user_id, stamp))
                else:
                    outside += 1
    types = Counter(ev["type"] for ev in events)
    assert types["detail_view"] == kinds["pv"]
    assert types["cart_add"] == kinds["cart"]
    assert types["order_created"] == types["order_paid"] == len(buy_groups)
    units = sum(i["qty"] for ev in events if ev["type"] == "order_created" for i in ev["items"])
    assert units == kinds["buy"]
    assert stats.skipped["fav (favourite): no such event in the contract"] == kinds["fav"]
    assert sum(stats.skipped.values()) == kinds["fav"] + outside
    assert stats.duplicates == 0


# -- Olist -----------------------------------------------------------------------------


def order_events(events: list[dict[str, Any]], order_id: str) -> dict[str, dict[str, Any]]:
    found = find(events, order_id=order_id)
    types = [ev["type"] for ev in found]
    assert len(types) == len(set(types))
    return {ev["type"]: ev for ev in found}


def test_olist_orders_become_events(tmp_path: Path) -> None:
    events, stats = convert("olist", [OLIST], tmp_path / "out.jsonl")
    # a boleto order in Brazilian summer time (UTC-2): purchase 2017-12-21 20:55:24 local
    order = order_events(events, "0197cb265e2c84b9f89dfd784095d2f6")
    assert list(order) == ["order_created", "cashier_enter", "payment_success", "order_paid"]
    created = order["order_created"]
    assert created["user_id"] == "3971ac136496b4368c1431bb5bce0929"
    assert created["ts"] == "2017-12-21T22:55:24.000Z"
    assert created["amount"] == 378.91
    assert created["items"] == [
        {"sku": "b8fb835549196ef18695839a1a749584", "price": 320.0, "qty": 1}
    ]
    assert created["pay_deadline"] == "2017-12-24T22:55:24.000Z"  # boleto: 3 days
    assert created["timezone"] == "America/Sao_Paulo"
    assert order["cashier_enter"]["ts"] == "2017-12-21T22:55:24.001Z"
    assert order["cashier_enter"]["method"] == "boleto"
    assert order["payment_success"]["ts"] == "2017-12-23T04:12:41.000Z"  # approved_at
    assert order["order_paid"]["ts"] == "2017-12-23T04:12:41.001Z"

    # two units of one product: one item with qty 2, category in English
    two = order_events(events, "05d27719c66597da0628a53f6009ed67")["order_created"]
    assert two["items"] == [
        {
            "sku": "386486367c1f9d4f587a8864ccb6902b",
            "price": 113.57,
            "qty": 2,
            "category": "bed_bath_table",
        }
    ]

    # card 18.12 and vouchers 2.00 + 18.59: the amount is the sum, the method the largest
    mixed = order_events(events, "e481f51cbdc54678b7cc49136f2d6af7")
    assert mixed["order_created"]["amount"] == 38.71
    assert mixed["order_paid"]["method"] == "voucher"

    # cancelled and never approved: cancelled when the (1-day) payment window ran out
    unpaid = order_events(events, "00b1cb0320190ca0daa2c88b35206009")
    assert list(unpaid) == ["order_created", "cashier_enter", "order_cancelled"]
    assert "method" not in unpaid["cashier_enter"]  # the payment type is not_defined
    assert unpaid["order_created"]["ts"] == "2018-08-28T18:26:39.000Z"
    assert unpaid["order_cancelled"]["ts"] == unpaid["order_created"]["pay_deadline"]
    assert (
        parse_ts(unpaid["order_cancelled"]["ts"]) - parse_ts(unpaid["order_created"]["ts"]) == DAY
    )
    assert unpaid["order_cancelled"]["reason"] == "canceled"

    # cancelled after it reached the carrier: just after that last stage
    late = order_events(events, "714fb133a6730ab81fa1d3c1b2007291")
    assert list(late) == [
        "order_created",
        "cashier_enter",
        "payment_success",
        "order_paid",
        "order_cancelled",
    ]
    assert late["order_cancelled"]["ts"] == "2018-01-30T00:33:25.001Z"
    assert find(events, order_id="8e24261a7e58791d10cb1bf9da94df5c")[-1]["reason"] == "unavailable"

    # the one item row whose order is not in the excerpt is skipped and counted
    assert stats.skipped == Counter({"items: order not in the orders table": 1})
    check_olist_counts(OLIST, events)


def check_olist_counts(folder: Path, events: list[dict[str, Any]]) -> None:
    with (folder / "olist_orders_dataset.csv").open(newline="") as f:
        orders = list(csv.DictReader(f))
    payments: defaultdict[str, float] = defaultdict(float)
    with (folder / "olist_order_payments_dataset.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            payments[row["order_id"]] += float(row["payment_value"])
    types = Counter(ev["type"] for ev in events)
    cancelled = sum(o["order_status"] in ("canceled", "unavailable") for o in orders)
    approved = sum(bool(o["order_approved_at"]) for o in orders)
    assert types["order_created"] == types["cashier_enter"] == len(orders)
    assert types["order_cancelled"] == cancelled
    assert types["payment_success"] == types["order_paid"] == approved
    for ev in find(events, type="order_created"):
        assert ev["amount"] == round(payments[ev["order_id"]], 2)
    created = {ev["order_id"]: parse_ts(ev["ts"]) for ev in find(events, type="order_created")}
    for ev in events:
        assert parse_ts(ev["ts"]) >= created[ev["order_id"]]


def test_olist_customers_table_gives_the_shopper(tmp_path: Path) -> None:
    customers = tmp_path / "olist_customers_dataset.csv"
    customers.write_text(
        "customer_id,customer_unique_id,customer_zip_code_prefix,customer_city,customer_state\n"
        "3971ac136496b4368c1431bb5bce0929,shopper-1,01000,sao paulo,SP\n"
    )
    reviews = tmp_path / "olist_order_reviews_dataset.csv"
    reviews.write_text("review_id,order_id,review_score\n")
    events, stats = convert("olist", [OLIST, customers, reviews], tmp_path / "out.jsonl")
    order = find(events, order_id="0197cb265e2c84b9f89dfd784095d2f6")
    assert {ev["user_id"] for ev in order} == {"shopper-1"}
    assert "ignored olist_order_reviews_dataset.csv: not a table this importer reads" in stats.notes


# -- the command line --------------------------------------------------------------------


def test_import_command_writes_and_summarises(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl.gz"
    result = CliRunner().invoke(main, ["import", "taobao", str(TAOBAO), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "taobao: read 206 rows from 1 file(s); wrote 230 events" in result.output
    assert "fav (favourite)" in result.output
    check_valid_and_sorted(load(out))
    bad = CliRunner().invoke(main, ["import", "rees46", str(TAOBAO), "--out", str(out)])
    assert bad.exit_code == 1
    assert "missing column(s)" in bad.output
    usage = CliRunner().invoke(main, ["import", "olist", str(OLIST)])
    assert usage.exit_code == 2 and "--out" in usage.output


# -- the full slices, when present ---------------------------------------------------------

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"no shared data at {SHARED}")


@needs_shared
def test_full_rees46_slice(tmp_path: Path) -> None:
    files = sorted((SHARED / "rees46").glob("*.csv"))
    events, stats = convert("rees46", files, tmp_path / "out.jsonl")
    check_valid_and_sorted(events)
    check_rees46_counts(files, Counter(ev["type"] for ev in events), stats)
    assert stats.skipped == Counter({"wrong number of columns (want 9; a cut-off row?)": 1})


@needs_shared
def test_full_taobao_slice(tmp_path: Path) -> None:
    files = sorted((SHARED / "taobao").glob("*.csv"))
    events, stats = convert("taobao", files, tmp_path / "out.jsonl")
    check_valid_and_sorted(events)
    check_taobao_counts(files, events, stats)


@needs_shared
def test_full_olist_slice(tmp_path: Path) -> None:
    events, stats = convert("olist", [SHARED / "olist"], tmp_path / "out.jsonl")
    check_valid_and_sorted(events)
    check_olist_counts(SHARED / "olist", events)
    assert not stats.skipped
