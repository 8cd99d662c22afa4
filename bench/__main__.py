"""``python -m bench [--only NAME] [--repeats N] [--threads 1,2] [--quick] [--write] ...``: run the benchmarks.

Tables are printed; ``--write`` also records them in the tracked ``BENCHMARKS.md``.

Every benchmark runs once per thread count of ``--threads`` (default: 1 and all logical CPUs).
Thread counts are fixed on every side before anything is timed (``bench.fix_threads``): refsnn
(``refsnn.threads.set_num_threads``: its Numba kernels and its matrix products), torch
(``torch.set_num_threads``) and NumPy's BLAS (threadpoolctl). None of it depends on what was
imported first. Child processes (memory, startup, scaling, import_order) get the same count.
"""
import argparse
import importlib
import os

from bench import BENCHMARKS, set_heading_suffix


def thread_counts(text):
    """``"1,2"`` -> [1, 2]: positive integers, duplicates dropped, order kept."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return list(dict.fromkeys(counts))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only this benchmark (repeatable; one of {', '.join(BENCHMARKS)})")
    parser.add_argument("--repeats", type=int, default=None, metavar="N",
                        help="timed repeats per candidate; the median is reported (default: each benchmark's "
                             "own: neurons 20, conv 10, step 5; memory and scaling: steps per process, 3; "
                             "import_order: fresh processes per import order, 3)")
    default = ",".join(str(n) for n in dict.fromkeys((1, os.cpu_count() or 1)))
    parser.add_argument("--threads", type=thread_counts, default=thread_counts(default), metavar="N[,N...]",
                        help=f"thread counts for refsnn, torch and BLAS; each benchmark runs once per count "
                             f"(default: {default})")
    parser.add_argument("--compile", choices=("all", "lif", "none"), default="all",
                        help="torch.compile the reference models: all, LIF only (neurons; the other benchmarks "
                             "treat it as all), or none (each compile takes tens of seconds; default all)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer shapes and points, for a smoke run (conv, step, memory, scaling, import_order)")
    parser.add_argument("--epoch", action="store_true",
                        help="step: also time one real epoch of the small CNN on the MNIST split, both sides")
    parser.add_argument("--width", type=float, default=0.25, metavar="W",
                        help="scaling: channel multiplier of the VGG-11 (default 0.25)")
    parser.add_argument("--write", action="store_true",
                        help="also record the tables in BENCHMARKS.md (by default they are only printed)")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if not args.width > 0:
        parser.error("--width must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    for threads in args.threads:
        set_heading_suffix(f" ({threads} thread{'s' if threads > 1 else ''})")
        for name in dict.fromkeys(args.only or BENCHMARKS):
            module = importlib.import_module(f"bench.{name}")
            module.run(repeats=args.repeats, threads=threads, blas_in_time=True, compile_models=args.compile,
                       write=args.write, options=args)


if __name__ == "__main__":
    main()
