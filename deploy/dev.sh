#!/usr/bin/env bash
# Fresh-machine entry points for development and CI:
#
#   deploy/dev.sh setup   make/refresh the virtualenv and install the project (+ dev extras)
#   deploy/dev.sh test    setup, system tools for the tests (Chromium, promtool, kustomize),
#                         lint, start the local Kafka + Redis, run the test suite, stop them
#   deploy/dev.sh fuzz    setup, then coverage-guided fuzzing of the decoders (atheris) for
#                         FUZZ_SECONDS (300); the corpus grows under ~/.cache/ama-stream/fuzz,
#                         crashes are saved as ./fuzz-crashes/crash-*
#   deploy/dev.sh chaos   setup, then the full chaos suite (bench/chaos.py: both guarantees, 10
#                         faults of each kind per guarantee, ~25 min on 2 cores), its table
#                         written to docs/chaos.md and docs/chaos.json
#   deploy/dev.sh demo    setup, then `ama-stream demo` (brings up the stack itself and stops
#                         what it started); the full SMD data from ../shared/data/smd if present
#
# The virtualenv lives outside the checkout (AMA_VENV, default ~/.cache/ama-stream/venv) so that a
# fresh clone reuses it and torch is downloaded once per machine, not once per run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${AMA_VENV:-$HOME/.cache/ama-stream/venv}
PY=${PYTHON:-python3}

log() { printf '\033[1m[dev] %s\033[0m\n' "$*" >&2; }

setup() {
  command -v java >/dev/null || { log "java (17+) is required for the local Kafka broker"; exit 1; }
  command -v mvn >/dev/null || { log "mvn is required to fetch the Kafka jars"; exit 1; }
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
  fi
  # Re-resolve dependencies only when pyproject.toml changed; always re-point the editable
  # install at this checkout (CI clones into a new folder each time).
  local stamp="$VENV/.ama-stream-deps" want
  want=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing dependencies into $VENV (first run downloads torch: several GB)"
    "$VENV/bin/pip" install -q -e "$ROOT[dev]"
    echo "$want" > "$stamp"
  fi
  "$VENV/bin/pip" install -q --no-deps -e "$ROOT"
  export PATH="$VENV/bin:$PATH"
}

# System tools the tests need besides Kafka and Redis: Debian's Chromium and its WebDriver (the
# dashboard's browser tests), promtool (from the prometheus package: the alert rules' checks
# and unit tests) and openssl (tests/security: the TLS Redis's key, out of keytool's PKCS#12).
# Installed with apt-get when missing and we are root; a no-op once present.
# redis-server and redis-cli (the Redis Cluster tests) come with `ama-stream local up`'s
# redis-server package; kustomize (tests/deploy renders deploy/k8s) is kubectl's built-in one
# when a kubectl with kustomize v5 is there, else built once from its Go module.
system_tools() {
  kustomize_tool
  local need=()
  command -v chromium >/dev/null || need+=(chromium)
  command -v chromedriver >/dev/null || need+=(chromium-driver)
  command -v promtool >/dev/null || need+=(prometheus)
  command -v openssl >/dev/null || need+=(openssl)  # tests/security: the TLS Redis's key
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${need[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
  else
    log "missing ${need[*]}: install them (Debian: apt-get install ${need[*]}); tests/dashboard and tests/deploy need them"
  fi
}

KUSTOMIZE_VERSION=v5.5.0
kustomize_tool() {
  command -v kustomize >/dev/null && return 0
  if command -v kubectl >/dev/null && kubectl version --client 2>/dev/null | grep -q "Kustomize Version: v5"; then
    return 0
  fi
  if command -v go >/dev/null; then
    log "building kustomize $KUSTOMIZE_VERSION into $VENV/bin (go install, once)"
    GOBIN="$VENV/bin" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  else
    log "missing kustomize: install it (or kubectl with kustomize v5); tests/deploy needs it"
  fi
}

run_tests() {
  setup
  system_tools
  cd "$ROOT"
  log "lint: ruff, mypy"
  ruff check .
  ruff format --check .
  mypy
  # Reuse a stack that is already up (a developer's); otherwise start one and always stop it.
  if ! ama-stream local status >/dev/null 2>&1; then
    trap 'log "stopping the local stack"; ama-stream local down || true' EXIT
    log "starting the local Kafka + Redis"
    ama-stream local up
  fi
  log "running the test suite"
  pytest "$@"
}

fuzz() {
  setup
  cd "$ROOT"
  local corpus="${AMA_FUZZ_CORPUS:-$HOME/.cache/ama-stream/fuzz}"
  mkdir -p "$corpus" fuzz-crashes
  PYTHONPATH="$ROOT:$ROOT/tests/fuzz" python -c \
    "import seeds, pathlib; seeds.write_corpus(pathlib.Path('$corpus'))"
  log "fuzzing the decoders for ${FUZZ_SECONDS:-300} s (corpus $corpus)"
  python tests/fuzz/fuzz_decoders.py -max_total_time="${FUZZ_SECONDS:-300}" -max_len=4096 \
    -print_final_stats=1 -artifact_prefix=fuzz-crashes/ "$corpus"
}

chaos() {
  setup
  cd "$ROOT"
  python -m bench.chaos --json docs/chaos.json --doc docs/chaos.md "$@"
}

case "${1:-}" in
  setup) setup ;;
  fuzz) fuzz ;;
  chaos) shift; chaos "$@" ;;
  test) shift; run_tests "$@" ;;
  demo)
    shift; setup; cd "$ROOT"
    smd="$ROOT/../shared/data/smd"
    if [ -d "$smd" ]; then set -- --data-dir "$smd" "$@"; fi
    exec ama-stream demo "$@" ;;
  *) echo "usage: $0 setup|test|demo|fuzz|chaos [args]" >&2; exit 2 ;;
esac
