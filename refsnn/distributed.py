"""Data-parallel training over MPI: the world, the shard of a global batch, the fixed-order sum.

``mpiexec -n N refsnn train ...`` starts N copies of the same program (docs/distributed.md). They
read the same data, build the same network from the same seed and walk the same global batches
(``--batch-size`` is the global batch, n samples). Per batch, process r:

* takes its contiguous shard ``x[lo:hi]`` (``World.shard``: sizes differ by at most one);
* computes its share of the loss, L_r = Σ_{i in shard} ℓ_i / n, and its gradients: the shard's
  mean loss and its output gradient scaled by (hi - lo)/n, so Σ_r L_r is the one-process loss
  Σ_i ℓ_i / n, also for the shorter last batch of an epoch;
* adds every process's gradients with ``World.sum``, in rank order, so all processes hold the
  same sum bit for bit, and the same optimizer step keeps their weights identical;
* synchronizes BatchNorm statistics (refsnn.layers.norm sums Σx, then Σ(x - μ)², and in the
  backward Σg and Σg·x̂ over every process) and draws every random number from the seed and the
  *global* sample position (Poisson spikes: ``refsnn.train.build.encode``; Dropout masks:
  ``draw``), so the run does not depend on N.

Why not ``Allreduce`` itself: MPI leaves its reduction order to the implementation (it may
depend on N, on message sizes, even differ between processes), so ``sum`` fixes the order: an
``Alltoall`` hands process r the r-th chunk of every process's buffer, r adds them in rank order
0, 1, ..., N-1, and an ``Allgather`` gives every process every summed chunk. That is a
reduce-scatter plus an all-gather, what a ring allreduce sends (2·(N-1)/N of the buffer per
process), with O(buffer) memory. A buffer of at most ``SMALL_SUM_BYTES`` (BatchNorm's sums, the
loss) takes one ``Allgather`` of the whole buffers instead, added in the same order: one
message round instead of two, which is what such a sum costs.

Without a launcher (no ``PMI_SIZE``, ``OMPI_COMM_WORLD_SIZE`` or ``MV2_COMM_WORLD_SIZE`` in the
environment, or a size of 1) ``world()`` is one process and mpi4py is never imported: refsnn runs
exactly as without this module. A process that dies (killed, out of memory) makes ``mpiexec``
(or ``srun --kill-on-bad-exit=1``) end the others; an exception in one process aborts them all
(``World.abort``) instead of leaving them waiting in a collective.
"""
import contextlib
import os
import sys
import time

import numpy as np

# the number of processes, as the launchers say it: MPICH and Intel MPI (hydra's mpiexec, Slurm's
# srun --mpi=pmi2), Open MPI, MVAPICH
LAUNCH_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
SMALL_SUM_BYTES = 65536   # up to this, every process gathers every buffer (latency, not bandwidth, counts)


class DistributedError(ValueError):
    """The launch cannot run data-parallel (mpi4py missing, a launcher from another MPI...)."""


def launched_size(environ=None):
    """How many processes the launcher started (from ``LAUNCH_VARIABLES``), 1 without one."""
    environ = os.environ if environ is None else environ
    for name in LAUNCH_VARIABLES:
        if name in environ:
            try:
                size = int(environ[name])
            except ValueError:
                raise DistributedError(f"the launcher's {name} = {environ[name]!r} is not a number of processes") \
                    from None
            if size < 1:
                raise DistributedError(f"the launcher's {name} = {size} is not a number of processes")
            return size
    return 1


class World:
    """The processes training together: ``rank`` (0 ... ``size`` - 1), ``size``, the MPI
    communicator ``comm`` (None for one process)."""

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()

    def shard(self, n):
        """``(lo, hi)``: this process's contiguous slice of a global batch of ``n`` samples; the
        first n mod size processes take one sample more."""
        q, extra = divmod(n, self.size)
        lo = self.rank * q + min(self.rank, extra)
        return lo, lo + q + (self.rank < extra)

    def sum(self, a):
        """Σ over the processes of ``a`` (the same shape and dtype on each), in rank order, in
        ``a``'s dtype: the same array on every process, whatever MPI's reduction order (see the
        module docstring). One process: ``a`` itself."""
        if self.size == 1:
            return a
        a = np.ascontiguousarray(a)
        flat = a.reshape(-1)
        if flat.nbytes <= SMALL_SUM_BYTES:
            every = np.empty((self.size, flat.size), a.dtype)   # every[r]: process r's buffer
            self.comm.Allgather(flat, every)
            return _in_rank_order(every).reshape(a.shape)
        chunk = -(-flat.size // self.size)
        send = np.zeros((self.size, chunk), a.dtype)   # [process the chunk goes to, chunk]
        send.reshape(-1)[:flat.size] = flat
        parts = np.empty_like(send)                    # parts[r]: process r's copy of my chunk
        self.comm.Alltoall(send, parts)
        every = np.empty_like(send)
        self.comm.Allgather(_in_rank_order(parts), every)
        return every.reshape(-1)[:flat.size].reshape(a.shape)

    def sums(self, *arrays):
        """``[self.sum(a) for a in arrays]`` in one collective (one buffer, their common dtype)."""
        if self.size == 1:
            return list(arrays)
        total = self.sum(np.concatenate([np.ravel(a) for a in arrays]))
        out, offset = [], 0
        for a in arrays:
            out.append(total[offset:offset + np.size(a)].reshape(np.shape(a)))
            offset += np.size(a)
        return out

    def abort(self, code):
        """End every process with exit code ``code`` (after what this one printed)."""
        sys.stdout.flush()
        sys.stderr.flush()
        # MPICH's Abort ends the job at once, and output still on its way to mpiexec is lost (seen
        # under load: an error line missing): give mpiexec a moment to forward it
        time.sleep(0.5)
        self.comm.Abort(code)


def _in_rank_order(parts):
    """parts[0] + parts[1] + ... + parts[N-1], added in that order."""
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total


_WORLD = None


def world():
    """The ``World`` of this process, connected on the first call (see the module docstring).
    DistributedError when a launcher started several processes but mpi4py is missing or is
    built for another MPI than the launcher's."""
    global _WORLD
    if _WORLD is None:
        _WORLD = _connect(launched_size())
    return _WORLD


def _connect(size):
    if size == 1:
        return World()
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError(f"refsnn was started as one of {size} processes (by mpiexec or srun), but mpi4py is "
                               "not installed: pip install refsnn[distributed]") from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() != size:  # each process would train alone and all would write the same run
        raise DistributedError(f"the launcher started {size} processes, but mpi4py's MPI sees {comm.Get_size()}: "
                               f"mpi4py is built for another MPI ({MPI.Get_library_version().splitlines()[0]}) "
                               "than the mpiexec used; launch with that MPI's mpiexec")
    sys.excepthook = _abort_on_uncaught
    return World(comm)


def _abort_on_uncaught(kind, value, traceback):
    """An exception no one caught: print it, then end every process (the others may be waiting
    for this one in a collective, and would wait forever)."""
    sys.__excepthook__(kind, value, traceback)
    print(f"refsnn: process {_WORLD.rank} of {_WORLD.size} failed; stopping all of them", file=sys.stderr)
    _WORLD.abort(1)


# ------------------------------------------------------------------------------------------
# the global batch being trained, for the random draws made inside layers (Dropout)
# ------------------------------------------------------------------------------------------
_BATCH = None   # (n, lo, hi) while a data-parallel step runs


@contextlib.contextmanager
def global_batch(n):
    """Within it, this process trains on ``(lo, hi) = world().shard(n)`` of a global batch of
    ``n`` samples (yielded), and ``draw`` gives its slice of draws made for the whole batch."""
    global _BATCH
    lo, hi = world().shard(n)
    _BATCH = (n, lo, hi)
    try:
        yield lo, hi
    finally:
        _BATCH = None


def batch_share():
    """This process's part ``(hi − lo) / n`` of the global batch being trained (1 outside a
    data-parallel step): the weight the training loop gives its mean loss and gradient."""
    if _BATCH is None:
        return 1.0
    n, lo, hi = _BATCH
    return (hi - lo) / n


def step_world():
    """The processes a layer's batch statistics span (BatchNorm): all of them inside a
    data-parallel step (``global_batch``), this one alone anywhere else."""
    return world() if _BATCH is not None else World()


def draw(rng, shape):
    """``rng.random(shape)`` for an array of ``shape`` whose axis 1 is this process's samples
    ([T or 1, samples, ...]): drawn for the whole global batch, then sliced, so the draws of a
    sample do not depend on the number of processes. One process: ``rng.random(shape)``."""
    if _BATCH is None or world().size == 1:
        return rng.random(shape)
    n, lo, hi = _BATCH
    if shape[1] != hi - lo:
        raise ValueError(f"a draw for {shape[1]} samples in a step on {hi - lo} samples of the global batch")
    return rng.random((shape[0], n) + tuple(shape[2:]))[:, lo:hi]
