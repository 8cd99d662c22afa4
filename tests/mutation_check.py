"""Plant realistic mistakes one at a time and check that the tests catch each one (issue 10, defect 16).

    python tests/mutation_check.py [--list] [--only NAME[,NAME...]] [--tests-at REV --select ARGS]

For each mutant: the repository's files as they are in the working tree (``git ls-files``: tracked,
and untracked but not ignored) are copied to a temporary directory, the mutant's snippet is replaced
there (it must occur exactly once in its file; otherwise the code has moved and the mutant is
reported "stale", never silently passed), and pytest runs the mutant's small test selection in that
copy with a fresh NUMBA_CACHE_DIR (Numba's cache does not notice a change in a function inlined from
another file, so a shared cache could hide the mutant). The same selection runs first on an
unplanted copy (tests failing there are deselected): a mutant is "caught" when a test that passes
there fails with it, or pytest crashes or cannot collect; "MISSED" otherwise.
Exit status 1 if any mutant is missed or stale.

``--tests-at REV`` runs the tests as they were at commit REV (with ``--select``, since the
selections below name today's tests): e.g. ``--tests-at 9f3461f --select "tests/test_neurons.py"``
shows what the suite of that commit let through.

Not collected by pytest (its name does not start with ``test_``); it takes minutes, not seconds.
Grow the list with every kind of mistake fixed.
"""
import argparse
import dataclasses
import io
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 900  # seconds per pytest run; a mutant that hangs the suite counts as caught


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    snippet: str
    replacement: str
    select: tuple  # pytest arguments: node ids, files, "-k" expressions
    what: str = ""


SCALE = "tests/test_scale_paths.py"


def k(path, expression):
    return (path, "-k", expression)


MUTANTS = [
    # -- (a) per-block partial gradients of learnable neuron parameters, combined across blocks --
    Mutant("plif-w-first-block-only", "refsnn/neurons/lif.py",
           "self._param_grads(grad_k.sum())", "self._param_grads(grad_k[0])",
           k(SCALE, "plif_w_gradient_over_several_blocks"), "PLIF's dL/dw keeps block 0's partial sum only"),
    Mutant("converted-params-first-block-only", "refsnn/neurons/converted.py",
           "partials.sum(axis=0)", "partials[0]",
           k(SCALE, "converted_neuron_parameters_over_several_blocks"),
           "ConvertedNeuron's threshold/leak/amplitude gradients from block 0 only"),
    Mutant("lif-block-starts-from-block-0-state", "refsnn/neurons/lif.py",
           "v = v_init[lo:lo + n].copy()  # the block's", "v = v_init[:n].copy()  # the block's",
           k(SCALE, "initial_state_over_several_blocks"), "every block of LIF/PLIF starts from block 0's membranes"),
    Mutant("plif-initial-membrane-block-relative", "refsnn/neurons/lif.py",
           "vi = v_init[lo:lo + n]", "vi = v_init[:n]",
           k(SCALE, "initial_state_over_several_blocks"), "PLIF's dL/dw reads block 0's initial membranes"),
    Mutant("clif-block-starts-from-block-0-m", "refsnn/neurons/clif.py",
           "m_hist[:n] = m_init[lo:lo + n]", "m_hist[:n] = m_init[:n]",
           k(SCALE, "initial_state_over_several_blocks"), "CLIF's backward recomputes M from block 0's initial M"),
    Mutant("conv-spike-check-first-block-only", "refsnn/layers/conv.py",
           "    return binary.all()", "    return binary[0]",
           k(SCALE, "conv2d_saves_analog_input"), "Conv2d saves an analog input as uint8 spikes"),
    # -- (b) resuming training with Dropout, and what else a training checkpoint must carry ------
    Mutant("train-resume-forgets-dropout-generators", "refsnn/train/run.py",
           'gen.bit_generator.state = meta["generators"][name]', "gen.bit_generator.state = gen.bit_generator.state",
           k(SCALE, "training_resumed_with_dropout"), "a resumed run draws epoch 1's dropout masks again"),
    Mutant("train-resume-forgets-optimizer", "refsnn/train/run.py",
           'self.opt.load_state_dict(section(arrays, "optim/"))', "pass",
           k(SCALE, "training_resumed_with_dropout"), "Adam's moments and step restart at zero"),
    Mutant("train-resume-forgets-schedule", "refsnn/train/run.py",
           'self.sched.load_state_dict(section(arrays, "sched/"))', "pass",
           k(SCALE, "training_resumed_with_dropout"), "the step schedule restarts its count"),
    # -- (c) resuming conversion fine-tuning with Dropout -----------------------------------------
    Mutant("convert-resume-forgets-dropout-generators", "refsnn/convert/pipeline.py",
           'gen.bit_generator.state = loaded["generators"][name]', "gen.bit_generator.state = gen.bit_generator.state",
           k(SCALE, "conversion_fine_tuning_resumed"), "resumed fine-tuning draws epoch 1's dropout masks again"),
    Mutant("convert-resume-forgets-optimizer", "refsnn/convert/pipeline.py",
           'opt.load_state_dict(section(arrays, "optim/"))', "pass",
           k(SCALE, "conversion_fine_tuning_resumed"), "AMSGrad's state restarts at zero"),
    # -- (d) surrogate and reset terms that only matter when v_threshold != 1 ---------------------
    Mutant("surrogate-gradient-without-argument-scale", "refsnn/surrogate.py",
           "return typed(derivative(code, (h - v_threshold) * scale, alpha, beta), h) * scale",
           "return typed(derivative(code, (h - v_threshold) * scale, alpha, beta), h)",
           k(SCALE, "threshold_not_one and boxcar"), "boxcar's dS/dH misses its 1/V_th"),
    Mutant("boxcar-argument-not-divided-by-threshold", "refsnn/surrogate.py",
           "return 1.0 / v_threshold if self.code == BOXCAR else 1.0", "return 1.0",
           k(SCALE, "threshold_not_one and boxcar"), "boxcar takes u = H − V_th instead of H/V_th − 1"),
    Mutant("soft-reset-gradient-unit-threshold", "refsnn/neurons/lif.py",
           "dv_ds = one, -v_threshold", "dv_ds = one, -one",
           k(SCALE, "threshold_not_one and soft and sigmoid"), "dV/dS = −1 instead of −V_th"),
    Mutant("soft-reset-unit-threshold", "refsnn/neurons/lif.py",
           "return h - s * v_threshold", "return h - s",
           k(SCALE, "threshold_not_one and soft and sigmoid"), "the soft reset subtracts 1, not V_th"),
    Mutant("converted-input-gradient-without-scale", "refsnn/neurons/converted.py",
           "gh = g + gu * scale", "gh = g + gu",
           ("tests/test_convert.py::test_gradcheck_converted_neuron",), "ConvertedNeuron's dS/dH misses 1/V_th"),
    Mutant("converted-threshold-gradient-scale", "refsnn/neurons/converted.py",
           "du_dth = -h * scale * scale if boxcar", "du_dth = -h * scale if boxcar",
           ("tests/test_convert.py::test_gradcheck_converted_neuron",), "du/dV_th = −H/V_th instead of −H/V_th²"),
    # -- kernels -------------------------------------------------------------------------------------
    Mutant("lif-charge-ignores-v-reset", "refsnn/neurons/lif.py",
           "return v + (x - (v - v_reset)) / tau", "return v + (x - v) / tau",
           k("tests/test_neurons.py", "detach_reset_gradcheck"), "LIF decays towards 0, not v_reset"),
    Mutant("hard-reset-gradient-without-h", "refsnn/neurons/lif.py",
           "dv_ds = one - s, v_reset - h", "dv_ds = one - s, v_reset",
           k("tests/test_neurons.py", "lif_gradcheck and sigmoid"), "dV/dS of the hard reset drops −H"),
    Mutant("atan-slope-doubled", "refsnn/surrogate.py",
           "(alpha / 2) / (1.0 + z * z)", "alpha / (1.0 + z * z)",
           k("tests/test_neurons.py", "lif_gradcheck and atan"), "atan surrogate slope α instead of α/2"),
    Mutant("detach-reset-ignored", "refsnn/neurons/lif.py",
           "if not detach_reset:\n                        gs += g * dv_ds",
           "if True:\n                        gs += g * dv_ds",
           k("tests/test_neurons.py", "detach_reset_gradcheck"), "detach_reset still sends gradient through S"),
    Mutant("clif-membrane-gradient-leak", "refsnn/neurons/clif.py",
           "dv_dv = one - one / tau", "dv_dv = one / tau",
           k("tests/test_neurons.py", "clif_gradcheck"), "CLIF's dH[t]/dV[t−1] = 1/tau"),
    Mutant("plif-dk-dw-missing-factor", "refsnn/neurons/lif.py",
           "grad_k * k * (1.0 - k)", "grad_k * k",
           k("tests/test_neurons.py", "plif_gradcheck and sigmoid"), "dk/dw = k instead of k(1 − k)"),
    # -- layers --------------------------------------------------------------------------------------
    Mutant("linear-bias-gradient-mean", "refsnn/layers/linear.py",
           "g2.sum(axis=0", "g2.mean(axis=0",
           k("tests/test_layers.py", "gradcheck_linear"), "Linear's dL/db averages over rows"),
    Mutant("col2im-overwrites", "refsnn/layers/conv_patches.py",
           "dx[b, c, h, wo + j - pw] += cols[row, base + wo]", "dx[b, c, h, wo + j - pw] = cols[row, base + wo]",
           k("tests/test_layers.py", "gradcheck_conv2d"), "Conv2d's dL/dx keeps one overlapping patch"),
    Mutant("batchnorm-backward-without-mean-g", "refsnn/layers/norm.py",
           "dx[t, n, c, s] = scale * (g[t, n, c, s] - mean_g - x_hat * mean_g_xhat)",
           "dx[t, n, c, s] = scale * (g[t, n, c, s] - x_hat * mean_g_xhat)",
           k("tests/test_layers.py", "gradcheck_batchnorm"), "BatchNorm's dx misses − mean(g)"),
    Mutant("batchnorm-per-step-weight-first-step", "refsnn/layers/norm.py",
           'self.grads["weight"] += sum_g_xhat.sum(axis=0)', 'self.grads["weight"] += sum_g_xhat[0]',
           k("tests/test_layers.py", "gradcheck_batchnorm"), "per-step BatchNorm's dγ from step 0 only"),
    Mutant("batchnorm-running-var-biased", "refsnn/layers/norm.py",
           "m * var * (count / (count - 1))", "m * var",
           k("tests/test_layers.py", "torch_batchnorm and float64"), "running_var from the biased variance"),
    Mutant("dropout-scale", "refsnn/layers/elementwise.py",
           "scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)", "scale = 1.0 - self.p",
           k("tests/test_layers.py", "dropout"), "kept units scaled by 1 − p instead of 1/(1 − p)"),
    Mutant("dropout-mask-per-step", "refsnn/layers/elementwise.py",
           "keep = self.rng.random((1,) + x.shape[1:]) < 1.0 - self.p",
           "keep = self.rng.random(x.shape) < 1.0 - self.p",
           k("tests/test_layers.py", "dropout"), "a new mask at every time step"),
    Mutant("clipped-relu-threshold-gradient", "refsnn/layers/elementwise.py",
           "np.sum(g, where=clipped", "np.sum(g, where=passing",
           k("tests/test_layers.py", "clipped_relu"), "dy/dμ on the passing inputs"),
    # -- losses --------------------------------------------------------------------------------------
    Mutant("cross-entropy-gradient-not-batch-mean", "refsnn/losses.py",
           "return loss, (np.exp(log_p) - target) / n", "return loss, np.exp(log_p) - target",
           k("tests/test_losses.py", "finite_differences"), "CE's gradient summed over the batch"),
    Mutant("tet-gradient-not-time-mean", "refsnn/losses.py",
           "* deviation) / t", "* deviation)",
           k("tests/test_losses.py", "tet"), "TET's gradient not divided by T"),
    Mutant("tet-onehot-target-ignored", "refsnn/losses.py",
           'if target == "constant" else np.eye(k)[y]', 'if True else np.eye(k)[y]',
           k("tests/test_tet.py", "authors or differ"), "TET's one-hot target replaced by the constant φ"),
    Mutant("tet-target-not-passed-by-trainer", "refsnn/train/build.py",
           ", target=cfg.tet_target)", ")",
           k("tests/test_tet.py", "trainer"), "--tet-target not passed to the loss"),
    Mutant("kd-temperature-not-squared", "refsnn/losses.py",
           "alpha * tau * tau * kl", "alpha * tau * kl",
           k("tests/test_losses.py", "kd"), "KD's KL weighted by τ, not τ²"),
    # -- optimizers ----------------------------------------------------------------------------------
    Mutant("adam-no-first-bias-correction", "refsnn/optim.py",
           "step_size = self.lr / bias_correction1", "step_size = self.lr",
           k("tests/test_optim.py", "matches_torch and adam"), "Adam without 1/(1 − β1^t)"),
    Mutant("adam-no-second-bias-correction", "refsnn/optim.py",
           "root[i] / bias_correction2_sqrt + eps", "root[i] + eps",
           k("tests/test_optim.py", "matches_torch and adam"), "Adam without √(1 − β2^t)"),
    Mutant("adamw-decay-without-lr", "refsnn/optim.py",
           "decay = cast(1 - self.lr * self.weight_decay)", "decay = cast(1 - self.weight_decay)",
           k("tests/test_optim.py", "matches_torch and adamw"), "AdamW decays by wd instead of lr·wd"),
    Mutant("sgd-weight-decay-sign", "refsnn/optim.py",
           "g = cast(_fused_fma(param[i], weight_decay, g))", "g = cast(_fused_fma(param[i], -weight_decay, g))",
           k("tests/test_optim.py", "matches_torch and sgd"), "SGD's weight decay pushes weights outwards"),
    Mutant("adam-step-count-not-restored", "refsnn/optim.py",
           'self.step_count = int(state["step"])', "self.step_count = 0",
           k("tests/test_optim.py", "state_dict_round_trip"), "a loaded Adam restarts its bias correction"),
    Mutant("schedule-position-not-restored", "refsnn/optim.py",
           'self.last_epoch = int(state["last_epoch"])', "self.last_epoch = self.last_epoch",
           k("tests/test_optim.py", "state_dict_round_trip"), "a loaded schedule restarts"),
    # -- quantizer -----------------------------------------------------------------------------------
    Mutant("twn-delta-factor", "refsnn/quant.py",
           "DELTA_FACTOR = 0.7", "DELTA_FACTOR = 0.5",
           k("tests/test_methods.py", "ternary_codes"), "Δ = 0.5·mean|W|"),
    Mutant("twn-scale-over-all-weights", "refsnn/quant.py",
           "/ np.maximum(count, 1), 0.0)", "/ w.size, 0.0)",
           k("tests/test_methods.py", "ternary_codes"), "α averaged over every weight, not the kept ones"),
    # -- energy --------------------------------------------------------------------------------------
    Mutant("meter-counts-last-batch-only", "refsnn/energy.py",
           'entry["events"] += float(np.count_nonzero(y))', 'entry["events"] = float(np.count_nonzero(y))',
           k(SCALE, "activity_is_counted"), "firing rate from the last batch's spikes"),
    Mutant("meter-binary-input-last-batch-only", "refsnn/energy.py",
           'entry["binary_input"] &= bool(', 'entry["binary_input"] = bool(',
           k(SCALE, "activity_is_counted"), "an analog layer counted as spikes after one binary batch"),
    Mutant("spike-meter-binary-input-last-batch-only", "refsnn/energy.py",
           'entry["binary_input"] = spikes_so_far and _single_amplitude(x)',
           'entry["binary_input"] = _single_amplitude(x)',
           k(SCALE, "activity_is_counted"), "the converter's meter forgets earlier batches"),
    Mutant("sops-not-over-time-steps", "refsnn/energy.py",
           'e["macs"] * rate * e["steps"]', 'e["macs"] * rate',
           k("tests/test_models.py", "energy"), "synaptic operations of one time step"),
    # -- checkpoint confinement -----------------------------------------------------------------------
    Mutant("weights-name-prefix-match", "refsnn/train/checkpoint.py",
           're.fullmatch(rf"{WEIGHTS_PREFIX[kind]}', 're.match(rf"{WEIGHTS_PREFIX[kind]}',
           k(SCALE, "weights_name_continuing_as_a_path"), "a weights name is checked by its prefix only"),
    Mutant("weights-symlink-followed", "refsnn/train/checkpoint.py",
           "def read_regular_file(path, limit, what, follow_symlinks=False):",
           "def read_regular_file(path, limit, what, follow_symlinks=True):",
           k("tests/test_checkpoint.py", "outside_its_directory"), "a weights file linking out of the run is read"),
    # -- trainer: epoch means over an uneven last batch ------------------------------------------------
    Mutant("train-loss-weighted-by-batch-size", "refsnn/train/loop.py",
           "total_loss += loss * len(y)", "total_loss += loss * batches.batch_size",
           k(SCALE, "epoch_means or conversion_means"), "the last, shorter batch weighs as a full one (training and "
           "fine-tuning: the one loop)"),
    Mutant("batches-drop-the-remainder", "refsnn/data.py",
           "return n // self.batch_size if self.drop_last else -(-n // self.batch_size)",
           "return n // self.batch_size",
           k(SCALE, "epoch_means"), "the uneven last batch is never served"),
    # -- converter -----------------------------------------------------------------------------------
    Mutant("evaluate-weighted-by-batch-size", "refsnn/train/loop.py",
           "total_loss += loss(out, y)[0] * len(y)", "total_loss += loss(out, y)[0] * batches.batch_size",
           k(SCALE, "conversion_means"), "the test loss (the one evaluation) weighs the last batch as full"),
    Mutant("clamp-lam-from-below", "refsnn/neurons/converted.py",
           'np.minimum(m.params["lam"], max_lam, out=m.params["lam"])',
           'np.maximum(m.params["lam"], max_lam, out=m.params["lam"])',
           ("tests/test_convert.py::test_clamp_lam",), "λ clamped to ≥ 1"),
    Mutant("fold-batchnorm-without-mean", "refsnn/convert/rewrite.py",
           '(bias - bn.buffers["running_mean"].astype(np.float64)) * scale + beta', "bias * scale + beta",
           k("tests/test_convert.py", "fold_batchnorm"), "BatchNorm folded without its running mean"),
    Mutant("if-response-rounds", "refsnn/convert/calibration.py",
           "np.clip(np.floor(T * x / threshold), 0, T)", "np.clip(np.round(T * x / threshold), 0, T)",
           k("tests/test_convert.py", "closed_form"), "the T-step response rounds the spike count"),
    # -- speed (issue 11): the event-driven convolution, reused neuron arrays, split products --------
    Mutant("sparse-forward-taps-transposed", "refsnn/layers/conv_events.py",
           "w_tap = wt[blk, i, j]", "w_tap = wt[blk, j, i]",
           ("tests/test_sparse_conv.py",), "the event-driven forward reads tap (j, i) for (i, j)"),
    Mutant("sparse-weight-gradient-taps-transposed", "refsnn/layers/conv_events.py",
           "dw_tap = dwt[part, blk, i, j]", "dw_tap = dwt[part, blk, j, i]",
           ("tests/test_sparse_conv.py",), "the event-driven weight gradient adds into tap (j, i)"),
    Mutant("neuron-arrays-reused-while-held", "refsnn/neurons/base.py",
           "_count_refs(pool, i) <= _UNSHARED", "True",
           ("tests/test_neuron_buffers.py",), "a neuron layer overwrites an output its caller still holds"),
    Mutant("matmul-last-block-short", "refsnn/threads.py",
           "hi = total if p == blocks - 1 else total", "hi = total",
           ("tests/test_threads.py",), "the last block of a split product stops at an aligned row"),
]


def repo_files():
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         check=True, capture_output=True).stdout
    return sorted({f for f in out.decode().split("\0") if f and (ROOT / f).is_file()})


def make_copy(dest, tests_at=None):
    """The working tree's files in ``dest``; ``tests/`` from commit ``tests_at`` if given."""
    for f in repo_files():
        if tests_at and f.startswith("tests/"):
            continue
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, target)
    if tests_at:
        archive = subprocess.run(["git", "archive", tests_at, "tests"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")


def plant(copy, mutant):
    """Apply the mutant in ``copy``; returns None, or why it is stale."""
    path = copy / mutant.file
    if not path.is_file():
        return f"{mutant.file} does not exist"
    text = path.read_text()
    count = text.count(mutant.snippet)
    if count != 1:
        return f"its snippet occurs {count} times in {mutant.file}"
    planted = text.replace(mutant.snippet, mutant.replacement)
    try:
        compile(planted, str(path), "exec")
    except SyntaxError as e:  # a mutant must be a mistake that runs, not one the parser rejects
        return f"the planted {mutant.file} is not valid Python: {e}"
    path.write_text(planted)
    return None


def node_id(copy, classname, name):
    """The pytest node id of a junit test case ("tests.test_x[.Class]", "test_y[param]")."""
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        path = "/".join(parts[:cut]) + ".py"
        if (copy / path).is_file():
            return "::".join([path, *parts[cut:], name])
    return f"{classname}::{name}"


def run_pytest(copy, select, cache_dir, skip=()):
    """``({node id: passed}, seconds, returncode, output tail)`` of pytest on ``select`` in ``copy``;
    with ``skip`` (node ids to deselect) it stops at the first failure."""
    report = Path(cache_dir) / f"report-{time.monotonic_ns()}.xml"
    env = dict(os.environ, PYTHONPATH=str(copy), NUMBA_CACHE_DIR=str(cache_dir), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *select]
    if skip is not None:
        cmd += ["-x", *(f"--deselect={t}" for t in skip)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        code, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - start, "timeout", f"pytest did not finish in {TIMEOUT} s"
    outcomes = {}
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            test_id = node_id(copy, case.get("classname"), case.get("name"))
            if case.find("skipped") is None:
                outcomes[test_id] = case.find("failure") is None and case.find("error") is None
    return outcomes, time.perf_counter() - start, code, tail


def check_import_location(copy, cache_dir):
    env = dict(os.environ, PYTHONPATH=str(copy), NUMBA_CACHE_DIR=str(cache_dir))
    where = subprocess.run([sys.executable, "-c", "import refsnn, verify; print(refsnn.__file__, verify.__file__)"],
                           cwd=copy, env=env, capture_output=True, text=True, check=True).stdout.split()
    if not all(Path(w).resolve().is_relative_to(copy.resolve()) for w in where):
        sys.exit(f"the copy does not import its own refsnn/verify (got {where}); is PYTHONPATH honored?")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list the mutants and their test selections")
    parser.add_argument("--only", action="append", default=[], help="run these mutants (names, comma-separated)")
    parser.add_argument("--tests-at", metavar="REV", help="use the tests of commit REV (needs --select)")
    parser.add_argument("--select", help="pytest arguments replacing every mutant's selection (shell syntax)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies (printed)")
    args = parser.parse_args(argv)
    chosen = MUTANTS
    if args.only:
        names = [n for item in args.only for n in item.split(",") if n]
        unknown = sorted(set(names) - {m.name for m in MUTANTS})
        if unknown:
            parser.error(f"unknown mutant(s) {unknown}; see --list")
        chosen = [m for m in MUTANTS if m.name in names]
    if args.tests_at and not args.select:
        parser.error("--tests-at needs --select: the mutants' own selections name today's tests")
    override = tuple(shlex.split(args.select)) if args.select else None
    if args.list:
        for m in chosen:
            print(f"{m.name:<44} {m.file:<20} {m.what}\n{'':<44} select: {' '.join(override or m.select)}")
        return 0

    work = Path(tempfile.mkdtemp(prefix="refsnn-mutants-"))
    baseline_copy, baseline_cache = work / "baseline", work / "baseline-numba"
    baseline_cache.mkdir()
    make_copy(baseline_copy, args.tests_at)
    check_import_location(baseline_copy, baseline_cache)
    print(f"{len(chosen)} mutant(s); copies in {work}" + (f"; tests from {args.tests_at}" if args.tests_at else ""))
    baselines, results = {}, []
    try:
        for i, m in enumerate(chosen):
            select = override or m.select
            if select not in baselines:
                outcomes, seconds, code, tail = run_pytest(baseline_copy, select, baseline_cache, skip=None)
                if not outcomes:
                    print(f"  baseline of {' '.join(select)} ran no test (exit {code}):\n{tail}")
                failing = sorted(t for t, ok in (outcomes or {}).items() if not ok)
                if failing:
                    print(f"  baseline of {' '.join(select)}: {len(failing)} test(s) fail unplanted, ignored: "
                          f"{', '.join(failing[:5])}{' ...' if len(failing) > 5 else ''}")
                baselines[select] = outcomes or {}
            baseline = baselines[select]
            copy, cache = work / f"mutant-{i:02d}", work / f"mutant-{i:02d}-numba"
            cache.mkdir()
            make_copy(copy, args.tests_at)
            stale = plant(copy, m)
            if stale:
                status, detail, seconds = "stale", stale, 0.0
            elif not baseline:
                status, detail, seconds = "MISSED", "the selection runs no passing test", 0.0
            else:
                failing = sorted(t for t, ok in baseline.items() if not ok)
                outcomes, seconds, code, tail = run_pytest(copy, select, cache, skip=failing)
                if outcomes is None:
                    status, detail = "caught", "the tests hang"
                else:
                    newly = sorted(t for t, ok in outcomes.items() if not ok and baseline.get(t, False))
                    if newly:
                        status, detail = "caught", f"by {newly[0]}" + (f" and {len(newly) - 1} more" if len(newly) > 1 else "")
                    elif code not in (0, 1, 5):
                        status, detail = "caught", f"pytest exit {code} (a crash or a collection error)\n{tail}"
                    else:
                        status, detail = "MISSED", f"{sum(outcomes.values())} test(s) still pass"
            results.append((m, status))
            print(f"{status:<7} {m.name:<44} {seconds:6.1f} s  {detail}", flush=True)
            if not args.keep:
                shutil.rmtree(copy, ignore_errors=True)
                shutil.rmtree(cache, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    bad = [(m.name, s) for m, s in results if s != "caught"]
    print(f"\n{len(results) - len(bad)}/{len(results)} caught" + (f"; not caught: {bad}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
