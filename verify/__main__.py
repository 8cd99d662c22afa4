"""``refsnn verify`` (or ``python -m refsnn.verify``; ``python -m verify`` in a checkout): refsnn's
neurons against SpikingJelly 2.0, snnTorch 1.0, norse 1.1 (its LSNN) and the CLIF authors' code (framework
CLIF-authors: a torch mirror of Complementary-LIF's ComplementaryLIFNeuron, verify/frameworks.py).

Runs a matrix — neuron configuration (lif, plif, if, clif, s2nn; hard/soft/other reset,
detach_reset, decay_input, strict threshold, surrogates) × framework × dtype — on random inputs
whose scale ranges from mostly silent to mostly firing, and prints one table: max abs and max
relative error of spikes, membrane and every gradient, tie count, pass/fail (tolerances in
verify/compare.py). Configurations a framework cannot express exactly are listed with the reason.
Then the NIR agreement table (verify/nir_table.py; ``--nir off`` or a ``--component`` choice
leaves it out, ``--nir only`` prints it alone). Exit status 1 on any failure. ``--user MODULE:FACTORY`` checks your own PyTorch module
instead (verify/user.py).

Kernels: by default refsnn runs its generic kernel compilation, one per dtype for every
configuration (tests/test_neurons.py proves it bit-identical to the specialized ones that
training uses); ``--kernels specialized`` checks those instead, at ~10 s of Numba compilation per
configuration and dtype on the first run (cached on disk afterwards).
"""
import argparse
import contextlib
import logging
import sys

import numpy as np

from refsnn.neurons import EXAMPLES, NEURONS, generic_kernels

from .compare import format_table
from .frameworks import FRAMEWORKS, NoEquivalent, available
from .neurons_check import check_neuron, describe, worst

# Each component's configurations are its neuron file's EXAMPLES (refsnn/neurons/*.py), which cover
# its options; the strict/detached/no-input-decay ones are the exact snnTorch equivalents (see
# verify/frameworks.py), the others SpikingJelly's.
CONFIGS = {name: [lambda cls=cls, options=options: cls(**options) for options in EXAMPLES[name]]
           for name, cls in NEURONS.items()}
DTYPES = {"float32": np.float32, "float64": np.float64}
LEGEND = ("labels (verify/neurons_check.py describe): reset hard (to 0) | hard<v_reset> | soft; det = detach_reset; "
          "nodi = decay_input=False; clif: hard<v_reset> = the official code's hard reset, di = decay_input=True; "
          "> = strict threshold; surrogate with α(,β): sig = sigmoid, fsig = fast_sigmoid, box = boxcar, "
          "rectA = rect_authors (the CLIF authors' Rectangle); snnTorch's neurons: reset sub | zero | none, "
          "now = reset_delay=False, L<a|b|t> = learned alpha, beta, threshold, [] = per-neuron arrays, "
          "rleaky: a2a = all_to_all, 1to1 = one-to-one recurrence")
SCALES = (1.5, 0.3, 4.0)  # input standard deviations, cycled over the examples: firing, silent, saturated


def example_input(neuron, index, seed, dtype):
    """Example ``index``: [T, 4, 2, 8], mean half the threshold, spread from ``SCALES``."""
    rng = np.random.default_rng([seed, index])
    T = neuron.max_steps or 6
    x = rng.standard_normal((T, 4, 2, 8)) * SCALES[index % len(SCALES)] + 0.5 * neuron.v_threshold
    return x.astype(dtype)


@contextlib.contextmanager
def kernels(kind):
    """Run refsnn neurons on their ``"generic"`` or ``"specialized"`` Numba compilation."""
    if kind == "specialized":
        yield
        return
    with generic_kernels():
        yield


def run_matrix(components, frameworks, dtypes, examples=3, seed=0):
    """``(rows, skipped)``: the comparison rows (the worst over the examples of each cell), and
    ``(configuration × framework, dtype, reason)`` for every cell that was not compared."""
    rows, skipped = [], []
    missing = {fw: available(fw) for fw in frameworks}
    for fw, reason in missing.items():
        if reason:
            skipped.append((f"{fw} (all components)", None, reason))
    for component in components:
        for make in CONFIGS[component]:
            for fw in frameworks:
                if missing[fw]:
                    continue
                for dtype_name in dtypes:
                    neuron = make()
                    cell = []
                    try:
                        for i in range(examples):
                            x = example_input(neuron, i, seed, DTYPES[dtype_name])
                            cell += check_neuron(neuron, fw, x, seed=seed + i)
                    except NoEquivalent as e:
                        skipped.append((f"{describe(neuron)} × {fw}", dtype_name, str(e)))
                        continue
                    rows += worst(cell)
    return rows, skipped


def format_skipped(skipped, dtypes):
    """One line per reason, listing the combinations it covers (with the dtype where the
    reason holds for some dtypes only)."""
    by_reason = {}
    for what, dtype, reason in skipped:
        by_reason.setdefault(reason, {}).setdefault(what, []).append(dtype)
    lines = [f"not compared ({len(skipped)} cells), no exact equivalent:"]
    for reason, cells in by_reason.items():
        named = [what if None in found or len(found) == len(dtypes) else f"{what} ({', '.join(found)})"
                 for what, found in cells.items()]
        lines.append(f"  {reason}: {'; '.join(named)}")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=f"python -m {__package__}",  # verify, or refsnn.verify once installed
                                description=" ".join(__doc__.split("\n\n")[0].split()),
                                epilog="--user MODULE:FACTORY checks your own PyTorch SNN instead "
                                       "(--user x -h lists its options)")
    p.add_argument("--component", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                   help="neuron components to check (default: all)")
    p.add_argument("--framework", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS),
                   help="reference frameworks (default: all)")
    p.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=list(DTYPES),
                   help="dtypes (default: both)")
    p.add_argument("--examples", type=int, default=3, metavar="N",
                   help="random inputs per cell; the table shows the worst (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs and projections (default 0)")
    p.add_argument("--nir", choices=("on", "off", "only"),
                   help="the NIR agreement table (verify/nir_table.py) after the matrix (on, where nir is installed), "
                        "not (off), or it alone (only); default: on for the whole matrix, off with --component")
    p.add_argument("--kernels", choices=("generic", "specialized"), default="generic",
                   help="refsnn kernel compilation to check (default generic; see above)")
    args = p.parse_args(argv)
    if args.examples < 1:
        p.error("--examples must be >= 1")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--user" or a.startswith("--user=") for a in argv):  # your own torch module: verify/user.py
        from .user import main as user_main
        return user_main(argv)
    args = parse_args(argv)
    logging.getLogger("torch._library.triton").setLevel(logging.ERROR)  # "Triton not available", on CPU
    if args.nir == "only":
        return nir_section(args.framework, args.seed)
    with kernels(args.kernels):
        rows, skipped = run_matrix(args.component, args.framework, args.dtype, args.examples, args.seed)
    print(format_table(rows))
    print(LEGEND)
    if skipped:
        print(format_skipped(skipped, args.dtype))
    if not rows:  # e.g. no framework installed: "0 passed" would read as a pass
        print("error: nothing was compared (every cell was skipped; the frameworks come with "
              'pip install "refsnn[verify]")', file=sys.stderr)
        return 2
    whole = args.component == list(CONFIGS)  # a --component run is about those neurons, not NIR
    nir_code = nir_section(args.framework, args.seed) if args.nir == "on" or (args.nir is None and whole) else 0
    return 0 if all(r.passed for r in rows) and not nir_code else 1


def nir_section(frameworks, seed):
    """Print the NIR agreement table of ``frameworks`` (verify/nir_table.py); 1 if refsnn is at
    fault in a row."""
    from .nir_table import NIR_FRAMEWORKS, format_nir_table, nir_table
    rows, skipped = nir_table([fw for fw in NIR_FRAMEWORKS if fw in frameworks], seed)
    print()
    print(format_nir_table(rows, skipped))
    return 0 if all(r.refsnn_ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
