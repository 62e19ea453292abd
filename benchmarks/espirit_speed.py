"""Time ESPIRiT map estimation for one multi-coil slice (default: 15 coils, 640 x 372, as fastMRI knee).

The k-space is simulated (birdcage maps times a smooth elliptical phantom with a smooth phase); the
cost does not depend on the content because the number of power iterations is fixed. The first call
is reported separately (it includes compilation and one run); then the median, min and max wall time
of ``--repeats`` further calls, and their process CPU time (with the load average, since other
processes on the machine inflate wall times).

    python benchmarks/espirit_speed.py [--coils 15] [--shape 640 372] [--repeats 5] [--max-iter 30]
"""

import argparse
import os
import platform
import statistics
import time

import jax
import numpy as np

from sgdip_jax.operators.coils import birdcage_maps
from sgdip_jax.operators.fft import fft2c
from sgdip_jax.operators.sensitivity import espirit


def simulated_kspace(coils, shape):
    """``fft2c(S_c x)`` for birdcage maps ``S`` and an ellipse with smooth magnitude and phase."""
    height, width = shape
    v, u = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    inside = (u / 0.75) ** 2 + (v / 0.85) ** 2 < 1
    image = inside * (1 + 0.3 * np.cos(6 * u) * np.sin(4 * v)) * np.exp(1j * np.pi / 3 * (u + v**2))
    return fft2c(birdcage_maps(coils, shape) * image.astype(np.complex64))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coils", type=int, default=15)
    parser.add_argument("--shape", type=int, nargs=2, default=(640, 372), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calib-width", type=int, default=24)
    parser.add_argument("--max-iter", type=int, default=30)
    args = parser.parse_args(argv)

    kspace = jax.block_until_ready(simulated_kspace(args.coils, tuple(args.shape)))
    load = os.getloadavg()

    def run():
        wall, cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(espirit(kspace, calib_width=args.calib_width, max_iter=args.max_iter))
        return time.perf_counter() - wall, time.process_time() - cpu

    first, _ = run()
    walls, cpus = zip(*(run() for _ in range(args.repeats)))
    cpu_name = platform.processor() or platform.machine()
    print(f"device: {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, {cpu_name}")
    print(f"load average before the runs: {load[0]:.1f} (1 min)")
    print(
        f"espirit: {args.coils} coils, {args.shape[0]}x{args.shape[1]}, calib {args.calib_width}, "
        f"kernel 6, {args.max_iter} power iterations"
    )
    print(f"first call (compile + run): {first:.2f} s; compile ~ {first - min(walls):.2f} s")
    print(
        f"run: median {statistics.median(walls):.2f} s, min {min(walls):.2f} s, max {max(walls):.2f} s "
        f"wall over {args.repeats} runs; median process CPU time {statistics.median(cpus):.2f} s"
    )


if __name__ == "__main__":
    main()
