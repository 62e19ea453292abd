"""Problems in, evaluated reconstructions out: one problem (:func:`reconstruct_problem`), a batch
(:func:`reconstruct_batch`, DIP methods in one compiled step via
:func:`sgdip_jax.methods.common.run_dip_batch`), the slices of a volume over several processes
(:func:`reconstruct_volume`), or a whole input file into an output directory
(:func:`reconstruct_file`, what ``sgdip reconstruct`` runs).

Problems are solved in the units of their measurements, as a Python call of the method would solve
them: a number given as a classical method's ``lam`` is in the units of ``y`` (SigPy's ``lamda``;
the ``"auto"`` and ``"discrepancy"`` rules do not depend on the units), and the DIP methods scale
the data themselves (``rescale``, :mod:`sgdip_jax.methods.common`). A problem gives the same images
alone or in a batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from .outcomes import Outcome, check_finite, outcome_from_bytes, outcome_to_bytes

log = logging.getLogger("sgdip")

WARM_START = 0.1
"""A warm-started slice's first block, as a fraction of the iterations (``--warm-start`` without a
value), chosen on a validation volume (``benchmarks/RESULTS.md``)."""


def evaluate_problem(problem, image):
    """Metrics of ``image`` against ``problem.reference`` (centre-cropped to ``problem.crop``), or ``None``."""
    from .metrics import center_crop, evaluate

    if problem.reference is None:
        return None
    x = center_crop(np.asarray(image), problem.crop, axes=(0, 1)) if problem.crop else image
    return evaluate(x, ref=problem.reference)


def _warn_unmeasurable(problem) -> None:
    """Say before the run which metrics the reference is too small for (they are reported absent)."""
    from .metrics import SSIM_WIN

    if problem.reference is not None and min(np.shape(problem.reference)[:2]) < SSIM_WIN:
        log.warning(
            "SSIM will be absent (null): the reference %s is smaller than its %dx%d window",
            "x".join(map(str, np.shape(problem.reference)[:2])),
            SSIM_WIN,
            SSIM_WIN,
        )


def _zero_filled(problem) -> np.ndarray:
    """``A^H y``, refused when it is all zero (nothing to reconstruct from)."""
    zero_filled = np.asarray(problem.operator.adjoint(jnp.asarray(problem.y)))
    if not np.max(np.abs(zero_filled)) > 0:
        if not np.any(np.asarray(problem.y)):
            raise ValueError("the measurements are all zero (nothing was sampled where the data is non-zero)")
        raise ValueError(
            "the zero-filled image A^H y is all zero although the measurements are not: the coil maps "
            "are zero (check --smaps, the file's 'smaps', or ESPIRiT's calibration lines)"
        )
    return zero_filled


def _outcome(problem, config, result, zero_filled, interrupted) -> Outcome:
    """Evaluate the reported image of ``result`` (:attr:`Result.image`)."""
    image = np.asarray(result.image)
    return Outcome(
        problem=problem,
        result=result,
        image=image,
        zero_filled=zero_filled,
        metrics=evaluate_problem(problem, image),
        zero_filled_metrics=evaluate_problem(problem, zero_filled),
        interrupted=interrupted,
        held_out_error=result.selection["validation_error"] if result.selection else None,
        smaps=None if getattr(problem.operator, "smaps", None) is None else np.asarray(problem.operator.smaps),
    )


def reconstruct_problem(problem, method, config, seed=0, *, prior_image=None, progress=True, interrupt=None) -> Outcome:
    """Run ``method`` on one problem and evaluate it. DIP methods poll ``interrupt.requested``
    after every chunk and stop early when it is set."""
    from .checkpoints import load_weights
    from .methods import as_config, get_method, run_method

    config = as_config(method, config)
    zero_filled = _zero_filled(problem)
    _warn_unmeasurable(problem)
    spec = get_method(method)
    kwargs: dict[str, Any] = {"progress": progress}
    if problem.target is not None:
        kwargs["target"] = jnp.asarray(problem.target)
    if prior_image is not None:
        kwargs["prior_image"] = prior_image
    if spec.takes_sigma:
        kwargs["sigma"] = problem.sigma
    if spec.needs_weights:
        kwargs["weights"] = load_weights(config.weights, method)
    if interrupt is not None:
        kwargs["callback"] = lambda info: interrupt.requested
    result = run_method(method, problem.operator, jnp.asarray(problem.y), config, seed, **kwargs)
    requested = getattr(config, "iterations", None)
    cut_short = requested is not None and result.iterations < requested and result.diverged is None
    return _outcome(
        problem, config, result, zero_filled, bool(interrupt is not None and interrupt.requested and cut_short)
    )


def reconstruct_batch(
    problems: Sequence,
    method: str,
    config,
    seed=0,
    *,
    prior_images: Sequence | None = None,
    devices=None,
    progress=True,
    interrupt=None,
    warm=None,
    warm_steps: int = 0,
) -> list[Outcome]:
    """:func:`reconstruct_problem` for each of ``problems`` with the same method, config and seed.

    DIP methods run all problems in one compiled, ``vmap``-ed step (sharded over ``devices`` when
    given; see :func:`sgdip_jax.methods.common.run_dip_batch`); classical methods run one after another.
    ``config``: the method's config instance, a (nested) dict of its fields, or ``None`` (defaults).
    ``prior_images``: one reference image per problem (``ref-dip``). ``warm`` / ``warm_steps``: DIP
    methods only, start each problem from a :class:`~sgdip_jax.methods.common.WarmStart`
    (:func:`~sgdip_jax.methods.common.run_dip_batch`).
    """
    from .methods import as_config, get_method
    from .methods.common import run_dip_batch

    config = as_config(method, config)
    priors = [None] * len(problems) if prior_images is None else list(prior_images)
    spec = get_method(method)
    if warm is not None and not spec.is_dip:
        raise ValueError(f"{method}: only the DIP methods start from another run's weights (warm start)")
    if not spec.is_dip:
        return [
            reconstruct_problem(p, method, config, seed, prior_image=r, progress=progress, interrupt=interrupt)
            for p, r in zip(problems, priors)
        ]
    _warn_unmeasurable(problems[0])  # a batch shares one image size
    zero_filled = [_zero_filled(p) for p in problems]
    tasks = [spec.make_task(config, prior_image=r) for r in priors]
    targets = None if problems[0].target is None else [jnp.asarray(p.target) for p in problems]
    callback = None if interrupt is None else (lambda info: interrupt.requested)
    results = run_dip_batch(
        tasks,
        [p.operator for p in problems],
        [jnp.asarray(p.y) for p in problems],
        [seed] * len(problems),
        targets,
        devices=devices,
        progress=progress,
        callback=callback,
        warm=warm,
        warm_steps=warm_steps,
    )
    interrupted = bool(interrupt is not None and interrupt.requested)
    return [_outcome(p, config, r, zf, interrupted) for p, r, zf in zip(problems, results, zero_filled)]


def log_start(source, problem, method: str) -> None:
    """Log line ``FILE[ slice N]: METHOD, image SHAPE`` before a reconstruction."""
    where = f" slice {problem.meta['slice']}" if "slice" in problem.meta else ""
    log.info("%s%s: %s, image %s", Path(source).name, where, method, tuple(problem.operator.image_shape))


def log_outcome(outcome: Outcome) -> None:
    """Log line with the iterations, time and (given a reference) the metrics of ``outcome``."""
    r = outcome.result
    text = f"{r.method}: {r.iterations} iterations in {r.wall_time:.1f} s"
    if outcome.metrics:
        m, z = outcome.metrics, outcome.zero_filled_metrics
        text += f", PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f} (zero-filled {z['psnr']:.2f} dB, {z['ssim']:.4f})"
    if r.selection:
        chosen = "".join(f", {k} {v:g}" for k, v in r.selection.get("chosen", {}).items())
        first = r.selection.get("first_stop", -1)
        if 0 <= first < r.selection.get("restart_before", 0):
            chosen += f" (restarted: the preset's run stopped at iteration {first})"
        text += (
            f"; self-validation: error {r.selection['validation_error']:.4f} on {r.selection['held_out']} held-out "
            f"locations, image of iteration {r.selection['iteration']}{chosen}"
        )
    log.info(text)


def reconstruct_volume(
    path,
    options,
    indices: Sequence[int],
    method: str,
    config,
    seed: int = 0,
    *,
    out_path,
    fingerprint: dict,
    write: Callable[[list[Outcome]], None],
    batch: int = 1,
    prior_image: Callable | None = None,
    force: bool = False,
    peer_timeout: float = 120.0,
    progress: bool = True,
    interrupt=None,
    warm_start: float = 0.0,
) -> list[Outcome]:
    """Reconstruct slices ``indices`` of the fastMRI file ``path`` (:class:`~sgdip_jax.inputs.InputOptions`
    ``options``), ``batch`` slices per compiled step over the local devices, resumably.

    ``warm_start > 0`` (DIP methods with self-validation, ``batch = 1``): each process takes its
    slices from the centre of its share outwards (:func:`centre_out`); the centre slice starts cold,
    every other one from the final weights of its neighbour towards the centre
    (:class:`~sgdip_jax.methods.common.WarmStart`, kept in the store so that a resumed run starts
    from them too) and runs ``warm_start * iterations`` steps, then more while its self-validation
    error still falls (:func:`~sgdip_jax.methods.common.run_dip_batch`).

    With several ``jax.distributed`` processes each takes a contiguous share of ``indices``.
    Finished slices go to ``OUT.partial`` next to ``out_path`` (one file each, checked against
    ``fingerprint``: the settings and the input file), which a rerun with the same settings resumes
    from; with several processes they also travel to process 0
    (:class:`~sgdip_jax.multihost.SliceExchange`, peers given up after ``peer_timeout`` seconds of
    silence), which calls ``write(outcomes)`` once, in slice order; each store is removed after.
    ``prior_image(problem)`` gives a method that needs one its image; ``interrupt.requested`` stops
    the run after the current batch (the finished slices stay stored).

    Returns the outcomes of all slices on process 0 once written, ``[]`` on the other processes and
    when interrupted.
    """
    import jax

    from .inputs import fastmri_problems
    from .multihost import SliceExchange, SliceStore, process_share
    from .outputs import check_output_dir

    out_path = Path(out_path)
    lead = jax.process_index() == 0
    if lead:
        check_output_dir(out_path, force)
    store = SliceStore(out_path.with_name(out_path.name + ".partial"), fingerprint, force=force)
    if store.damaged:
        log.warning("%s: slices %s were damaged and are computed again", store.path, store.damaged)
    several = jax.process_count() > 1
    exchange = SliceExchange(store.key, peer_timeout) if several else contextlib.nullcontext()
    mine = process_share(list(indices))
    todo = [i for i in mine if i not in store.done()]
    if len(todo) < len(mine):
        log.info("resuming: %d of %d slices already done in %s", len(mine) - len(todo), len(mine), store.path)
    warm_steps = _warm_steps(method, config, batch, warm_start)
    if warm_steps:
        plan = [([i], parent) for i, parent in centre_out(mine) if i in todo]
    else:
        plan = [(todo[s : s + batch], None) for s in range(0, len(todo), batch)]
    devices = jax.local_devices() if jax.local_device_count() > 1 else None
    outcomes: list[Outcome] = []
    with exchange:
        for index in mine:
            if several and index not in todo:
                exchange.publish(index, store.load(index))
        for block, parent in plan:
            problems = list(fastmri_problems(path, options, block))
            for problem in problems:
                log_start(path, problem, method)
            warm = None if parent is None else store.load_warm(parent)
            if parent is not None and warm is None:
                log.warning("slice %d: the weights of slice %d are not stored; it starts cold", block[0], parent)
            done = reconstruct_batch(
                problems,
                method,
                config,
                seed,
                prior_images=None if prior_image is None else [prior_image(p) for p in problems],
                devices=devices,
                progress=progress,
                interrupt=interrupt,
                warm=None if warm is None else [warm],
                warm_steps=warm_steps,
            )
            if interrupt is not None and interrupt.requested:
                log.warning(
                    "interrupted: %d of %d slices are saved in %s; rerun the same command to finish",
                    len(store.done()),
                    len(indices),
                    store.path,
                )
                return []
            for index, outcome in zip(block, done):
                blob = outcome_to_bytes(outcome)
                if warm_steps:
                    store.save_warm(index, outcome.result.warm_start)
                store.save(index, blob)
                if several:
                    exchange.publish(index, blob)
                log_outcome(outcome)
        if lead:
            blobs = {i: store.load(i) for i in mine}
            if several:
                blobs |= exchange.collect([i for i in indices if i not in mine])
            outcomes = [outcome_from_bytes(blobs[i]) for i in indices]
            write(outcomes)
            if several:
                exchange.announce_written()
        else:
            exchange.wait_written()
    store.remove()
    return outcomes


def centre_out(indices: Sequence[int]) -> list[tuple[int, int | None]]:
    """``(index, neighbour)`` for ``indices`` (in volume order) from the centre outwards: the centre
    (no neighbour), the ones after it, then the ones before it backwards; each with the neighbour
    towards the centre that it starts from, which comes earlier in the list."""
    c = len(indices) // 2
    after = [(indices[i], indices[i - 1]) for i in range(c + 1, len(indices))]
    before = [(indices[i], indices[i + 1]) for i in range(c - 1, -1, -1)]
    return ([(indices[c], None)] if indices else []) + after + before


def _warm_steps(method: str, config, batch: int, warm_start: float) -> int:
    """The first block of a warm-started slice, ``round(warm_start * iterations)`` steps (0: cold starts)."""
    from .methods import as_config, get_method

    if not warm_start:
        return 0
    config = as_config(method, config)
    if not get_method(method).is_dip or not getattr(config, "holdout", 0):
        raise ValueError(
            f"--warm-start: {method} has no self-validation (holdout > 0), the rule that sets how long a "
            "warm-started slice runs; it is for sgdip (and DIP methods given a holdout)"
        )
    if batch != 1:
        raise ValueError(
            "--warm-start: the slices of a process run one after another (each from the last); use --batch 1"
        )
    if not 0 < warm_start <= 1:
        raise ValueError(f"--warm-start: a fraction of the iterations in (0, 1], got {warm_start}")
    return max(1, round(warm_start * config.iterations))


def reconstruct_file(
    path,
    method: str,
    config,
    options=None,
    *,
    out_path,
    reference=None,
    batch: int = 1,
    warm_start: float = 0.0,
    cluster: tuple | None = None,
    force: bool = False,
    peer_timeout: float = 120.0,
    progress: bool = True,
    interrupt=None,
) -> list[Outcome]:
    """Reconstruct the input file ``path`` (any kind :func:`~sgdip_jax.inputs.detect_kind` knows,
    read with :class:`~sgdip_jax.inputs.InputOptions` ``options``) with ``method`` and ``config``,
    and write the results into the directory ``out_path`` (:func:`sgdip_jax.report.write_outputs`,
    with a ``config.toml`` that reruns it through ``sgdip reconstruct --config``). The seed is
    ``options.seed``.

    ``reference``: the image file of a method that needs a prior image (``ref-dip``). Several
    fastMRI slices, or ``cluster = (coordinator, num_processes, process_id)`` (``jax.distributed``;
    ``None`` entries come from the cluster environment), run as :func:`reconstruct_volume` with
    ``batch`` slices per compiled step, or warm-started (``warm_start``, see there). Returns the
    outcomes (``[]`` on processes other than 0).
    """
    from .config import to_dict
    from .inputs import InputOptions, detect_kind, load_problems, load_reference_image, selected_slices
    from .methods import get_method
    from .multihost import file_identity, start_distributed
    from .outputs import OutputDir
    from .report import write_outputs

    options = InputOptions() if options is None else options
    seed = options.seed
    needs_prior = get_method(method).needs_prior
    if needs_prior and not reference:
        raise ValueError(f"method {method} needs a reference image (--reference FILE), the network's input")
    _warm_steps(method, config, batch, warm_start)  # refused before any work
    resolved = {k: v for k, v in dataclasses.asdict(options).items() if v is not None}
    resolved.update({"method": method, **({"reference": str(reference)} if reference else {}), method: to_dict(config)})
    if warm_start:
        resolved["warm_start"] = warm_start
    out_path = Path(out_path)

    def prior(problem):
        if not needs_prior:
            return None
        op = problem.operator
        complex_image = np.issubdtype(np.dtype(op.image_dtype), np.complexfloating)
        return load_reference_image(reference, tuple(op.image_shape), complex_image)

    def write(out, kind, outcomes):
        check_finite(outcomes, method)
        write_outputs(
            out, outcomes, input_path=path, kind=kind, method=method, seed=seed, config=config, resolved=resolved
        )
        out.commit()
        log.info("wrote %s", out_path)

    if cluster is not None:
        start_distributed(*cluster, peer_timeout)
    kind = detect_kind(path)
    if kind == "fastmri":
        indices = selected_slices(path, options)
        if len(indices) > 1 or cluster is not None:

            def write_volume(outcomes):
                with OutputDir(out_path, force=force) as out:
                    write(out, kind, outcomes)

            return reconstruct_volume(
                path,
                options,
                indices,
                method,
                config,
                seed,
                out_path=out_path,
                fingerprint={"input_file": file_identity(path), **resolved},
                write=write_volume,
                batch=batch,
                prior_image=prior,
                force=force,
                peer_timeout=peer_timeout,
                progress=progress,
                interrupt=interrupt,
                warm_start=warm_start,
            )
    if warm_start:
        log.warning("--warm-start: applies to several slices of a fastMRI file; this input has one")
    outcomes: list[Outcome] = []
    with OutputDir(out_path, force=force) as out:
        for problem in load_problems(path, options):
            log_start(path, problem, method)
            outcome = reconstruct_problem(
                problem, method, config, seed, prior_image=prior(problem), progress=progress, interrupt=interrupt
            )
            outcomes.append(outcome)
            log_outcome(outcome)
            if interrupt is not None and interrupt.requested:
                log.warning("run was interrupted; partial results saved in %s", out_path)
                break
        write(out, kind, outcomes)
    return outcomes
