"""The ``sgdip`` command (``reconstruct``, ``demo``, ``train``, ``info``): it parses options, calls the library
(:func:`~sgdip_jax.reconstruct.reconstruct_file`, :func:`~sgdip_jax.demo.run_demo`,
:func:`~sgdip_jax.train.train`, :func:`~sgdip_jax.info.info_lines`) and prints.

Exit status: 0; 2 with one line ``sgdip: error: ...`` for bad input; 1 when a loss stopped being
finite; 130 after Ctrl-C, which ends a DIP run after its current chunk and saves it (a second one
aborts; finished fastMRI slices stay in ``OUT.partial``, and a rerun computes only the missing ones).

Settings, later ones winning: the methods' defaults, a ``--config`` file (TOML / YAML / JSON: option
names as keys, ``_`` for ``-``; ``[method]`` tables of config fields, e.g. ``[sgdip]`` with ``alpha =
0.01`` and ``[sgdip.network]``), the command line (``--set KEY=VALUE`` for single config fields).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .interrupts import INTERRUPTED, InterruptFlag
from .outcomes import NonFiniteImage

PROG = "sgdip"
log = logging.getLogger("sgdip")
USAGE, FAILED = 2, 1


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # reported as every bad input is: one line, exit status 2
        raise ValueError(f"{message} (see '{self.prog} --help')")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` unless the help text already states its default; keeps the line
    breaks of descriptions and epilogs (indented lines, the examples, are printed as written)."""

    def _get_help_string(self, action):
        return action.help if "default" in (action.help or "") else super()._get_help_string(action)

    def _fill_text(self, text, width, indent):
        fill = super()._fill_text
        return "\n".join(line if line.startswith("  ") else fill(line, width, indent) for line in text.splitlines())


def _number(cast, low=None, high=None, *, high_open=False, low_open=False, name: str):
    """An argparse ``type``: finite ``cast(text)`` in ``[low, high]`` (bounds open when asked)."""

    def convert(text):
        value = cast(text)
        low_bad = low is not None and (value < low or (low_open and value == low))
        high_bad = high is not None and (value > high or (high_open and value == high))
        if (isinstance(value, float) and not np.isfinite(value)) or low_bad or high_bad:
            raise ValueError(f"expected a {name}, got {text}")
        return value

    convert.__name__ = name
    return convert


def _nonempty(text):
    if not text.strip():
        raise ValueError("expected a file or spec, got an empty string")
    return text


_nonempty.__name__ = "non-empty value"
_count = _number(int, 1, name="positive integer")
_index = _number(int, 0, name="non-negative integer")
_seed = _number(int, 0, 2**32 - 1, name="seed (integer from 0 to 2**32 - 1)")
_seconds = _number(float, 0, low_open=True, name="positive number")
_size = _number(int, 16, 4096, name="image size from 16 to 4096")
_fraction = _number(float, 0, 1, low_open=True, name="fraction in (0, 1]")
INPUT_TYPES = {  # argparse types of the InputOptions fields (others are strings)
    "slice": int,
    "acceleration": _number(float, 1, 64, name="number from 1 to 64"),
    "center_fraction": _number(float, 0, 1, high_open=True, name="fraction in [0, 1)"),
    "mask": _nonempty,
    "crop": _index,
    "size": _size,
    "coils": _number(int, 1, 128, name="coil count from 1 to 128"),
    "snr_db": _number(float, -20, 120, name="SNR in dB from -20 to 120"),
    "seed": _seed,
}


def _address(text):
    """``HOST:PORT`` with a port from 1 to 65535."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port from 1 to 65535, got {text}")
    return text


_address.__name__ = "address"


def _reconstruct_parser(sub):
    from .inputs import InputOptions
    from .methods import METHODS, SGDIPConfig
    from .methods.common import DIPBaseConfig
    from .networks import NETWORKS
    from .reconstruct import WARM_START

    p = sub.add_parser(
        "reconstruct",
        help="reconstruct an image from a fastMRI .h5, a case .npz, a DICOM or an image file",
        description="Reconstruct INPUT with a training-free method and write the reconstruction, metrics, the "
        "resolved config, the iteration history and figures into --out. INPUT kinds: a fastMRI HDF5 file (fully "
        "sampled data are undersampled retrospectively, coil maps estimated from the centre lines), a case .npz "
        "(y, smaps, mask[, x]), a DICOM magnitude image (multi-coil acquisition simulated, reported as "
        "'simulated'), or a PNG/JPEG/TIFF/BMP image (inpainting).",
        epilog="examples:\n  sgdip reconstruct case.npz --method sgdip --iters 2000 --out run1\n"
        "  sgdip reconstruct file_brain.h5 --slices all --acceleration 8 --method dip --out brain8x\n"
        "  sgdip reconstruct photo.png --mask bernoulli:0.5 --method sgdip --out inpaint\n"
        "  sgdip reconstruct case.npz --config settings.toml --set alpha=0.02 --out run2",
        formatter_class=_HelpFormatter,
    )
    p.set_defaults(func=cmd_reconstruct)
    p.add_argument("input", metavar="INPUT", help="input file (.h5, .npz, DICOM, or image)")
    g = p.add_argument_group("input and sampling")
    for field in dataclasses.fields(InputOptions):
        flag = "--" + field.name.replace("_", "-")
        g.add_argument(flag, type=INPUT_TYPES.get(field.name), default=field.default, help=field.metadata["help"])
    m = p.add_argument_group("method").add_argument
    m("--method", default="sgdip", help=f"reconstruction method: {', '.join(METHODS)}")
    m("--network", help=f"network of the DIP methods: {', '.join(NETWORKS)} (default: {DIPBaseConfig().network.name})")
    m("--width", type=_count, help="base channel width of the network (default: the network's own)")
    m("--iters", type=_count, help=f"iterations (default: the method's own; {SGDIPConfig().iterations} for sgdip, "
      f"{DIPBaseConfig().iterations} for the other DIP methods)")  # fmt: skip
    m("--weights", metavar="FILE", help="unet-post, modl: trained weights (.npz from 'sgdip train'; default: the "
      "checkpoint bundled with the package)")  # fmt: skip
    m("--reference", help="ref-dip (required): the network input image (.npy, .npz with x or image, image, DICOM)")
    m("--early-stopping", action="store_true", help="stop DIP methods at the iterate ES-WMV detects and report it")
    m("--set", action="append", default=[], metavar="KEY=VALUE", help="set a field of the method's config, e.g. "
      "lr=3e-4, alpha=0.02, network.norm=group (repeatable; default: none)")  # fmt: skip
    m("--config", help="TOML/YAML/JSON file with option keys (e.g. iters = 200) and per-method tables (e.g. "
      "[sgdip]); command-line options override it (default: none)")  # fmt: skip
    s = p.add_argument_group("several slices, devices and machines").add_argument
    s("--batch", type=_count, default=1, help="slices per compiled step of DIP methods, over this process's devices")
    s("--warm-start", type=_fraction, nargs="?", const=WARM_START, default=0.0, metavar="FRACTION",
      help="volumes: start each slice from its neighbour's final weights, from the centre slice outwards, and "
      f"run FRACTION of the iterations, then more while self-validation's error still falls (FRACTION "
      f"{WARM_START} when not given; needs a method with self-validation, e.g. sgdip, and --batch 1; "
      "default: every slice from scratch)")  # fmt: skip
    s("--coordinator", type=_address, metavar="HOST:PORT", help="multi-machine run: address of process 0 for "
      "jax.distributed; each process takes its share of --slices (default: one process)")  # fmt: skip
    s("--num-processes", type=_count, help="multi-machine run: processes (default: from the cluster environment)")
    s("--process-id", type=_index, help="multi-machine run: this process's index (default: from the cluster)")
    s("--peer-timeout", type=_seconds, default=120.0, metavar="SECONDS", help="multi-machine run: stop with an "
      "error when a peer sends no heartbeat for this long, keeping the finished slices for the rerun")  # fmt: skip
    _output_options(p.add_argument_group("output"), "output directory (default: INPUTSTEM_METHOD)")


def _output_options(group, out_help, out_default=None):
    group.add_argument("--out", default=out_default, help=out_help + ", refused if it exists and is not empty")
    group.add_argument("--force", action="store_true", help="replace an existing output directory")
    group.add_argument("--quiet", action="store_true", help="no progress bar and no log messages")


def _demo_parser(sub):
    from .demo import SETUPS
    from .methods import SGDIPConfig
    from .methods.common import DIPBaseConfig

    cpu, full = SETUPS["cpu"], SETUPS["full"]
    p = sub.add_parser(
        "demo",
        help="self-guided DIP against vanilla DIP and the classical baselines on the bundled shoulder case",
        description="Run zero-filled, CG-SENSE, TV and L1-wavelet (lam chosen from the data by generalised "
        "cross-validation), vanilla DIP and self-guided DIP on the bundled shoulder MR case (a real magnitude "
        "image from pydicom-data with simulated coils, 4x VDRS undersampling and 30 dB noise), print a table and "
        "write figures. The default is sized for a CPU (a few minutes); --full runs the paper configuration "
        "(320x320, depth-5 U-Net, 4000 iterations) for a GPU.",
        formatter_class=_HelpFormatter,
    )
    p.set_defaults(func=cmd_demo)
    p.add_argument("--full", action="store_true", help="paper configuration: 320x320, depth-5 U-Net, 4000 iterations")
    p.add_argument("--size", type=_size, help=f"image size (default: {cpu['size']}, or {full['size']} with --full)")
    p.add_argument(
        "--iters",
        type=_count,
        help=f"DIP iterations (default: each method's own, {SGDIPConfig().iterations} for sgdip and "
        f"{DIPBaseConfig().iterations} for dip; {full['iterations']} with --full)",
    )
    p.add_argument("--seed", type=_seed, default=0, help="random seed (simulation and networks)")
    _output_options(p, "output directory", "sgdip_demo")


def _train_parser(sub):
    from .methods.supervised import DEFAULT_NETWORKS
    from .train import DEFAULT_STEPS, TrainConfig

    defaults = TrainConfig()
    nets = "; ".join(f"{m}: {n.name}, width {n.base}" for m, n in DEFAULT_NETWORKS.items())
    p = sub.add_parser(
        "train",
        help="train a supervised baseline (unet-post, modl) on simulated multi-coil brain data",
        description="Train unet-post (U-Net on the zero-filled image) or modl (unrolled denoiser + CG data "
        "consistency) on multi-coil data simulated from the MNI ICBM152 template slices shipped with nilearn "
        "(random phase, birdcage coils, VDRS masks, noise). --out receives train_config.toml, weights.npz (the "
        "lowest validation loss), validation.json / .png and the state to resume from: rerun the same command "
        "after an interruption.",
        epilog="examples:\n  sgdip train --method modl --out modl_run\n"
        "  sgdip train --method unet-post --steps 4000 --set batch=8 --out unet_run\n"
        "  sgdip reconstruct case.npz --method modl --weights modl_run/weights.npz --out recon",
        formatter_class=_HelpFormatter,
    )
    p.set_defaults(func=cmd_train)
    p.add_argument("--method", default="modl", help="what to train: unet-post or modl")
    p.add_argument("--network", help=f"the CNN (default: {nets})")
    p.add_argument("--width", type=_count, help="base channel width of the CNN (default: see --network)")
    steps = ", ".join(f"{m} {n}" for m, n in DEFAULT_STEPS.items())
    p.add_argument("--steps", type=_count, help=f"training steps (default: {steps})")
    p.add_argument("--size", type=_size, help=f"image size of the simulated examples (default: {defaults.size})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set a training config field, "
      "e.g. batch=8, lr=3e-4, model.unrolls=4 (repeatable; default: none)")  # fmt: skip
    p.add_argument("--config", help="TOML/YAML/JSON file of training config fields (default: none)")
    _output_options(p, "run directory (default: train_METHOD); an unfinished run of the same config is resumed")


def build_parser() -> argparse.ArgumentParser:
    """The ``sgdip`` parser with its ``reconstruct``, ``demo``, ``train`` and ``info`` subcommands."""
    parser = _Parser(
        prog=PROG,
        description="Training-data-free image reconstruction with (self-guided) deep image priors, in JAX.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _reconstruct_parser(sub)
    _demo_parser(sub)
    _train_parser(sub)
    info = "Print package versions, the JAX devices and the sources of the bundled sample data."
    sub.add_parser("info", help=info, description=info, formatter_class=_HelpFormatter).set_defaults(func=cmd_info)
    return parser


def _subparser(parser, name) -> argparse.ArgumentParser:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


def parse_args(argv) -> argparse.Namespace:
    """Parse ``argv``; for ``reconstruct`` the ``--config`` file supplies defaults the command line overrides
    (:func:`sgdip_jax.config.apply_run_file`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    tables = {}
    if args.command == "reconstruct" and args.config:
        from .config import apply_run_file
        from .methods import METHODS

        tables = apply_run_file(_subparser(parser, "reconstruct"), args.config, METHODS, protected=("out", "force"))
        args = parser.parse_args(argv)
    args.method_tables = tables
    return args


def cmd_reconstruct(args) -> int:
    """``sgdip reconstruct``: see the subcommand's ``--help``."""
    from .inputs import InputOptions
    from .methods import method_config
    from .reconstruct import reconstruct_file
    from .report import diverged_messages

    config = method_config(
        args.method,
        table=args.method_tables.get(args.method),
        network=args.network,
        width=args.width,
        iterations=args.iters,
        early_stopping=args.early_stopping,
        weights=args.weights,
        sets=args.set,
    )
    cluster = (args.coordinator, args.num_processes, args.process_id)
    cluster = cluster if any(v is not None for v in cluster) else None
    out_path = Path(args.out or f"{Path(args.input).stem}_{args.method}")
    options = InputOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(InputOptions)})
    interrupt = args.interrupt
    outcomes = reconstruct_file(
        args.input,
        args.method,
        config,
        options,
        out_path=out_path,
        reference=args.reference,
        batch=args.batch,
        warm_start=args.warm_start,
        cluster=cluster,
        force=args.force,
        peer_timeout=args.peer_timeout,
        progress=not args.quiet,
        interrupt=interrupt,
    )
    if interrupt.requested:
        return interrupt.status
    diverged = diverged_messages(outcomes, config, out_path)
    for line in diverged:
        print(f"{PROG}: error: {line}", file=sys.stderr)
    return FAILED if diverged else 0


def cmd_demo(args) -> int:
    """``sgdip demo``: see the subcommand's ``--help``."""
    from .demo import run_demo

    setup = {"full": args.full, "size": args.size, "iterations": args.iters, "seed": args.seed, "force": args.force}
    interrupt = args.interrupt
    demo = run_demo(args.out, **setup, progress=not args.quiet, interrupt=interrupt)
    print(f"\nsgdip demo: {demo.describe}\n{demo.table}\n\nfigures and metrics written to {args.out}/")
    if not args.full:
        print("This is the CPU-sized demo; on a GPU, sgdip demo --full runs the paper configuration.")
    return interrupt.status if demo.interrupted else 0


def cmd_train(args) -> int:
    """``sgdip train``: see the subcommand's ``--help``."""
    from .config import load_config
    from .train import train, train_config

    sets = [f"{name}={getattr(args, name)}" for name in ("steps", "size") if getattr(args, name)]
    table = load_config(args.config) if args.config else None
    config = train_config(args.method, table=table, network=args.network, width=args.width, sets=[*sets, *args.set])
    out = Path(args.out or f"train_{args.method}")
    interrupt = args.interrupt
    weights = train(config, out, progress=not args.quiet, interrupt=interrupt, force=args.force)
    info = weights.info
    print(
        f"{PROG} train: {args.method} weights of step {info['best_step']} (validation PSNR {info['val_psnr']:.2f} dB) "
        f"in {out / 'weights.npz'}\nuse them: {PROG} reconstruct INPUT --method {args.method} "
        f"--weights {out / 'weights.npz'}"
    )
    return interrupt.status if interrupt.requested else 0


def cmd_info(args) -> int:
    """``sgdip info``: versions, devices, sample data."""
    from .info import info_lines

    print("\n".join(info_lines()))
    return 0


def _message(err: BaseException) -> str:
    if isinstance(err, KeyError):
        text = f"missing key {err.args[0]!r}" if err.args else "missing key"
    elif isinstance(err, OSError) and err.strerror and err.filename:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def main(argv=None) -> int:
    """Run ``sgdip`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sgdip: %(message)s"))
    log.addHandler(handler)
    log.propagate = False
    # signals are caught from the start, so one sent during start-up is not lost
    with InterruptFlag() as interrupt:
        try:
            args = parse_args(sys.argv[1:] if argv is None else argv)
            log.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
            args.interrupt = interrupt
            return args.func(args)
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return INTERRUPTED
        except NonFiniteImage as err:
            print(f"{PROG}: error: {_message(err)}", file=sys.stderr)
            return FAILED
        except (ValueError, FileNotFoundError, KeyError, OSError) as err:
            print(f"{PROG}: error: {_message(err)}", file=sys.stderr)
            return USAGE
        finally:
            log.removeHandler(handler)


def run() -> None:
    """The ``sgdip`` command: :func:`main`, then exit with its status; a signal during the exit
    (JAX's teardown) is ignored rather than shown as a traceback."""
    status = main()
    for s in InterruptFlag.SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    sys.exit(status)


if __name__ == "__main__":
    run()
