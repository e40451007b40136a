"""A stateful property test of the runner: random sequences of apply / re-apply / disable / calls with other
sizes, steps, batch, CFG and text length / marked and unmarked bare runs / injected faults.

The oracle: every call on the pipeline with a history gives exactly what the same call gives on a fresh copy
of the untouched pipeline with the same options applied (bit-identical output and the same cached steps).
Bounded for `make test` (about 20 s); `CACHE_DIT_SOAK=1` (`make soak`) runs a longer profile.
"""

from __future__ import annotations

import copy
import os
import warnings

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import cache_dit
from cache_dit.cache_factory import apply_cache_on_pipe
from cache_dit.testing import tiny

SOAK = os.environ.get("CACHE_DIT_SOAK") == "1"

OPTIONS = {
    "db_forced": dict(
        Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=100.0, warmup_steps=1
    ),
    "db_taylor": dict(
        Fn_compute_blocks=1,
        Bn_compute_blocks=1,
        residual_diff_threshold=0.3,
        warmup_steps=1,
        enable_taylorseer=True,
        taylorseer_kwargs={"n_derivatives": 1},
    ),
    "schedule": dict(Fn_compute_blocks=1, Bn_compute_blocks=0, compute_steps=[0, 2]),
    "output": dict(
        Fn_compute_blocks=0,
        Bn_compute_blocks=0,
        compute_steps=[0, 2],
        enable_taylorseer=True,
        enable_encoder_taylorseer=False,
        taylorseer_cache_type="output",
    ),
    "fbcache": dict(cache_type="FBCache", residual_diff_threshold=100.0, warmup_steps=1),
    "dbprune": dict(
        cache_type="DBPrune",
        Fn_compute_blocks=1,
        Bn_compute_blocks=1,
        residual_diff_threshold=100.0,
        warmup_steps=1,
    ),
}
_PRISTINE = tiny.tiny_flux_pipeline()
_PRISTINE.set_progress_bar_config(disable=True)


class _Fault(Exception):
    pass


def _call_kwargs(steps: int, size: int, batch: int, text: int, cfg: bool) -> dict:
    prompt, pooled = tiny.flux_prompt_embeds(batch=batch, seq_len=text, seed=1)
    kwargs = dict(
        prompt_embeds=prompt,
        pooled_prompt_embeds=pooled,
        height=size,
        width=size,
        num_inference_steps=steps,
        output_type="latent",
    )
    if cfg:
        neg, neg_pooled = tiny.flux_prompt_embeds(batch=batch, seq_len=text, seed=2)
        kwargs.update(
            true_cfg_scale=2.0, negative_prompt_embeds=neg, negative_pooled_prompt_embeds=neg_pooled
        )
    return kwargs


def _bare_run(transformer: torch.nn.Module, steps: int, marked: bool) -> torch.Tensor:
    """A caller's own Euler loop on the transformer (marked with denoising_run, or not)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 16, 16, generator=g)
    prompt, pooled = tiny.flux_prompt_embeds(seed=1)
    common = dict(
        encoder_hidden_states=prompt,
        pooled_projections=pooled,
        img_ids=torch.zeros(16, 3),
        txt_ids=torch.zeros(prompt.shape[1], 3),
        return_dict=False,
    )
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    context = cache_dit.denoising_run(transformer) if marked else warnings.catch_warnings()
    with torch.no_grad(), context:
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            x = x + (s_next - s) * transformer(hidden_states=x, timestep=s.reshape(1), **common)[0]
    return x


class CachedPipelineMachine(RuleBasedStateMachine):
    @initialize(name=st.sampled_from(sorted(OPTIONS)))
    def start(self, name: str) -> None:
        self.pipe = copy.deepcopy(_PRISTINE)
        apply_cache_on_pipe(self.pipe, **OPTIONS[name])
        self.options: str | None = name
        self.last_call = _call_kwargs(3, 32, 1, 8, False)

    def _reference(self):
        ref = copy.deepcopy(_PRISTINE)
        if self.options is not None:
            apply_cache_on_pipe(ref, **OPTIONS[self.options])
        return ref

    @rule(name=st.sampled_from(sorted(OPTIONS)))
    def apply(self, name: str) -> None:
        apply_cache_on_pipe(self.pipe, **OPTIONS[name])
        self.options = name

    @rule()
    def disable(self) -> None:
        cache_dit.disable_cache(self.pipe)
        self.options = None

    @rule(
        steps=st.integers(2, 4),
        size=st.sampled_from([32, 48]),
        batch=st.integers(1, 2),
        text=st.sampled_from([8, 12]),
        cfg=st.booleans(),
    )
    def call(self, steps: int, size: int, batch: int, text: int, cfg: bool) -> None:
        self.last_call = _call_kwargs(steps, size, batch, text, cfg)
        self.repeat_call()

    @rule()
    def repeat_call(self) -> None:
        """The last call again (a history of identical calls is where stale state shows)."""
        kwargs = self.last_call
        ref = self._reference()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            got = self.pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
            want = ref(**kwargs, generator=torch.Generator().manual_seed(0)).images
        assert torch.equal(got, want)
        assert cache_dit.summary(self.pipe).cached_steps == cache_dit.summary(ref).cached_steps

    @rule(steps=st.integers(2, 4), marked=st.booleans())
    def bare_run(self, steps: int, marked: bool) -> None:
        ref = self._reference()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            got = _bare_run(self.pipe.transformer, steps, marked)
            want = _bare_run(ref.transformer, steps, marked)
        assert torch.equal(got, want)
        assert cache_dit.summary(self.pipe.transformer) == cache_dit.summary(ref.transformer)

    @rule(at_step=st.integers(0, 2))
    def faulty_call(self, at_step: int) -> None:
        """A call that fails half-way (a callback raises): the next call must not notice."""

        def fail(pipe, step, timestep, callback_kwargs):
            if step == at_step:
                raise _Fault
            return callback_kwargs

        kwargs = _call_kwargs(4, 32, 1, 8, False)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                self.pipe(**kwargs, generator=torch.Generator().manual_seed(0), callback_on_step_end=fail)
        except _Fault:
            pass
        else:
            raise AssertionError("the injected fault did not surface")

    @precondition(lambda self: self.options is None)
    @invariant()
    def removed_cache_leaves_nothing(self) -> None:
        transformer = self.pipe.transformer
        assert "forward" not in transformer.__dict__
        assert all("forward" not in m.__dict__ for m in transformer.modules())
        assert type(self.pipe) is type(_PRISTINE)


CachedPipelineMachine.TestCase.settings = settings(
    max_examples=40 if SOAK else 6,
    stateful_step_count=12 if SOAK else 5,
    deadline=None,
    derandomize=not SOAK,  # CI runs the same sequences every time; the soak explores
    suppress_health_check=list(HealthCheck),
)
TestCachedPipeline = CachedPipelineMachine.TestCase
