"""``python -m bench [--only NAME] [--repeats N] [--threads N] [--quick] [--write] ...``: run the benchmarks.

Tables are printed; ``--write`` also records them in the tracked ``BENCHMARKS.md``.

Thread counts are fixed on every side before anything is timed: Numba
(``numba.set_num_threads``), torch (``torch.set_num_threads``) and BLAS (threadpoolctl when
installed, otherwise OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS, which this
script sets before NumPy is first imported; set them yourself when importing bench elsewhere).
Child processes (memory, startup, scaling) get the same variables.
"""
import argparse
import importlib
import os

from bench import BENCHMARKS, set_blas_thread_variables


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only this benchmark (repeatable; one of {', '.join(BENCHMARKS)})")
    parser.add_argument("--repeats", type=int, default=None, metavar="N",
                        help="timed repeats per candidate; the median is reported (default: each benchmark's "
                             "own: neurons 20, conv 10, step 5; memory and scaling: steps per process, 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), metavar="N",
                        help="threads for Numba, torch and BLAS (default: all logical CPUs)")
    parser.add_argument("--compile", choices=("all", "lif", "none"), default="all",
                        help="torch.compile the reference models: all, LIF only (neurons; the other benchmarks "
                             "treat it as all), or none (each compile takes tens of seconds; default all)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer shapes and points, for a smoke run (conv, step, memory, scaling)")
    parser.add_argument("--epoch", action="store_true",
                        help="step: also time one real epoch of the small CNN on the MNIST split, both sides")
    parser.add_argument("--width", type=float, default=0.25, metavar="W",
                        help="scaling: channel multiplier of the VGG-11 (default 0.25)")
    parser.add_argument("--write", action="store_true",
                        help="also record the tables in BENCHMARKS.md (by default they are only printed)")
    args = parser.parse_args(argv)
    if (args.repeats is not None and args.repeats < 1) or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1")
    if not args.width > 0:
        parser.error("--width must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    blas_in_time = set_blas_thread_variables(args.threads)  # before NumPy's first import
    # refsnn before torch: refsnn sets OMP_WAIT_POLICY=PASSIVE, which every OpenMP runtime reads
    # once, when it loads. If torch's loads first its idle threads spin after each parallel region
    # and take the cores from Numba's and OpenBLAS's threads: measured, a VGG-11 step of refsnn
    # then takes 2.1-2.4 s instead of 1.3 s, while SpikingJelly's own step is unchanged (1.2-1.3 s).
    import refsnn  # noqa: F401
    for name in dict.fromkeys(args.only or BENCHMARKS):
        module = importlib.import_module(f"bench.{name}")
        module.run(repeats=args.repeats, threads=args.threads, blas_in_time=blas_in_time,
                   compile_models=args.compile, write=args.write, options=args)


if __name__ == "__main__":
    main()
