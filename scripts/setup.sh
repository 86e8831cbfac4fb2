#!/usr/bin/env bash
# Set up .venv from nothing (CPU machine): torch's CPU wheel first, then a portable llama.cpp, then the project.
#   bash scripts/setup.sh
# llama-cpp-python[server] is built from source once (about 5 minutes on 2 cores) with flags that do not
# depend on this host's CPU (x86-64-v3: AVX2/FMA/F16C/BMI2; no -march=native, no AVX-512, no AMX), so the
# wheel runs on every x86-64-v3 host. A native build crashed with a general-protection fault in libggml-cpu
# on virtualised hosts that advertise AMX. The wheel is kept in a cache keyed by version and flags.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/system_packages.sh  # chromium, redis-server for the tests (apt; skipped without root)
LLAMA_VERSION=0.3.36
# Exported for the build; GGML_NATIVE=OFF stops ggml from probing this host, the rest names the target ISA.
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF"
export FORCE_CMAKE=1
FLAGS_ID=$(printf '%s' "$LLAMA_VERSION $CMAKE_ARGS" | sha256sum | cut -c1-12)
WHEEL_DIR=${MOLOCH_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/moloch_exp/wheels}/llama-cpp-python-$LLAMA_VERSION-$FLAGS_ID

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# A plain `torch` would pull a multi-GB CUDA build; 2.13.0 takes the CPU wheel.
.venv/bin/python -m pip install -q torch==2.13.0
if ! ls "$WHEEL_DIR"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $LLAMA_VERSION (portable x86-64-v3, about 5 minutes) into $WHEEL_DIR"
  mkdir -p "$WHEEL_DIR.partial"
  # --no-cache-dir: pip's own wheel cache is keyed by the sdist only, so it would hand back a native build.
  .venv/bin/python -m pip wheel -q --no-deps --no-binary llama-cpp-python --no-cache-dir \
    -w "$WHEEL_DIR.partial" "llama-cpp-python==$LLAMA_VERSION"
  rm -rf "$WHEEL_DIR" && mv "$WHEEL_DIR.partial" "$WHEEL_DIR"
fi
installed=$(cat .venv/llama_cpp_build_id 2>/dev/null || true)
if [ "$installed" != "$FLAGS_ID" ]; then
  .venv/bin/python -m pip install -q --force-reinstall --no-deps "$WHEEL_DIR"/llama_cpp_python-*.whl
  echo "$FLAGS_ID" > .venv/llama_cpp_build_id
fi
.venv/bin/python -m pip install -q -e '.[test]'
