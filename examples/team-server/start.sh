#!/usr/bin/env bash
# A team's activelab on one machine: PostgreSQL for MLflow's backend store, an `mlflow server`
# that proxies artifacts (clients need no storage credentials), and the app behind a login.
#
#   bash examples/team-server/start.sh [DATA_DIR]       (Ctrl-C stops all three)
#
# Needs: PostgreSQL's initdb/pg_ctl (Debian: apt-get install postgresql), and activelab with
# its postgres extra (pip install 'mlflow-activelab[postgres]'). Run it as a normal user:
# PostgreSQL refuses to run as root.
#
# Ports (all on 127.0.0.1 unless you change HOST): PostgreSQL 5432, MLflow 5000, app 5006.
# People train from their own machines with MLFLOW_TRACKING_URI=http://<this host>:5000.
set -euo pipefail
DATA="${1:-$HOME/activelab-team}"
HOST="${HOST:-127.0.0.1}"
PGPASSWORD="${PGPASSWORD:-mlflow}"  # the database password (local connections only)
PG_PORT="${PG_PORT:-5432}"; MLFLOW_PORT="${MLFLOW_PORT:-5000}"; APP_PORT="${APP_PORT:-5006}"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
PATH="${PG_BIN:+$PG_BIN:}$PATH"
mkdir -p "$DATA"

# 1. PostgreSQL: a cluster of its own under DATA (kept between starts)
if [ ! -d "$DATA/postgres" ]; then
  initdb -D "$DATA/postgres" -U mlflow -A scram-sha-256 --pwfile=<(echo "$PGPASSWORD") >/dev/null
fi
pg_ctl -D "$DATA/postgres" -l "$DATA/postgres.log" -w \
  -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $DATA" start
trap 'kill ${MLFLOW_PID:-} ${APP_PID:-} 2>/dev/null; pg_ctl -D "$DATA/postgres" -m fast stop' EXIT

# 2. The tracking server: runs and tags in PostgreSQL, artifacts proxied from DATA/artifacts
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server \
  --backend-store-uri "postgresql://mlflow:${PGPASSWORD}@127.0.0.1:$PG_PORT/postgres" \
  --artifacts-destination "$DATA/artifacts" \
  --host "$HOST" --port "$MLFLOW_PORT" --workers 2 >"$DATA/mlflow.log" 2>&1 &
MLFLOW_PID=$!
for _ in $(seq 120); do  # ~10 s usually; give up after two minutes
  curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null && break
  kill -0 "$MLFLOW_PID" 2>/dev/null || { echo "mlflow server failed; see $DATA/mlflow.log" >&2; exit 1; }
  sleep 1
done
curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null || { echo "mlflow server did not answer" >&2; exit 1; }
echo "MLflow:  http://$HOST:$MLFLOW_PORT"

# 3. The app, with a login (add people with: activelab users add NAME --file DATA/users.json)
if [ ! -f "$DATA/users.json" ]; then
  echo "First user of the app:"
  if [ -n "${FIRST_PASSWORD:-}" ]; then  # unattended: the password from the environment
    echo "$FIRST_PASSWORD" | activelab users add "${USER:-admin}" --file "$DATA/users.json" --password-stdin
  else
    activelab users add "${USER:-admin}" --file "$DATA/users.json"
  fi
fi
ORIGIN=()
[ "$HOST" = "127.0.0.1" ] || ORIGIN=(--allow-origin "${APP_NAME:-$(hostname -f)}:$APP_PORT")
MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT" activelab serve \
  --host "$HOST" --port "$APP_PORT" --auth "$DATA/users.json" "${ORIGIN[@]}" &
APP_PID=$!
wait "$APP_PID"
