"""K2Client reads the API's Arrow answers back into typed tables; render shows them with coverage."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from api_fake_engine import SNAPSHOT_ID, FakeEngine, trades_table
from fastapi.testclient import TestClient
from rich.console import Console

from k2.errors import K2Error, QueryRejected, QueryTimeout
from k2.query.client import K2Client, page_info, render
from k2.query.spec import TimeRange


@pytest.fixture
def k2(make_client: Callable[..., TestClient]) -> K2Client:
    return K2Client("http://testserver", api_key="k", http=make_client(api_keys=["k"]))


def test_trades_come_back_typed_with_their_coverage(k2: K2Client, engine: FakeEngine) -> None:
    table, coverage = k2.trades(symbol="BHP", start=datetime(2014, 3, 11, tzinfo=UTC), limit=2)
    assert table.schema.remove_metadata() == trades_table().schema
    assert table.to_pylist() == trades_table().slice(0, 2).to_pylist()
    assert coverage["snapshots"]["trades"] == str(SNAPSHOT_ID)
    assert coverage["complete"] is False
    assert page_info(table) == (True, "c2VxPTEwNDUz")
    assert engine.last_call[1]["when"] == TimeRange(start=datetime(2014, 3, 11, tzinfo=UTC))


def test_every_query_method_answers_a_table(k2: K2Client, engine: FakeEngine) -> None:
    assert k2.quotes(symbol="BHP")[0].num_rows == 1
    assert k2.bars("BHP", "1-HOUR-LAST", day="2014-03-11")[0].column_names[0] == "bar_start"
    assert k2.vwap(["BHP", "CBA"])[0].column("symbol").to_pylist() == ["BHP", "CBA"]
    assert k2.snapshot(["BHP"])[0].num_rows == 1
    assert k2.gaps(status="open")[0].num_rows == 1
    assert k2.sql("SELECT symbol, qty, price FROM trades", max_rows=2)[0].num_rows == 2
    assert engine.last_call == ("sql", {"text": "SELECT symbol, qty, price FROM trades", "max_rows": 2})
    assert k2.status()["ingest"][0]["level"] == "NORMAL"


def test_refusals_become_k2_errors(
    k2: K2Client, engine: FakeEngine, make_client: Callable[..., TestClient]
) -> None:
    engine.fail["sql"] = QueryRejected("not_select", "only SELECT")
    with pytest.raises(QueryRejected) as rejected:
        k2.sql("DELETE FROM trades")
    assert (rejected.value.reason, rejected.value.detail) == ("not_select", "only SELECT")
    engine.fail["sql"] = QueryTimeout(2.5)
    with pytest.raises(QueryTimeout) as timeout:
        k2.sql("SELECT * FROM trades")
    assert timeout.value.seconds == 2.5
    no_key = K2Client("http://testserver", http=make_client(api_keys=["k"]))
    with pytest.raises(K2Error, match="401 unauthorized"):
        no_key.trades()


def test_render_shows_rows_and_what_they_cover(k2: K2Client) -> None:
    table, coverage = k2.trades(symbol="BHP", limit=2)
    console = Console(width=400, record=True, color_system=None)
    console.print(render(table, coverage))
    text = console.export_text()
    assert "BHP-10452" in text and "36.52" in text and "XT" in text
    assert f"trades@{SNAPSHOT_ID}" in text
    assert "incomplete" in text and "live missing: trades/4" in text and "1 open gaps" in text
    assert "truncated; next cursor c2VxPTEwNDUz" in text


def test_render_cuts_long_tables(k2: K2Client) -> None:
    table, coverage = k2.trades()
    console = Console(width=400, record=True, color_system=None)
    console.print(render(table, coverage, max_rows=1))
    assert "… 2 more rows" in console.export_text()
