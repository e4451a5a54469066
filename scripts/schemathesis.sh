#!/usr/bin/env bash
# Runs schemathesis against a running cepheus, using the server's own
# OpenAPI document: every operation gets generated requests (valid and
# invalid), and every answer must be no 5xx and must match the spec
# (status code, content type, headers, body schema).
#
# Starts the built binary (target/debug/cepheus, or $CEPHEUS_BIN) on a free
# loopback port with a temporary data directory, runs schemathesis, stops
# the server. Tunables: SCHEMATHESIS_MAX_EXAMPLES (per operation, default
# 100), SCHEMATHESIS_SEED.
#
#   cargo build && scripts/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${CEPHEUS_BIN:-target/debug/cepheus}"
if [ ! -x "$bin" ]; then
    echo "no binary at $bin: run cargo build first" >&2
    exit 2
fi
# The command, or where pip put it (a pyenv shim appears only after a rehash).
st="$(command -v schemathesis || true)"
if [ -z "$st" ]; then
    st="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/schemathesis"
fi
if [ ! -x "$st" ]; then
    echo "schemathesis is not installed: python3 -m pip install schemathesis" >&2
    exit 2
fi

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
dir="$(mktemp -d -t cepheus-schemathesis-XXXXXX)"
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

cat >"$dir/cepheus.toml" <<'TOML'
[timing]
timer_tick = "20ms"
checkpoint_interval = "200ms"
shutdown_grace = "2s"
TOML

env -u RUST_LOG "$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" \
    --config "$dir/cepheus.toml" >"$dir/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$dir/server.log" >&2; exit 1; fi
    sleep 0.1
done

# A rule and an event, so reads of existing things are exercised too.
curl -fsS -X POST "http://127.0.0.1:$port/v1/rules" -H 'content-type: application/yaml' \
    --data-binary @patterns/brute-force-login.yaml >/dev/null
curl -fsS -X POST "http://127.0.0.1:$port/v1/events" -H 'content-type: application/json' \
    --data '{"id":"e-1","key":"acct-1","type":"login_failed"}' >/dev/null

# Run from the temporary directory: schemathesis leaves its files in the
# working directory.
run_schemathesis() {
    (cd "$dir" && "$st" run "http://127.0.0.1:$port/openapi.json" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
        --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-100}" \
        ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"} \
        --phases examples,coverage,fuzzing \
        --exclude-path /v1/alerts/ws \
        --request-timeout 20 \
        --workers 2 \
        --no-color \
        --generation-database none) 2>&1 | tee "$dir/run.log"
    return "${PIPESTATUS[0]}"
}

status=0
run_schemathesis || status=$?
# NB: schemathesis 4.x sometimes fails inside its own generator (a
# hypothesis FlakyFailure while building bodies for a recursive schema,
# reported as "Runtime Error" and "1 error" with no failed check). Such a
# run says nothing about cepheus, so it is run once more with a new seed; a
# failed check ("failures" in the summary) is never retried.
summary="$(grep -E '^=+ .* in [0-9.]+s =+$' "$dir/run.log" | tail -n 1 || true)"
if [ "$status" -ne 0 ] && [[ "$summary" == *error* ]] && [[ "$summary" != *failure* ]] \
    && [ -z "${SCHEMATHESIS_SEED:-}" ]; then
    echo "schemathesis failed in its own generator ($summary): running it once more" >&2
    status=0
    run_schemathesis || status=$?
fi

if ! kill -0 "$pid" 2>/dev/null; then
    echo "cepheus died during the run; its log:" >&2
    cat "$dir/server.log" >&2
    exit 1
fi
if grep -q "panicked" "$dir/server.log"; then
    echo "cepheus panicked during the run; its log:" >&2
    grep -B2 -A10 "panicked" "$dir/server.log" >&2
    exit 1
fi
exit "$status"
