#!/usr/bin/env bash
# Starts walnut the way ../shared/bench starts nutcracker (fnv1a_64, ketama, one connection per
# server, preconnect, no timeout), for side-by-side runs:
#   bench_mc.py --target nutcracker --target 'walnut,127.0.0.1:32200,bench/walnut-mc.sh {listen} {backends} 1'
# Arguments: LISTEN BACKENDS(comma list) [WORKERS] [rewrite]
# With `rewrite`, every request also runs the key-rewrite example plugin, rewriting `key:` to
# itself, so the keys (and the hit ratio) stay those of the load while the plugin does its work.
# With `compress`, the compress example plugin stores values compressed (those of 256 bytes and
# more) and reads them back, its time budget raised for 100 KB values.
# WALNUT_BIN, when set, is the walnut binary to run (e.g. an older build, for A/B runs).
# WALNUT_ADMIN, when set, is the admin listener's address (--admin), serving /metrics.
set -euo pipefail
listen=$1 backends=$2 workers=${3:-1} plugin=${4:-}
here=$(cd "$(dirname "$0")/.." && pwd)
conf=$(mktemp -t walnut-bench-XXXXXX.yml)
{
  printf 'bench:\n  listen: %s\n  hash: fnv1a_64\n  distribution: ketama\n  backlog: 1024\n' "$listen"
  printf '  preconnect: true\n  auto_eject_hosts: false\n  server_connections: 1\n  servers:\n'
  IFS=, read -ra list <<<"$backends"
  for b in "${list[@]}"; do printf '   - %s:1\n' "$b"; done
  if [ "$plugin" = rewrite ]; then
    printf '  plugins:\n   - path: %s\n     config: { replace: "key:", with: "key:" }\n' \
      "$here/target/wasm32-unknown-unknown/release/key_rewrite.wasm"
  elif [ "$plugin" = compress ]; then
    printf '  plugins:\n   - path: %s\n     time_budget_ms: 100\n' \
      "$here/target/wasm32-unknown-unknown/release/compress.wasm"
  fi
} >"$conf"
stats_port=$(( ${listen##*:} + 1 ))
admin=()
[ -n "${WALNUT_ADMIN:-}" ] && admin=(--admin "$WALNUT_ADMIN")
exec "${WALNUT_BIN:-$here/target/release/walnut}" -c "$conf" -w "$workers" -s "$stats_port" -a 127.0.0.1 -v 4 "${admin[@]}"
