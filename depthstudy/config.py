"""Configs: compose (every use of Hydra's internals is here), expand a sweep's grid, validate, name runs.

The CLI composes and validates a config before anything runs (bad input ends in one line and
exit code 2), then hands the same overrides to depthstudy.launch, Hydra's entry point, so Hydra's
multirun and every launcher plugin (basic, joblib, submitit) work unchanged. No torch here.
"""

from __future__ import annotations

import functools

import hashlib
import math
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from depthstudy import rundir, schema
from depthstudy.errors import UsageError
from depthstudy.rundir import RUNTIME_KEYS


def _config_dir() -> Path:
    """configs/: inside the installed package (depthstudy/configs), or at the top of a source checkout."""
    packaged = Path(__file__).parent / "configs"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "configs"


CONFIG_DIR = _config_dir()
CONFIG_NAME = "config"


def _dir_name(run_name: str, other_overrides: str) -> str:
    """The run's directory: its readable name, then, when other keys were overridden, a short slug of them
    and a stable hash of the exact overrides (so two different runs never share a directory). Only
    [A-Za-z0-9._-]: no quoting in a shell, and glob patterns such as runs/quick/resA-d56-* work. The
    exact overrides are in the run's .hydra/overrides.yaml and its config.yaml."""
    if not other_overrides:
        return run_name
    # each item as key's last part + value (lr0.05; a group choice by its value: data=cifar10 -> cifar10),
    # whole items only, up to about 40 characters
    slug = ""
    for key, _, value in (item.partition("=") for item in _split_items(other_overrides)):
        item = (re.sub(r"[^A-Za-z0-9]+", "", key.rsplit(".", 1)[-1]) if "." in key else "") + value
        item = re.sub(r"[^A-Za-z0-9._]+", "_", item).strip("_.")
        if len(slug) + len(item) > 40:
            break
        slug += f"-{item}"
    digest = hashlib.sha1(other_overrides.encode()).hexdigest()[:6]
    return f"{run_name}{slug}-{digest}"


def _split_items(override_dirname: str) -> list[str]:
    """Hydra's override_dirname split at the commas between items (not those inside [..] lists)."""
    items, depth, current = [], 0, ""
    for char in override_dirname:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [*items, current]


# Keys the run name already shows (RUNTIME_KEYS, from rundir, do not change the experiment).
NAME_KEYS = ("experiment", "name", "run_name", "seed", "model", "model.depth", "model.shortcut", "optim.weight_decay")


def _dirname_exclude_keys() -> list[str]:
    return list(NAME_KEYS + RUNTIME_KEYS)


for _name, _fn in {"ds.run_name": rundir.run_name, "ds.dir_name": _dir_name, "ds.dirname_exclude_keys": _dirname_exclude_keys}.items():
    OmegaConf.register_new_resolver(_name, _fn, replace=True)
schema.register()  # configs/model/*.yaml extend the typed schema of depthstudy.schema


def quoted(value) -> str:
    """A value (a path) as a Hydra override value, whatever characters it holds."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def normalize_overrides(overrides: list[str] | None) -> list[str]:
    """The overrides as Hydra gets them. `+key=value` (which Hydra advises for a key it does not know) becomes
    `key=value`: no code reads a key the config lacks, so an unknown one is refused by compose with the key it
    meant; `+experiment=X` is `experiment=X` (the group is in the defaults list). Other groups and hydra.* keep
    their +."""
    def plain(o: str) -> str:
        key = o.lstrip("+").split("=", 1)[0].split("@", 1)[0]
        adds_a_key = o.startswith("+") and not key.startswith("hydra") and not (CONFIG_DIR / key).is_dir()
        return o.lstrip("+") if adds_a_key or o.startswith("+experiment=") else o

    for o in overrides or []:
        if "=" not in o and not o.startswith("~"):  # Hydra would say "missing EQUAL at '<EOF>'"
            raise _bare_word(o)
    return [plain(o) for o in (overrides or [])]


def _bare_word(word: str) -> UsageError:
    """A word without `=` (`depthstudy sweep quick`): the preset or group option it names, or the closest one."""
    import difflib

    choices = [f"{group}={option}" for group, options in config_groups().items() for option in options]
    named = [c for c in choices if c.split("=", 1)[1] == word]
    named.sort(key=lambda c: not c.startswith("experiment="))  # a preset first: the habit of other CLIs
    close = named[:1] or difflib.get_close_matches(word, choices, n=1) or [
        f"{c.split('=')[0]}={m}" for m in difflib.get_close_matches(word, [c.split("=", 1)[1] for c in choices], n=1)
        for c in choices if c.endswith("=" + m)][:1]
    return UsageError(f"{word} is not an override: overrides are key=value" + (
        f"; use {close[0]}" if named else f"; did you mean {close[0]}?" if close else
        ", e.g. experiment=quick model.depth=56 (`depthstudy config --groups` lists the presets)"))


def compose(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """The config `depthstudy train OVERRIDES` would run, or a UsageError with Hydra's message."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose(CONFIG_NAME, overrides=overrides, return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        message = one_line(e)
        for launcher in ("submitit_slurm", "submitit_local"):  # the plugin is an extra
            if f"Could not find 'hydra/launcher/{launcher}'" in message:
                raise UsageError(f"hydra/launcher={launcher} needs Hydra's submitit launcher, not installed here: "
                                 'pip install "depthstudy[cluster]"') from None
        if message.startswith("Could not override '"):  # a mistyped key; Hydra's advice (append it with +) is wrong here
            raise _unknown_key(message.split("'")[1]) from None
        if message.startswith("Ambiguous value for argument"):  # a comma list given to a single run
            arg = message.split("'")[1]
            message = (f"{arg} lists several values: to train each, use `depthstudy sweep {arg}`; "
                       f"for one list value write {arg.split('=')[0]}=[{arg.split('=', 1)[1]}]")
        raise UsageError(message) from None


def _unknown_key(key: str) -> UsageError:
    import difflib

    close = difflib.get_close_matches(key, list(key_defaults()), n=1)
    return UsageError(f"{key} is not a config key" + (f"; did you mean {close[0]}?" if close else "")
                      + " (`depthstudy config` prints every key)")


def config_groups() -> dict[str, list[str]]:
    """Every config group and its options, as `depthstudy config --groups` lists them."""
    groups = {}
    for folder in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir() and not p.name.startswith("__")):
        groups[folder.name] = sorted(f.stem for f in folder.glob("*.yaml"))
    return groups


def complete_override(incomplete: str) -> list[str]:
    """Shell completion of one override, as Hydra's own completion does it: `group=` lists the group's options
    (experiment= the presets), a key's prefix the keys of the composed default config (model. its model keys)."""
    groups = config_groups()
    if "=" in incomplete:
        key, _, value = incomplete.partition("=")
        return [f"{key}={o}" for o in groups.get(key.lstrip("+~"), []) if o.startswith(value)]
    names = [f"{g}=" for g in groups] + [f"{k}=" for k in key_defaults()]
    return sorted(n for n in names if n.startswith(incomplete))


def expand_grids(overrides: list[str]) -> list[tuple[list[str], list[list[str]]]]:
    """(the grid's own overrides, its jobs) for each grid, in order. A sweep is one grid (the preset's hydra.sweeper.params crossed with the
    command line's lists), or, where a preset lists `grids`, one per entry: each entry's lists are crossed with
    the preset's params and the command line, and the grids run one after another (a later grid may start
    from a run an earlier one trained: model.init_from)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except Exception as e:
        raise UsageError(one_line(e)) from None
    base = compose([o.input_line for o in parsed if not o.is_sweep_override()], with_hydra=True)
    params = base.hydra.sweeper.get("params") or {}
    out = []
    for grid in grid_overrides(base):
        # Hydra's BasicSweeper puts the preset's params first, then the command line (here: the grid's, then the user's).
        arguments = [f"{k}={v}" for k, v in params.items()] + grid + overrides
        try:
            batches = BasicSweeper.split_arguments(parser.parse_overrides(arguments), max_batch_size=None)
        except Exception as e:
            raise UsageError(one_line(e)) from None
        out.append((grid, [list(job) for job in batches[0]]))
    return out


def grid_overrides(cfg: DictConfig) -> list[list[str]]:
    """A preset's `grids` as override lists ([[]]: one grid, the usual sweep)."""
    grids = cfg.get("grids")
    if grids is None:
        return [[]]
    if not OmegaConf.is_list(grids) or not grids or not all(OmegaConf.is_dict(g) for g in grids):
        raise UsageError("grids must be a list of mappings from keys to values or comma lists, e.g. "
                         "[{model.depth: '20,56', seed: '0,1'}, {model.depth: 110}]")
    return [[f"{k}={v}" for k, v in g.items()] for g in grids]


def compose_jobs(jobs: list[list[str]]) -> list[DictConfig]:
    """The configs (with their hydra node) of many sweep jobs, exactly as Hydra composes each.

    A full Hydra composition costs ~0.2 s, mostly walking the defaults tree. Jobs that choose the
    same config groups share that tree, so each distinct set of group choices is composed once and
    each job's plain `key=value` overrides are then applied by Hydra's own functions, in Hydra's order
    (tests check the result equals a full composition). A 500-run grid plans in seconds. Jobs with
    order-sensitive edits (+key, ~key, dict values) or a search path get a full composition.
    """
    import copy

    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    parser = OverridesParser.create()
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}

    def shapes_the_tree(o) -> bool:  # a config group choice
        return "/" in o.key_or_group or o.key_or_group in groups or o.package is not None

    def needs_full_composition(o) -> bool:  # order-sensitive edits, or settings read before the defaults tree
        return (o.is_add() or o.is_force_add() or o.is_delete() or not isinstance(o.value(), (str, int, float, bool))
                or (shapes_the_tree(o) and not isinstance(o.value(), str))
                or o.key_or_group.startswith(("hydra.searchpath", "hydra.job.env_copy")))

    bases: dict[tuple[str, ...], DictConfig] = {}
    configs = []
    for job in jobs:
        try:
            parsed = parser.parse_overrides(job)
        except Exception as e:
            raise UsageError(one_line(e)) from None
        if any(needs_full_composition(o) for o in parsed):
            configs.append(compose(job, with_hydra=True))
            continue
        tree = tuple(o.input_line for o in parsed if shapes_the_tree(o))
        if tree not in bases:
            bases[tree] = compose(list(tree), with_hydra=True)
        cfg = copy.deepcopy(bases[tree])
        task = [o for o in parsed if not o.is_hydra_override()]
        try:
            ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if not shapes_the_tree(o)], cfg)
            cfg.hydra.overrides.task = [o.input_line for o in task]
            cfg.hydra.overrides.hydra = [o.input_line for o in parsed if o.is_hydra_override()]
            dirname = cfg.hydra.job.config.override_dirname
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=task, exclude_keys=list(dirname.exclude_keys), item_sep=dirname.item_sep,
                kv_sep=dirname.kv_sep)
        except (HydraException, OmegaConfBaseException, ValueError) as e:
            raise UsageError(one_line(e)) from None
        configs.append(cfg)
    return configs


def one_line(e: BaseException) -> str:
    """An error (and the error it was raised from, which holds Hydra's reason) as one line. Lists such as
    Hydra's available options are kept whole; OmegaConf's full_key/object_type trailer is dropped."""
    parts = []
    while e is not None and len(parts) < 3:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith(("full_key:", "object_type=", "reference_type="))]
        text = " ".join(lines).split(" Config search path:")[0]  # Hydra's search path says nothing to a user
        if text and text != "None" and "$" not in text and text not in " ".join(parts):
            parts.append(text)
        e = e.__cause__ or e.__context__
    return _option_hint(": ".join(parts))[:600] or "invalid configuration"


def _option_hint(message: str) -> str:
    """Hydra's "Could not find 'experiment/quik'" with the option meant, like a mistyped key's."""
    import difflib

    found = re.search(r"Could not find '([\w/]+)/([^'/]+)'", message)
    if not found or found.group(1) not in config_groups():
        return message
    group, option = found.groups()
    close = difflib.get_close_matches(option, config_groups()[group], n=1)
    return (f"{group}={option} is not an option of {group}" + (f"; did you mean {group}={close[0]}?" if close else "")
            + f" (options: {', '.join(config_groups()[group])})")


@functools.lru_cache(maxsize=1)
def key_defaults() -> dict:
    """Every key's default (the config `depthstudy train` runs with no overrides), flattened: what a run made
    before a key existed ran with (rundir.config_changes). Inside a Hydra job, through the job's own Hydra."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        from hydra import compose as hydra_compose

        cfg = hydra_compose(CONFIG_NAME, overrides=[])
    else:
        cfg = compose([])
    return rundir.flatten(OmegaConf.to_container(without_hydra(cfg), resolve=True))


def without_hydra(cfg: DictConfig) -> DictConfig:
    """The job's own config (what the task function receives), from one composed with its hydra node."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UsageError(message)


def validate(cfg: DictConfig) -> None:
    """Refuse values that cannot make a meaningful run, with a line that says what is valid."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        _validate(cfg)
    except OmegaConfBaseException as e:  # a key the checks need was deleted or mistyped
        raise UsageError(one_line(e)) from None


def _validate(cfg: DictConfig) -> None:
    try:
        OmegaConf.to_container(without_hydra(cfg) if "hydra" in cfg else cfg, resolve=True)
    except Exception as e:  # an interpolation that cannot resolve
        raise UsageError(one_line(e)) from None
    _check(_int(cfg.seed, 0) and cfg.seed < MAX_SEED, f"seed={cfg.seed!r} must be an integer from 0 to {MAX_SEED - 1}")
    _check(bool(str(cfg.out_dir).strip()), "out_dir is empty; give a directory for the runs, e.g. out_dir=runs")
    name = Path(str(cfg.name))
    _check(bool(str(cfg.name)) and not name.is_absolute() and ".." not in name.parts,
           f"name={cfg.name!r} must be a relative path inside out_dir (no '..', not absolute)")
    run_name = str(cfg.run_name)
    _check(bool(run_name) and "/" not in run_name and "\\" not in run_name and run_name not in (".", ".."),
           f"run_name={cfg.run_name!r} must be one directory name (no '/', not '..'): it names the run inside "
           "out_dir/name")
    _validate_model_and_data(cfg.model, cfg.data)
    _validate_optim_and_schedule(cfg.optim, cfg.schedule)
    _validate_trainer(cfg.trainer)
    if "hydra" in cfg:
        _validate_places(cfg.hydra)
    _validate_fit(cfg)


def _validate_places(h: DictConfig) -> None:
    """Hydra's own path settings cannot put a run in the working directory (by being empty) or a sweep's run outside
    the sweep's directory."""
    for key, value in (("hydra.run.dir", h.run.dir), ("hydra.sweep.dir", h.sweep.dir)):
        _check(bool(str(value or "").strip()), f"{key} is empty: a run would be written into the working directory; "
                                               f"give a directory, or leave {key} out")
    sub = Path(str(h.sweep.subdir or ""))
    _check(str(sub) not in ("", ".") and not sub.is_absolute() and ".." not in sub.parts,
           f"hydra.sweep.subdir={h.sweep.subdir!r} must name a directory inside hydra.sweep.dir (not empty, no '..', "
           "not absolute); leave it out for the run's own name")


def _validate_model_and_data(m: DictConfig, d: DictConfig) -> None:
    _check(m.arch in schema.ARCHS, f"model.arch={m.arch!r} is unknown; choose one of: {', '.join(schema.ARCHS)}")
    schema.depth_rule(m)(m.depth)
    schema.model_config(m).check()
    _check(d.name in schema.DATASETS,
           f"data.name={d.name!r} is not a known data set; choose one of: {', '.join(schema.DATASETS)}")
    _check(_int(d.pad, 0), f"data.pad={d.pad} must be an integer >= 0")
    _check(d.get("pad_fill", "zero") in ("zero", "mean"), f"data.pad_fill={d.get('pad_fill')!r}: choose zero or mean")
    for key in ("val_size", "split_seed") + (("test_size",) if "test_size" in d else ()):
        _check(_int(d[key], 0), f"data.{key}={d[key]!r} must be an integer >= 0")
    _check(d.split_seed < MAX_SEED, f"data.split_seed={d.split_seed} must be below {MAX_SEED}")
    _check(isinstance(d.augment, bool), f"data.augment={d.augment!r} must be true or false")


def _validate_optim_and_schedule(o: DictConfig, s: DictConfig) -> None:
    _check(_number(o.lr) and o.lr > 0, f"optim.lr={o.lr} must be a number > 0")
    _check(_number(o.weight_decay) and o.weight_decay >= 0, f"optim.weight_decay={o.weight_decay} must be a number >= 0")
    _check(_number(o.momentum) and 0 <= o.momentum < 1, f"optim.momentum={o.momentum} must be in [0, 1)")
    _check(o.wd_scope in ("all", "weights"), f"optim.wd_scope={o.wd_scope!r} is unknown; choose all or weights")
    _check(o.momentum_form in ("pytorch", "caffe"), f"optim.momentum_form={o.momentum_form!r}: choose pytorch or caffe")
    _check(isinstance(o.get("nesterov", False), bool), f"optim.nesterov={o.get('nesterov')!r} must be true or false")
    _check(not o.get("nesterov", False) or o.momentum > 0, "optim.nesterov=true needs optim.momentum > 0")
    _check(_int(o.batch_size, 1), f"optim.batch_size={o.batch_size} must be an integer > 0")
    _check(_int(s.iterations, 1), f"schedule.iterations={s.iterations} must be an integer > 0")
    _check(OmegaConf.is_list(s.milestones) and all(_int(x, 1) or (_number(x) and 0 < x < 1) for x in s.milestones),
           f"schedule.milestones={s.milestones} must be a list of iterations > 0, e.g. [32000,48000], or of "
           "fractions of the run, e.g. [0.5,0.75]")
    at = schema.milestone_iterations(s.milestones, int(s.iterations))
    _check(len(set(at)) == len(at), f"schedule.milestones={s.milestones} fall on iterations {at}: two at one "
           "iteration would divide the learning rate twice at once; give each drop its own iteration")
    _check(0 not in at, f"schedule.milestones={s.milestones} fall on iterations {at}: a drop at iteration 0 is no "
           "drop but another learning rate; set optim.lr instead")
    late = [m for m in s.milestones if isinstance(m, int) and m >= s.iterations]
    _check(not late, f"schedule.milestones {late} lie at or beyond schedule.iterations={s.iterations}, so the "
                     "learning rate would never drop there; lower them, or give fractions of the run, e.g. "
                     "schedule.milestones=[0.5,0.75]")
    _check(_number(s.gamma) and s.gamma > 0, f"schedule.gamma={s.gamma} must be > 0")
    w = s.warmup
    _check(w.min_depth is None or _int(w.min_depth, 0),
           f"schedule.warmup.min_depth={w.min_depth} must be null (no warm-up) or a depth >= 0")
    _check(_number(w.lr) and w.lr > 0, f"schedule.warmup.lr={w.lr} must be a number > 0")
    _check(w.until_train_error is None or (_number(w.until_train_error) and 0 <= w.until_train_error <= 100),
           f"schedule.warmup.until_train_error={w.until_train_error} must be a training error in % (0-100), "
           "or null for a fixed-length warm-up")
    _check(w.max_iterations is None or _int(w.max_iterations, 1),
           f"schedule.warmup.max_iterations={w.max_iterations} must be an integer > 0 (the warm-up's cap), or null "
           "(no cap of its own: the first milestone ends it at the latest)")


def _validate_trainer(t: DictConfig) -> None:
    _check(t.precision in schema.PRECISIONS, f"trainer.precision={t.precision!r}: choose fp32, tf32 or bf16")
    _check(t.progress in schema.PROGRESS_MODES, f"trainer.progress={t.progress!r}: choose auto, bar, lines or none")
    _check(str(t.device) in ("auto", "cpu") or str(t.device).startswith("cuda"), f"trainer.device={t.device!r}: choose auto, cpu, cuda or cuda:N")
    _check(t.threads == "auto" or _int(t.threads, 1), f"trainer.threads={t.threads!r}: auto or an integer > 0")
    _check(_int(t.diagnostics_every, 0), f"trainer.diagnostics_every={t.diagnostics_every} must be an integer >= 0")
    _check(isinstance(t.cuda_graphs, bool) or t.cuda_graphs == "auto", f"trainer.cuda_graphs={t.cuda_graphs!r}: choose auto, true or false")
    _check(t.jobs_per_gpu == "auto" or _int(t.jobs_per_gpu, 1), f"trainer.jobs_per_gpu={t.jobs_per_gpu!r}: auto or an integer > 0")
    for key in ("channels_last", "compile", "compile_optimizer", "fused_optimizer", "force_resume"):
        _check(isinstance(t[key], bool), f"trainer.{key}={t[key]!r} must be true or false")
    for key in ("log_every", "ckpt_every", "eval_batch_size"):
        _check(_int(t[key], 1), f"trainer.{key}={t[key]} must be an integer > 0")
    _check(_int(t.eval_every, 0), f"trainer.eval_every={t.eval_every} must be an integer >= 0")


def _validate_fit(cfg: DictConfig) -> None:
    """What depends on the data set and the machine, checked before anything trains: the split leaves
    training images, a batch fits the training split, and CUDA exists where it is asked for."""
    d = cfg.data
    n = schema.DATASET_TRAIN_IMAGES[d.name]
    held_out = d.val_size + (d.get("test_size") or 0)
    _check(held_out < n, f"data.val_size={d.val_size} (+ data.test_size={d.get('test_size') or 0}) must leave "
                         f"training images out of {n}")
    _check(cfg.optim.batch_size <= n - held_out,
           f"optim.batch_size={cfg.optim.batch_size} is larger than the training split ({n - held_out} images)")
    device = str(cfg.trainer.device)
    if device.startswith("cuda") or (cfg.trainer.cuda_graphs is True and device == "auto"):
        import torch  # only when CUDA is asked for

        _check(torch.cuda.is_available() or not device.startswith("cuda"),
               f"trainer.device={device} but CUDA is not available here; use trainer.device=cpu or auto")
        device = device if torch.cuda.is_available() else "cpu"
    _check(cfg.trainer.cuda_graphs is not True or device != "cpu", "CUDA graphs need a CUDA device, and this run is on "
           "cpu; use trainer.device=cuda, or leave CUDA graphs off")


def _number(x) -> bool:
    """A finite int or float (a boolean is not a number here)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# Seeds are mixed into torch generators' 64-bit seeds (data.TrainStream: seed * 1_000_003 + epoch).
MAX_SEED = 2**32


def _int(x, minimum: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= minimum


def check_run_dir(cfg: DictConfig) -> None:
    """Refuse, before Hydra creates or rewrites anything, a run directory that cannot be written, that
    another process is training, or that holds another experiment (unless trainer.force_resume)."""
    run_dir = Path(str(cfg.hydra.run.dir))
    check_init_from(cfg, planned={})
    chosen = any(str(o).startswith("hydra.run.dir=") for o in cfg.hydra.overrides.hydra)  # not name= and out_dir=
    instead = "choose another hydra.run.dir=" if chosen else "choose another name= or out_dir="
    rundir.check_writable(run_dir, instead)
    if run_dir.is_dir():
        rundir.check_not_busy(run_dir)
        rundir.check_same_experiment(run_dir, OmegaConf.to_container(without_hydra(cfg), resolve=True),
                                     bool(cfg.trainer.force_resume), key_defaults, instead)


def check_init_from(cfg: DictConfig, planned: dict[Path, DictConfig]) -> None:
    """model.init_from names a finished run whose net this one can grow from (schema.check_source), or one an
    earlier grid of this sweep trains (`planned`: resolved run directory -> its config): refused in one line before
    anything is written."""
    source = cfg.model.get("init_from")
    if not source:
        return
    path = Path(str(source)).expanduser()
    earlier = planned.get(path.resolve())
    if earlier is not None:  # checked against the config it will have, as if it had finished
        schema.check_source(cfg.model, str(cfg.data.name), OmegaConf.to_container(without_hydra(earlier), resolve=True),
                            {"status": "finished"})
        return
    source_cfg = rundir.read_source_run(path, f"model.init_from={source}")
    schema.check_source(cfg.model, str(cfg.data.name), source_cfg, rundir.source_summary(path))


def load_checked(overrides: list[str] | None) -> tuple[list[str], DictConfig]:
    """Compose and validate; the overrides as Hydra will receive them, and the config."""
    overrides = normalize_overrides(overrides)
    cfg = compose(overrides, with_hydra=True)
    validate(cfg)
    return overrides, cfg
