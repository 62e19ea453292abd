"""How well does a ground-truth-free rule choose self-guided DIP's noise scale for MRI? Every
candidate of :data:`CANDIDATES` runs with the defaults' held-out entries for the
budget plus the largest extension, recording per step the held-out error and the PSNR of the moving
average (before the final data-consistency step). The choice and the extension start from the same
weights and draw the same steps, so a rule's outcome follows from these curves exactly:

* pilot ``P``, then the **minimum** rule (smallest held-out error over the pilot) or the
  **one-standard-error** rule (the most regularising candidate within one standard error of it,
  :func:`~sgdip_jax.methods.common.one_standard_error_choice`);
* the chosen run continues to the budget ``T`` and is extended in blocks of ``extend T / 2`` while
  its smallest held-out error lies in the last tenth of the steps run; the reported step is that
  smallest error's;
* a fixed noise scale (the same stopping), and the **oracle**: the best candidate at its best step
  (labelled as one).

The cost of a rule is counted in network steps: ``n P + (T - P) + extension`` (``n`` candidates).

Cases: the sweep's tuning images (``shoulder``, ``head``; :func:`sgdip_jax.data.samples.mri_magnitude`)
and the open set's (:data:`benchmarks.validation_set.IMAGES`), simulated as there. One JSON line
per (case, seed, candidate) goes to ``OUT/curves.jsonl`` as soon as it is done; a rerun skips what
is there.

    python benchmarks/choice_rules.py --cases shoulder-128-4x30 head-96-4x20 --seeds 0 --out OUT
    python benchmarks/choice_rules.py --out OUT --table
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sgdip_jax.data.samples import mri_magnitude, simulate_case
from sgdip_jax.methods import method_config, run_method

try:  # run as a script or as benchmarks.choice_rules
    from validation_set import IMAGES, _commit
except ImportError:  # pragma: no cover
    from benchmarks.validation_set import IMAGES, _commit

TUNING = ("shoulder", "head")
CANDIDATES = (0.1, 0.25, 0.5)
"""The MRI noise scales compared (least to most regularising)."""
PILOTS = (200, 300, 400, 600)


def parse_case(name: str):
    """``image-size-{acc}x{snr}`` -> ``(image, size, acceleration, snr)``."""
    image, size, rest = name.rsplit("-", 2)
    acceleration, snr = rest.split("x")
    if image not in TUNING and image not in IMAGES:
        raise ValueError(f"unknown image {image!r}; expected one of {TUNING + tuple(IMAGES)}")
    return image, int(size), float(acceleration), float(snr)


def magnitude(image: str, size: int) -> np.ndarray:
    return mri_magnitude(image, size) if image in TUNING else IMAGES[image](size)


def run_curves(name, seed, scale, base=16):
    """One candidate's run to ``T (1 + extend)`` with the default held-out entries: its curves."""
    image, size, acceleration, snr = parse_case(name)
    case, _ = simulate_case(magnitude(image, size), 8, acceleration, snr, seed)
    defaults = method_config("sgdip")
    steps = round(defaults.iterations * (1 + defaults.extend))
    config = method_config(
        "sgdip", network="unet4", width=base, iterations=steps, sets=(f"noise_scale={scale}", "extend=0")
    )
    t0 = time.perf_counter()
    result = run_method("sgdip", case.operator(), case.y, config, key=seed, target=case.x, progress=False)
    return {
        "case": name,
        "seed": seed,
        "noise_scale": scale,
        "commit": _commit(),
        "budget": defaults.iterations,
        "extend": defaults.extend,
        "held_out_values": 2 * int(np.asarray(case.smaps).shape[0]) * int(result.selection["held_out"]),
        "wall_s": round(time.perf_counter() - t0, 1),
        "val": np.asarray(result.history["val"], float).round(6).tolist(),
        "psnr": np.asarray(result.history["psnr"], float).round(4).tolist(),
    }


def reported_step(val, budget, extend) -> tuple[int, int]:
    """``(step, steps run)`` of the default stopping: run to ``budget``, extend in two blocks while
    the smallest held-out error lies in the last tenth, report the step of the smallest error."""
    allowed = round(extend * budget)
    block, run = max(1, (allowed + 1) // 2), budget
    while run < budget + allowed and int(np.argmin(val[:run])) >= run - max(1, run // 10):
        run = min(run + block, budget + allowed)
    return int(np.argmin(val[:run])), run


def choose(curves, pilot, rule) -> int:
    """Index of the candidate ``rule`` keeps (``"min"`` or ``"1se"``) from ``pilot``-step pilots."""
    scores = np.array([min(c["val"][:pilot]) for c in curves])
    if rule == "min":
        return int(np.argmin(scores))
    n = curves[0]["held_out_values"]
    within = scores <= scores.min() * (1 + 1 / np.sqrt(2 * n))
    return int(len(scores) - 1 - np.argmax(within[::-1]))


def outcomes(curves) -> dict[str, tuple[float, int]]:
    """Per rule: (PSNR of the reported step, network steps spent) on one (case, seed)."""
    curves = sorted(curves, key=lambda c: c["noise_scale"])
    budget, extend = curves[0]["budget"], curves[0]["extend"]
    reported = []
    for c in curves:
        step, run = reported_step(c["val"], budget, extend)
        reported.append((c["psnr"][step], run))
    out = {f"fixed c={c['noise_scale']:g}": reported[i] for i, c in enumerate(curves)}
    for pilot in PILOTS:
        for rule in ("min", "1se"):
            i = choose(curves, pilot, rule)
            out[f"pilot {pilot}, {rule}"] = (reported[i][0], len(curves) * pilot + reported[i][1] - pilot)
    out["oracle"] = (max(max(c["psnr"]) for c in curves), float("nan"))
    return out


def table(rows) -> str:
    by_case: dict = {}
    for r in rows:
        by_case.setdefault((r["case"], r["seed"]), []).append(r)
    complete = {k: v for k, v in by_case.items() if len(v) == len(CANDIDATES)}
    results = {k: outcomes(v) for k, v in sorted(complete.items())}
    if not results:
        return "no complete case"
    names = list(next(iter(results.values())))
    lines = [
        "| rule | " + " | ".join(f"{c} s{s}" for c, s in results) + " | mean gap to oracle | worst gap | mean steps |"
    ]
    lines.append("|---" * (len(results) + 4) + "|")
    for name in names:
        gaps = [v["oracle"][0] - v[name][0] for v in results.values()]
        steps = [v[name][1] for v in results.values()]
        cells = " | ".join(f"{v[name][0]:.2f}" for v in results.values())
        cost = "-" if name == "oracle" else f"{np.mean(steps):.0f}"
        lines.append(f"| {name} | {cells} | {np.mean(gaps):.2f} | {np.max(gaps):.2f} | {cost} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", default=["shoulder-128-4x30"], help="image-size-{acc}x{snr}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--base", type=int, default=16, help="U-Net width (the demo's)")
    parser.add_argument(
        "--scales", type=float, nargs="+", default=list(CANDIDATES), help="the candidates to run (default: all)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--table", action="store_true", help="print the rules' table of OUT and exit")
    args = parser.parse_args(argv)
    path = args.out / "curves.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if args.table:
        print(table(rows))
        return
    for name in args.cases:
        parse_case(name)  # fail before any work
    if not set(args.scales) <= set(CANDIDATES):
        parser.error(f"--scales: each must be one of {CANDIDATES}")
    args.out.mkdir(parents=True, exist_ok=True)
    done = {(r["case"], r["seed"], r["noise_scale"]) for r in rows}
    for seed in args.seeds:
        for name in args.cases:
            for scale in args.scales:
                if (name, seed, scale) in done:
                    continue
                row = run_curves(name, seed, scale, args.base)
                with path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{name} seed {seed} c={scale:g}: best {max(row['psnr']):.2f} dB ({row['wall_s']} s)", flush=True)


if __name__ == "__main__":
    main()
