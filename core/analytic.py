"""Gaussian and Gaussian-mixture data whose optimal denoiser and log-density are known in closed form.

Component k is N(mu_k, Sigma_k) with Sigma_k = U_k U_k^T + d_k^2 I (isotropic when U_k has rank 0).
Under x = x0 + sigma n the noisy marginal is sum_k w_k N(mu_k, A_k), A_k = Sigma_k + sigma^2 I, and the
optimal denoiser (Tweedie / posterior mean) is

    D*(x, sigma) = sum_k r_k(x) [x - sigma^2 A_k^{-1} (x - mu_k)],   r_k ∝ w_k N(x; mu_k, A_k),

with A_k^{-1} and log det A_k by the Woodbury identity, so dimension D costs O(D r^2) not O(D^3).
Used by the tests and benchmarks as ground truth (CONTRIBUTING.md, "Tests and benchmarks"). Works on any event shape:
samples are (B, *shape), flattened internally to (B, D).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .denoiser import Cond
from .precond import x0_to_eps, x0_to_score, x0_to_v
from .utils import Generator, batch_sigma, lookup, randn_like


class GaussianMixture:
    """A (optionally class-conditional) mixture of low-rank-plus-isotropic Gaussians.

    means (K, D); stds (K,) the isotropic d_k > 0; factors (K, D, r) or None; weights (K,) or None
    (uniform); labels (K,) int class of each component or None. ``cond["class_labels"]`` (B,) restricts
    the denoiser to that class's components (label < 0 means unconditional).
    """

    def __init__(
        self,
        means: torch.Tensor,
        stds: torch.Tensor,
        factors: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        shape: Sequence[int] | None = None,
    ):
        self.means = means.to(torch.float64)
        K, D = self.means.shape
        self.stds = torch.as_tensor(stds, dtype=torch.float64).expand(K).clone()
        if bool((self.stds <= 0).any()):
            raise ValueError("component stds must be positive")
        self.factors = (factors if factors is not None else torch.zeros(K, D, 0)).to(torch.float64)
        w = torch.ones(K) if weights is None else torch.as_tensor(weights)
        self.log_weights = (w / w.sum()).to(torch.float64).log()
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
        self.shape = tuple(shape) if shape is not None else (D,)
        if math.prod(self.shape) != D:
            raise ValueError(f"shape {self.shape} does not hold {D} values")
        self.dim, self.num_components, self.rank = D, K, self.factors.shape[-1]

    # -----------------------------------------------------------------------------------------------

    def covariance(self, k: int) -> torch.Tensor:
        """Sigma_k as a dense (D, D) matrix."""
        U = self.factors[k]
        return U @ U.T + self.stds[k] ** 2 * torch.eye(self.dim, dtype=torch.float64)

    def sample(self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None):
        """``n`` samples (n, *shape) float64 and their component indices (n,)."""
        logits = self.log_weights.expand(n, -1).clone()
        if labels is not None:
            logits = logits + self._class_mask(labels)
        comp = torch.multinomial(logits.exp(), 1, generator=generator).squeeze(1)
        z_low = torch.randn(n, self.rank, dtype=torch.float64, generator=generator)
        z_iso = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        x = self.means[comp] + torch.einsum("ndr,nr->nd", self.factors[comp], z_low)
        x = x + self.stds[comp, None] * z_iso
        return x.reshape(n, *self.shape), comp

    def _class_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, K) additive log-mask: 0 where component k belongs to the row's class, -inf elsewhere."""
        if self.labels is None:
            raise ValueError("this mixture has no class labels")
        labels = labels.to(torch.long).reshape(-1, 1)
        keep = (self.labels[None, :] == labels) | (labels < 0)
        return torch.where(keep, 0.0, -math.inf).to(torch.float64)

    def _per_component(self, x: torch.Tensor, sigma: torch.Tensor):
        """For flat x (B, D): log N(x; mu_k, A_k) (B, K) and A_k^{-1}(x - mu_k) (B, K, D)."""
        y = x[:, None, :] - self.means[None]  # (B, K, D)
        c = self.stds[None, :] ** 2 + sigma[:, None] ** 2  # (B, K)
        if self.rank:
            U = self.factors  # (K, D, r)
            M = c[..., None, None] * torch.eye(self.rank, dtype=torch.float64) + U.mT @ U  # (B, K, r, r)
            Uty = torch.einsum("kdr,bkd->bkr", U, y)
            sol = torch.linalg.solve(M, Uty[..., None])[..., 0]  # M^{-1} U^T y: (B, K, r)
            Ainv_y = (y - torch.einsum("kdr,bkr->bkd", U, sol)) / c[..., None]
            logdet = (self.dim - self.rank) * c.log() + torch.linalg.slogdet(M)[1]
        else:
            Ainv_y = y / c[..., None]
            logdet = self.dim * c.log()
        maha = (y * Ainv_y).sum(-1)
        log_normal = -0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))
        return log_normal, Ainv_y

    def _flat(self, x: torch.Tensor, sigma) -> tuple[torch.Tensor, torch.Tensor]:
        return x.reshape(x.shape[0], -1).to(torch.float64), batch_sigma(sigma, x).to(torch.float64)

    def _log_joint(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond):
        log_normal, Ainv_y = self._per_component(x, sigma)
        log_joint = self.log_weights[None] + log_normal
        labels = None if cond is None else cond.get("class_labels")
        if labels is not None:
            mask = self._class_mask(labels)
            log_joint = log_joint + mask - torch.logsumexp(self.log_weights[None] + mask, 1, keepdim=True)
        return log_joint, Ainv_y

    def responsibilities(self, x: torch.Tensor, sigma, cond: Cond = None) -> torch.Tensor:
        """Posterior component probabilities r_k(x) under noise level sigma: (B, K)."""
        xf, s = self._flat(x, sigma)
        return self._log_joint(xf, s, cond)[0].softmax(-1)

    def denoiser(self, x: torch.Tensor, sigma, cond: Cond = None) -> torch.Tensor:
        """The exact posterior mean E[x0 | x] (Tweedie), in x's shape and dtype."""
        xf, s = self._flat(x, sigma)
        log_joint, Ainv_y = self._log_joint(xf, s, cond)
        r = log_joint.softmax(-1)
        x0 = xf - s[:, None] ** 2 * torch.einsum("bk,bkd->bd", r, Ainv_y)
        return x0.reshape(x.shape).to(x.dtype)

    __call__ = denoiser

    def log_prob(self, x: torch.Tensor, sigma=0.0, cond: Cond = None) -> torch.Tensor:
        """log p_sigma(x) of the noisy marginal (sigma = 0: the data density), in nats: (B,)."""
        xf, s = self._flat(x, sigma)
        return torch.logsumexp(self._log_joint(xf, s, cond)[0], -1)

    def score(self, x: torch.Tensor, sigma, cond: Cond = None) -> torch.Tensor:
        """grad_x log p_sigma(x) = (D*(x) - x) / sigma^2."""
        s = batch_sigma(sigma, x).reshape(-1, *([1] * (x.ndim - 1)))
        return (self.denoiser(x, sigma, cond) - x) / s**2

    def prediction(self, x: torch.Tensor, sigma, parameterization: str = "x0", cond: Cond = None) -> torch.Tensor:
        """The exact prediction in any parameterization: 'x0' (the denoiser), 'eps' = (x - x0) / sigma,
        'v' (Salimans & Ho 2022, in sigma form) or 'score' (Tweedie), via ``core.precond``'s conversions."""
        sigma = batch_sigma(sigma, x)
        x0 = self.denoiser(x, sigma, cond)
        convert = {"x0": lambda: x0, "eps": lambda: x0_to_eps(x0, x, sigma), "v": lambda: x0_to_v(x0, x, sigma),
                   "score": lambda: x0_to_score(x0, x, sigma)}
        return lookup(convert, parameterization, "parameterization")()

    def ode_solution(self, x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
        """Exact probability-flow ODE map x(sigma_from) -> x(sigma_to) for a single Gaussian (K = 1):
        x(s) = mu + V diag(sqrt((lam + s^2) / (lam + s0^2))) V^T (x(s0) - mu), Sigma = V diag(lam) V^T."""
        if self.num_components != 1:
            raise ValueError("the closed-form ODE solution exists for a single Gaussian only")
        lam, V = torch.linalg.eigh(self.covariance(0))
        scale = ((lam + sigma_to**2) / (lam + sigma_from**2)).sqrt()
        xf = x.reshape(x.shape[0], -1).to(torch.float64) - self.means
        out = self.means + ((xf @ V) * scale) @ V.T
        return out.reshape(x.shape).to(x.dtype)

    def prior(self, n: int, sigma_max: float, generator: Generator = None, shape_like: torch.Tensor | None = None):
        """Initial noise sigma_max * n shaped (n, *shape) in float64, with per-sample generators allowed."""
        proto = shape_like if shape_like is not None else torch.empty(n, *self.shape, dtype=torch.float64)
        return sigma_max * randn_like(proto, generator)


def random_mixture(
    dim: int,
    components: int,
    rank: int = 0,
    std: float = 0.3,
    spread: float = 2.0,
    classes: int | None = None,
    shape: Sequence[int] | None = None,
    seed: int = 0,
) -> GaussianMixture:
    """A reproducible random mixture: means ~ N(0, spread^2 I / dim * dim) (spread per coordinate),
    random low-rank factors of total scale ~``std``, unequal weights and, with ``classes``, component
    labels 0..classes-1 assigned round robin."""
    g = torch.Generator().manual_seed(seed)
    means = spread * torch.randn(components, dim, generator=g, dtype=torch.float64)
    factors = std * torch.randn(components, dim, rank, generator=g, dtype=torch.float64) if rank else None
    stds = std * (0.5 + torch.rand(components, generator=g, dtype=torch.float64))
    weights = 0.5 + torch.rand(components, generator=g, dtype=torch.float64)
    labels = torch.arange(components) % classes if classes else None
    return GaussianMixture(means, stds, factors, weights, labels, shape)
