"""Helpers that make real test ELFs (with gcc) and wheels (good and broken).

Nothing here is mocked: ISA modules are compiled from intrinsics so the
instructions surely appear, and wheels are real zip files with a RECORD whose
hashes are computed, so a test breaks exactly one thing at a time.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import shutil
import subprocess
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

# ---------------------------------------------------------------- ELFs

# One source whose functions switch on with the compiler's feature macros, so
# each flag set below adds exactly its own extension, cumulatively like the
# five packages (avx2 < avx512 < +VNNI < +BF16 < +AMX).
X86_SOURCE = r"""
#include <immintrin.h>
#include <stddef.h>

void add_f32(float *a, const float *b, size_t n) {
    for (size_t i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(a + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
}
__m256i add_i32(__m256i a, __m256i b) { return _mm256_add_epi32(a, b); }

#ifdef __AVX512F__
__m512 f_ps(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
__m512i bw_epi16(__m512i a, __m512i b) { return _mm512_add_epi16(a, b); }
__m256i vl_mask(__m256i s, __mmask8 k, __m256i a, __m256i b) { return _mm256_mask_add_epi32(s, k, a, b); }
__m512d dq_and(__m512d a, __m512d b) { return _mm512_and_pd(a, b); }
#endif
#ifdef __AVX512VNNI__
__m512i vnni_dot(__m512i s, __m512i a, __m512i b) { return _mm512_dpbusd_epi32(s, a, b); }
#endif
#ifdef __AVX512BF16__
__m512 bf16_dot(__m512 s, __m512bh a, __m512bh b) { return _mm512_dpbf16_ps(s, a, b); }
#endif
#ifdef __AMX_BF16__
void amx_dot(const void *cfg, const void *a, const void *b, void *c) {
    _tile_loadconfig(cfg);
    _tile_loadd(1, a, 64);
    _tile_loadd(2, b, 64);
    _tile_loadd(0, c, 64);
    _tile_dpbf16ps(0, 1, 2);
    _tile_stored(0, c, 64);
    _tile_release();
}
#endif
"""

_AVX512 = ["-mavx2", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"]
X86_LEVELS: dict[str, list[str]] = {
    "avx2": ["-mavx2"],
    "avx512": _AVX512,
    "avx512vnni": [*_AVX512, "-mavx512vnni"],
    "avx512bf16": [*_AVX512, "-mavx512vnni", "-mavx512bf16"],
    "amxbf16": [*_AVX512, "-mavx512vnni", "-mavx512bf16", "-mamx-tile", "-mamx-bf16"],
}

A64_SOURCE = r"""
#include <arm_neon.h>

float32x4_t neon_add(float32x4_t a, float32x4_t b) { return vaddq_f32(a, b); }
#ifdef __ARM_FEATURE_DOTPROD
int32x4_t dot(int32x4_t r, int8x16_t a, int8x16_t b) { return vdotq_s32(r, a, b); }
#endif
#ifdef __ARM_FEATURE_FP16_VECTOR_ARITHMETIC
float16x8_t add_f16(float16x8_t a, float16x8_t b) { return vaddq_f16(a, b); }
#endif
#ifdef __ARM_FEATURE_BF16_VECTOR_ARITHMETIC
float32x4_t bf_dot(float32x4_t r, bfloat16x8_t a, bfloat16x8_t b) { return vbfdotq_f32(r, a, b); }
float32x4_t bf_mmla(float32x4_t r, bfloat16x8_t a, bfloat16x8_t b) { return vbfmmlaq_f32(r, a, b); }
float32x4_t bf_mlal(float32x4_t r, bfloat16x8_t a, bfloat16x8_t b) { return vbfmlalbq_f32(r, a, b); }
bfloat16x4_t bf_cvt(float32x4_t a) { return vcvt_bf16_f32(a); }
#endif
#ifdef __ARM_FEATURE_MATMUL_INT8
int32x4_t i8_smmla(int32x4_t r, int8x16_t a, int8x16_t b) { return vmmlaq_s32(r, a, b); }
uint32x4_t i8_ummla(uint32x4_t r, uint8x16_t a, uint8x16_t b) { return vmmlaq_u32(r, a, b); }
int32x4_t i8_usmmla(int32x4_t r, uint8x16_t a, int8x16_t b) { return vusmmlaq_s32(r, a, b); }
int32x4_t i8_usdot(int32x4_t r, uint8x16_t a, int8x16_t b) { return vusdotq_s32(r, a, b); }
int32x4_t i8_sudot(int32x4_t r, int8x16_t a, uint8x16_t b) { return vsudotq_laneq_s32(r, a, b, 1); }
#endif
#ifdef __ARM_FEATURE_SVE
#include <arm_sve.h>
void sve_add(float *a, const float *b, int n) {
    for (int i = 0; i < n; i += svcntw()) {
        svbool_t p = svwhilelt_b32(i, n);
        svst1(p, a + i, svadd_x(p, svld1(p, a + i), svld1(p, b + i)));
    }
}
#endif
#ifdef __ARM_FEATURE_SVE2
svint32_t sve2_mlal(svint32_t a, svint16_t b, svint16_t c) { return svmlalb(a, b, c); }
#endif
"""

# Graviton2-class baseline, then one ARMv8.6/SVE extension on top each.
_A64_BASE = "armv8.2-a+dotprod+fp16"
A64_LEVELS: dict[str, str] = {
    "base": _A64_BASE,
    "bf16": _A64_BASE + "+bf16",
    "i8mm": _A64_BASE + "+i8mm",
    "sve": _A64_BASE + "+sve",
    "sve2": _A64_BASE + "+sve2",
}
A64_CC = "aarch64-linux-gnu-gcc"

# Needs a glibc symbol version newer than manylinux_2_28 allows: from glibc
# 2.34 on, pthread_create is versioned GLIBC_2.34 (this host has 2.36).
NEW_GLIBC_SOURCE = r"""
#include <pthread.h>
static void *run(void *arg) { return arg; }
int start_thread(void) { pthread_t t; return pthread_create(&t, 0, run, 0); }
"""


def have(cc: str) -> bool:
    return shutil.which(cc) is not None


def compile_shared(source: str, out: Path, flags: Iterable[str] = (), cc: str = "gcc") -> Path:
    """Compile C ``source`` into the shared object ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".c")
    src.write_text(source)
    cmd = [cc, "-O2", "-shared", "-fPIC", *flags, str(src), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def compile_x86(level: str, out: Path) -> Path:
    return compile_shared(X86_SOURCE, out, X86_LEVELS[level])


def compile_a64(level: str, out: Path) -> Path:
    # Freestanding: Debian's cross gcc comes without the arm64 libc headers,
    # and intrinsics need none of libc.
    return compile_shared(A64_SOURCE, out, ["-ffreestanding", "-nostdlib", f"-march={A64_LEVELS[level]}"], A64_CC)


# ---------------------------------------------------------------- wheels

GOOD_README = """# vllm-cpu test package

A *Markdown* README, as the real packages carry.
"""


def record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def dist_name(name: str) -> str:
    """Wheel filename form of a project name (PEP 427 escaping)."""
    return name.replace("-", "_").replace(".", "_").lower()


def make_wheel(
    out_dir: Path,
    name: str,
    version: str,
    members: Mapping[str, bytes],
    *,
    tags: Iterable[str] = ("cp38-abi3-manylinux_2_28_x86_64",),
    wheel_tags: Iterable[str] | None = None,
    requires_python: str | None = ">=3.10",
    readme: str = GOOD_README,
    readme_type: str = "text/markdown",
    record_skip: Iterable[str] = (),
    record_override: Mapping[str, bytes] | None = None,
    stored: Iterable[str] = (),
    extra_metadata: Iterable[str] = (),
) -> Path:
    """Assemble a wheel; by default a correct one.

    ``tags`` go into the filename (compressed as ``py-abi-plat1.plat2`` when
    they share interpreter and ABI) and, unless ``wheel_tags`` differs, into
    WHEEL's ``Tag:`` lines. ``record_skip`` leaves members out of RECORD;
    ``record_override`` lists a member with the hash/size of other bytes;
    ``stored`` members are written uncompressed (so a byte can be flipped).
    """
    tags = list(tags)
    dist = dist_name(name)
    info = f"{dist}-{version}.dist-info"
    meta = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        "Summary: test package",
        "License: Apache-2.0",
    ]
    if requires_python is not None:
        meta.append(f"Requires-Python: {requires_python}")
    meta += list(extra_metadata)  # e.g. "Requires-Dist: torch==2.8.0+cpu"
    meta.append(f"Description-Content-Type: {readme_type}")
    metadata = "\n".join(meta) + "\n\n" + readme
    wheel = ["Wheel-Version: 1.0", "Generator: wheelkit", "Root-Is-Purelib: false"]
    wheel += [f"Tag: {t}" for t in (tags if wheel_tags is None else wheel_tags)]

    files: dict[str, bytes] = dict(members)
    files[f"{info}/METADATA"] = metadata.encode()
    files[f"{info}/WHEEL"] = ("\n".join(wheel) + "\n").encode()
    skip = set(record_skip)
    override = dict(record_override or {})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for path, data in files.items():
        if path in skip:
            continue
        listed = override.get(path, data)
        writer.writerow([path, record_hash(listed), len(listed)])
    writer.writerow([f"{info}/RECORD", "", ""])
    files[f"{info}/RECORD"] = buf.getvalue().encode()

    out_dir.mkdir(parents=True, exist_ok=True)
    whl = out_dir / f"{dist}-{version}-{_compress_tags(tags)}.whl"
    stored_set = set(stored)
    with zipfile.ZipFile(whl, "w") as zf:
        for path, data in files.items():
            method = zipfile.ZIP_STORED if path in stored_set else zipfile.ZIP_DEFLATED
            zf.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), data, compress_type=method)
    return whl


def _compress_tags(tags: list[str]) -> str:
    parts = [t.split("-") for t in tags]
    fields = [sorted({p[i] for p in parts}) for i in range(3)]
    return "-".join(".".join(f) for f in fields)


def flip_byte(whl: Path, member: str, offset: int = 0) -> None:
    """Corrupt one byte of a *stored* member in place, so its CRC no longer matches."""
    with zipfile.ZipFile(whl) as zf:
        info = zf.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{member} is compressed; write it with stored=[...]")
    with open(whl, "r+b") as f:
        f.seek(info.header_offset + 26)  # local header: name and extra lengths
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
        pos = info.header_offset + 30 + name_len + extra_len + offset
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0xFF]))


# ---------------------------------------------------------------- provenance records


def sample_record(package: str = "vllm-cpu", arch: str = "x86_64", *, built: str | None = "2.8.0+cpu",
                  pin: str | None = "torch==2.8.0+cpu", compiler: str = "c++ (GNU 12.2.0)", root_os: str | None = None,
                  platform_tag: str = "manylinux_2_28_x86_64", sizes: tuple[int, int] = (31_000_000, 900_000)):
    """A complete build record (vllm_cpu_build.provenance.Record) as ``build`` writes one."""
    from vllm_cpu_build import provenance as p
    from vllm_cpu_build.enums import Arch, BuildEnvKind, RunnerKind

    root = p.RunnerInfo(RunnerKind.ROOT, "/r.tar", "/cache/r", "ab" * 32, root_os, "bwrap") if root_os \
        else p.RunnerInfo(RunnerKind.HOST)
    matches = pin is None or (built is not None and pin.split("==")[1] == built)
    return p.Record(
        package=package, version="0.11.2", arch=Arch(arch),
        variant=p.VariantInfo({"disable_avx512": True, "avx512vnni": False, "avx512bf16": False, "amxbf16": False},
                              ["avx2"]),
        source=p.Source("0.11.2", "0.11", sdist="vllm-0.11.2.tar.gz", sdist_sha256="cd" * 32),
        build=p.BuildInfo({"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_DISABLE_AVX512": "true"}, [], {}, "3.11",
                          compiler, root, p.BuildEnvInfo(BuildEnvKind.MANAGED, "k" * 16, {"torch": built or ""})),
        torch=p.Torch(pin, built, matches),
        platform=p.Platform("manylinux_2_28", platform_tag, platform_tag),
        strip=p.Strip(True, {"vllm/_C.abi3.so": p.ModuleSize(*sizes)}))
