"""The installed llama.cpp is the portable build of scripts/setup.sh: x86-64-v3 (AVX2/FMA/F16C), no
AVX-512, no AMX, no tuning to the build host, so a wheel built on one host runs on every x86-64-v3 host.
(A native build crashed with a general-protection fault in libggml-cpu on virtualised AMX hosts.)

    pytest tests/llm/test_portable_build.py -q
"""
from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup.sh"
# CPU features that must not be compiled in: they tie the build to hosts that have them.
HOST_BOUND = ("AVX512", "AVX_VNNI", "AMX")


def _setup_vars() -> tuple[str, str]:
    text = SETUP.read_text()
    version = re.search(r"^LLAMA_VERSION=(\S+)$", text, re.M).group(1)
    cmake_args = shlex.split(re.search(r"^export CMAKE_ARGS=(.+)$", text, re.M).group(1))[0]
    return version, cmake_args


def _features(system_info: str) -> dict[str, int]:
    """``"CPU : SSE3 = 1 | AVX2 = 1 | ..."`` -> {"SSE3": 1, "AVX2": 1, ...}."""
    return {k: int(v) for k, v in re.findall(r"([A-Z0-9_]+) = (\d+)", system_info)}


def _assert_portable(system_info: str) -> None:
    feats = _features(system_info)
    assert feats.get("AVX2") == 1 and feats.get("FMA") == 1 and feats.get("F16C") == 1, system_info
    bound = {k: v for k, v in feats.items() if v and k.startswith(HOST_BOUND)}
    assert not bound, f"host-bound CPU features compiled in: {bound} ({system_info})"


def test_setup_flags_are_portable():
    _, cmake_args = _setup_vars()
    flags = dict(a[2:].split("=", 1) for a in cmake_args.split())
    assert flags["GGML_NATIVE"] == "OFF" and flags["GGML_CPU_ALL_VARIANTS"] == "OFF"
    assert all(flags[f"GGML_{k}"] == "ON" for k in ("AVX", "AVX2", "FMA", "F16C"))
    assert all(flags[k] == "OFF" for k in flags if k.startswith(tuple(f"GGML_{b}" for b in HOST_BOUND)))
    assert {"GGML_AVX512", "GGML_AMX_INT8", "GGML_AMX_TILE"} <= set(flags)  # named, so never defaulted on
    assert "march=native" not in SETUP.read_text().replace("no -march=native", "")


def test_installed_build_matches_setup_marker():
    """setup.sh writes sha256(version + flags)[:12] into .venv/llama_cpp_build_id after installing the wheel."""
    import llama_cpp

    version, cmake_args = _setup_vars()
    marker = Path(sys.prefix) / "llama_cpp_build_id"
    if not marker.is_file():
        pytest.skip(f"{marker} is missing: this environment was not made by scripts/setup.sh")
    expected = hashlib.sha256(f"{version} {cmake_args}".encode()).hexdigest()[:12]
    assert marker.read_text().strip() == expected, "llama-cpp-python was built with other flags: rerun setup.sh"
    assert llama_cpp.__version__ == version


def test_library_system_info_has_no_avx512_or_amx():
    import llama_cpp

    _assert_portable(llama_cpp.llama_print_system_info().decode())


def test_library_code_has_no_avx512_or_amx_instructions():
    """The machine code itself: no zmm (AVX-512) registers, no AMX tile instructions."""
    import llama_cpp

    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    libs = sorted((Path(llama_cpp.__file__).parent / "lib").glob("libggml-cpu*.so"))
    assert libs, "no libggml-cpu library next to llama_cpp"
    for lib in libs:
        code = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(lib.resolve())], capture_output=True,
                              text=True, check=True).stdout
        assert "%ymm" in code  # AVX2 is there, so the scan reads real instructions
        hits = re.findall(r"%zmm\d+|\btileloadd\w*|\btdpb\w+|\bldtilecfg\b", code)
        assert not hits, f"{lib.name}: {len(hits)} AVX-512/AMX instructions, e.g. {hits[:3]}"


def test_managed_server_logs_a_portable_system_info(llama_server):
    info = llama_server.system_info()
    assert info is not None, f"no system-info line in {llama_server.log_path}"
    _assert_portable(info)
