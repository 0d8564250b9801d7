"""The ``k2`` command: thin wrappers over library functions that tests call directly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from k2.config import Settings, load_settings
from k2.errors import K2Error
from k2.logs import configure_logging

if TYPE_CHECKING:
    from k2.ingest.report import IngestReport

app = typer.Typer(no_args_is_help=True, add_completion=False, help="k2: market data from Kafka into Iceberg.")
broker_app = typer.Typer(no_args_is_help=True, help="The local Apache Kafka broker (KRaft, no Docker).")
feed_app = typer.Typer(no_args_is_help=True, help="Put market messages on Kafka.")
replay_app = typer.Typer(no_args_is_help=True, help="Replay recorded exchange data.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (results written to a file).")
app.add_typer(broker_app, name="broker")
app.add_typer(feed_app, name="feed")
feed_app.add_typer(replay_app, name="replay")
app.add_typer(bench_app, name="bench")
tiers_app = typer.Typer(no_args_is_help=True, help="Symbol tiers for load shedding.")
app.add_typer(tiers_app, name="tiers")
query_app = typer.Typer(no_args_is_help=True, help="Ask a running k2 api (prints a table).")
app.add_typer(query_app, name="query")

console = Console(stderr=True)
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config (default config/k2.toml)")
]


class _State:
    config: Path | None = None


@app.callback()
def _main(config: ConfigOption = None) -> None:
    _State.config = config


def _settings() -> Settings:
    try:
        settings = load_settings(_State.config)
    except K2Error as e:
        _fail(str(e))
    configure_logging(settings.log)
    return settings


def _fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


# -- broker -------------------------------------------------------------------------------------


def _broker(settings: Settings) -> Any:
    from k2.broker import LocalBroker

    return LocalBroker(settings.broker, settings.kafka)


@broker_app.command("fetch")
def broker_fetch() -> None:
    """Download Apache Kafka's jars from Maven Central into the cache."""
    try:
        path = _broker(_settings()).fetch()
    except K2Error as e:
        _fail(str(e))
    console.print(f"kafka jars in {path}")


@broker_app.command("start")
def broker_start() -> None:
    """Start the broker (fetching it first if needed) and create the topics. No-op if running."""
    try:
        status = _broker(_settings()).start()
    except K2Error as e:
        _fail(str(e))
    console.print(f"broker running: pid {status.pid}, {status.bootstrap}")


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the broker started by ``k2 broker start``."""
    _broker(_settings()).stop()
    console.print("broker stopped")


@broker_app.command("status")
def broker_status() -> None:
    """Print whether the broker runs, and where."""
    status = _broker(_settings()).status()
    typer.echo(json.dumps({"running": status.running, "pid": status.pid, "bootstrap": status.bootstrap}))
    if not status.running:
        raise typer.Exit(3)


@broker_app.command("reset")
def broker_reset() -> None:
    """Stop the broker and delete its data (topics and all messages)."""
    _broker(_settings()).wipe()
    console.print("broker stopped and its data deleted")


@app.command("topics")
def topics(action: Annotated[str, typer.Argument(help="create")] = "create") -> None:
    """Create the configured topics on any Kafka cluster (the local broker does this on start)."""
    from k2.broker import ensure_k2_topics

    if action != "create":
        _fail(f"unknown action {action!r}; expected 'create'", 2)
    settings = _settings()
    try:
        limits = ensure_k2_topics(
            settings.kafka.bootstrap_servers, settings.kafka.topics, settings.kafka.partitions
        )
    except K2Error as e:
        _fail(str(e))
    console.print(f"topics ready (max.message.bytes): {', '.join(f'{t} {n:,}' for t, n in limits.items())}")


# -- feeds --------------------------------------------------------------------------------------


def _speed(value: str) -> float | None:
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        _fail(f"--speed must be a number or 'max', got {value!r}", 2)
    if speed <= 0:
        _fail("--speed must be positive", 2)
    return speed


@replay_app.command("asx")
def replay_asx(
    speed: Annotated[str, typer.Option(help="Multiple of real time (10 = 10x), or 'max'.")] = "max",
    report: Annotated[Path | None, typer.Option(help="Write what was produced as JSON here.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Replay the ASX March 2014 sample (trades, quotes, reference data) onto Kafka."""
    from k2.feeds.asx import replay_asx as replay

    settings = _settings()
    try:
        result = replay(settings, speed=_speed(speed), report_path=report, progress=progress)
    except K2Error as e:
        _fail(str(e))
    console.print(result.rich_table())


@feed_app.command("simulate")
def simulate(
    rate: Annotated[float, typer.Option(help="Target msg/s (0 = as fast as possible).")] = 1000.0,
    duration: Annotated[float | None, typer.Option(help="Seconds to run.")] = None,
    messages: Annotated[int | None, typer.Option(help="Total valid messages to produce.")] = None,
    seed: Annotated[int, typer.Option()] = 7,
    tier1: Annotated[int, typer.Option(help="Tier-1 (most active) symbols.")] = 10,
    tier2: Annotated[int, typer.Option(help="Tier-2 symbols.")] = 40,
    tier3: Annotated[int, typer.Option(help="Tier-3 symbols.")] = 150,
    zipf: Annotated[float, typer.Option(help="Zipf exponent of activity skew.")] = 1.1,
    quote_ratio: Annotated[float, typer.Option(help="Share of quotes among market messages.")] = 0.6,
    gap_rate: Annotated[float, typer.Option()] = 0.0,
    duplicate_rate: Annotated[float, typer.Option()] = 0.0,
    reorder_rate: Annotated[float, typer.Option()] = 0.0,
    poison_rate: Annotated[float, typer.Option()] = 0.0,
    burst_multiplier: Annotated[float, typer.Option(help="Burst: rate x k ...")] = 1.0,
    burst_seconds: Annotated[float, typer.Option(help="... for t seconds ...")] = 0.0,
    burst_start: Annotated[float, typer.Option(help="... starting after s seconds.")] = 0.0,
    session: Annotated[int | None, typer.Option(help="Session (YYYYMMDD); default today UTC.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write what was produced as JSON here.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Synthetic market: tiered symbols, Zipf-skewed activity, random-walk prices, fault knobs."""
    from k2.feeds.simulator import SimulatorConfig
    from k2.feeds.simulator import simulate as run

    if duration is None and messages is None:
        _fail("give --duration or --messages", 2)
    fields: dict[str, Any] = dict(
        seed=seed, rate=rate, duration_s=duration, messages=messages, tier1=tier1, tier2=tier2, tier3=tier3,
        zipf=zipf, quote_ratio=quote_ratio, gap_rate=gap_rate, duplicate_rate=duplicate_rate,
        reorder_rate=reorder_rate, poison_rate=poison_rate, burst_multiplier=burst_multiplier,
        burst_seconds=burst_seconds, burst_start_s=burst_start,
    )  # fmt: skip
    if session is not None:
        fields["session"] = session
    settings = _settings()
    try:
        config = SimulatorConfig(**fields)
        result = run(settings, config, report_path=report, progress=progress)
    except (K2Error, ValueError) as e:
        _fail(str(e), 2)
    console.print(result.rich_table())


# -- ingest -------------------------------------------------------------------------------------


@app.command()
def ingest(
    exit_when_idle: Annotated[
        float | None,
        typer.Option(
            help="For bounded runs (tests, benchmarks, backfills): commit as soon as caught up, and exit "
            "after S seconds with nothing new and everything committed."
        ),
    ] = None,
    max_seconds: Annotated[
        float | None, typer.Option(help="Stop (after committing) after S seconds.")
    ] = None,
    writer_id: Annotated[str | None, typer.Option(help="Name of this writer in snapshot summaries.")] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write the run's counts and timings as JSON here.")
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Ingest processes in one consumer group on this host (default ingest.processes).",
        ),
    ] = None,
) -> None:
    """Consume trades, quotes and reference data from Kafka into Iceberg, exactly once."""
    from k2.ingest.pool import run_pool

    settings = _settings()
    n = processes or settings.ingest.processes
    if n > 1:
        pool = run_pool(
            n,
            _State.config,
            writer_id,
            exit_when_idle,
            max_seconds,
            metrics_port=settings.ingest.metrics_port,
            live_port=settings.live.port,
        )
        result = pool.report
        if any(pool.exit_codes):
            if report is not None:
                report.write_text(result.to_json() + "\n")
            failed = next(c for c in pool.exit_codes if c)
            _fail(f"ingest processes exited with {pool.exit_codes}", failed if failed > 0 else 128 - failed)
    else:
        result = _run_ingest(settings, exit_when_idle, max_seconds, writer_id=writer_id)
    if report is not None:
        report.write_text(result.to_json() + "\n")
    console.print(
        f"ingest {result.exit_reason}: consumed {result.consumed:,}, landed {result.landed}, "
        f"rejected {result.rejected}, duplicates {result.duplicates:,}, commits {result.commits}"
    )


@app.command()
def backfill(
    exit_when_idle: Annotated[
        float, typer.Option(help="Exit after S seconds with nothing left to backfill or commit.")
    ] = 5.0,
    report: Annotated[
        Path | None, typer.Option(help="Write the run's counts and timings as JSON here.")
    ] = None,
) -> None:
    """Land every deferred (shed) message now, whatever the load, then exit.

    Joins the ingest consumer group like any ingest process, so it backfills the partitions it is
    given (all of them when no other ingest runs) and ingests live data meanwhile.
    """

    result = _run_ingest(_settings(), exit_when_idle, None, backfill_now=True)
    if report is not None:
        report.write_text(result.to_json() + "\n")
    console.print(
        f"backfill {result.exit_reason}: backfilled {result.backfilled:,} "
        f"{dict(sorted(result.backfilled_by_class.items()))}, lost {result.deferred_lost:,}"
    )


def _run_ingest(
    settings: Settings, exit_when_idle: float | None, max_seconds: float | None, **kwargs: Any
) -> IngestReport:
    """One ingest process in this one, stopped cleanly by SIGINT/SIGTERM; a K2Error exits with 3."""
    from k2.ingest import IngestApp

    try:
        ingest_app = IngestApp(settings, **kwargs)
        ingest_app.install_signal_handlers()
        return ingest_app.run(exit_when_idle=exit_when_idle, max_seconds=max_seconds)
    except K2Error as e:
        _fail(str(e), 3)


# -- the API and its terminal client ------------------------------------------------------------


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Listen address (default api.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (default api.port).")] = None,
) -> None:
    """Serve the query API (REST + sandboxed SQL over Iceberg ∪ every ingest's live buffer)."""
    from k2.api.app import create_app
    from k2.api.server import serve
    from k2.query.engine import open_engine

    settings = _settings()
    api_settings = settings.api.model_copy(
        update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    )
    try:
        engine = open_engine(settings)
    except K2Error as e:
        _fail(str(e), 3)
    console.print(f"k2 api on http://{api_settings.host}:{api_settings.port} (docs at /docs)")
    serve(create_app(engine, api_settings), api_settings)


UrlOption = Annotated[str | None, typer.Option("--url", help="API base URL (default from api.host/port).")]
KeyOption = Annotated[str | None, typer.Option("--api-key", envvar="K2_API_KEY", help="X-API-Key.")]


def _ask(url: str | None, api_key: str | None, call: Any, columns: list[str] | None = None) -> None:
    """Run ``call(client)`` against the API and print its answer (``columns`` of it, if given, to
    fit a terminal); errors become one CLI line."""
    import httpx

    from k2.query.client import K2Client, render

    settings = _settings()
    base = url or f"http://{settings.api.host}:{settings.api.port}"
    try:
        with K2Client(base, api_key=api_key) as client:
            table, coverage = call(client)
    except K2Error as e:
        _fail(str(e))
    except httpx.HTTPError as e:
        _fail(f"cannot reach the k2 api at {base}: {e}")
    if columns:
        table = table.select([c for c in columns if c in table.column_names])
    console.print(render(table, coverage))


@query_app.command("trades")
def query_trades(
    symbol: Annotated[str, typer.Argument(help="e.g. BHP")],
    last: Annotated[int | None, typer.Option(help="The newest N trades.")] = 20,
    day: Annotated[str | None, typer.Option(help="Trading day (exchange-local), YYYY-MM-DD.")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Trades of one symbol (the newest ``--last`` by default)."""
    params = {"symbol": symbol, "last": last, "day": day}
    _ask(
        url,
        api_key,
        lambda c: c.trades(**{k: v for k, v in params.items() if v is not None}),
        ["ts", "exchange", "symbol", "price", "qty", "conditions", "session", "seq"],
    )


@query_app.command("bars")
def query_bars(
    symbol: Annotated[str, typer.Argument(help="e.g. BHP")],
    day: Annotated[str, typer.Option(help="Trading day (exchange-local), YYYY-MM-DD.")],
    interval: Annotated[str, typer.Option(help="1-SECOND-LAST ... 1-DAY-LAST")] = "1-MINUTE-LAST",
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """OHLCV bars of one symbol for one trading day."""
    _ask(url, api_key, lambda c: c.bars(symbol, interval, day=day))


@query_app.command("vwap")
def query_vwap(
    day: Annotated[str, typer.Option(help="Trading day (exchange-local), YYYY-MM-DD.")],
    symbols: Annotated[str | None, typer.Option(help="Comma-separated; default all.")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """VWAP per symbol for one trading day."""
    wanted = symbols.split(",") if symbols else None
    _ask(url, api_key, lambda c: c.vwap(wanted, day=day))


@query_app.command("snapshot")
def query_snapshot(
    symbols: Annotated[str | None, typer.Option(help="Comma-separated; default all.")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Last trade and best bid/ask per symbol."""
    _ask(url, api_key, lambda c: c.snapshot(symbols.split(",") if symbols else None))


@query_app.command("sql")
def query_sql(
    text: Annotated[
        str, typer.Argument(help="One SELECT over trades, quotes, reference_data, sequence_gaps.")
    ],
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Run one read-only SQL SELECT (history ∪ live)."""
    _ask(url, api_key, lambda c: c.sql(text))


# -- benchmarks ---------------------------------------------------------------------------------


@bench_app.command("ingest")
def bench_ingest(
    out: Annotated[Path, typer.Option(help="Where to write the results (JSON).")] = Path(
        "bench-results/ingest.json"
    ),
    sim_messages: Annotated[int, typer.Option(help="Messages in the simulated-load scenario.")] = 1_000_000,
    commits: Annotated[int, typer.Option(help="Appends in the append-latency measurement.")] = 2000,
    processes: Annotated[
        int | None,
        typer.Option(min=1, help="Also run every scenario with this many ingest processes (default: CPUs)."),
    ] = None,
    repeat: Annotated[
        int, typer.Option(min=1, help="Runs of every scenario; the summary gives medians and ranges.")
    ] = 1,
) -> None:
    """End-to-end ingest rate vs a bare consume loop (same run), peak RSS, append latency growth."""
    import os

    from k2.bench.ingest import run_ingest_bench

    n = processes or os.cpu_count() or 1
    run_ingest_bench(
        _settings(),
        out,
        sim_messages=sim_messages,
        commits=commits,
        processes=n,
        repeat=repeat,
        console=console,
    )
    console.print(f"results written to {out}")


@bench_app.command("degrade")
def bench_degrade(
    out: Annotated[Path, typer.Option(help="Where to write the results (JSON).")] = Path(
        "bench-results/degrade.json"
    ),
    repeat: Annotated[
        int, typer.Option(min=1, help="Runs of every scenario; the summary gives medians and ranges.")
    ] = 1,
    backlog: Annotated[
        int, typer.Option(min=0, help="Catch-up: messages on Kafka before ingest starts.")
    ] = 3_000_000,
    catchup_s: Annotated[
        float, typer.Option(help="Catch-up: seconds of live feed once ingest starts.")
    ] = 90.0,
    slow_s: Annotated[float, typer.Option(help="Slow storage: seconds of live feed.")] = 60.0,
    sustainable_rate: Annotated[
        float | None, typer.Option(help="Ingest's sustainable msg/s (default: measured in the run).")
    ] = None,
    commit_delay_s: Annotated[float, typer.Option(help="Slow storage: sleep before every commit.")] = 2.5,
    memory_budget_mb: Annotated[int, typer.Option(help="Slow storage: degradation memory budget.")] = 600,
    cpu_messages: Annotated[int, typer.Option(help="Messages drained kept, shed and bare.")] = 1_000_000,
) -> None:
    """Overload: catch-up after a backlog and slow storage, degradation on vs off; shed vs kept CPU."""
    from k2.bench.degrade import run_degrade_bench

    run_degrade_bench(
        _settings(),
        out,
        repeat=repeat,
        backlog=backlog,
        catchup_s=catchup_s,
        slow_s=slow_s,
        sustainable_rate=sustainable_rate,
        commit_delay_s=commit_delay_s,
        memory_budget_bytes=memory_budget_mb * 2**20,
        cpu_messages=cpu_messages,
        console=console,
    )
    console.print(f"results written to {out}")


@bench_app.command("query")
def bench_query(
    out: Annotated[Path, typer.Option(help="Where to write the results (JSON).")] = Path(
        "bench-results/query.json"
    ),
    repeat: Annotated[
        int,
        typer.Option(
            min=1, help="Live runs (history is written once); the summary gives medians and ranges."
        ),
    ] = 1,
    history_rows: Annotated[int, typer.Option(min=1, help="Synthetic trades of history.")] = 10_000_000,
    history_commits: Annotated[int, typer.Option(min=1, help="Commits the history is written in.")] = 200,
    live_trades: Annotated[
        int, typer.Option(min=0, help="Trades in ingest's buffer before measuring.")
    ] = 500_000,
    sustainable_rate: Annotated[
        float | None, typer.Option(help="Ingest's sustainable msg/s (default: measured in the run).")
    ] = None,
    window_s: Annotated[float, typer.Option(help="Seconds of each ingest-throughput window.")] = 15.0,
) -> None:
    """API latency and freshness over history ∪ live under ingest; DuckDB baseline; ingest cost of queries."""
    from k2.bench.query import run_query_bench

    run_query_bench(
        _settings(),
        out,
        repeat=repeat,
        history_rows=history_rows,
        history_commits=history_commits,
        live_trades=live_trades,
        sustainable_rate=sustainable_rate,
        window_s=window_s,
        console=console,
    )
    console.print(f"results written to {out}")


# -- inspection ---------------------------------------------------------------------------------


@app.command()
def tables() -> None:
    """Row counts, snapshot and stored Kafka offsets of every k2 table."""
    from k2.lake import ensure_tables, open_catalog, read_offsets

    settings = _settings()
    out: dict[str, Any] = {}
    for name, table in ensure_tables(open_catalog(settings.iceberg), settings.iceberg).items():
        snap = table.current_snapshot()
        stored = read_offsets(table)
        out[name] = {
            "rows": int(snap.summary["total-records"] or 0) if snap and snap.summary else 0,
            "snapshot_id": snap.snapshot_id if snap else None,
            "snapshots": len(table.metadata.snapshots),
            "offsets": stored.by_topic,
        }
    typer.echo(json.dumps(out, indent=2))


@app.command("wait-landed")
def wait_landed(
    report: Annotated[Path, typer.Option(help="A feed report (k2 feed ... --report) to wait for.")],
    timeout: Annotated[float, typer.Option(help="Give up after S seconds.")] = 300.0,
) -> None:
    """Wait until every table holds at least the rows a feed report says were produced validly."""
    import time

    import msgspec

    from k2.feeds.report import FeedReport
    from k2.lake import TABLE_FOR_STREAM, ensure_tables, open_catalog

    settings = _settings()
    wanted = msgspec.json.decode(report.read_bytes(), type=FeedReport).counts
    tables = ensure_tables(open_catalog(settings.iceberg), settings.iceberg)
    deadline = time.monotonic() + timeout
    while True:
        have: dict[str, int] = {}
        for stream, name in TABLE_FOR_STREAM.items():
            tables[name].refresh()
            snap = tables[name].current_snapshot()
            have[stream] = int(snap.summary["total-records"] or 0) if snap and snap.summary else 0
        if all(have.get(k, 0) >= n for k, n in wanted.items()):
            console.print(f"landed: {have}")
            return
        if time.monotonic() > deadline:
            _fail(f"after {timeout:g} s the tables hold {have}, the feed produced {wanted}")
        time.sleep(1.0)


@app.command("config-value")
def config_value(key: Annotated[str, typer.Argument(help="section.key, e.g. api.port")]) -> None:
    """Print one setting's value (for scripts)."""
    value: Any = _settings()
    for part in key.split("."):
        if not hasattr(value, part):
            _fail(f"no setting {key}")
        value = getattr(value, part)
    typer.echo(value)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Each ingest process's level, lag, memory, buffer and pending backfill, and the pending
    backfill recorded in Iceberg. Exits 3 when no process wrote its status in the last 5 s."""
    import time

    from k2.ingest.status import read_statuses
    from k2.lake import open_catalog
    from k2.status_report import build_report, pid_exists, read_ledgers

    settings = _settings()
    ledgers, lake_error = {}, None
    try:
        ledgers = read_ledgers(open_catalog(settings.iceberg), settings.iceberg.namespace)
    except Exception as e:  # shown in the report: the processes are still worth seeing without the lake
        lake_error = f"{type(e).__name__}: {e}"
    statuses = read_statuses(settings.ingest.status_dir)
    report = build_report(statuses, ledgers, now=time.time(), pid_alive=pid_exists, lake_error=lake_error)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        Console().print(report.rich())
    if not report.alive:
        raise typer.Exit(3)


@tiers_app.command("suggest")
def tiers_suggest(
    sessions: Annotated[int, typer.Option(min=1, help="Newest sessions per exchange to rank over.")] = 5,
    tier1: Annotated[int, typer.Option(min=0, help="Tier-1 symbols per exchange.")] = 20,
    tier2: Annotated[int, typer.Option(min=0, help="Tier-2 symbols per exchange.")] = 80,
    exchange: Annotated[str | None, typer.Option(help="Only this exchange (e.g. ASX).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the tier file here (default: stdout).")] = None,
) -> None:
    """Tiers by traded notional (price x qty) over the last sessions, as a tier file to review."""
    from pyiceberg.exceptions import NoSuchTableError

    from k2.lake import TABLE_FOR_STREAM, open_catalog
    from k2.tier_suggestion import suggest_tiers

    settings = _settings()
    ident = (settings.iceberg.namespace, TABLE_FOR_STREAM["trades"])
    try:
        table = open_catalog(settings.iceberg).load_table(ident)
    except NoSuchTableError:
        _fail(f"no table {'.'.join(ident)}: nothing ingested yet")
    suggestion = suggest_tiers(table, sessions=sessions, tier1=tier1, tier2=tier2, exchange=exchange)
    if not suggestion.exchanges:
        _fail(f"no trades{f' of exchange {exchange}' if exchange else ''} in {'.'.join(ident)}")
    for ex in suggestion.exchanges:
        console.print(
            f"{ex.exchange}: {len(ex.ranked):,} symbols, sessions {ex.sessions[0]}..{ex.sessions[-1]} "
            f"({len(ex.sessions)}): tier 1 {len(ex.tier1)}, tier 2 {len(ex.tier2)}"
        )
    if out is None:
        typer.echo(suggestion.to_toml(), nl=False)
    else:
        out.write_text(suggestion.to_toml())
        console.print(f"wrote {out}")


@app.command("schema")
def schema(
    out: Annotated[Path, typer.Option(help="Directory for the JSON Schema files.")] = Path("docs/schema"),
) -> None:
    """Write the wire format's JSON Schema files (one per stream)."""
    from k2.wire import STREAMS, json_schema

    out.mkdir(parents=True, exist_ok=True)
    for stream in STREAMS:
        path = out / f"{stream}.schema.json"
        path.write_text(json.dumps(json_schema(stream), indent=2, sort_keys=True) + "\n")
        console.print(f"wrote {path}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Charts and summary.json go here.")] = Path(".k2/demo"),
    workdir: Annotated[
        Path, typer.Option(help="The demo's own warehouse, status files and broker (wiped each run).")
    ] = Path(".k2/demo/work"),
    auto: Annotated[bool, typer.Option("--auto", help="Do not wait for Enter between sections.")] = False,
    fast: Annotated[bool, typer.Option("--fast", help="Shorter waits: under 3 minutes.")] = False,
    bootstrap: Annotated[
        str | None, typer.Option(help="Use this Kafka cluster (own topics) instead of starting a broker.")
    ] = None,
    broker_port: Annotated[
        int | None, typer.Option(help="Start the demo's broker here (default broker.port; controller +1).")
    ] = None,
) -> None:
    """The ten-minute story: every claim k2 makes, shown on the real ASX week and checked live.

    Exits 1 if any check failed; writes summary.json (and charts) into --out.
    """
    import sys

    from k2.demo import DemoOptions, run_demo

    settings = _settings()
    configure_logging(settings.log.model_copy(update={"level": "WARNING"}))  # the story narrates
    options = DemoOptions(
        out=out,
        workdir=workdir,
        interactive=sys.stdin.isatty() and not auto,
        fast=fast,
        bootstrap=bootstrap,
        broker_port=broker_port,
    )
    try:
        summary = run_demo(settings, options, Console())
    except K2Error as e:
        _fail(str(e))
    if not summary["ok"]:
        raise typer.Exit(1)


@app.command("config-reference")
def config_reference(
    out: Annotated[Path, typer.Option(help="Where to write the reference.")] = Path("docs/configuration.md"),
) -> None:
    """Regenerate docs/configuration.md from the Settings model."""
    from k2.config_reference import render_reference

    out.write_text(render_reference())
    console.print(f"wrote {out}")


if __name__ == "__main__":  # pragma: no cover
    app()
