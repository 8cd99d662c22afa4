"""Start-up: from ``refsnn train`` process start to its first training step, warm and cold.

Every measurement is a fresh process started by this one (wall-clock times from just before the
spawn, so the interpreter's own start is included):

* first step: a small script that does what the ``refsnn`` console script does (``import
  refsnn.cli``; ``cli.main(["train", ...])``) with ``refsnn.train.run.encode`` and
  ``refsnn.optim.Adam.step`` wrapped to note when the first step starts (its batch is encoded)
  and ends (its Adam update is done); the process stops there. Run ``WARM_RUNS`` times with the
  default Numba cache (the first run fills it if it is stale, the others find it warm), and once
  with ``NUMBA_CACHE_DIR`` pointed at a fresh temporary directory, so that every kernel the
  first step needs is compiled (cold).
* import: ``import refsnn`` timed alone, then every ``refsnn`` submodule imported, and every
  Numba dispatcher they define (at module level, or held in a module-level function's closure,
  such as the neuron kernel factories) checked to have no compiled signature: importing must
  compile nothing.

Targets (docs/performance.md): warm ≤ 3 s to the first step, cold compile ≤ 60 s.
"""
import datetime
import os
import statistics
import tempfile
import time

from bench import child_env, fix_threads, header, load_average, load_warning, log, markdown_table, publish, run_child

WARM_RUNS = 3
COMMANDS = (("refsnn train", []),  # the default: CLIF CNN on the shipped 8x8 digits
            ("refsnn train --dataset mnist-t10k", ["--dataset", "mnist-t10k"]))
WARM_TARGET, COLD_TARGET = 3.0, 60.0
HEADING = "## Start-up"

FIRST_STEP_SCRIPT = r'''
import time
started = time.time()
import sys
import tempfile
import refsnn.cli                      # what the `refsnn` console script imports
import refsnn.optim
import refsnn.train
from bench import report_to_parent

marks = {"started": started}


class FirstStepDone(BaseException):  # not an Exception: cli.main must not catch it
    pass


encode, adam_step = refsnn.train.run.encode, refsnn.optim.Adam.step


def first_encode(*args, **kwargs):
    marks.setdefault("step_start", time.time())
    return encode(*args, **kwargs)


def first_adam_step(self):
    adam_step(self)
    marks["step_end"] = time.time()
    raise FirstStepDone


refsnn.train.run.encode = first_encode
refsnn.optim.Adam.step = first_adam_step
with tempfile.TemporaryDirectory() as out_dir:
    try:
        refsnn.cli.main(["train", "--no-progress", "--epochs", "1", "--out-dir", out_dir, *sys.argv[1:]])
    except FirstStepDone:
        pass
report_to_parent(marks)
'''

IMPORT_SCRIPT = r'''
import time
t0 = time.perf_counter()
import refsnn
t1 = time.perf_counter()
import importlib
import pkgutil
import numba
from numba.core.dispatcher import Dispatcher
from bench import report_to_parent

modules, failed = [refsnn], []
for info in pkgutil.iter_modules(refsnn.__path__):
    if info.name != "__main__":  # running it would start `refsnn train`
        try:
            modules.append(importlib.import_module(f"refsnn.{info.name}"))
        except Exception as e:
            failed.append(f"refsnn.{info.name}: {type(e).__name__}: {e}")
t2 = time.perf_counter()


def dispatchers(module):
    for name, value in vars(module).items():
        if isinstance(value, Dispatcher):
            yield f"{module.__name__}.{name}", value
        for i, cell in enumerate(getattr(value, "__closure__", None) or ()):
            try:
                content = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if isinstance(content, Dispatcher):
                yield f"{module.__name__}.{name} (closure)", content


found = {name: d for module in modules for name, d in dispatchers(module)}
compiled = sorted(name for name, d in found.items() if d.signatures)
report_to_parent({"import_refsnn": t1 - t0, "import_all": t2 - t1, "modules": len(modules), "failed": failed,
                  "dispatchers": len(found), "compiled": compiled})
'''


def first_step(arguments, threads, **variables):
    """Seconds from the spawn to the child's start, to its first step's start and to that step's end."""
    t0 = time.time()
    marks = run_child(["-c", FIRST_STEP_SCRIPT, *arguments], child_env(threads, **variables))
    return {name: marks[name] - t0 for name in ("started", "step_start", "step_end")}


def row(command, run_label, times, target):
    return [command, run_label, f"{times['started']:.2f}", f"{times['step_start']:.2f}",
            f"{times['step_end']:.2f}", f"{times['step_end'] - times['step_start']:.2f}", f"≤ {target:.0f}",
            "yes" if times["step_end"] <= target else "NO"]


def run(repeats=None, threads=None, blas_in_time=False, compile_models="all", write=True, options=None):
    threads = threads or os.cpu_count()
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load_start = load_average()
    threads_line = fix_threads(threads, blas_in_time)
    rows = []
    for command, arguments in COMMANDS:
        log(f"startup: {command}, {WARM_RUNS} runs with the default Numba cache ...")
        runs = [first_step(arguments, threads) for _ in range(WARM_RUNS)]
        rows.append(row(command, "1st, default cache (fills it if stale)", runs[0], WARM_TARGET))
        warm = {k: statistics.median(r[k] for r in runs[1:]) for k in runs[0]}
        rows.append(row(command, f"warm, median of {WARM_RUNS - 1}", warm, WARM_TARGET))
    command, arguments = COMMANDS[0]
    log(f"startup: {command} with an empty NUMBA_CACHE_DIR (compiles every kernel) ...")
    with tempfile.TemporaryDirectory(prefix="refsnn-numba-cold-") as cache:
        cold = first_step(arguments, threads, NUMBA_CACHE_DIR=cache)
    rows.append(row(command, "cold (empty NUMBA_CACHE_DIR)", cold, COLD_TARGET))
    log("startup: import refsnn ...")
    imports = run_child(["-c", IMPORT_SCRIPT], child_env(threads))

    compiled = ", ".join(imports["compiled"]) or "none"
    import_rows = [[f"{imports['import_refsnn']:.2f}", f"{imports['import_all']:.2f}", str(imports["modules"]),
                    str(imports["dispatchers"]), compiled]]
    body = "\n".join(header(f"python -m bench --only startup --threads {threads}", started, load_start,
                            threads_line) + [
        "",
        "Seconds from spawning a fresh process that does what the `refsnn` console script does (`refsnn.cli.main"
        "([\"train\", ...])`, with `--no-progress --epochs 1` and a temporary out dir) to: the interpreter running "
        "the script, the first step's start (its batch encoded) and its end (Adam update done); the process "
        "stops there. Warm = Numba's cache holds every kernel; cold = `NUMBA_CACHE_DIR` is an empty directory, "
        f"so every kernel the first step needs is compiled. Targets: warm ≤ {WARM_TARGET:.0f} s, cold ≤ "
        f"{COLD_TARGET:.0f} s, to the end of the first step (which includes loading or compiling the kernels, "
        "and the step's own arithmetic: a 28x28 MNIST step costs far more than an 8x8 digits step).",
        "",
        markdown_table(["command", "run", "python up s", "first step starts s", "first step done s",
                        "first step itself s", "target s", "met"], rows),
        "",
        "Importing compiles nothing: `import refsnn` alone, then every refsnn submodule, in a fresh process; the "
        "Numba dispatchers they define (module level or in a module-level function's closure) and those with a "
        "compiled signature after the imports (must be none):",
        "",
        markdown_table(["import refsnn s", "import all submodules s", "modules", "dispatchers",
                        "compiled at import"], import_rows),
    ])
    if imports["failed"]:
        body += "\n\nSubmodules that failed to import: " + "; ".join(imports["failed"])
    body += load_warning(load_start)
    return publish("startup", HEADING, body, write)
