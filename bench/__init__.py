"""Benchmarks of refsnn against the PyTorch references (docs/performance.md, "How to measure").

Run ``python -m bench`` (all benchmarks) or ``python -m bench --only neurons``. Each benchmark
prints a table (refsnn time, reference times, ratios, a bound and the fraction of it reached);
with ``--write`` it also records the table in ``BENCHMARKS.md`` under its own heading. One module per row of
docs/performance.md's targets: ``neurons`` (neuron layers), ``conv`` (Conv2d), ``step`` (a training
step, and the epoch estimate), ``memory`` (peak RSS of a step), ``startup`` (time to the first
step), ``scaling`` (time and memory against T and batch).

Method shared by every benchmark: warm-up first (it includes Numba compilation or cache load),
then the candidates run in turn inside one loop of repeats, so that machine drift hits them all
alike, and each time is the median over the repeats.

Memory is always measured in a separate process per side (``run_child``), which reports its
own resident-set high-water mark (``peak_rss``).

This module imports nothing heavy at import time (``python -m bench --help`` stays fast).
"""
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

# module names under bench/, each with run(repeats, threads, blas_in_time, compile_models, write, options), where
# threads is one int per call (__main__ loops over the requested counts) and blas_in_time is ignored (compatibility)
BENCHMARKS = ("neurons", "conv", "step", "memory", "startup", "scaling", "import_order")
# bench/ is a repository tool, never installed (setup.py installs the package refsnn only): it runs
# from a checkout, whose root holds the tracked BENCHMARKS.md that --write updates
ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_FILE = ROOT / "BENCHMARKS.md"


# ------------------------------------------------------------------------------------------
# Threads
# ------------------------------------------------------------------------------------------
def threading_layer():
    """Numba's threading layer (omp, tbb or workqueue), starting Numba's threads if not yet started."""
    import numba
    from numba.np.ufunc import parallel

    parallel._launch_threads()  # what the first parallel kernel (or numba.set_num_threads) does
    return numba.threading_layer()


def fix_threads(threads, blas_variables_in_time=None):
    """Pin refsnn (``refsnn.threads.set_num_threads``: its Numba kernels and matrix products), torch
    (``torch.set_num_threads``) and NumPy's BLAS (threadpoolctl: the reference side's and the sgemm
    bound's) to ``threads`` threads; return a one-line description.

    torch is pinned only if it is already imported (a refsnn-only child process never loads it).
    ``blas_variables_in_time`` is ignored (kept so that older callers still work): nothing here
    depends on what was imported first.
    """
    import numba
    import threadpoolctl

    import refsnn.threads

    refsnn.threads.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    threadpoolctl.threadpool_limits(threads, user_api="blas")
    pools = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    blas = ", ".join(f"{p['internal_api']}={p['num_threads']}" for p in pools) or "none loaded"
    torch_threads = torch.get_num_threads() if torch is not None else "not loaded"
    return (f"threads: refsnn={refsnn.threads.get_num_threads()} (Numba threading layer {threading_layer()}; "
            f"products on those threads, BLAS at 1 inside them), torch={torch_threads}, "
            f"NumPy's BLAS (threadpoolctl): {blas}")


# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------
def interleaved_medians(candidates, repeats, warmup=2, settle=0.02):
    """Median seconds per call of each candidate, timed in turn inside one loop of repeats.

    ``candidates`` maps a name to ``(prepare, run)``: ``prepare()`` (untimed) resets state,
    ``run()`` is the timed call. The order rotates every repeat so no candidate always runs
    right after the same other one. Before each timed call the process sleeps ``settle``
    seconds, so that the OpenMP workers of the previous candidate (torch's pool spins for some
    milliseconds after a parallel region, with libgomp's default wait policy) stop competing for
    the cores.
    Returns ``{name: median seconds}``.
    """
    names = list(candidates)
    for name in names:
        prepare, run = candidates[name]
        for _ in range(warmup):
            prepare()
            run()
    samples = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            prepare, run = candidates[name]
            prepare()
            time.sleep(settle)
            t0 = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


def copy_bandwidth(n_bytes=256 << 20, repeats=7):
    """Memory bandwidth of a large single-threaded ``np.copyto``: (bytes read + written) / time.

    The arrays (``n_bytes`` each) are far larger than the last-level cache; the best repeat
    is taken, so the bound derived from it is the tightest one this copy supports.
    """
    import numpy as np

    src = np.ones(n_bytes // 4, np.float32)
    dst = np.zeros_like(src)  # both touched once so that page faults stay out of the timing
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best


def sgemm_rate(n=2048, repeats=5):
    """FLOP/s of NumPy's float32 matmul (BLAS sgemm) on two n x n matrices: 2·n³ / best time.

    The bound of the convolution and training-step benchmarks: the arithmetic they must do at
    the rate the BLAS they call reaches on one large, well-shaped product.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)  # warm-up: thread pool start, page faults of c
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


# ------------------------------------------------------------------------------------------
# torch.compile candidates: a time limit, and a failure turned into a line of the report
# ------------------------------------------------------------------------------------------
class CompileTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds):
    """Raise CompileTimeout after ``seconds`` (SIGALRM; no limit where that is unavailable)."""
    if not hasattr(signal, "SIGALRM") or sys.platform == "win32":
        yield
        return

    def on_alarm(signum, frame):
        raise CompileTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def exception_chain(e):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def compile_failure(e, timeout, width=90):
    """The report's text for a torch.compile that raised ``e`` (dynamo may wrap the timeout)."""
    if any(isinstance(c, CompileTimeout) for c in exception_chain(e)):
        return f"skipped: compile > {timeout:.0f} s"
    first_line = (str(e).strip().splitlines() or [""])[0][:width]
    return f"failed: {type(e).__name__}: {first_line}"


def compile_first_call(*calls, timeout, width=90):
    """Run a torch.compile candidate's first calls (compile included) under ``timeout`` seconds:
    (seconds, None), or (None, the report's text) when the compiler fails or times out."""
    t0 = time.perf_counter()
    try:
        with time_limit(timeout):
            for call in calls:
                call()
    except Exception as e:  # any compiler failure is a result to report, not a crash
        sys.modules["torch"]._dynamo.reset()
        return None, compile_failure(e, timeout, width)
    return time.perf_counter() - t0, None


# ------------------------------------------------------------------------------------------
# Memory: resident set of this process, and child processes that report in JSON
# ------------------------------------------------------------------------------------------
def _proc_status_bytes(field):
    """A ``VmXXX:  N kB`` line of /proc/self/status in bytes, or None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_rss():
    """Resident set size of this process now, bytes (None where /proc is unavailable)."""
    return _proc_status_bytes("VmRSS")


def peak_rss():
    """High-water mark of this process's resident set, bytes: VmHWM, else ``ru_maxrss``."""
    peak = _proc_status_bytes("VmHWM")
    if peak is None:
        import resource
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return peak


def reset_peak_rss():
    """Reset the high-water mark to the current RSS (Linux >= 4.0: ``5 > /proc/self/clear_refs``).

    Returns True if it worked; otherwise the peak keeps counting from process start.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


CHILD_RESULT = "BENCH-RESULT "  # prefix of the JSON line a child process prints last


# a child process reads these when it starts: its thread counts whatever it imports first
CHILD_THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def child_env(threads, **variables):
    """Environment of a child benchmark process: the repo importable, and ``threads`` in the thread
    variables that every pool reads when the child starts (``NUMBA_NUM_THREADS`` is refsnn's default,
    for children that do not call ``fix_threads``, such as the ``refsnn train`` of the start-up benchmark)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.update({name: str(threads) for name in CHILD_THREAD_VARIABLES})
    env.update({k: str(v) for k, v in variables.items()})
    return env


def report_to_parent(result):
    """In a child process: hand ``result`` (JSON-serializable) to ``run_child`` in the parent."""
    print(CHILD_RESULT + json.dumps(result), flush=True)


def run_child(args, env, timeout=900):
    """Run ``python *args`` in ``env`` and return the result its ``report_to_parent`` printed.

    Raises RuntimeError with the tail of the child's stderr when it fails or reports nothing.
    """
    proc = subprocess.run([sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    lines = [l for l in proc.stdout.splitlines() if l.startswith(CHILD_RESULT)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise RuntimeError(f"child {' '.join(args[:3])} ... exited with {proc.returncode}:\n{tail}")
    return json.loads(lines[-1][len(CHILD_RESULT):])


# ------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------
def markdown_table(header, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in rows])


def load_average():
    return " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def machine_line():
    """The processor as /proc/cpuinfo names it (model name; vendor, family, model and stepping, which tell
    apart CPUs sold under one generic name such as "AMD EPYC"; the widest vector extension), and the CPU count."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = {}
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
        flags = set(info.get("flags", "").split())
        vector = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"))
                       if flag in flags), "no AVX")
        cpu = (f"{info.get('model name', cpu)} ({info.get('vendor_id', '?')} family {info.get('cpu family', '?')} "
               f"model {info.get('model', '?')} stepping {info.get('stepping', '?')}, {vector})")
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs"


def package_version(name):
    """The installed version of distribution ``name`` (without importing it), or "not installed"."""
    import importlib.metadata
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions_line():
    """Versions of both sides' libraries: refsnn's (NumPy, Numba, llvmlite, SciPy, threadpoolctl and the
    BLAS builds loaded, as threadpoolctl reports them) and the references' (torch, SpikingJelly)."""
    import numba
    import scipy.linalg.cython_blas  # noqa: F401  (the BLAS refsnn's products call: loaded, so listed)
    import threadpoolctl

    import refsnn

    blas = "; ".join(f"{p['internal_api']} {p['version']} {p.get('threading_layer', '')} "
                     f"{p.get('architecture', '')} ({Path(p['filepath']).name})".replace("  ", " ")
                     for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
    names = ("numpy", "numba", "llvmlite", "scipy", "threadpoolctl", "torch", "spikingjelly")
    return (f"Versions: refsnn {refsnn.__version__}, " + ", ".join(f"{n} {package_version(n)}" for n in names)
            + f"; Numba threading layer {threading_layer()}; BLAS: {blas or 'none loaded'}.")


def header(command, started, load_start, threads_line):
    """The lines every section starts with: command, machine and load, versions, threads."""
    return [f"`{command}`, {started}.",
            f"{machine_line()}; load average (1, 5, 15 min) {load_start} at start, {load_average()} at end "
            "(other processes running on these cores inflate and scatter the times).",
            versions_line(),
            f"Fixed {threads_line}."]


def load_warning(load_start):
    """A warning paragraph when the machine was busy before the benchmark started, else ""."""
    busy = float(load_start.split()[0]) if load_start != "n/a" else 0.0  # the end includes our own threads
    if busy <= 0.5:
        return ""
    return (f"\n\nWarning: load average {busy:.1f} on {os.cpu_count()} CPUs before this started. Other "
            "processes took cores, and OpenMP code (torch's many small parallel regions above all) slows "
            "down and scatters badly when a thread waiting at a barrier is descheduled. Rerun on an idle "
            "machine, or compare with `--threads 1`.")


_heading_suffix = {"text": ""}


def set_heading_suffix(text):
    """Append ``text`` to every published section's heading from now on (``__main__`` names the
    thread count there, so that the 1- and 2-thread tables of a benchmark are separate sections)."""
    _heading_suffix["text"] = text


def publish(name, heading, body, write):
    """Print a section and, if ``write``, put it into BENCHMARKS.md; returns ``body``."""
    heading += _heading_suffix["text"]
    print(f"\n{heading}\n\n{body}\n", flush=True)
    if write:
        write_section(heading, body)
        log(f"{name}: table written to {BENCHMARKS_FILE}")
    return body


def log(message):
    print(message, file=sys.stderr, flush=True)


def write_section(heading, body, path=BENCHMARKS_FILE):
    """Put ``body`` under ``heading`` (a ``## `` line) in ``path``, replacing that section only."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nWritten by `python -m bench`.\n"
    lines = text.rstrip("\n").split("\n")
    section = [heading, "", body.rstrip("\n")]
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = lines[:start] + section + ([""] + lines[end:] if end < len(lines) else [])
    else:
        new = lines + [""] + section
    path.write_text("\n".join(new) + "\n")
