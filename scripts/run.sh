#!/usr/bin/env bash
# `make run`: broker, ingest and the API, the ASX week replayed through them, then serving until
# Ctrl-C. Everything it starts it stops again (the broker too) on Ctrl-C or on failure.
set -euo pipefail
K2=${K2:-.venv/bin/k2}
LOGS=.k2/logs
mkdir -p "$LOGS"
PORT=$("$K2" config-value api.port 2>/dev/null || echo 8000)
BASE="http://127.0.0.1:${PORT}"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "== stopping ingest and api (each commits or finishes what it holds), then the broker"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$K2" broker stop || true
}
trap cleanup INT TERM EXIT

"$K2" broker start
echo "== ingest and api run in the background (logs in $LOGS/)"
"$K2" ingest >"$LOGS/ingest.log" 2>&1 & pids+=($!)
"$K2" api >"$LOGS/api.log" 2>&1 & pids+=($!)
for _ in $(seq 1 60); do
  curl -fsS "$BASE/health/ready" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "$BASE/health/ready" >/dev/null || { echo "the api did not become ready; see $LOGS/api.log"; exit 1; }

echo "== replaying ASX 10-14 March 2014 at full speed"
"$K2" feed replay asx --speed max --report .k2/asx-replay.json
echo "== waiting for ingest to land the replay"
"$K2" wait-landed --report .k2/asx-replay.json --timeout 300
"$K2" tables

cat <<MSG

== k2 is serving on $BASE (OpenAPI docs: $BASE/docs). Try:

  curl -s '$BASE/v1/trades?symbol=BHP&last=5'
  curl -s '$BASE/v1/bars?symbol=BHP&day=2014-03-11&interval=1-HOUR-LAST&format=csv'
  curl -s -X POST $BASE/v1/sql -H 'Content-Type: application/json' \\
       -d '{"sql": "SELECT symbol, count(*) AS trades FROM trades GROUP BY symbol ORDER BY trades DESC LIMIT 5"}'

  or in a terminal:  $K2 query trades BHP --last 10

Ctrl-C stops everything.
MSG
wait "${pids[@]}"
