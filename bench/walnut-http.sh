#!/usr/bin/env bash
# Starts walnut as an HTTP reverse proxy the way ../shared/bench starts nginx (one worker, two
# upstream servers, keep-alive), for side-by-side runs:
#   bench_http.py --target direct --target nginx \
#     --target 'walnut,127.0.0.1:28200,bench/walnut-http.sh {listen} {b0} {b1}'
# Arguments: LISTEN B0 B1 [WORKERS] [guard]
# With `guard`, the location also runs the command-guard example plugin (refusing PUT, DELETE
# and POST), so GETs pay for one plugin call each.
# WALNUT_BIN, when set, is the walnut binary to run (e.g. an older build, for A/B runs).
set -euo pipefail
listen=$1 b0=$2 b1=$3 workers=${4:-1} plugin=${5:-}
here=$(cd "$(dirname "$0")/.." && pwd)
conf=$(mktemp -t walnut-http-bench-XXXXXX.yml)
{
  printf 'web:\n  protocol: http\n  listen: %s\n  timeout: 5000\n' "$listen"
  printf '  upstreams:\n    b:\n      servers: ["%s", "%s"]\n      keepalive: 64\n' "$b0" "$b1"
  printf '  locations:\n    - match: /\n      proxy_pass: b\n'
  if [ "$plugin" = guard ]; then
    printf '      plugins:\n        - path: %s\n          config: { methods: [PUT, DELETE, POST] }\n' \
      "$here/target/wasm32-unknown-unknown/release/command_guard.wasm"
  fi
} >"$conf"
stats_port=$(( ${listen##*:} + 1 ))
exec "${WALNUT_BIN:-$here/target/release/walnut}" -c "$conf" -w "$workers" -s "$stats_port" -a 127.0.0.1 -v 4
