"""The installed ``llama-server`` is the portable build of scripts/setup.sh: x86-64-v3 (AVX2/FMA/F16C), no
AVX-512, no AMX, no tuning to the build host, so a binary built on one host runs on every x86-64-v3 host.
(A native build crashed with a general-protection fault in libggml-cpu on virtualised AMX hosts.)

    pytest tests/llm/test_portable_build.py -q
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moloch_exp.llm import llama_server as server_build

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup.sh"
# CPU features that must not be compiled in: they tie the build to hosts that have them.
HOST_BOUND = ("AVX512", "AVX_VNNI", "AMX")


def _setup_vars() -> tuple[str, str, str]:
    text = SETUP.read_text()
    version = re.search(r"^LLAMA_VERSION=(\S+)$", text, re.M).group(1)
    portable = re.search(r'^PORTABLE_FLAGS="(.+)"$', text, re.M).group(1)
    server = re.search(r'^SERVER_FLAGS="(.+)"$', text, re.M).group(1)
    return version, portable, server


def _features(system_info: str) -> dict[str, int]:
    """``"CPU : SSE3 = 1 | AVX2 = 1 | ..."`` -> {"SSE3": 1, "AVX2": 1, ...}."""
    return {k: int(v) for k, v in re.findall(r"([A-Z0-9_]+) = (\d+)", system_info)}


def _assert_portable(system_info: str) -> None:
    feats = _features(system_info)
    assert feats.get("AVX2") == 1 and feats.get("FMA") == 1 and feats.get("F16C") == 1, system_info
    bound = {k: v for k, v in feats.items() if v and k.startswith(HOST_BOUND)}
    assert not bound, f"host-bound CPU features compiled in: {bound} ({system_info})"


def test_setup_flags_are_portable():
    _, portable, server = _setup_vars()
    flags = dict(a[2:].split("=", 1) for a in portable.split())
    assert flags["GGML_NATIVE"] == "OFF" and flags["GGML_CPU_ALL_VARIANTS"] == "OFF"
    assert all(flags[f"GGML_{k}"] == "ON" for k in ("AVX", "AVX2", "FMA", "F16C"))
    assert all(flags[k] == "OFF" for k in flags if k.startswith(tuple(f"GGML_{b}" for b in HOST_BOUND)))
    assert {"GGML_AVX512", "GGML_AMX_INT8", "GGML_AMX_TILE"} <= set(flags)  # named, so never defaulted on
    assert "march=native" not in SETUP.read_text().replace("no -march=native", "")
    server_flags = dict(a[2:].split("=", 1) for a in server.split())
    # offline and self-contained: no web-UI download at build time, no shared libraries to find at run time
    assert server_flags["LLAMA_USE_PREBUILT_UI"] == "OFF" and server_flags["BUILD_SHARED_LIBS"] == "OFF"
    assert server_flags["LLAMA_CURL"] == "OFF" and server_flags["LLAMA_OPENSSL"] == "OFF"


def test_installed_binary_matches_setup_marker():
    """setup.sh writes sha256(version + flags)[:12] into .venv/llama_server_build_id after installing the binary."""
    version, portable, server = _setup_vars()
    marker = Path(sys.prefix) / "llama_server_build_id"
    if not marker.is_file():
        pytest.skip(f"{marker} is missing: this environment was not made by scripts/setup.sh")
    expected = hashlib.sha256(f"{version} {portable} {server}".encode()).hexdigest()[:12]
    assert marker.read_text().strip() == expected, "llama-server was built with other flags: rerun setup.sh"
    assert Path(server_build.binary()).resolve() == (Path(sys.prefix) / "bin" / "llama-server").resolve()


def _linked_files(binary: str) -> list[Path]:
    """The binary and every llama/ggml library it loads (none for setup.sh's static build)."""
    libs = [Path(binary)]
    ldd = shutil.which("ldd")
    if ldd:
        out = subprocess.run([ldd, binary], capture_output=True, text=True).stdout
        libs += [Path(p) for p in re.findall(r"=> (\S*(?:ggml|llama)\S*) ", out)]
    return libs


# slow: 10 s disassembling the 15 MB binary (the unit tier's 3 minutes, issue 20; CI runs it)
@pytest.mark.slow
def test_binary_has_no_avx512_or_amx_instructions():
    """The machine code itself: no zmm (AVX-512) registers, no AMX tile instructions, in the binary and its
    llama/ggml libraries."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    files = _linked_files(server_build.binary())
    assert len(files) == 1, f"setup.sh builds a static llama-server, but it loads {files[1:]}"
    for f in files:
        code = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(f.resolve())], capture_output=True,
                              text=True, check=True).stdout
        assert "%ymm" in code and "vfmadd" in code  # AVX2/FMA are there, so the scan reads real instructions
        hits = re.findall(r"%zmm\d+|\btileloadd\w*|\btdpb\w+|\bldtilecfg\b", code)
        assert not hits, f"{f.name}: {len(hits)} AVX-512/AMX instructions, e.g. {hits[:3]}"


def test_binary_names_its_llama_cpp_build():
    build = server_build.build_id()
    # the vendored llama.cpp's commit from --version, and the binary's own digest
    assert re.fullmatch(r"\S+-b\d+-[0-9a-f]{7,}-[0-9a-f]{12}", build), build


@pytest.mark.server
def test_managed_server_logs_a_portable_system_info(llama_server):
    info = llama_server.system_info()
    assert info is not None, f"no system-info line in {llama_server.log_path}"
    _assert_portable(info)
