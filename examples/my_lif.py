"""A hand-written LIF in PyTorch, for `refsnn verify --user examples.my_lif:MyLIF --network lif`."""
import torch


def spike(u, alpha=4.0):
    """Θ(u) forward; the sigmoid surrogate α·σ(αu)(1 − σ(αu)) backward (a straight-through sum)."""
    surrogate = torch.sigmoid(alpha * u)
    return torch.where(u >= 0, 1.0, 0.0).to(u).detach() + (surrogate - surrogate.detach())


class MyLIF(torch.nn.Module):              # tau = 2, V_th = 1, hard reset to 0: refsnn.LIF()
    def forward(self, x):                  # x: [T, N, ...]
        v, spikes = torch.zeros_like(x[0]), []
        for x_t in x:
            h = v + (x_t - v) / 2.0        # charge
            s = spike(h - 1.0)             # fire
            v = (1 - s) * h                # reset
            spikes.append(s)
        return torch.stack(spikes)
