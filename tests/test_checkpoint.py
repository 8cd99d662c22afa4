"""The checkpoint format and the run directory: paths read from files stay in their directory,
moved runs resume where they are, eval dispatches on the kind, one writer per directory, leftovers
of a kill are removed, readers never see a half-committed checkpoint, files follow the umask."""
import hashlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from refsnn.cli import main
from refsnn.convert import ConvertConfig, run_conversion
from refsnn.train import Run, TrainConfig, export_ternary_run, load_run, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ["--network", "mlp", "--neuron", "lif", "--T", "2", "--no-progress"]


def small_config(out_dir, **kw):
    return TrainConfig(**{**dict(network="mlp", neuron="lif", T=2, epochs=1, out_dir=str(out_dir)), **kw})


def trained(out_dir, **kw):
    Run(small_config(out_dir, **kw)).fit(progress=False, log=lambda s: None)
    return out_dir


def meta_of(run_dir):
    return json.loads((run_dir / "checkpoint.json").read_text())


def rewrite_meta(run_dir, **changes):
    (run_dir / "checkpoint.json").write_text(json.dumps({**meta_of(run_dir), **changes}))


def one_error(capsys):
    """The single ``error:`` line the CLI printed (and nothing else on stderr)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "refsnn", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


# ---- defect 2: names read from a checkpoint stay inside its directory ------------------------
@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_checkpoint_naming_a_file_outside_its_directory_is_refused(tmp_path, capsys, where):
    run_dir = trained(tmp_path / "run")
    weights = run_dir / meta_of(run_dir)["weights"]
    # the victim is a valid weights file with the recorded SHA-256: only confinement stops a reader
    victim = tmp_path / "victim.npz"
    victim.write_bytes(weights.read_bytes())
    original = victim.read_bytes()
    if where == "parent":
        rewrite_meta(run_dir, weights="../victim.npz")
    elif where == "absolute":
        rewrite_meta(run_dir, weights=str(victim))
    else:   # the name is a plain one, the file a link out of the directory
        weights.unlink()
        weights.symlink_to(victim)
    with pytest.raises(ValueError, match="refused"):
        read_checkpoint(run_dir)
    assert main(["eval", str(run_dir)]) == 2
    one_error(capsys)
    assert main(["train", *OPTIONS, "--epochs", "1", "--out-dir", str(run_dir), "--resume"]) == 2
    one_error(capsys)
    assert main(["train", *OPTIONS, "--epochs", "1", "--out-dir", str(run_dir)]) == 2   # holds a run
    one_error(capsys)
    assert victim.read_bytes() == original
    # saving over it never removes the file the old json names; --overwrite removes only run files
    run = Run(small_config(run_dir, epochs=2))
    run.epoch = 1
    run.save()
    assert victim.read_bytes() == original
    assert main(["train", *OPTIONS, "--epochs", "1", "--out-dir", str(run_dir), "--overwrite"]) == 0
    assert victim.read_bytes() == original and not weights.is_symlink()


def test_devices_fifos_and_oversized_files_are_refused_before_reading(tmp_path):
    """Each case in a child process limited to 2 GB of address space, so the code before the fix
    (which read /dev/zero until memory ran out and blocked on a FIFO) fails instead of hanging."""
    run_dir = trained(tmp_path / "run")
    name = meta_of(run_dir)["weights"]
    cases = {}
    for case in ("dev-zero-name", "dev-zero-link", "meta-link", "sparse-5GB", "fifo"):
        d = tmp_path / case
        shutil.copytree(run_dir, d)
        cases[case] = ["eval", str(d)]
        if case == "dev-zero-name":
            rewrite_meta(d, weights="/dev/zero")
        elif case == "dev-zero-link":
            (d / name).unlink()
            (d / name).symlink_to("/dev/zero")
        elif case == "meta-link":
            (d / "checkpoint.json").unlink()
            (d / "checkpoint.json").symlink_to("/dev/zero")
        elif case == "sparse-5GB":
            with open(d / name, "r+b") as f:
                f.truncate(5 << 30)   # sparse: no disk used
        else:
            (d / name).unlink()
            os.mkfifo(d / name)
    cases["kd-teacher"] = ["train", *OPTIONS, "--epochs", "1", "--method", "kd", "--teacher", "/dev/zero",
                           "--out-dir", str(tmp_path / "kd")]
    script = ("import resource, sys, json, contextlib, io\n"
              "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
              "from refsnn.cli import main\n"
              "for case, args in json.loads(sys.argv[1]).items():\n"
              "    err = io.StringIO()\n"
              "    try:\n"
              "        with contextlib.redirect_stderr(err):\n"
              "            code = main(args)\n"
              "    except BaseException as e:\n"
              "        code = repr(e)[:200]\n"
              "    print(json.dumps([case, code, err.getvalue()]), flush=True)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        out = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], env=env, capture_output=True,
                             text=True, timeout=120).stdout
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"a reader blocked; finished: {e.stdout}")
    results = {case: (code, err) for case, code, err in map(json.loads, out.splitlines())}
    assert set(results) == set(cases), out
    for case, (code, err) in results.items():
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, (case, code, err)


# ---- defect 3: the run directory is the one given --------------------------------------------
class Stop(Exception):
    pass


def stop(_):
    raise Stop


def test_moved_or_copied_run_resumes_in_the_directory_given(tmp_path):
    a, b, c = tmp_path / "A", tmp_path / "B", tmp_path / "C"
    with pytest.raises(Stop):   # interrupted after the checkpoint of epoch 1 of 2
        Run(small_config(a, epochs=2)).fit(progress=False, log=stop)
    shutil.copytree(a, c)
    a.rename(b)
    assert main(["train", *OPTIONS, "--epochs", "2", "--out-dir", str(b), "--resume"]) == 0
    assert not a.exists()
    assert meta_of(b)["epoch"] == 2 and meta_of(c)["epoch"] == 1   # the copy is untouched
    assert main(["train", *OPTIONS, "--epochs", "2", "--out-dir", str(c), "--resume"]) == 0
    assert not a.exists() and meta_of(c)["epoch"] == 2
    _, arrays_b = read_checkpoint(b)
    _, arrays_c = read_checkpoint(c)
    for k in arrays_b:
        np.testing.assert_array_equal(arrays_b[k], arrays_c[k], err_msg=k)
    assert load_run(c).out_dir == c


# ---- defect 4: one format with a kind; eval dispatches on it ----------------------------------
def test_eval_evaluates_each_kind_and_says_what_else_it_was_given(tmp_path, capsys):
    run_dir = trained(tmp_path / "run", ternary=True, ternary_last=True)
    assert meta_of(run_dir)["kind"] == "train"
    assert main(["eval", str(run_dir)]) == 0 and "test accuracy" in capsys.readouterr().out
    export = tmp_path / "model.npz"
    assert main(["export-ternary", str(run_dir), str(export)]) == 0
    with np.load(export) as z:
        assert json.loads(str(z["meta.json"]))["kind"] == "ternary-export"
    capsys.readouterr()
    assert main(["eval", str(export)]) == 0 and "test accuracy" in capsys.readouterr().out
    weights = run_dir / meta_of(run_dir)["weights"]
    np.savez(tmp_path / "arrays.npz", a=np.zeros(3))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    for path, message in ((weights, f"weights file of the training run (refsnn train) in {run_dir}: pass {run_dir}"),
                          (tmp_path / "arrays.npz", "not a refsnn ternary export (no meta.json)"),
                          (tmp_path / "notes.txt", "not a refsnn checkpoint or export"),
                          (tmp_path / "empty", "without checkpoint.json")):
        assert main(["eval", str(path)]) == 2
        assert message in one_error(capsys)


def test_checkpoint_without_kind_is_read_as_a_training_run(tmp_path):
    run_dir = trained(tmp_path / "run")
    meta = meta_of(run_dir)
    del meta["kind"]
    (run_dir / "checkpoint.json").write_text(json.dumps(meta))
    assert read_checkpoint(run_dir)[0]["kind"] == "train"


def test_eval_resume_and_overwrite_of_a_converted_run(tmp_path, capsys):
    conv = tmp_path / "conv"
    options = ["convert", "--dataset", "digits", "--network", "mlp", "--T", "2", "--dnn-epochs", "1",
               "--calibration-samples", "100", "--no-progress"]
    results = run_conversion(ConvertConfig(dataset="digits", network="mlp", T=2, dnn_epochs=1, finetune_epochs=1,
                                           calibration_samples=100, out_dir=str(conv)), log=lambda *_: None)
    assert meta_of(conv)["kind"] == "convert"
    assert main(["eval", str(conv)]) == 0
    out = capsys.readouterr().out
    assert f"test accuracy {results['finetuned_acc'] * 100:.2f}%" in out and "energy per sample" in out
    assert main(["eval", str(conv / "dnn")]) == 0   # the DNN it converted is a training run
    capsys.readouterr()
    assert main(["train", *OPTIONS, "--out-dir", str(conv), "--resume"]) == 2
    assert "holds a converted-SNN run (refsnn convert), not a training run" in one_error(capsys)
    # a copy resumes where it is, the original stays as it was
    shutil.copytree(conv, tmp_path / "copy")
    before = (conv / "checkpoint.json").read_bytes()
    assert main([*options, "--finetune-epochs", "2", "--out-dir", str(tmp_path / "copy"), "--resume"]) == 0
    assert meta_of(tmp_path / "copy")["epoch"] == 2 and (conv / "checkpoint.json").read_bytes() == before
    # a fresh conversion does not replace it unless --overwrite
    capsys.readouterr()
    assert main([*options, "--finetune-epochs", "0", "--out-dir", str(conv)]) == 2
    assert "already holds a run" in one_error(capsys)
    assert main([*options, "--finetune-epochs", "0", "--out-dir", str(conv), "--overwrite"]) == 0
    assert meta_of(conv)["epoch"] == 0 and not list(conv.glob("snn-epoch0001.npz"))


# ---- defect 6: no silent replacement, one writer per directory --------------------------------
def test_fresh_run_does_not_replace_an_existing_run_without_overwrite(tmp_path, capsys):
    d = tmp_path / "run"
    assert main(["train", *OPTIONS, "--epochs", "1", "--out-dir", str(d)]) == 0
    before = (d / "checkpoint.json").read_bytes()
    capsys.readouterr()
    assert main(["train", *OPTIONS, "--epochs", "1", "--seed", "1", "--out-dir", str(d)]) == 2
    assert "already holds a run" in one_error(capsys)
    assert (d / "checkpoint.json").read_bytes() == before
    assert main(["train", *OPTIONS, "--epochs", "1", "--seed", "1", "--out-dir", str(d), "--overwrite"]) == 0
    assert meta_of(d)["config"]["seed"] == 1 and len(list(d.glob("checkpoint-epoch*.npz"))) == 1
    capsys.readouterr()
    assert main(["train", *OPTIONS, "--epochs", "1", "--out-dir", str(d), "--resume", "--overwrite"]) == 2
    one_error(capsys)


def test_second_trainer_on_a_directory_is_refused_and_a_killed_one_leaves_no_stale_lock(tmp_path):
    d = tmp_path / "run"
    first = cli("train", *OPTIONS, "--epochs", "100000", "--out-dir", d)
    try:
        deadline = time.time() + 120
        while not (d / "checkpoint.json").exists() and time.time() < deadline:   # training, mid-run
            time.sleep(0.01)
        assert first.poll() is None
        # even --overwrite may not take a directory from a live trainer
        second = cli("train", *OPTIONS, "--epochs", "1", "--out-dir", d, "--overwrite")
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 2 and f"{d} is in use" in out and str(first.pid) in out, out
        assert first.poll() is None   # the first trains on, its run intact
        read_checkpoint(d)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the kernel released the killed process's lock
    third = cli("train", *OPTIONS, "--epochs", "1", "--out-dir", d, "--overwrite")
    out, _ = third.communicate(timeout=120)
    assert third.returncode == 0, out


# ---- defect 9: leftovers, metrics, readers ----------------------------------------------------
def test_leftovers_of_a_killed_run_are_removed_and_metrics_repaired(tmp_path):
    d = tmp_path / "run"
    assert main(["train", *OPTIONS, "--epochs", "1", "--out-dir", str(d)]) == 0
    leftovers = [".checkpoint.json.k2j_x9ab.tmp", ".metrics.csv.abcdefgh.tmp", ".checkpoint-epoch0002.npz.a1b2c3d4.tmp",
                 "checkpoint-epoch0000.npz", "checkpoint-epoch0003.npz", "snn-epoch0001.npz"]
    others = ["notes.txt", "my.tmp", ".hidden.tmp", "checkpoint-epoch1.npz", "checkpoint.json.bak"]
    for name in leftovers + others:
        (d / name).write_bytes(b"x")
    (d / "metrics.csv").write_text((d / "metrics.csv").read_text().splitlines()[0] + "\n")   # a row short
    (d / "metrics.jsonl").write_text("")
    assert main(["train", *OPTIONS, "--epochs", "1", "--out-dir", str(d), "--resume"]) == 0
    assert [name for name in leftovers if (d / name).exists()] == []
    assert [name for name in others if not (d / name).exists()] == []
    history = meta_of(d)["history"]
    assert len((d / "metrics.csv").read_text().splitlines()) == 2
    assert [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] == history
    # a fresh start cleans what a run killed before its first checkpoint left
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / ".checkpoint-epoch0001.npz.zz9_abcd.tmp").write_bytes(b"x")
    assert main(["train", *OPTIONS, "--epochs", "1", "--out-dir", str(fresh)]) == 0
    assert not list(fresh.glob("*.tmp"))


def test_reader_polling_a_run_while_it_saves_never_fails(tmp_path):
    """A separate process reads the checkpoint in a loop while this one saves as fast as it can
    (on tmpfs when there is one: no fsync wait, so the old unlink-after-json race shows)."""
    base = Path("/dev/shm") if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tmp_path
    d = Path(tempfile.mkdtemp(dir=base, prefix="refsnn-poll-"))
    try:
        run = Run(small_config(d, epochs=100000))
        run.epoch = 1
        run.save()
        reader = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, time\nfrom refsnn.train import read_checkpoint\nprint('ready', flush=True)\n"
             "reads, errors, end = 0, [], time.time() + 5\n"
             "while time.time() < end:\n"
             "    try:\n        read_checkpoint(sys.argv[1]); reads += 1\n"
             "    except Exception as e:\n        errors.append(repr(e))\n"
             "print(reads, len(errors), errors[:3])\n", str(d)],
            env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
        assert reader.stdout.readline().strip() == "ready"
        while reader.poll() is None:
            run.epoch += 1
            run.save()
        reads, errors, first = reader.stdout.read().split(" ", 2)
        assert int(reads) > 100 and int(errors) == 0, (reads, errors, first)
    finally:
        shutil.rmtree(d)


# ---- defect 14 (part): permissions ------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["022", "002"])
def test_checkpoint_files_get_the_permissions_the_umask_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        run_dir = trained(tmp_path / "run", ternary=True, ternary_last=True)
        export_ternary_run(run_dir, tmp_path / "model.npz")
    finally:
        os.umask(previous)
    files = [run_dir / name for name in ("checkpoint.json", meta_of(run_dir)["weights"], "metrics.csv",
                                         "metrics.jsonl")] + [tmp_path / "model.npz"]
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: oct(0o666 & ~umask) for f in files}
    assert stat.S_IMODE((run_dir / "run.lock").stat().st_mode) == 0o666 & ~umask


# ---- the npz reader: declared sizes checked before allocating ---------------------------------
def npz_member(z, name, shape, chunks, compress_type=zipfile.ZIP_STORED):
    """A float64 ``.npy`` member whose header declares ``shape``, holding the bytes of ``chunks``."""
    info = zipfile.ZipInfo(name)
    info.compress_type = compress_type
    with z.open(info, "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": shape})
        for chunk in chunks:
            f.write(chunk)


@pytest.mark.parametrize("bomb", ["declared-shape", "deflated"])
def test_npz_member_bigger_than_the_file_is_refused_before_allocating(tmp_path, bomb):
    run_dir = trained(tmp_path / "run")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        if bomb == "declared-shape":   # 2 GiB declared, 8 bytes held
            npz_member(z, "model/0.weight.npy", (1 << 28,), [bytes(8)])
        else:                          # 384 MiB of zeros in well under a megabyte
            npz_member(z, "model/0.weight.npy", (48 << 20,), [bytes(1 << 20)] * 384, zipfile.ZIP_DEFLATED)
    data = buf.getvalue()
    assert len(data) < 2 << 20
    weights = run_dir / meta_of(run_dir)["weights"]
    weights.write_bytes(data)
    rewrite_meta(run_dir, weights_sha256=hashlib.sha256(data).hexdigest())
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="more than the bytes it holds|more bytes than the file holds"):
            read_checkpoint(run_dir)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


@pytest.mark.parametrize("epoch", [-1, True])
def test_a_checkpoint_epoch_that_is_no_count_is_refused(tmp_path, capsys, epoch):
    d = trained(tmp_path / "run")
    rewrite_meta(d, epoch=epoch)
    assert main(["eval", str(d)]) == 2
    assert "epoch" in one_error(capsys)


@pytest.mark.parametrize("config", ["/dev/zero", "huge"])
def test_a_config_file_that_is_no_small_regular_file_is_refused_before_reading(tmp_path, capsys, config):
    if config == "huge":
        config = tmp_path / "run.toml"
        with open(config, "wb") as f:  # sparse: 8 GB declared, nothing written
            f.truncate(8 << 30)
    tracemalloc.start()
    assert main(["train", "--config", str(config), "--out-dir", str(tmp_path / "run")]) == 2
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "config file" in one_error(capsys) and peak < 10 << 20
