"""An independent autograd implementation of the model and the estimators, for the tests.

It is written the naive way (x repeated k times, log densities from torch.distributions,
estimators as surrogate losses as in Tucker et al.'s dreg_estimators) so that it shares no
code with the hand-written forward and backward passes it checks.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Bernoulli, Normal


def log_weights(model, flat, x, noise, stop_q_params=False):
    """(k, B) log weights computed from the flat parameter vector `flat` (autograd leaf).

    stop_q_params: the recognition parameters are detached inside log q (STL, DReG) while
    the samples keep their dependence on them.
    """
    buf = model.buffer

    def param(name, detach):
        p = flat[buf.slices[name]].view(buf.shapes[name])
        return p.detach() if detach else p

    def mlp(net, h, detach=False):
        n = len(net.sizes) - 1
        for i in range(n):
            h = h @ param(f"{net.name}.w{i}", detach) + param(f"{net.name}.b{i}", detach)
            if i < n - 1:
                h = torch.tanh(h)
        return h

    k, batch = noise[0].shape[:2]
    x_rep = x.unsqueeze(0).expand(k, *x.shape).reshape(k * batch, -1)
    below, log_q, samples = x_rep, 0.0, []
    for net, eps in zip(model.encoders, noise):
        d = eps.shape[-1]
        out = mlp(net, below)
        h = out[:, :d] + out[:, d:].exp() * eps.reshape(k * batch, d)
        q_out = mlp(net, below, detach=True) if stop_q_params else out
        log_q = log_q + Normal(q_out[:, :d], q_out[:, d:].exp()).log_prob(h).sum(-1)
        samples.append(h)
        below = h
    log_p = Normal(0.0, 1.0).log_prob(samples[-1]).sum(-1)
    for j in range(len(samples) - 1, 0, -1):
        out = mlp(model.decoders[j], samples[j])
        d = samples[j - 1].shape[1]
        log_p = log_p + Normal(out[:, :d], out[:, d:].exp()).log_prob(samples[j - 1]).sum(-1)
    logits = mlp(model.decoders[0], samples[0])
    log_p = log_p + Bernoulli(logits=logits).log_prob(x_rep).sum(-1)
    return (log_p - log_q).view(k, batch)


def _iwae_bound(log_w):
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def _miwae_bound(log_w, m):
    g = log_w.view(m, -1, log_w.shape[1])
    return (torch.logsumexp(g, 1) - math.log(g.shape[1])).mean(0)


def surrogate_gradient(model, objective, x, noise):
    """Gradient of the objective's surrogate loss (batch mean) w.r.t. all parameters."""
    name, m = objective.name, objective.param
    flat = model.buffer.data.detach().clone().requires_grad_(True)

    def grad(scalar):
        return torch.autograd.grad(scalar, flat)[0]

    log_w = log_weights(model, flat, x, noise)
    if name == "vae":
        return grad(log_w.mean())
    if name == "iwae":
        return grad(_iwae_bound(log_w).mean())
    if name == "miwae":
        return grad(_miwae_bound(log_w, m).mean())
    if name == "ciwae":
        return grad((m * log_w.mean(0) + (1 - m) * _iwae_bound(log_w)).mean())
    enc = model.buffer.span("encoder")
    decoder_grad = grad(_iwae_bound(log_w).mean())
    if name == "piwae":
        encoder_grad = grad(_miwae_bound(log_weights(model, flat, x, noise), m).mean())
    else:
        log_w_stop = log_weights(model, flat, x, noise, stop_q_params=True)
        w = torch.softmax(log_w_stop.detach(), 0)
        if name == "stl":
            encoder_grad = grad((w * log_w_stop).sum(0).mean())
        elif name == "dreg":
            encoder_grad = grad((w * w * log_w_stop).sum(0).mean())
        else:
            raise ValueError(name)
    out = decoder_grad.clone()
    out[enc] = encoder_grad[enc]
    return out
