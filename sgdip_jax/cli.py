"""The ``sgdip`` command: ``sgdip reconstruct``, ``sgdip demo`` and ``sgdip info``.

Input files become problems in :mod:`sgdip_jax.inputs`, methods run through
:mod:`sgdip_jax.reconstruct` (one problem, a batch, or a volume over several processes), and
:mod:`sgdip_jax.report` writes the results through :mod:`sgdip_jax.outputs`; this module only
parses options and prints. Bad input ends with
one line ``sgdip: error: ...`` and exit status 2. Ctrl-C during a DIP
run ends it after the current chunk of iterations, saves what has been computed (EMA image,
history) and exits with status 130; a second Ctrl-C aborts at once without saving. For several
fastMRI slices the finished slices are what is saved (in ``OUT.partial``); rerunning the same
command computes only the missing ones.

Settings come from, in increasing priority: the methods' defaults, a ``--config`` file (TOML / YAML /
JSON; top-level keys are the option names with ``_`` for ``-``, tables named after methods hold that
method's config fields, e.g. ``[sgdip]`` with ``alpha = 0.01`` and ``[sgdip.network]``), and the
command line (``--set KEY=VALUE`` for single method-config fields).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import platform
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__

if TYPE_CHECKING:
    from .reconstruct import Outcome

PROG = "sgdip"
log = logging.getLogger("sgdip")

INTERRUPTED = 130
USAGE = 2
FAILED = 1


class UsageError(Exception):
    """A command-line or config-file mistake reported as ``sgdip: error: ...`` (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """Argument parser that raises :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` unless the help text already states its default."""

    def _get_help_string(self, action):
        if "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


# --------------------------------------------------------------------------- parser


def _number(cast, low=None, high=None, *, low_open=False, high_open=False, name: str):
    """An argparse ``type``: ``cast(text)`` (finite) within ``[low, high]`` (bounds open when asked);
    argparse reports the failure with ``name`` (e.g. "invalid positive integer value: '0'")."""

    def convert(text):
        value = cast(text)
        if (
            not np.isfinite(value)
            or (low is not None and (value < low or (low_open and value == low)))
            or (high is not None and (value > high or (high_open and value == high)))
        ):
            raise ValueError(f"expected a {name}, got {text}")
        return value

    convert.__name__ = name
    return convert


_positive_int = _number(int, 1, name="positive integer")
_nonnegative_int = _number(int, 0, name="non-negative integer")
_positive_float = _number(float, 0, low_open=True, name="positive number")
_seed = _number(int, 0, 2**32 - 1, name="seed (integer from 0 to 2**32 - 1)")
_acceleration = _number(float, 1, name="number >= 1")
_fraction = _number(float, 0, 1, high_open=True, name="fraction in [0, 1)")
_finite = _number(float, name="finite number")


def _nonempty(text):
    if not text.strip():
        raise ValueError("expected a file or spec, got an empty string")
    return text


_nonempty.__name__ = "non-empty value"


def _add_reconstruct(sub):
    from .inputs import SMAPS_CHOICES, InputOptions
    from .methods import METHODS
    from .methods.common import DIPBaseConfig
    from .networks import NETWORKS
    from .operators.masks import MASK_TYPES

    d = InputOptions()
    p = sub.add_parser(
        "reconstruct",
        help="reconstruct an image from a fastMRI .h5, a case .npz, a DICOM or an image file",
        description=(
            "Reconstruct INPUT with a training-free method and write the reconstruction, metrics, "
            "the resolved config, the iteration history and figures into --out. INPUT kinds: a fastMRI "
            "HDF5 file (fully sampled data are undersampled retrospectively, coil maps estimated from the "
            "centre lines), a case .npz (y, smaps, mask[, x]), a DICOM magnitude image (multi-coil "
            "acquisition simulated, reported as 'simulated'), or a PNG/JPEG/TIFF/BMP image (inpainting)."
        ),
        epilog=(
            "examples:\n"
            "  sgdip reconstruct case.npz --method sgdip --iters 2000 --out run1\n"
            "  sgdip reconstruct file_brain.h5 --slices all --acceleration 8 --method dip --out brain8x\n"
            "  sgdip reconstruct photo.png --mask bernoulli:0.5 --method sgdip --out inpaint\n"
            "  sgdip reconstruct case.npz --config settings.toml --set alpha=0.02 --out run2"
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="input file (.h5, .npz, DICOM, or image)")
    g = p.add_argument_group("input and sampling")
    g.add_argument(
        "--slice",
        type=int,
        default=d.slice,
        help="fastMRI slice (DICOM: frame) to reconstruct (default: the middle one)",
    )
    g.add_argument(
        "--slices",
        default=d.slices,
        help="fastMRI volume: 'all', 'A:B' or 'i,j,k'; finished slices are kept in OUT.partial so "
        "an interrupted run resumes where it stopped (default: only --slice)",
    )
    g.add_argument(
        "--acceleration",
        type=_acceleration,
        default=d.acceleration,
        help="undersampling factor of the retrospective line mask for fully sampled MRI data",
    )
    g.add_argument(
        "--center-fraction",
        type=_fraction,
        default=d.center_fraction,
        help="fraction of fully sampled centre lines (default: 0.32 / acceleration, i.e. 0.08 at 4x)",
    )
    g.add_argument("--mask-type", default=d.mask_type, help=f"retrospective line mask: {', '.join(MASK_TYPES)}")
    g.add_argument(
        "--mask",
        type=_nonempty,
        default=d.mask,
        help="mask file (.npy, .npz with 'mask', or image; non-zero = sampled/known) or spec "
        "(bernoulli:MISSING, box:SIZE, vdrs|random|equispaced:ACC[:CF]); for MRI it replaces "
        "the line mask (default: the line mask for MRI, bernoulli:0.5 for images)",
    )
    g.add_argument(
        "--smaps",
        default=d.smaps,
        help=f"coil maps: {', '.join(SMAPS_CHOICES)}; auto = the input's own maps (case, simulated "
        "DICOM), ESPIRiT from the centre lines for fastMRI, ones for single-coil",
    )
    g.add_argument(
        "--crop",
        type=_nonnegative_int,
        default=d.crop,
        help="fastMRI: crop readout oversampling to this many rows and compute metrics on the "
        "central CROPxCROP (or reconstruction_rss's size); 0 = no crop",
    )
    g.add_argument(
        "--size",
        type=_positive_int,
        default=d.size,
        help="DICOM: resample the image to SIZExSIZE by spectral cropping (default: native size)",
    )
    g.add_argument("--coils", type=_positive_int, default=d.coils, help="DICOM: number of simulated coils")
    g.add_argument("--snr-db", type=_finite, default=d.snr_db, help="DICOM: simulated k-space SNR in dB")
    m = p.add_argument_group("method")
    m.add_argument("--method", default="sgdip", help=f"reconstruction method: {', '.join(METHODS)}")
    m.add_argument(
        "--network",
        default=None,
        help=f"network of the DIP methods: {', '.join(NETWORKS)} (default: {DIPBaseConfig().network.name})",
    )
    m.add_argument(
        "--width",
        type=_positive_int,
        default=None,
        help="base channel width of the network (default: the network's own)",
    )
    m.add_argument(
        "--iters",
        type=_positive_int,
        default=None,
        help=f"iterations (default: the method's own; {DIPBaseConfig().iterations} for DIP methods)",
    )
    m.add_argument("--seed", type=_seed, default=d.seed, help="random seed (network, input, masks, simulation)")
    m.add_argument(
        "--reference",
        default=None,
        help="ref-dip: reference image used as network input (.npy, .npz with 'x' or 'image', "
        "image or DICOM; default: none, required for ref-dip)",
    )
    m.add_argument(
        "--early-stopping",
        action="store_true",
        help="stop DIP methods when ES-WMV detects the best iterate and report that image "
        "instead of the moving average",
    )
    m.add_argument(
        "--set",
        dest="set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a field of the method's config, e.g. lr=3e-4, alpha=0.02, network.norm=group "
        "(repeatable; default: none)",
    )
    m.add_argument(
        "--config",
        default=None,
        help="TOML/YAML/JSON file with option keys (e.g. iters = 200) and per-method tables "
        "(e.g. [sgdip]); command-line options override it (default: none)",
    )
    s = p.add_argument_group("several slices, devices and machines")
    s.add_argument(
        "--batch",
        type=_positive_int,
        default=1,
        help="slices per compiled step (DIP methods), split over this process's devices; meant for "
        "GPUs, slower per slice on CPU (default: 1)",
    )
    s.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="multi-machine run: address of process 0 for jax.distributed.initialize; each "
        "process takes its share of --slices (default: one process)",
    )
    s.add_argument(
        "--num-processes",
        type=_positive_int,
        default=None,
        help="multi-machine run: number of processes (default: from the cluster environment)",
    )
    s.add_argument(
        "--process-id",
        type=_nonnegative_int,
        default=None,
        help="multi-machine run: this process's index (default: from the cluster environment)",
    )
    s.add_argument(
        "--peer-timeout",
        type=_positive_float,
        default=120.0,
        metavar="SECONDS",
        help="multi-machine run: a process whose peer sends no heartbeat for this long stops with "
        "an error, keeping its finished slices for the rerun (default: 120)",
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--out",
        default=None,
        help="output directory, refused if it exists and is not empty (default: INPUTSTEM_METHOD)",
    )
    o.add_argument("--force", action="store_true", help="replace an existing output directory")
    o.add_argument("--quiet", action="store_true", help="no progress bar and no log messages")
    p.set_defaults(func=cmd_reconstruct)
    return p


def _add_demo(sub):
    p = sub.add_parser(
        "demo",
        help="self-guided DIP against vanilla DIP and the classical baselines on the bundled shoulder case",
        description=(
            "Run zero-filled, CG-SENSE, TV and L1-wavelet (lam chosen from the data by generalised cross-validation), "
            "vanilla DIP and self-guided DIP on the bundled shoulder MR case (a real "
            "magnitude image from pydicom-data with simulated coils, 4x VDRS undersampling and 30 dB "
            "noise), print a table and write figures. The default is sized for a CPU (a few minutes); "
            "--full runs the paper configuration (320x320, depth-5 U-Net, 4000 iterations) for a GPU."
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "--full", action="store_true", help="paper configuration: 320x320, depth-5 U-Net, 4000 iterations (GPU)"
    )
    p.add_argument(
        "--size",
        type=_positive_int,
        default=None,
        help=f"image size (default: {DEMO['cpu']['size']}, or {DEMO['full']['size']} with --full)",
    )
    p.add_argument(
        "--iters",
        type=_positive_int,
        default=None,
        help=f"DIP iterations (default: {DEMO['cpu']['iterations']}, or {DEMO['full']['iterations']} with --full)",
    )
    p.add_argument("--seed", type=_seed, default=0, help="random seed (simulation and networks)")
    p.add_argument("--out", default="sgdip_demo", help="output directory (refused if it exists and is not empty)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no log messages")
    p.set_defaults(func=cmd_demo)
    return p


def _add_info(sub):
    p = sub.add_parser(
        "info",
        help="versions, devices and where the sample data come from",
        description="Print package versions, the JAX devices and the sources of the bundled sample data.",
        formatter_class=_HelpFormatter,
    )
    p.set_defaults(func=cmd_info, quiet=False)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``sgdip`` parser with its ``reconstruct``, ``demo`` and ``info`` subcommands."""
    parser = _Parser(
        prog=PROG,
        description="Training-data-free image reconstruction with (self-guided) deep image priors, in JAX.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_reconstruct(sub)
    _add_demo(sub)
    _add_info(sub)
    return parser


def _subparser(parser, name):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


# options a config file may not set: what would replace or delete files must be typed each time
NOT_IN_CONFIG_FILES = ("help", "config", "out", "force")


def _config_actions(p) -> dict[str, argparse.Action]:
    """Options of ``p`` that may appear as top-level config-file keys (by dest)."""
    return {a.dest: a for a in p._actions if a.option_strings and a.dest not in NOT_IN_CONFIG_FILES}


def _check_value(action, value, where):
    """Config-file ``value`` converted as the command line would convert it."""
    name = f"{where}: {action.dest}"
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise UsageError(f"{name}: expected true or false, got {value!r}")
        return value
    if isinstance(action, argparse._AppendAction):
        values = value if isinstance(value, list) else [value]
        return [str(v) for v in values]
    if value is None or action.type is None:
        return value if value is None or isinstance(value, str) else str(value)
    try:
        return action.type(str(value))
    except ValueError:
        raise UsageError(f"{name}: invalid value {value!r}") from None


def parse_args(argv) -> argparse.Namespace:
    """Parse ``argv``; for ``reconstruct`` the ``--config`` file supplies defaults the command line overrides."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.method_tables = {}
    if args.command == "reconstruct" and args.config:
        from .config import load_config
        from .methods import METHODS

        data = load_config(args.config)
        sub = _subparser(parser, "reconstruct")
        actions = _config_actions(sub)
        defaults = {}
        for key, value in data.items():
            key = str(key) if str(key) in METHODS else str(key).replace("-", "_")
            if key in METHODS:
                if not isinstance(value, dict):
                    raise UsageError(f"{args.config}: [{key}] must be a table of {key} settings")
                args.method_tables[key] = value
            elif key in actions:
                defaults[key] = _check_value(actions[key], value, args.config)
            elif key in ("out", "force"):
                raise UsageError(
                    f"{args.config}: {key!r} cannot be set in a config file (it decides which files "
                    f"are written or replaced); give --{key} on the command line"
                )
            else:
                raise UsageError(
                    f"{args.config}: unknown key {key!r}; valid keys: {sorted(actions)} "
                    f"and method tables {sorted(METHODS)}"
                )
        sub.set_defaults(**defaults)
        tables = args.method_tables
        args = parser.parse_args(argv)
        args.method_tables = tables
    return args


# --------------------------------------------------------------------------- method configs


def method_config(method: str, *, table=None, network=None, width=None, iters=None, early_stopping=False, sets=()):
    """The frozen config of ``method`` (:func:`sgdip_jax.config.layered`): its defaults, then
    ``table`` (a config-file table), then the shortcut options, then ``sets`` (``--set`` strings).
    Shortcuts that do not apply to the method (e.g. ``network`` for CG-SENSE) are logged and ignored."""
    from .config import layered
    from .methods import get_method
    from .networks import NETWORKS

    cls = get_method(method).config
    fields = {f.name for f in dataclasses.fields(cls)}
    shortcuts = {
        "--network": (network, "network", {"network.name": network}),
        "--width": (width, "network", {"network.base": width}),
        "--iters": (iters, "iterations", {"iterations": iters}),
        "--early-stopping": (
            early_stopping or None,
            "early_stopping",
            {"early_stopping.enabled": True, "early_stopping.stop": True},
        ),
    }
    updates = {}
    for flag, (value, field, changes) in shortcuts.items():
        if value is None:
            continue
        if field not in fields:
            log.warning("%s does not apply to method %s; ignored", flag, method)
            continue
        updates.update(changes)
    config = layered(cls, table=table, updates=updates, sets=sets, where=method)
    if "network" in fields and config.network.name not in NETWORKS:
        raise ValueError(f"unknown network {config.network.name!r}; valid networks: {', '.join(NETWORKS)}")
    return config


# --------------------------------------------------------------------------- running


class _InterruptFlag:
    """While active, the first SIGINT or SIGTERM (what schedulers send before they kill) only sets
    ``requested`` (the run ends after its chunk and saves); a second one raises ``KeyboardInterrupt``.
    ``status``: the exit status of the signal received (130 for SIGINT, 143 for SIGTERM). Outside
    the main thread signals cannot be caught: no-op."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.status = INTERRUPTED
        self._previous = {}

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.status = 128 + signum
        log.warning(
            "%s: stopping after the current chunk and saving (send it again to abort)", signal.Signals(signum).name
        )

    def __enter__(self):
        try:
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        except ValueError:
            self._previous = {}
        return self

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)


# --------------------------------------------------------------------------- reconstruct


def _input_options(args):
    from .inputs import InputOptions

    names = [f.name for f in dataclasses.fields(InputOptions)]
    return InputOptions(**{n: getattr(args, n) for n in names})


RUN_LOCATION = ("out", "force", "quiet", "set", "batch", "coordinator", "num_processes", "process_id")
"""Options that change where and how a run executes, not its result."""


def _resolved_config(args, method, config) -> dict[str, Any]:
    """The config file that reproduces this run with ``--config`` (run-location options left out)."""
    from .config import to_dict

    keys = [a for a in _config_actions(_subparser(build_parser(), "reconstruct")) if a not in RUN_LOCATION]
    options = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    options.update({"method": method, "early_stopping": bool(args.early_stopping)})
    for shortcut in ("network", "width", "iters"):
        options.pop(shortcut, None)
    return {**options, method: to_dict(config)}


def cmd_reconstruct(args) -> int:
    """``sgdip reconstruct``: see the subcommand's ``--help``."""
    from .inputs import detect_kind, load_problems, selected_slices
    from .methods import METHODS
    from .outputs import OutputDir
    from .reconstruct import log_outcome, log_start, reconstruct_problem

    if args.method not in METHODS:
        raise ValueError(f"unknown method {args.method!r}; valid methods: {', '.join(METHODS)}")
    if METHODS[args.method].needs_prior and not args.reference:
        raise ValueError(f"method {args.method} needs --reference FILE (the image used as network input)")
    config = method_config(
        args.method,
        table=args.method_tables.get(args.method),
        network=args.network,
        width=args.width,
        iters=args.iters,
        early_stopping=args.early_stopping,
        sets=args.set,
    )
    distributed = any(v is not None for v in (args.coordinator, args.num_processes, args.process_id))
    if distributed:
        from .multihost import start_distributed

        start_distributed(args.coordinator, args.num_processes, args.process_id, args.peer_timeout)
    kind = detect_kind(args.input)
    out_path = Path(args.out or f"{Path(args.input).stem}_{args.method}")
    options = _input_options(args)
    if kind == "fastmri":
        indices = selected_slices(args.input, options)
        if len(indices) > 1 or distributed:
            return _reconstruct_volume(args, config, options, indices, out_path)
    outcomes: list[Outcome] = []
    with OutputDir(out_path, force=args.force) as out, _InterruptFlag() as interrupt:
        for problem in load_problems(args.input, options):
            log_start(args.input, problem, args.method)
            outcome = reconstruct_problem(
                problem,
                args.method,
                config,
                args.seed,
                prior_image=_prior(args, problem),
                progress=not args.quiet,
                interrupt=interrupt,
            )
            outcomes.append(outcome)
            log_outcome(outcome)
            if interrupt.requested:
                break
        _write_outputs(out, args, kind, config, outcomes)
        out.commit()
    log.info("wrote %s", out_path)
    if interrupt.requested:
        log.warning("run was interrupted; partial results saved in %s", out_path)
        return interrupt.status
    return _diverged_status(outcomes, config, out_path)


def _write_outputs(out, args, kind: str, config, outcomes: list[Outcome]) -> None:
    from .report import write_outputs

    resolved = _resolved_config(args, args.method, config)
    write_outputs(
        out,
        outcomes,
        input_path=args.input,
        kind=kind,
        method=args.method,
        seed=args.seed,
        config=config,
        resolved=resolved,
    )


def _diverged_status(outcomes: list[Outcome], config, out_path: Path) -> int:
    """Exit status 1 with one line per run whose loss stopped being finite (their last finite
    images are saved); 0 otherwise."""
    bad = [o for o in outcomes if o.result.diverged is not None]
    for o in bad:
        where = f" slice {o.problem.meta['slice']}" if "slice" in o.problem.meta else ""
        lr = getattr(config, "lr", None)
        setting = "" if lr is None else f" (lr = {lr:g})"
        hint = "" if lr is None else f"; lower the step size, e.g. --set lr={lr / 10:g}"
        print(
            f"{PROG}: error:{where} the loss was not finite at iteration {o.result.diverged}{setting}; "
            f"the images of iteration {o.result.iterations} are saved in {out_path}{hint}",
            file=sys.stderr,
        )
    return FAILED if bad else 0


def _prior(args, problem):
    """The prior image for ``problem`` of a method that needs one (``ref-dip``), else ``None``."""
    from .inputs import load_reference_image
    from .methods import METHODS

    if not METHODS[args.method].needs_prior:
        return None
    op = problem.operator
    complex_image = np.issubdtype(np.dtype(op.image_dtype), np.complexfloating)
    return load_reference_image(args.reference, tuple(op.image_shape), complex_image)


def _reconstruct_volume(args, config, options, indices: list[int], out_path: Path) -> int:
    """Several fastMRI slices (and processes): :func:`sgdip_jax.reconstruct.reconstruct_volume`."""
    from .multihost import file_identity
    from .reconstruct import reconstruct_volume

    fingerprint = {"input_file": file_identity(args.input), **_resolved_config(args, args.method, config)}
    with _InterruptFlag() as interrupt:
        outcomes = reconstruct_volume(
            args.input,
            options,
            indices,
            args.method,
            config,
            args.seed,
            out_path=out_path,
            fingerprint=fingerprint,
            write=lambda outcomes: _write_volume(out_path, args, config, outcomes),
            batch=args.batch,
            prior_image=lambda problem: _prior(args, problem),
            force=args.force,
            peer_timeout=args.peer_timeout,
            progress=not args.quiet,
            interrupt=interrupt,
        )
    if interrupt.requested:
        return interrupt.status
    return _diverged_status(outcomes, config, out_path) if outcomes else 0


def _write_volume(out_path: Path, args, config, outcomes: list[Outcome]) -> None:
    from .outputs import OutputDir

    with OutputDir(out_path, force=args.force) as out:
        _write_outputs(out, args, "fastmri", config, outcomes)
        out.commit()
    log.info("wrote %s", out_path)


# --------------------------------------------------------------------------- demo

DEMO = {
    "cpu": {"size": 128, "network": "unet4", "base": 16, "iterations": 500},
    "full": {"size": 320, "network": "unet5", "base": None, "iterations": 4000},
}
DEMO_METHODS = ("zero-filled", "cg-sense", "tv", "l1-wavelet", "dip", "sgdip")  # run order; shown best first


def cmd_demo(args) -> int:
    """``sgdip demo``: see the subcommand's ``--help``."""
    from .data.samples import sample_mri
    from .inputs import problem_from_case
    from .methods import METHODS
    from .outputs import OutputDir
    from .reconstruct import reconstruct_problem
    from .report import demo_table, write_demo

    setup = dict(DEMO["full" if args.full else "cpu"])
    setup["size"] = args.size or setup["size"]
    setup["iterations"] = args.iters or setup["iterations"]
    out_path = Path(args.out)
    describe = (
        f"{setup['size']}x{setup['size']} shoulder (real magnitude image, 8 simulated coils, 4x VDRS, 30 dB), "
        f"{setup['network']} U-Net"
        + (f" (base {setup['base']})" if setup["base"] else "")
        + f", {setup['iterations']} iterations"
    )
    with OutputDir(out_path, force=args.force) as out, _InterruptFlag() as interrupt:
        log.info("demo: %s", describe)
        case = sample_mri("shoulder", size=setup["size"], coils=8, acceleration=4.0, snr_db=30.0, seed=args.seed)
        problem = problem_from_case(case, source="shoulder sample")
        outcomes: dict[str, Outcome] = {}
        configs = {}
        for method in DEMO_METHODS:
            configs[method] = (
                method_config(method, network=setup["network"], width=setup["base"], iters=setup["iterations"])
                if METHODS[method].is_dip
                else method_config(method)
            )
            outcomes[method] = reconstruct_problem(
                problem, method, configs[method], args.seed, progress=not args.quiet, interrupt=interrupt
            )
            if interrupt.requested:
                break
        outcomes = dict(sorted(outcomes.items(), key=lambda item: -item[1].metrics["psnr"]))
        rows = demo_table(outcomes)
        write_demo(out, outcomes, configs, problem.reference, describe, interrupt.requested)
        out.commit()
    print(f"\nsgdip demo: {describe}")
    print(rows)
    print(f"\nfigures and metrics written to {out_path}/")
    if not args.full:
        print(
            "This is the CPU-sized demo. On a GPU, run the full paper configuration "
            "(320x320, depth-5 U-Net, 4000 iterations) with: sgdip demo --full"
        )
    return interrupt.status if interrupt.requested else 0


# --------------------------------------------------------------------------- info


def _version(module: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return "not installed"


def cmd_info(args) -> int:
    """``sgdip info``: versions, devices, sample data."""
    import jax

    from .data.samples import IMAGE_SAMPLES, MRI_SAMPLES

    print(f"sgdip-jax {__version__} (python {platform.python_version()}, {platform.platform()})")
    for package in (
        "jax",
        "jaxlib",
        "flax",
        "optax",
        "numpy",
        "h5py",
        "matplotlib",
        "tqdm",
        "pydicom",
        "pydicom-data",
        "scikit-image",
        "Pillow",
        "PyWavelets",
    ):
        print(f"  {package:<13} {_version(package)}")
    print(f"devices (default backend {jax.default_backend()}):")
    for dev in jax.devices():
        print(f"  {dev.id}: {dev.platform} {getattr(dev, 'device_kind', '')}")
    print("sample data (offline; multi-coil k-space is simulated from real magnitude images):")
    for name, (file, description) in MRI_SAMPLES.items():
        print(f"  MR '{name}': {file}, {description}; {_sample_path(file)}")
    for name, (package, function) in IMAGE_SAMPLES.items():
        print(f"  image '{name}': {package} data.{function}()")
    return 0


def _sample_path(file: str) -> str:
    try:
        from pydicom.data import get_testdata_file

        path = get_testdata_file(file)
    except ImportError:
        return "pydicom not installed (pip install 'sgdip-jax[data]')"
    return str(path) if path else "not found (pip install pydicom-data)"


# --------------------------------------------------------------------------- entry point


def _message(err: BaseException) -> str:
    if isinstance(err, KeyError):
        text = f"missing key {err.args[0]!r}" if err.args else "missing key"
    elif isinstance(err, OSError) and err.strerror and err.filename:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def _terminate_as_interrupt():
    """Make SIGTERM raise ``KeyboardInterrupt`` (so staged outputs are cleaned up); the previous handler."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def main(argv=None) -> int:
    """Run ``sgdip`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sgdip: %(message)s"))
    log.addHandler(handler)
    log.propagate = False
    previous_term = _terminate_as_interrupt()
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        log.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
        return args.func(args)
    except UsageError as err:
        print(f"{PROG}: error: {_message(err)}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (ValueError, FileNotFoundError, KeyError, OSError) as err:
        print(f"{PROG}: error: {_message(err)}", file=sys.stderr)
        return USAGE
    finally:
        log.removeHandler(handler)
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)


if __name__ == "__main__":
    sys.exit(main())
