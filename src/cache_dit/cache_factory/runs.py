"""Who is calling, and where in which run: the only code that reads pipeline marks, timesteps and thread ids.

Each transformer call is one *pass* of one *branch* (a CFG branch: "cond", "uncond", or whatever a pipeline
marks) at one *step* of a *run* (a pipeline call, a `denoising_run`, or a guessed run of bare calls). The
`RunTracker` answers "is this a new run? which branch and step is this call?" and keeps the per-run state
(`CallState`); `Ownership` makes sure one thread at a time uses a cached transformer. Policies and the block
executor only ask; they never look at marks, timesteps or threads themselves.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

from .patching import check_no_foreign_cache
from .state import CallState, Pass, layout

if TYPE_CHECKING:
    from .runner import CacheRunner


class Ownership:
    """The cache state belongs to the transformer: one thread may use it at a time (re-entry is fine)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner: int | None = None
        self.what = ""
        self.depth = 0

    def claim(self, what: str, model_name: str) -> None:
        me = threading.get_ident()
        with self._lock:
            if self.owner is not None and self.owner != me:
                raise RuntimeError(
                    f"cache-dit: {what} on {model_name} while {self.what} from another thread is using the same "
                    "cached transformer. The cache state belongs to the transformer, which pipelines made with "
                    "`from_pipe` share, so concurrent calls would mix their buffers. Run them one after another "
                    "(e.g. behind a threading.Lock), or give each thread its own pipeline (`copy.deepcopy(pipe)`, "
                    "which copies the cache too)."
                )
            if self.owner is None:
                self.owner, self.what = me, what
            self.depth += 1

    def release(self) -> None:
        with self._lock:
            self.depth = max(self.depth - 1, 0)
            if self.depth == 0:
                self.owner = None

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles: no lock and no owner (nothing is in flight in a copy)."""
        return {"what": ""}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()


class RunTracker:
    """Runs, branches and steps of one cached transformer (see the module docstring)."""

    def __init__(self, runner: CacheRunner) -> None:
        self.runner = runner
        self.call = runner.new_call()
        self.context: tuple[str, dict[str, Any]] | None = None  # the pipeline's branch mark, if any
        self.pipeline_managed = False  # inside a pipeline call or `denoising_run`
        self.depth = 0  # nesting of marked runs
        # (depth, state, mark) of the calls a nested call paused (see `begin`)
        self.outer: list[tuple[int, CallState, tuple[str, dict[str, Any]] | None]] = []
        # bare transformer: steps per run (apply_cache_on_transformer(num_inference_steps=)), the last call's
        # timestep, latents layout and thread, and whether a marked run just ended
        self.num_inference_steps: int | None = None
        self.prev_timestep: float | None = None
        self.prev_latents_layout: tuple[Any, ...] | None = None
        self.run_thread: int | None = None
        self.run_ended = False

    # -- marked runs ----------------------------------------------------------------------------------------

    def begin(self) -> None:
        """A pipeline call or marked run starts: fresh state for every branch.

        A call made while another is in flight on this thread (from a `callback_on_step_end`, through a
        `from_pipe` sibling that shares the transformer) runs with its own state; the outer call's state is
        put back when it ends, so the outer call's cached steps and image do not change.
        """
        check_no_foreign_cache(self.runner.transformer)
        if self.depth > 0 and self.call.branches:
            self.outer.append((self.depth, self.call, self.context))
            self.context = None
        self.depth += 1
        self.pipeline_managed = True
        self.call = self.runner.new_call()

    def end(self) -> CallState:
        """A marked run ended (normally or not); returns its state (stats stay readable until the next run)."""
        ended = self.call
        self.depth = max(self.depth - 1, 0)
        if self.outer and self.outer[-1][0] == self.depth:
            _, self.call, self.context = self.outer.pop()
        else:
            self.context = None
        if self.depth == 0:  # the next bare transformer call starts a new run
            self.pipeline_managed = False
            self.run_ended = True
        return ended

    @contextlib.contextmanager
    def marked(self, orig: Callable[..., Any], name: str, *args: Any, **kwargs: Any) -> Iterator[None]:
        """The pipeline marks the branch (diffusers' `transformer.cache_context("cond"/"uncond")`)."""
        previous = self.context
        self.context = (name, kwargs)
        try:
            with orig(name, *args, **kwargs):
                yield
        finally:
            self.context = previous

    # -- each transformer call ------------------------------------------------------------------------------

    def open_pass(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Pass:
        """Which run, branch and step this transformer call is (starting a new run where one starts)."""
        r = self.runner
        name, ctx_kwargs = self.context if self.context is not None else (None, {})
        if not self.pipeline_managed and r.adapter is not None:
            self._detect_new_run(args, kwargs)
        # Within a pipeline call: which way the steps run tells a new denoising loop, and (unmarked calls) the
        # timestep groups the calls of one step. A marked call with a step index needs no host read for this.
        t = None
        if self.pipeline_managed:
            marked_step = ctx_kwargs.get("step_index") if name is not None else None
            if isinstance(marked_step, int) and not isinstance(marked_step, bool):
                self._detect_new_loop("step_index", float(marked_step))
            elif name is None:
                t = self.timestep(args, kwargs)  # one small host read per unmarked call
                if t is not None:
                    self._detect_new_loop("timestep", t)
        call = self.call
        if name is not None:
            call.marked_calls += 1
            branch_name = str(name)
            if branch_name == "uncond" and r.explicit_separate_cfg is False:
                r.warn_once(
                    "marks-win",
                    "do_separate_classifier_free_guidance=False, but the pipeline marks cond/uncond calls "
                    "itself; its marks win and each branch keeps its own cache",
                )
        elif t is not None and r.explicit_separate_cfg is not False:
            branch_name = self._branch_by_timestep(call, t)
        elif r.separate_cfg:
            first_of_step = call.unmarked_calls % 2 == 0
            uncond = first_of_step == r.config.cfg.cfg_compute_first
            branch_name = "uncond" if uncond else "cond"
            call.unmarked_calls += 1
            if r.adapter is not None:
                self._check_cfg_pair(call, first_of_step, args, kwargs)
        else:
            branch_name = "cond"
        branch = call.branch(branch_name)
        step = ctx_kwargs.get("step_index")
        if isinstance(step, bool) or not isinstance(step, int):
            step = branch.calls
        total = ctx_kwargs.get("num_inference_steps")  # the pipeline's step count, where its marks carry it
        if isinstance(total, int) and not isinstance(total, bool):
            call.marked_num_steps = total
        branch.calls += 1
        return Pass(branch=branch, step=step)

    def label_batched_cfg(self) -> None:
        """The pipeline call ran CFG with every transformer call unmarked and one branch: each call carried cond
        and uncond in one batch (SD3, PixArt), so the branch is "cond_uncond", as marked pipelines name it."""
        call = self.call
        if call.marked_calls == 0 and list(call.branches) == ["cond"]:
            branch = call.branches.pop("cond")
            branch.name = "cond_uncond"
            call.branches["cond_uncond"] = branch

    def timestep(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> float | None:
        r = self.runner
        spec = r.adapter.timestep_arg if r.adapter is not None else r.auto_timestep
        t = spec.get(args, kwargs) if spec is not None else None
        if isinstance(t, torch.Tensor) and t.numel() > 0:
            return float(t.reshape(-1)[0])  # one small host read per transformer call
        return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None

    def _detect_new_loop(self, source: str, value: float) -> None:
        """A pipeline call that runs several denoising loops (chunks, stages): within one loop the step index or
        the timestep moves one way, so a move the other way starts a new loop, with fresh state (stats then
        describe the last loop). `source` keeps step indices and timesteps apart."""
        last, direction = self.call.loop_progress.get(source, (None, None))
        if last is not None and value != last:
            moved = 1 if value > last else -1
            if direction is None:
                direction = moved
            elif moved != direction:
                self.call = self.runner.new_call()
                direction = None
        self.call.loop_progress[source] = (value, direction)

    def _branch_by_timestep(self, call: CallState, t: float) -> str:
        """Unmarked calls within a pipeline call: the calls of one step share its timestep, so the k-th call with
        the same timestep is the k-th branch (CFG's cond/uncond pair; a third pass such as skip-layer guidance
        gets its own). One call per step, a pair per step, or pairs that stop half-way (CFG truncation) are all
        told apart."""
        call.step_call = call.step_call + 1 if call.last_timestep == t else 0
        call.last_timestep = t
        first, second = ("uncond", "cond") if self.runner.config.cfg.cfg_compute_first else ("cond", "uncond")
        return (first, second)[call.step_call] if call.step_call < 2 else f"call{call.step_call}"

    def _check_cfg_pair(
        self, call: CallState, first_of_step: bool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Both CFG calls of a step get the same latents; other latents on the second call mean one call per step."""
        latents = self.runner.adapter.latents_arg.get(args, kwargs)
        if first_of_step:
            call.pair_latents = latents
            return
        first, call.pair_latents = call.pair_latents, None
        if isinstance(latents, torch.Tensor) and isinstance(first, torch.Tensor) and latents is not first:
            if latents.shape != first.shape or latents.data_ptr() != first.data_ptr():
                self.runner.warn_once(
                    "cfg-pair",
                    "do_separate_classifier_free_guidance=True, but the two transformer calls of a step got "
                    "different latents: the pipeline seems to run one call per step, so cond/uncond buffers "
                    "would be mixed. Pass do_separate_classifier_free_guidance=False for this pipeline.",
                )

    def _detect_new_run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Bare transformer outside a marked run (pipeline call or `denoising_run`): does this call start a new run?

        Yes when a marked run just ended; when the latents change shape, dtype or device (size, frames, batch);
        when the call comes from another thread than the run's last call (interleaved runs then run uncached,
        never mixed); with `num_inference_steps` given, when the branch this call goes to already made that many
        calls; otherwise when the timestep goes up, or repeats within one branch (timesteps fall within a run,
        and only the two CFG calls of a step share one). A run that starts below where the previous one stopped
        (img2img after a half run) cannot be told from its continuation: mark runs with `denoising_run`.
        Costs one small host read per call; pipelines don't need it.
        """
        r = self.runner
        latents = layout(r.adapter.latents_arg.get(args, kwargs))
        me = threading.get_ident()
        new = self.run_ended or (self.prev_latents_layout is not None and latents != self.prev_latents_layout)
        self.run_ended = False
        self.prev_latents_layout = latents
        # the timestep tells runs apart only without num_inference_steps (reading it is a host sync)
        value = self.timestep(args, kwargs) if self.num_inference_steps is None else None
        branch = self.call.branches.get(self._branch_name(self.call))
        finished = (
            self.num_inference_steps is not None
            and branch is not None
            and branch.calls >= self.num_inference_steps
        )
        if self.run_thread is not None and self.run_thread != me and self.call.branches:
            if not finished:
                r.warn_once(
                    "thread-run",
                    "unmarked calls of a bare cached transformer came from two threads within one run; each "
                    "thread's call starts a new run (so interleaved runs run uncached, never mixed). Mark each "
                    "run with `cache_dit.denoising_run(transformer)`, or give each thread its own copy",
                )
            new = True
        self.run_thread = me
        if self.num_inference_steps is not None:
            new = new or finished
        elif value is not None:
            new = (
                new
                or (self.prev_timestep is not None and value > self.prev_timestep)
                or (branch is not None and branch.last_timestep is not None and value >= branch.last_timestep)
            )
        if new or not self.call.branches:  # the first call of a run: no foreign cache may have been added
            check_no_foreign_cache(r.transformer)
        if new:
            self.call = r.new_call()
        if value is not None:
            self.call.branch(self._branch_name(self.call)).last_timestep = value
            self.prev_timestep = value

    def _branch_name(self, call: CallState) -> str:
        """The branch the next transformer call goes to (as `open_pass` names it), without counting the call."""
        if self.context is not None:
            return str(self.context[0])
        if self.runner.separate_cfg:
            first_of_step = call.unmarked_calls % 2 == 0
            return "uncond" if first_of_step == self.runner.config.cfg.cfg_compute_first else "cond"
        return "cond"

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles: no call in flight (the buffers and stats go along)."""
        state = self.__dict__.copy()
        state.update(context=None, depth=0, outer=[], pipeline_managed=False, run_thread=None)
        return state
