"""Budget mode: search a fixed schedule (`compute_steps`) and forecast order for a pipeline and a speed or quality.

`calibrate(pipe, call_kwargs, target_speedup=2.0)` (or `min_psnr=40.0`), with one input (a dict of call
arguments) or several (a list of them):

1. `record`: runs the pipeline once per input with every step computed (bit-identical to the uncached pipeline),
   recording a fixed random sample of every middle segment's hidden-stream residual and of the transformer's
   output at every step (`CacheRunner.recorder`).
2. `search`: cost model, per forecast target (the middle's residual, `taylorseer_cache_type="residual"`, or the
   transformer's whole output, `"output"`): for a candidate schedule and TaylorSeer order, replays the forecasts
   the cache would make on the recorded values and sums the forecast error over the cached steps and the inputs.
   For order 1 the best schedule with K computed steps is found exactly by dynamic programming; uniform schedules
   are scored too, and every candidate with orders 0..max_order.
3. `verify`: the cost model's first verify_runs + screen_runs candidates are screened by a cached run on the first
   input, and the verify_runs best there run on every other input (the cost model ranks schedules well but
   TaylorSeer orders poorly), each sample scored by PSNR on the pipeline's float output against that input's
   recorded run; the pick is `pick_robust`'s (the best mean PSNR among the
   candidates whose worst sample, from 10 samples on the worst after setting aside the lowest 10 %, is within
   `worst_margin` dB of the best one), with a leave-one-out
   estimate (`leave_one_out`) of what it gives on samples it did not see.
4. `io`: the result as JSON keyed by transformer class and step count (`save_calibration`, `load_calibration`).

Cost in pipeline runs with n inputs: target_speedup: n x (1 + verify_runs) + screen_runs (with the defaults and 2
inputs: 34); min_psnr: n x (1 + one run per probed step budget (a binary search, about log2(num_inference_steps))
+ verify_runs - 1) + screen_runs. A cross-fitted pick adds up to n runs (its fit to every input). The search itself is a few seconds on the
CPU. A calibrated schedule fixes which steps run, so its speedup is the same on every input.
"""

from .api import calibrate
from .io import CalibratedOptions, load_calibration, save_calibration
from .search import block_speedup, uniform_schedule, uniform_schedules
from .verify import leave_one_out, pick_robust

__all__ = [
    "CalibratedOptions",
    "block_speedup",
    "calibrate",
    "leave_one_out",
    "load_calibration",
    "pick_robust",
    "save_calibration",
    "uniform_schedule",
    "uniform_schedules",
]
