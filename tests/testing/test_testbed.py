"""The trained FLUX testbed: procedural data, the committed weights and a real FluxPipeline sampling them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cache_dit.testing import testbed as tb

# Measured with the committed weights: 12/12 classes get the right dominant centre colour at 28 steps,
# seed 0. The bar leaves room for one miss (e.g. a different BLAS reduction order), not more.
MIN_COLOR_HITS = 11


@pytest.fixture(scope="module")
def pipe() -> tb.FluxPipeline:
    torch.manual_seed(0)
    return tb.load_testbed_pipeline()


def test_class_names_and_ids() -> None:
    assert len(tb.CLASS_NAMES) == tb.NUM_CLASSES == 12
    assert tb.CLASS_NAMES[0] == "red circle"
    assert tb.class_shape_and_color(11) == ("triangle", "yellow")
    with pytest.raises(ValueError, match="class_id"):
        tb.class_shape_and_color(12)


def test_shape_images_are_deterministic_and_coloured() -> None:
    first = tb.make_shape_image(5, seed=3)
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, tb.make_shape_image(5, seed=3))
    assert not np.array_equal(first, tb.make_shape_image(5, seed=4))
    for class_id in range(tb.NUM_CLASSES):
        expected = tb.class_shape_and_color(class_id)[1]
        assert tb.dominant_color(tb.make_shape_image(class_id, seed=class_id)) == expected


def test_dataset_layout() -> None:
    images, labels = tb.make_shape_dataset(24, seed=0)
    assert images.shape == (24, 3, 64, 64)
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert labels.tolist() == list(range(12)) * 2


def test_prompt_embeds_shapes_and_validation() -> None:
    prompt, pooled = tb.testbed_prompt_embeds([0, 5, tb.NULL_CLASS_ID])
    assert prompt.shape == (3, tb.TEXT_SEQ_LEN, tb.TRANSFORMER_CONFIG["joint_attention_dim"])
    assert pooled.shape == (3, tb.TRANSFORMER_CONFIG["pooled_projection_dim"])
    assert prompt.dtype == torch.float32
    with pytest.raises(ValueError, match="class id"):
        tb.testbed_prompt_embeds([tb.NULL_CLASS_ID + 1])


def test_pipeline_structure(pipe: tb.FluxPipeline) -> None:
    assert isinstance(pipe.transformer, tb.FluxTransformer2DModel)
    assert len(pipe.transformer.transformer_blocks) == 4
    assert len(pipe.transformer.single_transformer_blocks) == 8
    assert pipe.vae_scale_factor == 4


def test_samples_have_the_requested_colour(pipe: tb.FluxPipeline) -> None:
    images = tb.sample_classes(pipe, range(tb.NUM_CLASSES), seed=0, num_inference_steps=28)  # (12, 64, 64, 3)
    got = [tb.dominant_color(image) for image in images]
    expected = [tb.class_shape_and_color(c)[1] for c in range(tb.NUM_CLASSES)]
    hits = sum(g == e for g, e in zip(got, expected))
    assert hits >= MIN_COLOR_HITS, f"{hits}/12 correct: got {got}"


def test_pipeline_is_deterministic_with_fixed_seed(pipe: tb.FluxPipeline) -> None:
    first = tb.sample_classes(pipe, [0, 7], seed=3, num_inference_steps=8)
    second = tb.sample_classes(pipe, [0, 7], seed=3, num_inference_steps=8)
    np.testing.assert_array_equal(first, second)
    other_seed = tb.sample_classes(pipe, [0, 7], seed=4, num_inference_steps=8)
    assert not np.array_equal(first, other_seed)


def test_true_cfg_with_null_class_runs(pipe: tb.FluxPipeline) -> None:
    images = tb.sample_classes(pipe, [2], seed=0, num_inference_steps=4, true_cfg_scale=2.0)
    assert images.shape == (1, 64, 64, 3)


def test_wide_pipeline_builds_and_runs() -> None:
    wide = tb.build_wide_pipeline(seed=0)
    assert len(wide.transformer.transformer_blocks) == 4
    assert len(wide.transformer.single_transformer_blocks) == 8
    prompt, pooled = tb.wide_prompt_embeds(batch=1)
    out = wide(
        prompt_embeds=prompt,
        pooled_prompt_embeds=pooled,
        height=tb.WIDE_IMAGE_SIZE,
        width=tb.WIDE_IMAGE_SIZE,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    ).images
    assert torch.isfinite(out).all()


def test_scenes_testbed_api_and_data():
    """The harder testbed: names, sizes, a compositional class table, a deterministic data generator."""
    import numpy as np

    from cache_dit.testing import scenes

    assert tb.testbed_num_classes() == 12 and tb.testbed_image_size() == 64
    assert tb.testbed_num_classes("scenes") == 36 and tb.testbed_image_size("scenes") == 128
    with pytest.raises(ValueError, match="testbed name must be one of"):
        tb.testbed_spec("shape")
    assert scenes.class_attributes(0) == ("circle", "red", 1)
    assert scenes.class_attributes(35) == ("triangle", "yellow", 3)
    assert scenes.CLASS_NAMES[13] == "2 red squares"
    a, b = scenes.make_scene_image(13, seed=5), scenes.make_scene_image(13, seed=5)
    assert a.shape == (128, 128, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, scenes.make_scene_image(13, seed=6))
    prompt, pooled = tb.testbed_prompt_embeds([0, 13, 36], name="scenes")
    assert prompt.shape == (3, 4, 64) and pooled.shape == (3, 64)
    # compositional: classes sharing an attribute share its token (kind, colour, count, shared)
    same_kind_colour = tb.testbed_prompt_embeds([12, 13], name="scenes")[0]
    assert torch.equal(same_kind_colour[0, :2], same_kind_colour[1, :2])
    assert not torch.equal(same_kind_colour[0, 2], same_kind_colour[1, 2])
    with pytest.raises(ValueError, match=r"class id must be in \[0, 36\]"):
        tb.testbed_prompt_embeds([37], name="scenes")


def test_scenes_pipeline_samples_at_its_size():
    pipe = tb.load_testbed_pipeline(name="scenes")
    images = tb.sample_classes(pipe, [0, 20], seed=0, num_inference_steps=2, name="scenes", as_float=True)
    assert images.shape == (2, 128, 128, 3) and images.dtype == np.float32
    again = tb.sample_classes(pipe, [0, 20], seed=0, num_inference_steps=2, name="scenes")
    assert np.array_equal(again, np.round(images * 255).astype(np.uint8))  # seeded: the same images, rounded
    # the prompt matters: the same noise under another class gives another image
    other = tb.sample_classes(pipe, [35, 20], seed=0, num_inference_steps=2, name="scenes", as_float=True)
    assert np.abs(other[0] - images[0]).mean() > 1e-3 and np.array_equal(other[1], images[1])


def test_training_resumes_bit_for_bit_from_its_checkpoint(tmp_path) -> None:
    """A run stopped at step 2 and resumed ends with the same EMA weights as an uninterrupted 4-step run."""
    from cache_dit.testing import testbed_train

    torch.manual_seed(0)
    latents = torch.randn(6, 4, 16, 16)  # the default testbed's latent shape
    labels = torch.arange(6) % tb.NUM_CLASSES
    kwargs = dict(steps=4, seed=0, batch=2, checkpoint_every=100)
    straight, straight_cond, _ = testbed_train.train_transformer(
        latents, labels, log_path=tmp_path / "a.pt", **kwargs
    )
    assert torch.load(tmp_path / "a.pt")["step"] == 4  # the final step is saved too
    _, _, stats = testbed_train.train_transformer(
        latents, labels, log_path=tmp_path / "b.pt", stop_at=2, **kwargs
    )
    stopped = torch.load(tmp_path / "b.pt")
    assert stats["transformer_steps"] == 2 and stopped["step"] == 2
    assert 0.0 < stopped["seconds"] <= stats["transformer_seconds"]
    resumed, resumed_cond, stats = testbed_train.train_transformer(
        latents, labels, log_path=tmp_path / "b.pt", resume=True, **kwargs
    )
    assert stats["transformer_steps"] == 4
    # the resumed run's time counts the first run's seconds too (the checkpoint's), then its own
    assert stats["transformer_seconds"] > stopped["seconds"]
    assert torch.load(tmp_path / "b.pt")["seconds"] > stopped["seconds"]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(straight_cond.prompt, resumed_cond.prompt)
    with pytest.raises(ValueError, match="--transformer-steps 4"):
        testbed_train.train_transformer(
            latents, labels, log_path=tmp_path / "b.pt", resume=True, **{**kwargs, "steps": 6}
        )


def test_init_from_recovers_the_compositional_class_table(tmp_path) -> None:
    """The scenes table saved as one row per class is split back into attribute tokens exactly."""
    from safetensors.torch import save_file

    from cache_dit.testing import testbed_train

    torch.manual_seed(0)
    source = testbed_train._CompositionalConditioning(64, 64)
    save_file(
        {"prompt": source.prompt.detach().contiguous(), "pooled": source.pooled.detach().contiguous()},
        str(tmp_path / "class_embeds.safetensors"),
    )
    torch.manual_seed(1)
    target = testbed_train._CompositionalConditioning(64, 64)
    assert not torch.allclose(target.pooled, source.pooled)
    testbed_train._load_class_table_into(target, tmp_path)
    ids = torch.arange(source.null_class_id + 1)
    assert torch.equal(target.embed(ids)[0], source.embed(ids)[0])
    torch.testing.assert_close(target.embed(ids)[1], source.embed(ids)[1], atol=1e-5, rtol=0)
    broken = source.pooled.detach().clone()
    broken[0] += 1.0  # no longer a sum of attribute parts
    (tmp_path / "bad").mkdir()
    save_file(
        {"prompt": source.prompt.detach().contiguous(), "pooled": broken},
        str(tmp_path / "bad" / "class_embeds.safetensors"),
    )
    with pytest.raises(ValueError, match="not compositional"):
        testbed_train._load_class_table_into(target, tmp_path / "bad")


def test_encoded_scenes_keep_each_images_own_label() -> None:
    """The scenes data set is made in chunks of 256 whose classes restart at 0; the labels of the encoded latents
    must be each image's own (before, a chunk's labels were shifted by its offset: 256 % 36 = 4 per chunk)."""
    from cache_dit.testing import testbed_train

    spec = tb.testbed_spec("scenes")
    vae = tb.AutoencoderKL.from_config(spec.vae_config).eval()
    latents, labels = testbed_train.encode_dataset(vae, 44, seed=1, spec=spec, chunk=40)
    expected = torch.cat([spec.make_dataset(40, seed=1000)[1], spec.make_dataset(4, seed=1040)[1]])
    assert len(latents) == 44 and torch.equal(labels, expected)
    assert labels[40:].tolist() == [0, 1, 2, 3]
