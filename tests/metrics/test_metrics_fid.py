"""FID: the Fréchet distance in closed form, the streaming statistics, the plumbing with a random-weight
InceptionV3 (no download), and where the real weights are looked for."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cache_dit.metrics import FrechetInceptionDistance, MissingInceptionWeightsError
from cache_dit.metrics import fid as fid_module
from cache_dit.metrics.fid import (
    INCEPTION_WEIGHTS_ENV,
    INCEPTION_WEIGHTS_FILENAME,
    ActivationStatistics,
    RunningMoments,
    find_inception_weights,
    frechet_distance,
)

DIMS = 64  # InceptionV3's first block: cheap, and enough to exercise every step


# ----------------------------------------------------------------------------------------------------------
# Math
# ----------------------------------------------------------------------------------------------------------


def _gaussian(mean: np.ndarray, covariance: np.ndarray) -> ActivationStatistics:
    return ActivationStatistics(mean=mean, covariance=covariance, n=10_000)


def test_frechet_distance_of_diagonal_gaussians_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.5, 2.0, 5), rng.uniform(0.5, 2.0, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    distance = frechet_distance(_gaussian(mu1, np.diag(s1)), _gaussian(mu2, np.diag(s2)))
    assert distance == pytest.approx(expected, rel=1e-9)

    # the distance is invariant under a rotation of both Gaussians: same value with full covariances
    rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    rotated = frechet_distance(
        _gaussian(rotation @ mu1, rotation @ np.diag(s1) @ rotation.T),
        _gaussian(rotation @ mu2, rotation @ np.diag(s2) @ rotation.T),
    )
    assert rotated == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_of_identical_statistics_is_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 16))  # rank-deficient on purpose
    stats = _gaussian(x.mean(0), np.cov(x, rowvar=False))
    assert frechet_distance(stats, stats) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(stats, stats) >= 0.0


def test_running_moments_equal_numpy_over_uneven_batches():
    rows = np.random.default_rng(2).normal(loc=3.0, size=(23, 6))
    moments = RunningMoments(6)
    for start, stop in [(0, 1), (1, 8), (8, 8), (8, 20), (20, 23)]:
        moments.update(rows[start:stop])
    stats = moments.statistics()
    assert stats.n == 23
    np.testing.assert_allclose(stats.mean, rows.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance, np.cov(rows, rowvar=False), rtol=1e-10)

    single = RunningMoments(6)
    single.update(rows[:1])
    with pytest.raises(ValueError, match="at least 2 images"):
        single.statistics()


# ----------------------------------------------------------------------------------------------------------
# Plumbing with random weights
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fid() -> FrechetInceptionDistance:
    return FrechetInceptionDistance(device="cpu", dims=DIMS, batch_size=3, weights_path="random")


def _images(seed: int, count: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)  # RGB


def _write_rgb(directory: Path, images: np.ndarray) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        assert cv2.imwrite(str(directory / f"{i:03d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return directory


@pytest.mark.filterwarnings("ignore:FID from")  # asserted below with pytest.warns where it matters
def test_identical_sets_score_zero_and_different_sets_more(fid, tmp_path):
    noise = _write_rgb(tmp_path / "noise", _images(0, 5))
    copy = _write_rgb(tmp_path / "copy", _images(0, 5))
    smooth = _write_rgb(tmp_path / "smooth", np.full((4, 16, 16, 3), 128, np.uint8) + _images(1, 4) // 16)

    with pytest.warns(UserWarning, match=rf"FID from 5 images with dims={DIMS}: .*rank at most 4"):
        same, n = fid.compute_fid(noise, copy)
    assert same == pytest.approx(0.0, abs=1e-6) and n == 5
    with pytest.warns(UserWarning, match="rank"):
        result = fid.measure(noise, smooth)
    assert result.value > 1e-3  # random weights give small features; the point is it is clearly > 0
    assert (result.n_true, result.n_test) == (5, 4)
    assert fid.compute_fid(noise, smooth) == (pytest.approx(result.value), 4)


@pytest.mark.filterwarnings("ignore:FID from")
def test_directory_files_are_read_as_rgb_like_arrays(fid, tmp_path):
    images = _images(2, 4)
    from_dir = fid.image_statistics(_write_rgb(tmp_path / "d", images))
    from_array = fid.image_statistics(images)
    np.testing.assert_allclose(from_dir.mean, from_array.mean, rtol=1e-6, atol=1e-9)
    swapped = fid.image_statistics(np.ascontiguousarray(images[..., ::-1]))  # BGR by mistake: differs
    assert not np.allclose(swapped.mean, from_array.mean)


@pytest.mark.filterwarnings("ignore:FID from")
def test_statistics_match_pytorch_fids_own_pipeline(fid, tmp_path):
    # pytorch-fid reads with PIL and stacks all activations for np.cov; we read with OpenCV and stream.
    from pytorch_fid.fid_score import calculate_activation_statistics

    directory = _write_rgb(tmp_path / "d", _images(7, 5))
    files = sorted(str(p) for p in directory.iterdir())
    mu, sigma = calculate_activation_statistics(files, fid.model, batch_size=2, dims=DIMS, num_workers=0)
    ours = fid.image_statistics(directory)
    np.testing.assert_allclose(ours.mean, mu, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(ours.covariance, sigma, rtol=1e-4, atol=1e-9)


@pytest.mark.filterwarnings("ignore:FID from")
def test_batching_and_mixed_sizes_do_not_change_the_statistics(tmp_path):
    images = _images(3, 5, size=16)
    directory = _write_rgb(tmp_path / "mixed", images)
    cv2.imwrite(str(directory / "002.png"), cv2.resize(images[2], (24, 20)))  # one image of another size
    one_by_one = FrechetInceptionDistance(device="cpu", dims=DIMS, batch_size=1, weights_path="random")
    batched = FrechetInceptionDistance(device="cpu", dims=DIMS, batch_size=4, weights_path="random")
    a, b = one_by_one.image_statistics(directory), batched.image_statistics(directory)
    assert a.n == b.n == 5
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a.covariance, b.covariance, rtol=1e-4, atol=1e-7)


@pytest.mark.filterwarnings("ignore:FID from")
def test_video_fid_of_a_video_with_itself(fid, tmp_path):
    path = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 5.0, (16, 16))
    for frame in _images(4, 4):
        writer.write(frame)
    writer.release()
    value, n = fid.compute_video_fid(path, path)
    assert value == pytest.approx(0.0, abs=1e-6) and n == 4


def test_fid_input_errors(fid, tmp_path):
    with pytest.raises(ValueError, match="at least 2 images"):
        fid.compute_fid(_images(5, 1), _images(5, 1))
    with pytest.raises(FileNotFoundError):
        fid.compute_fid(tmp_path / "missing", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        fid.compute_fid(tmp_path / "empty", tmp_path / "empty")


def test_constructor_validates_options():
    with pytest.raises(ValueError, match="dims must be one of"):
        FrechetInceptionDistance(dims=100, weights_path="random")
    with pytest.raises(ValueError, match="batch_size"):
        FrechetInceptionDistance(batch_size=0, weights_path="random")
    with pytest.raises(ValueError, match="invalid device"):
        FrechetInceptionDistance(device="not-a-device", weights_path="random")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            FrechetInceptionDistance(device="cuda", weights_path="random")


# ----------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache, no env override, and a download that fails like an offline machine's."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)

    def offline(url: str, dst: str, *args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return Path(torch.hub.get_dir()) / "checkpoints"


def test_missing_weights_say_where_to_put_the_file(empty_hub, tmp_path, monkeypatch):
    with pytest.raises(MissingInceptionWeightsError) as info:
        FrechetInceptionDistance(dims=DIMS)
    message = str(info.value)
    assert "\n" not in message
    assert "network is unreachable" in message
    assert f"{INCEPTION_WEIGHTS_FILENAME} in {empty_hub}/" in message
    assert "--inception-weights" in message and INCEPTION_WEIGHTS_ENV in message

    with pytest.raises(
        MissingInceptionWeightsError, match="not found at .*nowhere.pth \\(from weights_path\\)"
    ):
        find_inception_weights(tmp_path / "nowhere.pth")
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(tmp_path / "env.pth"))
    with pytest.raises(MissingInceptionWeightsError, match=rf"env.pth \(from \${INCEPTION_WEIGHTS_ENV}\)"):
        find_inception_weights()
    with pytest.raises(MissingInceptionWeightsError, match="downloads disabled"):
        monkeypatch.delenv(INCEPTION_WEIGHTS_ENV)
        find_inception_weights(download=False)


def test_weights_lookup_order(empty_hub, tmp_path, monkeypatch):
    empty_hub.mkdir(parents=True)
    cached = empty_hub / INCEPTION_WEIGHTS_FILENAME
    cached.write_bytes(b"")
    assert find_inception_weights() == cached
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"")
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(explicit))
    assert find_inception_weights() == explicit
    assert find_inception_weights(cached) == cached  # the argument wins over the environment


@pytest.mark.filterwarnings("ignore:FID from")
def test_local_weights_file_is_loaded(fid, tmp_path):
    # The random network saved as a state dict stands in for the real file: same keys and shapes.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = fid_module._fid_network(None).state_dict()
    weights = tmp_path / "weights.pth"
    torch.save(state, weights)
    loaded = FrechetInceptionDistance(device="cpu", dims=DIMS, weights_path=weights)
    images = _images(6, 3)
    np.testing.assert_array_equal(loaded.image_statistics(images).mean, fid.image_statistics(images).mean)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="cannot load FID Inception weights from .*garbage.pth"):
        FrechetInceptionDistance(dims=DIMS, weights_path=garbage)
