"""bench/kernel_profile.py: kernels and aten ops sorted by kind, and a real CPU profile summed by kind."""

from __future__ import annotations

import pytest

from bench.kernel_profile import format_profile, kind_of, profile_render


@pytest.mark.parametrize(("name", "kind"), [
    ("void cudnn::engines_precompiled::nchwToNhwcKernel<__nv_bfloat16>", "layout"),
    ("sm90_xmma_fprop_implicit_gemm_indexed_wo_smem_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "conv"),
    ("nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NTN", "gemm"),
    ("sm90_xmma_gemm_e4m3bf16_bf16f32_f32_tn_n_tilesize128x128x128_cublas", "fp8"),
    ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64>>", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x64x64_4x1x1_kernel0_0", "attention"),
    ("void at::native::(anonymous namespace)::RowwiseMomentsCUDAKernel<c10::BFloat16, float>", "norm"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>>", "elementwise"),
    ("void at::native::elementwise_kernel<128, 4, at::native::direct_copy_kernel_cuda>", "layout"),
    ("triton_red_fused_abs_amax_clamp_0", "fp8"),
    ("triton_poi_fused_add_silu_1", "fused"),
    ("aten::mkldnn_convolution", "conv"),
    ("aten::native_group_norm", "norm"),
    ("something_new", "other"),
])
def test_kernel_names_sort_by_kind(name: str, kind: str) -> None:
    assert kind_of(name) == kind


def test_a_cpu_profile_sums_op_time_by_kind() -> None:
    import torch

    image, weight, matrix = torch.randn(4, 16, 64, 64), torch.randn(32, 16, 3, 3), torch.randn(512, 512)

    def work() -> None:
        for _ in range(3):
            torch.nn.functional.conv2d(image, weight, padding=1)
            matrix @ matrix

    profile = profile_render(work, "cpu")
    assert {"conv", "gemm"} <= set(profile["shares"])
    assert sum(profile["shares"].values()) == pytest.approx(1.0)
    assert profile["device_ms"] > 0 and 0 < profile["busy"] <= 1.05
    top_kinds = [kind for _, kind, _ in profile["top"]]
    assert "conv" in top_kinds and "gemm" in top_kinds
    assert [share for *_, share in profile["top"]] == sorted((share for *_, share in profile["top"]), reverse=True)
    lines = format_profile(profile, "    ").splitlines()
    assert lines[0].startswith("device busy") and len(lines) == 1 + len(profile["top"])
    assert all(line.startswith("    ") for line in lines[1:])
