"""The machine block every benchmark prints first (benchmarks/bench_utils.py): parsing and formatting."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_utils import ISA_FLAGS, format_machine, gemm_libraries, machine_info, parse_cpuinfo  # noqa: E402

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: something else
flags\t\t: fpu
"""


def test_cpuinfo_gives_the_model_and_the_isa_flags_of_the_first_processor():
    info = parse_cpuinfo(XEON)
    assert info["cpu"] == "Intel(R) Xeon(R) Platinum 8488C"
    assert info["isa"] == dict.fromkeys(ISA_FLAGS, True)


def test_avx2_only_cpu_and_missing_fields():
    amd = parse_cpuinfo("model name\t: AMD EPYC\nflags\t\t: fpu avx avx2 avx512_vnni\n")
    assert amd["isa"] == {flag: flag == "avx2" for flag in ISA_FLAGS}  # avx512_vnni is not avx512f
    bare = parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd\n")  # e.g. an ARM CPU: no model name, no flags
    assert bare["cpu"] and not any(bare["isa"].values())


def test_block_names_cpu_isa_gemm_versions_and_marks_slow_dtypes():
    info = machine_info(threads=2, rates=False)
    info["matmul"] = {"fp32": {"n": 1024, "gflops": 30.0, "native": True},
                      "bf16": {"n": 512, "gflops": 1.0, "native": False}}  # fmt: skip
    text = format_machine(info)
    assert info["cpu"] in text and "torch CPU capability" in text
    for path in gemm_libraries():
        assert f"gemm {path}: " in text
    assert "torch " + info["versions"]["torch"] in text and "diffusers " in text
    assert "fp32 30 GFLOP/s (n=1024), bf16 1 GFLOP/s (n=512): no native kernels" in text
