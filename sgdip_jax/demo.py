"""The demo: every method on the bundled shoulder case, compared in one table and one figure
(``sgdip demo``; :func:`run_demo` for Python users)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from .data.samples import sample_mri
from .inputs import problem_from_case
from .methods import METHODS, method_config
from .methods.self_validation import held_out_error
from .outcomes import Outcome
from .outputs import OutputDir
from .reconstruct import reconstruct_problem
from .report import demo_table, write_demo

log = logging.getLogger("sgdip")

SETUPS = {
    "cpu": {"size": 128, "network": "unet4", "base": 16, "iterations": None},
    "full": {"size": 320, "network": "unet5", "base": None, "iterations": 4000},
}
"""``cpu``: sized for a few minutes on a laptop, each DIP method at its own default iteration count
(``None``); ``full``: the paper configuration (for a GPU)."""
METHOD_ORDER = ("zero-filled", "cg-sense", "tv", "l1-wavelet", "dip", "sgdip")
"""The order the methods run in; the table shows them best first."""


@dataclasses.dataclass
class Demo:
    """What :func:`run_demo` returns: ``outcomes`` by method (best PSNR first), the printed
    ``table``, a one-line description of the setup, and whether it was ``interrupted``."""

    outcomes: dict[str, Outcome]
    table: str
    describe: str
    interrupted: bool


def run_demo(out_path, *, full=False, size=None, iterations=None, seed=0, force=False, progress=True, interrupt=None):
    """Run :data:`METHOD_ORDER` on the shoulder sample (8 simulated coils, 4x VDRS, 30 dB) with the
    setup ``SETUPS["full" if full else "cpu"]`` (``size`` / ``iterations`` replace its own), write
    the comparison into ``out_path`` and return a :class:`Demo`. The classical methods choose
    ``lam`` from the data; the DIP methods use their defaults on the setup's network."""
    setup = dict(SETUPS["full" if full else "cpu"])
    setup["size"] = size or setup["size"]
    setup["iterations"] = iterations or setup["iterations"]
    width = f" (base {setup['base']})" if setup["base"] else ""
    describe = (
        f"{setup['size']}x{setup['size']} shoulder (real magnitude image, 8 simulated coils, 4x VDRS, 30 dB), "
        f"{setup['network']} U-Net{width}, "
        + (f"{setup['iterations']} iterations" if setup["iterations"] else "each DIP method's default iterations")
    )
    outcomes: dict[str, Outcome] = {}
    configs = {}
    with OutputDir(Path(out_path), force=force) as out:
        log.info("demo: %s", describe)
        case = sample_mri("shoulder", size=setup["size"], coils=8, acceleration=4.0, snr_db=30.0, seed=seed)
        problem = problem_from_case(case, source="shoulder sample")
        for method in METHOD_ORDER:
            dip = METHODS[method].is_dip
            configs[method] = method_config(
                method,
                network=setup["network"] if dip else None,
                width=setup["base"] if dip else None,
                iterations=setup["iterations"] if dip else None,
            )
            outcomes[method] = reconstruct_problem(
                problem, method, configs[method], seed, progress=progress, interrupt=interrupt
            )
            if interrupt is not None and interrupt.requested:
                break
            if not dip:  # the held-out error of the same locations as self-guided DIP's, re-solved without them
                chosen = (
                    {"lam": outcomes[method].result.config["lam"]} if "lam" in outcomes[method].result.config else {}
                )
                config = dataclasses.replace(configs[method], **chosen)
                outcomes[method].held_out_error = held_out_error(method, problem.operator, problem.y, config, seed)
        outcomes = dict(sorted(outcomes.items(), key=lambda item: -item[1].metrics["psnr"]))
        interrupted = bool(interrupt is not None and interrupt.requested)
        write_demo(out, outcomes, configs, problem.reference, describe, interrupted)
        out.commit()
    return Demo(outcomes, demo_table(outcomes), describe, interrupted)
