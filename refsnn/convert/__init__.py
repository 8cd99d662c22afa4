"""Ultra-low-latency ANN-to-SNN conversion (Datta & Beerel, DATE 2022, arXiv 2112.12133).

The pipeline (docs/methods.md §4):

1. **DNN.** A network with the PACT clipped ReLU ``y = clip(x, 0, μ)``, μ trainable per layer
   (``layers.ClippedReLU``, init 4.0), trained by the ordinary trainer as the ANN twin
   (``neuron="clipped_relu"``, T = 1).
2. **Calibrate.** On calibration images (a subset of the training set) collect each layer's
   pre-activations x and choose the layer's (a, b) by grid search, minimizing

       E(a, b) = Σ_x ( clip(x, 0, μ) − r_T(x; a·μ, b·μ) )²

   where r_T(x; θ, A) is the average output over T steps of an IF neuron with soft reset,
   threshold θ and spike amplitude A, driven by the constant input x (closed form below).
3. **Convert.** Every clipped ReLU becomes a ``ConvertedNeuron`` (threshold a·μ, amplitude b·μ,
   λ = 1, i.e. IF). The first layer sees the analog pixels at every step (direct encoding);
   the output layer has no neuron: it emits W·s[t] + bias at each step and the losses average
   over T, so the logit is the accumulated output membrane divided by T (the DNN's scale).
4. **Fine-tune** with surrogate gradients (``boxcar`` on H/V_th − 1), trainable threshold and
   λ (clamped to ≤ 1 after each optimizer step), Adam with AMSGrad, lr 1e-4, dropout
   masks fixed across time steps. ``variant="exact"`` (default) fine-tunes with the exact
   gradient of refsnn's forward; ``variant="authors"`` with the rules of the authors' public code
   (amplitude tied to the threshold, their backward, CE on summed logits, lr ÷5 at 60/80/90 % of
   the epochs): docs/methods.md §4.1.

BatchNorm (**choice**): the authors' DNNs have none; refsnn's CNN has it. It is folded into the
preceding convolution at conversion time: in eval mode BatchNorm is an exact per-channel affine
map, so folding changes no DNN output, keeps the trainer and the networks unchanged (any
``refsnn train --neuron clipped_relu --T 1`` run converts as it is) and gives the authors'
BN-free SNN. Dropout in the SNN is a conversion option (after every spiking neuron).

The package: ``calibration`` (the T-step response and the (a, b) grid search), ``rewrite`` (fold
BatchNorm, replace clipped ReLUs), ``pipeline`` (the whole conversion on the one training loop
and the one checkpoint format of ``refsnn.train``).
"""
from .calibration import DEFAULT_GRID, calibrate, collect_preactivations, grid_errors, if_response, search_scales
from .pipeline import (ConvertConfig, authors_lr, convert_with, dnn_config, eval_summary, evaluate_snn, finetune_epoch,
                       format_report, load_converted, make_finetune_optimizer, run_conversion, summed_cross_entropy,
                       train_or_load_dnn)
from .rewrite import clipped_relus, convert, fold_batchnorm, forward_layers
