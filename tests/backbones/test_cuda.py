"""The CUDA paths: the same numbers as the CPU, half precisions within the issue's fidelity bounds.

Skipped without a CUDA GPU (CI has none); `bash benchmarks/device.sh` runs them on a lent GPU.
"""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import winclip
from helpers import TINY, textured
from helpers.features import fidelity, max_abs_diff, reference_features
from winclip.method.windows import coverage_matrix

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(autouse=True)
def exact_fp32():
    """No TF32 anywhere, so that fp32 on the GPU is compared with fp32 on the CPU."""
    matmul = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    finally:
        torch.set_float32_matmul_precision(matmul)


def cuda_model(precision: str = "fp32", **options) -> winclip.WinCLIP:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", winclip.RandomWeightsWarning)
        return winclip.WinCLIP(TINY, None, device="cuda", precision=precision, **options).set_object("bottle")


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(textured(rng, 64, 64)) for _ in range(n)]


def test_fused_path_equals_open_clip_modules_on_cuda():
    m = cuda_model()
    assert m.backbone.tower.fused
    x = torch.randn(3, 3, 64, 64, device="cuda")
    with torch.inference_mode():
        fast = m.backbone.tower.encode(x, (2, 3))
        ref = reference_features(m.clip.visual, x)
    assert fast.image.device.type == "cuda"
    assert max_abs_diff(fast, ref) <= 1e-4


def test_cuda_fp32_matches_the_cpu():
    refs, queries = images(2, seed=1), images(6)
    gpu = cuda_model().fit(refs).predict(queries)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", winclip.RandomWeightsWarning)
        cpu = winclip.WinCLIP(TINY, None, device="cpu").set_object("bottle").fit(refs).predict(queries)
    assert gpu.scores.device.type == "cpu" and gpu.maps[0].device.type == "cpu"
    torch.testing.assert_close(gpu.scores, cpu.scores, rtol=1e-4, atol=1e-5)
    assert len(gpu.maps) == len(cpu.maps) == 6
    for a, b in zip(gpu.maps, cpu.maps, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_auto_is_fp16_and_half_precisions_stay_faithful():
    refs, queries = images(1, seed=1), images(12)
    reference = winclip.WinCLIP(cuda_model("fp32").backbone.unfused()).set_object("bottle").fit(refs)
    auto = cuda_model("auto").fit(refs)
    assert auto.backbone.precision == "fp16" and auto.backbone.dtype == torch.float16
    rho, rel = fidelity(auto, reference, queries)
    assert rho >= 0.999 and rel <= 1e-2  # the bounds
    rho, rel = fidelity(cuda_model("bf16").fit(refs), reference, queries)
    assert rho > 0.9 and rel <= 1e-2  # bf16 swaps close scores of random weights (as on the CPU)


def test_streaming_on_cuda_goes_past_a_bad_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    inputs = [*images(3), str(bad), *images(2, seed=5)]
    results = list(cuda_model().fit(images(1, seed=1)).iter_predict(inputs, batch_size=2))
    assert [r.index for r in results] == list(range(6))
    assert [r.error is None for r in results] == [True, True, True, False, True, True]
    assert "broken.png" in str(results[3].error)
    assert all(r.map.shape == (64, 64) and r.map.device.type == "cpu" for r in results if r.error is None)


def test_scoring_state_lives_on_the_gpu():
    m = cuda_model().fit(images(2, seed=1))
    assert m.memory_.patches.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in m.prototypes_)
    for k in m.options.scales:
        cov = m.scorer.coverage(k)
        assert cov.device.type == "cuda" and cov is m.scorer.coverage(k)  # cached, not copied per call
        assert torch.equal(cov.cpu(), coverage_matrix(m.backbone.grid, k))


def test_peak_memory_grows_with_the_batch_not_the_image_count():
    m = cuda_model().fit(images(1, seed=1))
    peaks = []
    for count in (8, 64):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        assert sum(r.error is None for r in m.iter_predict(images(count), batch_size=4)) == count
        peaks.append(torch.cuda.max_memory_allocated() - before)
    assert peaks[1] <= 1.1 * peaks[0] + 2**20
