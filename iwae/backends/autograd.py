"""The autograd backend: any model's forward pass, differentiated by PyTorch.

The estimator's coefficients (`iwae.estimators.objectives.Coefficients`, constants) become surrogate
losses whose gradients are the estimator's, as google-research's dreg_estimators does:

    generative parameters   sum_i decoder_i * log w_i
    recognition parameters  sum_i path_i * log w~_i + score_i * (log w_i - log w~_i)

where log w~ is the same log weight with q's parameters stopped inside log q (the samples
keep their dependence on them), so that its gradient is the part through the samples only
and log w - log w~ carries the score term. The full gradient (score = path) needs log w
alone; STL and DReG (score = None) need log w~ alone. When the generative coefficients
differ from the recognition ones (PIWAE, DReG) two backward passes separate the two groups.
An estimator written in other terms of the forward pass (Kingma & Welling's estimator B:
log p(x|h) and the analytic KL) gives their coefficients; one surrogate then serves all.
"""

from __future__ import annotations

import torch
from torch import Tensor

from iwae.estimators.objectives import Coefficients
from iwae.models import LogWeights


class AutogradBackend:
    name = "autograd"

    def __init__(self, model):
        self.model = model
        groups = model.parameter_groups()
        self.encoder, self.generative = groups["encoder"], groups["generative"]
        self.every = self.encoder + self.generative

    def forward(
        self, x: Tensor, k: int, generator=None, noise=None, stop_q: bool = False, condition=None
    ) -> LogWeights:
        return self.model.forward(x, k, generator, noise, condition=condition, stop_q=stop_q)

    def log_weights(self, x: Tensor, k: int, generator=None, noise=None, condition=None) -> Tensor:
        return self.model.log_weights(x, k, generator, noise, condition)

    def backward(self, fp: LogWeights, coef: Coefficients) -> None:
        """Write the gradient the coefficients describe into the model's `buffer.grad`."""
        self.model.buffer.grad.zero_()  # the leaves accumulate into it
        if coef.terms is not None:  # an estimator written in named terms of the forward pass
            surrogate = sum((c * fp.terms[name]).sum() for name, c in coef.terms.items())
            torch.autograd.backward(surrogate, inputs=self.every)
            return
        if coef.score is coef.path:
            recognition = (coef.path * fp.log_w).sum()
        else:
            if fp.log_w_q_stopped is None:
                raise ValueError("this estimator drops or reweights the score term: forward with stop_q=True")
            recognition = (coef.path * fp.log_w_q_stopped).sum()
            if coef.score is not None:
                recognition = recognition + (coef.score * (fp.log_w - fp.log_w_q_stopped)).sum()
        if coef.decoder is coef.path:  # one surrogate serves both groups
            torch.autograd.backward(recognition, inputs=self.every)
        else:
            torch.autograd.backward((coef.decoder * fp.log_w).sum(), inputs=self.generative, retain_graph=True)
            torch.autograd.backward(recognition, inputs=self.encoder)
