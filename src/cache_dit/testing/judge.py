"""A judge for the trained testbeds: prompt adherence and a Fréchet distance, the roles CLIP score and FID play.

PSNR against the uncached output says how close a cached run stays to one particular sample; it cannot say
whether a sampler that lands elsewhere still draws good images of the class asked for. For that each testbed
gets a judge: a small CNN trained on the testbed's own data generator (the procedural images the diffusion
model was trained to imitate, never diffusion samples), shipped with the package.

* ``accuracy``: the fraction of images whose predicted class is the class asked for (prompt adherence).
* ``fd``: the Fréchet distance between the Gaussians fitted to the judge's penultimate features (the global
  average pool of each of its conv stages, concatenated: :data:`FEATURE_DIMS` wide) of the images and of a
  fixed reference set of real images from the data generator (:data:`REFERENCE_PER_CLASS` per class, data seed :data:`REFERENCE_SEED`). The reference is
  matched to the classes asked for: each class's reference features are weighted by how often that class
  occurs in ``class_ids``, so scoring four classes compares against those four classes' real images, and a
  class-balanced batch over every class compares against the whole reference set. The distance itself is
  :func:`cache_dit.metrics.fid.frechet_distance` (pytorch-fid's formula). Like FID it is biased upwards for few
  images (the covariance of ``n`` images has rank ``n - 1``): compare fd values only between sets of the same
  size and class make-up, and read them against the fd of as many fresh real images (``score`` of the data
  generator's own images), which is the floor at that size.

Images are taken as the pipeline's ``output_type="np"`` returns them (float in ``[0, 1]``, ``(B, H, W, 3)``) or
as ``uint8``; the "scenes" testbed's 128x128 images are averaged over 2x2 pixels to the judge's 64x64 input
(the judge was trained on the data generator's images downsampled the same way).

Training (CPU, seeded; the committed weights and their hold-out accuracy are recorded in
``weights_judge/<testbed>.json``)::

    OMP_WAIT_POLICY=PASSIVE python -m cache_dit.testing.judge train --testbed shapes
    OMP_WAIT_POLICY=PASSIVE python -m cache_dit.testing.judge train --testbed scenes

Each draws its training set from the data generator (data seed 0), trains with AdamW and a one-cycle schedule
on mirrored, blurred and noised copies (:data:`BLUR_SIGMAS`, :data:`NOISE_STD_MAX`: the class decision should
survive a generator's imperfect rendering), rounds the weights to fp16, measures the hold-out accuracy on fresh
images (data seed 2), and stores the reference features (fp16, computed with the fp16-rounded weights as they
are loaded) beside the weights. ``OMP_WAIT_POLICY=PASSIVE`` keeps OpenMP threads from spinning on shared cores.
``python -m cache_dit.testing.judge check --testbed shapes`` scores the testbed pipeline at several step counts.

Speed: one ``score`` costs a forward pass of the tiny CNN and one matrix square root of a 304x304 product (scipy,
inside :func:`~cache_dit.metrics.fid.frechet_distance`): 0.15 s with one OpenBLAS thread, but 2-6 s measured
with OpenBLAS's default threads on 2 cores shared with other jobs (its threads spin); set
``OPENBLAS_NUM_THREADS=1`` on such a machine.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from cache_dit.metrics.fid import ActivationStatistics, RunningMoments, frechet_distance
from cache_dit.testing import testbed as tb
from cache_dit.testing.testbed import TESTBED_NAMES, TestbedSpec, testbed_spec

WEIGHTS_DIR = Path(__file__).with_name("weights_judge")
JUDGE_SIZE = 64  # the judge's input side; larger testbed images are area-averaged down to it
WIDTHS: tuple[int, ...] = (16, 32, 64, 96, 96)  # conv widths; the first keeps full resolution
FEATURE_DIMS = sum(WIDTHS)  # 304: the pooled stages, concatenated
TRAIN_SEED = 0  # data seed of the training images
REFERENCE_SEED = 1  # data seed of the fd reference set
HOLDOUT_SEED = 2  # data seed of the hold-out accuracy check
REFERENCE_PER_CLASS = 50
DEFAULT_TRAIN_PER_CLASS = {"shapes": 400, "scenes": 200}
DEFAULT_EPOCHS = {"shapes": 8, "scenes": 16}  # scenes (kind x colour x count on photographs) needs longer
# Training augmentation, so that the class decision holds on a generator's imperfect images (prompt adherence,
# not pixel-perfect rendering): each image is mirrored with probability 1/2, blurred with probability 1/2 (one
# of these Gaussian sigmas, in pixels of the judge's 64x64 input) and noised with probability 1/2 (std uniform
# in [0, NOISE_STD_MAX] on the [0, 1] scale).
BLUR_SIGMAS: tuple[float, ...] = (0.5, 0.8, 1.2)
NOISE_STD_MAX = 0.05


class JudgeNet(nn.Module):
    """Five 3x3 conv stages (BatchNorm, ReLU; stride 2 after the first) and a linear head on the global average
    pool of every stage, concatenated (the penultimate features, :data:`FEATURE_DIMS` wide).

    Pooling every stage, not only the last, keeps low-level statistics (colour, edge and texture energy) in the
    features the fd compares: a classifier's last stage alone is trained to ignore blur and noise.
    """

    def __init__(self, num_classes: int, widths: Sequence[int] = WIDTHS) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        channels = 3
        for index, width in enumerate(widths):
            stages.append(
                nn.Sequential(
                    nn.Conv2d(channels, width, 3, stride=1 if index == 0 else 2, padding=1),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                )
            )
            channels = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(sum(widths), num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 64, 64)`` in ``[-1, 1]`` -> penultimate features ``(B, sum(widths))``."""
        pooled = []
        x = images
        for stage in self.stages:
            x = stage(x)  # (B, C_i, 64 / 2^i, 64 / 2^i)
            pooled.append(x.mean(dim=(2, 3)))  # (B, C_i)
        return torch.cat(pooled, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # (B, num_classes) logits


@dataclass(frozen=True)
class Judge:
    """A loaded judge: the network, its testbed and the reference features (float64) with their labels."""

    spec: TestbedSpec
    net: JudgeNet
    reference_features: np.ndarray  # (N_ref, FEATURE_DIMS)
    reference_labels: np.ndarray  # (N_ref,)
    info: dict[str, Any]

    def reference_statistics(self, class_counts: np.ndarray) -> ActivationStatistics:
        """Mean and covariance of the reference features with class ``c`` weighted by ``class_counts[c]``.

        Weighting is done by repeating each class's rows ``class_counts[c] / gcd`` times, so the statistics
        are exactly those of a reference set with the asked class proportions.
        """
        divisor = math.gcd(*[int(c) for c in class_counts if c > 0])
        moments = RunningMoments(self.reference_features.shape[1])
        for class_id, count in enumerate(class_counts):
            if count:
                rows = self.reference_features[self.reference_labels == class_id]  # (n_c, D)
                moments.update(np.tile(rows, (int(count) // divisor, 1)))
        return moments.statistics()


_JUDGES: dict[tuple[str, str], Judge] = {}


def _weights_paths(name: str, weights_dir: Path) -> tuple[Path, Path]:
    return weights_dir / f"{name}.safetensors", weights_dir / f"{name}.json"


def load_judge(testbed: str | None = None, weights_dir: str | Path | None = None) -> Judge:
    """The committed judge of ``testbed`` (``None``/``"shapes"`` or ``"scenes"``), loaded once per process."""
    spec = testbed_spec(testbed)
    folder = Path(WEIGHTS_DIR if weights_dir is None else weights_dir)
    key = (spec.name, str(folder.resolve()))
    if key not in _JUDGES:
        weights, info_path = _weights_paths(spec.name, folder)
        if not weights.exists():
            raise FileNotFoundError(
                f"no judge weights for testbed {spec.name!r} in {folder}; train them with "
                f"`python -m cache_dit.testing.judge train --testbed {spec.name}`"
            )
        tensors = load_file(str(weights))
        info = json.loads(info_path.read_text())
        net = JudgeNet(spec.num_classes, info["widths"])
        state = {
            k[len("net.") :]: v.float() if v.is_floating_point() else v
            for k, v in tensors.items()
            if k.startswith("net.")
        }
        net.load_state_dict(state, strict=True)
        _JUDGES[key] = Judge(
            spec,
            net.eval(),
            tensors["reference.features"].double().numpy(),
            tensors["reference.labels"].numpy(),
            info,
        )
    return _JUDGES[key]


# ----------------------------------------------------------------------------------------------------------
# Inputs


def _as_judge_input(images: Any, spec: TestbedSpec) -> torch.Tensor:
    """Validate pipeline-style images and turn them into the judge's ``(B, 3, 64, 64)`` input in ``[-1, 1]``."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a numpy array (B, H, W, 3), got {type(images).__name__}")
    size = spec.image_size
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(
            f"images must have shape (B, {size}, {size}, 3) for testbed {spec.name!r}, got {images.shape}"
        )
    if len(images) == 0:
        raise ValueError("images must hold at least one image, got an empty batch")
    if images.dtype == np.uint8:
        unit = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.floating):
        unit = images.astype(np.float32)
        if not np.isfinite(unit).all():
            raise ValueError("images as floats must be finite and in [0, 1], got NaN or infinite values")
        if unit.min() < 0.0 or unit.max() > 1.0:
            raise ValueError(
                "images as floats must be in [0, 1] (the pipeline's output_type='np'), got values in "
                f"[{unit.min():.4g}, {unit.max():.4g}]"
            )
    else:
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
    batch = torch.from_numpy(unit).permute(0, 3, 1, 2)  # (B, 3, H, W)
    if size != JUDGE_SIZE:
        batch = F.avg_pool2d(batch, size // JUDGE_SIZE)  # (B, 3, 64, 64): area average
    return batch * 2.0 - 1.0


def _dataset_input(spec: TestbedSpec, images: torch.Tensor) -> torch.Tensor:
    """The data generator's ``(N, 3, S, S)`` images in ``[-1, 1]`` as the judge's input (same downsampling)."""
    if spec.image_size != JUDGE_SIZE:
        images = F.avg_pool2d(images, spec.image_size // JUDGE_SIZE)
    return images


def _check_class_ids(class_ids: Any, batch: int, spec: TestbedSpec) -> np.ndarray:
    ids = np.asarray(class_ids)
    if ids.ndim != 1 or len(ids) != batch:
        raise ValueError(
            f"class_ids must be a sequence of {batch} ints (one per image), got shape {ids.shape}"
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"class_ids must be ints, got dtype {ids.dtype}")
    if ids.min() < 0 or ids.max() >= spec.num_classes:
        raise ValueError(
            f"class_ids must be in [0, {spec.num_classes}) for testbed {spec.name!r}, got "
            f"{sorted({int(i) for i in ids if not 0 <= i < spec.num_classes})}"
        )
    return ids.astype(np.int64)


def _run(net: JudgeNet, inputs: torch.Tensor, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Features (float64) and logits of judge inputs, in chunks."""
    features, logits = [], []
    with torch.inference_mode():
        for chunk in inputs.split(batch_size):
            f = net.features(chunk)  # (b, D)
            features.append(f.double().numpy())
            logits.append(net.head(f).numpy())
    return np.concatenate(features), np.concatenate(logits)


# ----------------------------------------------------------------------------------------------------------
# Public scoring


def features(images: Any, testbed: str | None = None) -> np.ndarray:
    """The judge's penultimate features ``(B, FEATURE_DIMS)`` (float64) of pipeline-style images."""
    judge = load_judge(testbed)
    return _run(judge.net, _as_judge_input(images, judge.spec))[0]


def predict(images: Any, testbed: str | None = None) -> np.ndarray:
    """The judge's predicted class id per image, ``(B,)`` int64."""
    judge = load_judge(testbed)
    return _run(judge.net, _as_judge_input(images, judge.spec))[1].argmax(axis=1)


def score(images: Any, class_ids: Sequence[int] | np.ndarray, testbed: str | None = None) -> dict[str, float]:
    """Prompt adherence and Fréchet distance of generated images of ``testbed``.

    Args:
        images: ``(B, S, S, 3)`` float in ``[0, 1]`` (the pipeline's ``output_type="np"``) or ``uint8``, with
            ``S = testbed_image_size(testbed)``; ``B >= 2`` (a covariance needs two images).
        class_ids: the class asked for per image, ``B`` ints in ``[0, testbed_num_classes(testbed))``.
        testbed: ``None`` or ``"shapes"`` (the default 64x64 testbed), or ``"scenes"``.

    Returns:
        ``{"accuracy": fraction of images predicted as their class, "fd": Fréchet distance of the judge's
        features against the reference images of the same classes in the same proportions}``, and per attribute
        of the class (:func:`class_attributes`: kind and colour; count on "scenes") ``"<attribute>_accuracy"``,
        the fraction whose predicted class has the attribute asked for (a model can get the colour right and
        the count wrong). Lower fd is closer to the data; it grows with blur, noise, wrong content and too
        little variety.
    """
    judge = load_judge(testbed)
    inputs = _as_judge_input(images, judge.spec)
    ids = _check_class_ids(class_ids, len(inputs), judge.spec)
    if len(inputs) < 2:
        raise ValueError(f"images must hold at least 2 images for the fd (a covariance), got {len(inputs)}")
    feats, logits = _run(judge.net, inputs)
    moments = RunningMoments(feats.shape[1])
    moments.update(feats)
    reference = judge.reference_statistics(np.bincount(ids, minlength=judge.spec.num_classes))
    predicted = logits.argmax(axis=1)
    result = {
        "accuracy": float((predicted == ids).mean()),
        "fd": frechet_distance(moments.statistics(), reference),
    }
    asked, got = class_attributes(ids, judge.spec.name), class_attributes(predicted, judge.spec.name)
    for name in asked:
        result[f"{name}_accuracy"] = float((asked[name] == got[name]).mean())
    return result


def class_attributes(
    class_ids: Sequence[int] | np.ndarray, testbed: str | None = None
) -> dict[str, np.ndarray]:
    """Each class id's attributes as indices: ``{"kind": ..., "colour": ...}`` (and ``"count"`` on "scenes"),
    so that a judge's prediction can be right in one attribute and wrong in another.

    >>> {k: v.tolist() for k, v in class_attributes([0, 5, 11]).items()}
    {'kind': [0, 1, 2], 'colour': [0, 1, 3]}
    """
    ids = np.asarray(class_ids, dtype=np.int64)
    if testbed_spec(testbed).name == "scenes":
        from cache_dit.testing import scenes

        kind_colour, count = np.divmod(ids, len(scenes.COUNTS))
        kind, colour = np.divmod(kind_colour, len(scenes.COLORS))
        return {"kind": kind, "colour": colour, "count": count}
    kind, colour = np.divmod(ids, len(tb.COLORS))
    return {"kind": kind, "colour": colour}


def data_images(
    testbed: str | None, num_images: int, seed: int, classes: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Real images from the testbed's data generator as the pipeline returns them: ``(N, S, S, 3)`` float32 in
    ``[0, 1]`` and their class ids ``(N,)``. With ``classes``, only those classes are kept (image ``i`` of the
    generator has class ``i % num_classes``, so ``num_images`` counts images before the filter)."""
    spec = testbed_spec(testbed)
    images, labels = spec.make_dataset(num_images, seed)  # (N, 3, S, S) in [-1, 1]
    unit = ((images + 1.0) / 2.0).permute(0, 2, 3, 1).numpy()
    ids = labels.numpy()
    if classes is not None:
        keep = np.isin(ids, np.asarray(list(classes)))
        unit, ids = unit[keep], ids[keep]
    return np.ascontiguousarray(unit, dtype=np.float32), ids


# ----------------------------------------------------------------------------------------------------------
# Training


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror, blur and noise a batch of judge inputs ``(B, 3, 64, 64)`` in ``[-1, 1]`` (see :data:`BLUR_SIGMAS`)."""
    from torchvision.transforms.v2 import functional as TF

    batch = len(x)
    flip = torch.rand(batch, generator=generator) < 0.5  # every class of both testbeds is mirror-symmetric
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    blur = torch.randint(0, 2 * len(BLUR_SIGMAS), (batch,), generator=generator)  # >= len: no blur
    for index, sigma in enumerate(BLUR_SIGMAS):
        chosen = blur == index
        if chosen.any():
            x[chosen] = TF.gaussian_blur(x[chosen], kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma)
    noisy = torch.rand(batch, generator=generator) < 0.5
    std = torch.rand(batch, generator=generator) * (2 * NOISE_STD_MAX) * noisy  # (B,), [-1, 1] scale
    x = x + std[:, None, None, None] * torch.randn(x.shape, generator=generator)
    return x.clamp(-1.0, 1.0)


def train_judge(
    testbed: str | None = None,
    out_dir: Path = WEIGHTS_DIR,
    seed: int = 0,
    train_per_class: int | None = None,
    epochs: int | None = None,
    batch: int = 64,
    lr: float = 3e-3,
    threads: int = 1,
    holdout_per_class: int = 20,
) -> dict[str, Any]:
    """Train the judge of ``testbed`` on its data generator and write ``<name>.safetensors`` and ``<name>.json``
    to ``out_dir``. Returns the recorded info (hold-out accuracy, times, settings)."""
    spec = testbed_spec(testbed)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    per_class = train_per_class or DEFAULT_TRAIN_PER_CLASS[spec.name]
    epochs = epochs or DEFAULT_EPOCHS[spec.name]
    started = time.time()
    images, labels = spec.make_dataset(per_class * spec.num_classes, TRAIN_SEED)
    inputs = _dataset_input(spec, images)  # (N, 3, 64, 64)
    data_seconds = time.time() - started
    print(f"[judge {spec.name}] {len(inputs)} training images in {data_seconds:.0f} s", flush=True)

    net = JudgeNet(spec.num_classes)
    steps_per_epoch = len(inputs) // batch
    total_steps = steps_per_epoch * epochs
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=total_steps, pct_start=0.15
    )
    generator = torch.Generator().manual_seed(seed)
    train_started = time.time()
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        losses, hits = [], 0
        for step in range(steps_per_epoch):
            index = order[step * batch : (step + 1) * batch]
            x, y = inputs[index], labels[index]
            x = _augment(x, generator)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            hits += int((logits.argmax(1) == y).sum())
        print(
            f"[judge {spec.name}] epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}, train accuracy "
            f"{hits / (steps_per_epoch * batch):.4f}, {time.time() - train_started:.0f} s",
            flush=True,
        )
    train_seconds = time.time() - train_started

    # round to fp16 as shipped, then measure and build the reference with exactly the shipped weights
    state = {k: v.detach().half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    net.eval()
    holdout, holdout_labels = spec.make_dataset(holdout_per_class * spec.num_classes, HOLDOUT_SEED)
    _, logits = _run(net, _dataset_input(spec, holdout))
    holdout_accuracy = float((logits.argmax(1) == holdout_labels.numpy()).mean())
    reference, reference_labels = spec.make_dataset(REFERENCE_PER_CLASS * spec.num_classes, REFERENCE_SEED)
    reference_features, logits = _run(net, _dataset_input(spec, reference))
    reference_accuracy = float((logits.argmax(1) == reference_labels.numpy()).mean())
    print(
        f"[judge {spec.name}] hold-out accuracy {holdout_accuracy:.4f} ({len(holdout)} images), reference "
        f"accuracy {reference_accuracy:.4f}",
        flush=True,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path, info_path = _weights_paths(spec.name, out_dir)
    tensors = {f"net.{k}": v.contiguous() for k, v in state.items()}
    tensors["reference.features"] = torch.from_numpy(reference_features).half().contiguous()
    tensors["reference.labels"] = reference_labels.to(torch.int64).contiguous()
    save_file(tensors, str(weights_path))
    info = {
        "testbed": spec.name,
        "image_size": spec.image_size,
        "judge_size": JUDGE_SIZE,
        "widths": list(WIDTHS),
        "feature_dims": FEATURE_DIMS,
        "num_classes": spec.num_classes,
        "seed": seed,
        "train_images": len(inputs),
        "train_data_seed": TRAIN_SEED,
        "epochs": epochs,
        "batch": batch,
        "lr": lr,
        "threads": threads,
        "augmentation": {
            "flip": 0.5,
            "blur_sigmas": list(BLUR_SIGMAS),
            "blur": 0.5,
            "noise_std_max": NOISE_STD_MAX,
        },
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "holdout_images": len(holdout),
        "holdout_data_seed": HOLDOUT_SEED,
        "holdout_accuracy": holdout_accuracy,
        "reference_images": len(reference),
        "reference_data_seed": REFERENCE_SEED,
        "reference_accuracy": reference_accuracy,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    _JUDGES.pop((spec.name, str(out_dir.resolve())), None)
    print(
        f"[judge {spec.name}] wrote {weights_path} ({weights_path.stat().st_size / 1e6:.2f} MB)", flush=True
    )
    return info


# ----------------------------------------------------------------------------------------------------------
# CLI


def check(testbed: str | None, steps: Sequence[int], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """Score the testbed pipeline (uncached, its own scheduler) at each step count on every class x ``seeds``
    (one batched call per seed), and as many fresh real images of the same classes (the fd floor)."""
    from cache_dit.testing import testbed as tb

    spec = testbed_spec(testbed)
    pipe = tb.load_testbed_pipeline(name=testbed)
    classes = list(range(spec.num_classes))
    rows = []
    real, real_ids = data_images(testbed, spec.num_classes * len(seeds), seed=HOLDOUT_SEED)
    rows.append({"run": "real images (data generator)", **score(real, real_ids, testbed)})
    for count in steps:
        images = np.concatenate(
            [tb.sample_classes(pipe, classes, seed=s, num_inference_steps=count, name=testbed) for s in seeds]
        )
        rows.append({"run": f"uncached, {count} steps", **score(images, classes * len(seeds), testbed)})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cache_dit.testing.judge {train,check}``."""
    parser = argparse.ArgumentParser(
        prog="python -m cache_dit.testing.judge", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train", help="train a testbed's judge on its data generator and write its weights"
    )
    train.add_argument("--testbed", choices=TESTBED_NAMES, default="shapes")
    train.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--per-class", type=int, default=None, help="training images per class")
    train.add_argument("--epochs", type=int, default=None, help="default: 8 (shapes), 16 (scenes)")
    train.add_argument("--threads", type=int, default=1)
    chk = sub.add_parser("check", help="score the uncached testbed pipeline at several step counts")
    chk.add_argument("--testbed", choices=TESTBED_NAMES, default="shapes")
    chk.add_argument("--steps", type=int, nargs="+", default=[7, 14, 28, 50])
    chk.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    chk.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "train":
        train_judge(args.testbed, args.out, args.seed, args.per_class, args.epochs, threads=args.threads)
        return 0
    torch.set_num_threads(args.threads)
    for row in check(args.testbed, args.steps, args.seeds):
        print(f"{row['run']:32s} accuracy {row['accuracy']:.4f}  fd {row['fd']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
