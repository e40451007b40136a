"""Survey of how the blocks of every zoo family pass tensors, measured with forward hooks.

`survey_family(family)` builds the tiny model, hooks every `nn.ModuleList` of blocks (found anywhere in the
model, ModuleDict entries included, lists inside a block excluded), runs one forward and records, per list
in execution order: the block forward's parameters, which arguments are tensors, what a block returns, and
for every block after the first where each tensor argument came from (the previous block's output element
itself, a constant side input, an earlier block's output (a long skip), or a new tensor: what changed).
`traits(survey)` and `classify(survey, family)` turn that into the pattern labels of `families.PATTERNS`.

`python -m cache_dit.testing.families_survey [out.md]` runs the whole zoo and writes a readable summary.
"""

from __future__ import annotations

import inspect
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .families import FAMILIES, PATTERNS, Family, in_scope

_LEAF_TYPES = (
    torch.nn.Linear,
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.LayerNorm,
    torch.nn.GroupNorm,
    torch.nn.Dropout,
    torch.nn.Identity,
    torch.nn.Embedding,
)
_ENCODER_WORDS = ("encoder", "context", "txt", "text", "cap", "und_seq", "cond")
_HELPER_WORDS = (
    "refiner",
    "text",
    "txt",
    "context",
    "perceiver",
    "vace",
    "face",
    "cap_",
    "token",
    "guidance",
    "caption",
    "encoder",
)


def _is_block(module: torch.nn.Module) -> bool:
    if isinstance(module, _LEAF_TYPES):
        return False
    return any(True for _ in module.children()) and any(True for _ in module.parameters())


def is_helper(path: str) -> bool:
    """A helper list runs on another stream (text refiners, text blocks, VACE hints, face adapters)."""
    return any(w in path.lower() for w in _HELPER_WORDS)


def find_block_lists(model: torch.nn.Module) -> dict[str, tuple[torch.nn.ModuleList, bool]]:
    """Block lists of a model: {path: (list, reached_through_a_ModuleDict)}; lists inside blocks excluded."""
    modules = dict(model.named_modules())
    found: dict[str, tuple[torch.nn.ModuleList, bool]] = {}
    for path, mod in modules.items():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) == 0 or not all(_is_block(m) for m in mod):
            continue
        if any(path.startswith(other + ".") for other in found):
            continue  # a list inside a block of an outer list
        parent = modules.get(path.rsplit(".", 1)[0]) if "." in path else None
        found[path] = (mod, isinstance(parent, torch.nn.ModuleDict))
    return found


def _tensors_in(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors_in(v)]
    if hasattr(value, "to_tuple"):
        return _tensors_in(value.to_tuple())
    return []


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "tensor"
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return f"{type(value).__name__}[tensor x{len(value)}]"
    return type(value).__name__


@dataclass(eq=False)  # identity: calls are looked up with list.index
class _Call:
    path: str
    index: int
    bound: dict[str, Any]
    output: Any = None


@dataclass
class ListSurvey:
    path: str
    num_blocks: int
    block_cls: str
    via_module_dict: bool
    params: list[str]  # the block forward's parameter names
    tensor_args: list[str]  # arguments that were tensors in some call
    arg_kinds: dict[str, str]  # argument -> kind on the first call
    returns: str  # "tensor", "tuple[n]", "None", ...
    return_shapes: list[Any]
    hidden_arg: str | None  # the image stream's argument (first tensor argument unless declared)
    encoder_arg: str | None  # the second stream's argument (fed by the previous block), else the text input
    hidden_out: int | None  # index of the output element with the hidden input's shape (-1: a lone tensor)
    encoder_out: int | None  # index of the output element with the encoder input's shape
    last_returns: str = ""  # what the last block returned (SD3's last block returns encoder None)
    chain: dict[str, str] = field(default_factory=dict)  # arg -> where it came from (blocks 2..n)
    interleaved: bool = False  # calls of this list alternate with calls of another list
    calls: int = 0


@dataclass
class Survey:
    cls_name: str
    lists: list[ListSurvey]
    between: list[dict[str, Any]]  # per boundary between consecutive lists: how tensors flowed
    not_run: list[str]
    traits: list[str]
    pattern: str
    seconds: float
    outputs: list[torch.Tensor] = field(default_factory=list, repr=False)  # the model's output tensors


def _source(arg_value: Any, prev: _Call, earlier: list[_Call], name: str) -> str:
    """Where a tensor argument of a block came from, relative to the previous block call (and earlier ones)."""
    outs = prev.output if isinstance(prev.output, (tuple, list)) else (prev.output,)
    tagged = isinstance(prev.output, (tuple, list))
    for k, out in enumerate(outs):
        if arg_value is out:
            return f"out[{k}]" if tagged else "out"
    for prev_name, prev_value in prev.bound.items():
        if arg_value is prev_value:
            return "same" if prev_name == name else f"same as {prev_name}"
    for call in reversed(earlier):
        call_outs = call.output if isinstance(call.output, (tuple, list)) else (call.output,)
        if any(arg_value is o for o in call_outs):
            return f"skip from {call.path}[{call.index}] output"
    shape = tuple(arg_value.shape)
    for k, out in enumerate(outs):
        if isinstance(out, torch.Tensor) and tuple(out.shape) == shape:
            tag = f"out[{k}]" if tagged else "out"
            if torch.equal(arg_value, out):
                return f"copy of {tag}"
            return f"changed {tag} (same shape)"
    prev_arg = prev.bound.get(name)
    if isinstance(prev_arg, torch.Tensor) and tuple(prev_arg.shape) == shape:
        return "new (same shape as before)"
    return f"new shape {shape}"


def _hook_lists(lists: dict[str, tuple[torch.nn.ModuleList, bool]], calls: list[_Call]) -> list[Any]:
    handles = []
    for path, (mlist, _) in lists.items():
        for index, block in enumerate(mlist):
            sig = inspect.signature(block.forward)

            def pre(
                mod: Any, args: Any, kwargs: Any, path: str = path, index: int = index, sig: Any = sig
            ) -> None:
                try:
                    bound = sig.bind(*args, **kwargs).arguments
                except TypeError:
                    bound = {f"arg{i}": a for i, a in enumerate(args)} | dict(kwargs)
                flat: dict[str, Any] = {}
                for key, value in bound.items():
                    param = sig.parameters.get(key)
                    if param is not None and param.kind == inspect.Parameter.VAR_KEYWORD:
                        flat.update(value)
                    else:
                        flat[key] = value
                calls.append(_Call(path, index, flat))

            def post(
                mod: Any, args: Any, kwargs: Any, output: Any, path: str = path, index: int = index
            ) -> None:
                for call in reversed(calls):
                    if call.path == path and call.index == index and call.output is None:
                        call.output = output if output is not None else "None"
                        break

            handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(block.register_forward_hook(post, with_kwargs=True))
    return handles


def _survey_list(
    family: Family, path: str, mlist: torch.nn.ModuleList, via_dict: bool, calls: list[_Call]
) -> ListSurvey:
    mine = [c for c in calls if c.path == path]
    first = mine[0]
    seen = {k for c in mine for k, v in c.bound.items() if isinstance(v, torch.Tensor)}
    tensor_args = [k for k in first.bound if k in seen] + sorted(seen - set(first.bound))
    hidden_arg = family.extra.get("hidden_arg") or (tensor_args[0] if tensor_args else None)
    # the second stream: a tensor argument the previous block's output feeds (data flow), else by name
    encoder_arg = family.extra.get("encoder_arg")
    out = first.output
    if encoder_arg is None and len(mine) > 1 and isinstance(out, (tuple, list)):
        encoder_arg = next(
            (k for k in tensor_args if k != hidden_arg and any(mine[1].bound.get(k) is o for o in out)), None
        )
    if encoder_arg is None:
        encoder_arg = next(
            (
                k
                for k in tensor_args
                if k != hidden_arg
                and any(w in k.lower() for w in _ENCODER_WORDS)
                and "mask" not in k.lower()
                and isinstance(first.bound.get(k), torch.Tensor)
            ),
            None,
        )
    if isinstance(out, torch.Tensor):
        returns, shapes = "tensor", [tuple(out.shape)]
    elif isinstance(out, (tuple, list)):
        returns = f"{type(out).__name__}[{len(out)}]"
        shapes = [tuple(o.shape) if isinstance(o, torch.Tensor) else _kind(o) for o in out]
    else:
        returns, shapes = _kind(out), []

    def index_of(arg: str | None) -> int | None:
        value = first.bound.get(arg) if arg else None
        if not isinstance(value, torch.Tensor):
            return None
        # data flow first: which output element is the next block's input
        if len(mine) > 1 and isinstance(out, (tuple, list)):
            for k, o in enumerate(out):
                if mine[1].bound.get(arg) is o:
                    return k
        shape = tuple(value.shape)
        if isinstance(out, torch.Tensor):
            return -1 if tuple(out.shape) == shape else None
        if isinstance(out, (tuple, list)):
            hits = [k for k, o in enumerate(out) if isinstance(o, torch.Tensor) and tuple(o.shape) == shape]
            return hits[0] if hits else None
        return None

    last = mine[-1].output
    if isinstance(last, torch.Tensor):
        last_returns = "tensor"
    elif isinstance(last, (tuple, list)):
        last_returns = f"{type(last).__name__}[{', '.join(_kind(o) for o in last)}]"
    else:
        last_returns = _kind(last)
    chain: dict[str, str] = {}
    for prev, cur in zip(mine, mine[1:]):
        earlier = calls[: calls.index(prev)]
        for k in tensor_args:
            v = cur.bound.get(k)
            src = _source(v, prev, earlier, k) if isinstance(v, torch.Tensor) else _kind(v)
            if k not in chain:
                chain[k] = src
            elif src not in chain[k].split(" | "):
                chain[k] = chain[k] + " | " + src
    positions = [i for i, c in enumerate(calls) if c.path == path]
    interleaved = any(c.path != path for c in calls[positions[0] : positions[-1] + 1])
    return ListSurvey(
        path=path,
        num_blocks=len(mlist),
        block_cls=type(mlist[0]).__name__,
        via_module_dict=via_dict,
        params=list(inspect.signature(mlist[0].forward).parameters),
        tensor_args=tensor_args,
        arg_kinds={k: _kind(v) for k, v in first.bound.items()},
        returns=returns,
        return_shapes=shapes,
        hidden_arg=hidden_arg,
        encoder_arg=encoder_arg,
        hidden_out=index_of(hidden_arg),
        encoder_out=index_of(encoder_arg),
        last_returns=last_returns,
        chain=chain,
        interleaved=interleaved,
        calls=len(mine),
    )


def survey_family(family: Family, seed: int = 0) -> Survey:
    """Build `family`, run one forward with hooks on every block list, and describe how tensors flowed."""
    t0 = time.perf_counter()
    model = family.build(seed=seed)
    lists = find_block_lists(model)
    prepared = family.prepare(model, seed=seed)  # not a denoising step: before the hooks
    calls: list[_Call] = []
    handles = _hook_lists(lists, calls)
    try:
        with torch.no_grad():
            output = model(**family.inputs(seed=seed, step=0), **prepared)
    finally:
        for h in handles:
            h.remove()

    order: list[str] = []
    for call in calls:
        if call.path not in order:
            order.append(call.path)
    surveys = [_survey_list(family, path, lists[path][0], lists[path][1], calls) for path in order]
    between: list[dict[str, Any]] = []
    for a, b in zip(order, order[1:]):
        last_a = [c for c in calls if c.path == a][-1]
        first_b = next(c for c in calls if c.path == b)
        earlier = calls[: calls.index(last_a)]
        flow = {
            k: _source(v, last_a, earlier, k) for k, v in first_b.bound.items() if isinstance(v, torch.Tensor)
        }
        between.append({"from": a, "to": b, "flow": flow})

    result = Survey(
        cls_name=family.cls_name,
        lists=surveys,
        between=between,
        not_run=[p for p in lists if p not in order],
        traits=[],
        pattern="",
        seconds=time.perf_counter() - t0,
        outputs=_tensors_in(output),
    )
    result.traits = traits(result)
    result.pattern = classify(result, family)
    return result


def traits(s: Survey) -> list[str]:
    """Measured traits of a survey (several may hold; `classify` picks the group)."""
    out: list[str] = []
    main = [ls for ls in s.lists if not is_helper(ls.path)]
    if len(main) < len(s.lists):
        out.append("helper_lists")
    for ls in s.lists:
        if ls.via_module_dict:
            out.append("module_dict")
        if ls.interleaved:
            out.append("interleaved")
    for ls in main:
        if (
            ls.returns.startswith(("tuple", "list"))
            and ls.hidden_out is not None
            and ls.encoder_out is not None
        ):
            out.append(
                "two_stream_" + ("hidden_first" if ls.hidden_out < ls.encoder_out else "encoder_first")
            )
        if "None" in ls.last_returns and "None" not in str(ls.return_shapes):
            out.append("encoder_none_last")
        for arg, src in ls.chain.items():
            if "skip from" in src:
                out.append("long_skips")
            elif arg == ls.hidden_arg and ("changed" in src or "new" in src):
                out.append("hidden_changed_between_blocks")
            elif arg not in (ls.hidden_arg, ls.encoder_arg) and ("changed" in src or "new" in src):
                out.append("side_input_changes_between_blocks")
    for b in s.between:
        if is_helper(b["from"]) or is_helper(b["to"]):
            continue
        to = next(ls for ls in s.lists if ls.path == b["to"])
        src = b["flow"].get(to.hidden_arg or "", "")
        if src.startswith("new shape"):
            out.append("concat_between_lists")
        elif src.startswith(("changed", "new")):
            out.append("hidden_rebuilt_between_lists")
    if len(main) > 1:
        out.append("several_main_lists")
    return sorted(set(out))


def classify(s: Survey, family: Family) -> str:
    """The pattern group of a family from its measured traits (`family.pattern` for the declared-only ones)."""
    if family.pattern in ("needs_code", "kv_prefill"):
        return family.pattern  # not visible from one forward: declared in families.py
    t = set(s.traits)
    for trait, group in (
        ("module_dict", "module_dict"),
        ("long_skips", "long_skips"),
        ("encoder_none_last", "encoder_none_last"),
        ("concat_between_lists", "segments"),
        ("hidden_rebuilt_between_lists", "segments"),
        ("hidden_changed_between_blocks", "added_between_blocks"),
        ("helper_lists", "helper_lists"),
    ):
        if trait in t:
            return group
    if any(x.startswith("two_stream") for x in t):
        return "two_stream"
    return "joint" if family.pattern == "joint" else "single"


def _fmt_list(ls: ListSurvey) -> str:
    extra = (", via ModuleDict" if ls.via_module_dict else "") + (", interleaved" if ls.interleaved else "")
    helper = " (helper)" if is_helper(ls.path) else ""
    lines = [
        f"  - `{ls.path}`{helper}: {ls.num_blocks} x {ls.block_cls}{extra}",
        f"    - forward({', '.join(ls.params)}); tensors: {', '.join(ls.tensor_args)}",
        f"    - returns {ls.returns} {ls.return_shapes}; hidden `{ls.hidden_arg}` -> out {ls.hidden_out}, "
        f"encoder `{ls.encoder_arg}` -> out {ls.encoder_out}; last block returns {ls.last_returns}",
    ]
    if ls.chain:
        lines.append("    - next block's inputs: " + "; ".join(f"{k} <- {v}" for k, v in ls.chain.items()))
    return "\n".join(lines)


def render(surveys: list[Survey], failures: dict[str, str]) -> str:
    """A readable summary of the survey, grouped by pattern."""
    by_pattern: dict[str, list[Survey]] = {}
    for s in surveys:
        by_pattern.setdefault(s.pattern, []).append(s)
    out = ["# Zoo survey: how the blocks of diffusers' transformers pass tensors", ""]
    out.append(
        f"{len(FAMILIES)} classes exported by diffusers.models.transformers; {len(in_scope())} in scope, "
        f"{len(FAMILIES) - len(in_scope())} out of scope. Measured on the tiny zoo "
        "(`cache_dit.testing.families`) with forward hooks on every block list, one forward each; "
        "regenerate with `python -m cache_dit.testing.families_survey out.md`."
    )
    out += ["", "## Groups"]
    for p in PATTERNS:
        if p in by_pattern:
            names = ", ".join(s.cls_name for s in by_pattern[p])
            out.append(f"- **{p}** ({len(by_pattern[p])}): {PATTERNS[p]}. {names}")
    oos = [f for f in FAMILIES.values() if f.out_of_scope]
    out.append(
        f"- **out_of_scope** ({len(oos)}): " + "; ".join(f"{f.cls_name} ({f.out_of_scope})" for f in oos)
    )
    if failures:
        out += ["", "## Could not survey"]
        out.extend(f"- {k}: {v}" for k, v in failures.items())
    out += ["", "## Per class"]
    for p in PATTERNS:
        for s in by_pattern.get(p, []):
            fam = FAMILIES[s.cls_name]
            cfg = fam.cfg_style + (f" ({fam.cfg_note})" if fam.cfg_note else "")
            out.append(f"### {s.cls_name}  [{s.pattern}]  CFG: {cfg}")
            out.append(
                f"- traits: {', '.join(s.traits) or '-'}" + (f"; note: {fam.note}" if fam.note else "")
            )
            out.extend(_fmt_list(ls) for ls in s.lists)
            for b in s.between:
                flow = "; ".join(f"{k} <- {v}" for k, v in b["flow"].items())
                out.append(f"  - between `{b['from']}` -> `{b['to']}`: {flow}")
            if s.not_run:
                out.append(f"  - lists not run: {', '.join(s.not_run)}")
            out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    surveys, failures = [], {}
    for family in in_scope():
        try:
            surveys.append(survey_family(family))
        except Exception as exc:  # report, keep going
            failures[family.cls_name] = f"{type(exc).__name__}: {exc}"[:300]
    text = render(surveys, failures)
    if len(argv) > 1:
        with open(argv[1], "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)
    for s in surveys:
        if s.pattern != FAMILIES[s.cls_name].pattern:
            print(
                f"pattern differs: {s.cls_name}: declared {FAMILIES[s.cls_name].pattern}, measured {s.pattern}"
            )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
