"""Policy losses: the worked numbers of docs/algorithms.md section 1 and GSPO, and gradients."""

import math

import pytest
import torch
from pydantic import ValidationError

from turngym.trainers.losses import (
    LossConfig,
    aggregate,
    entropy_from_logits,
    gspo_log_ratio,
    kl_penalty,
    logprob_mismatch,
    policy_loss,
    ppo_clip_loss,
)

# seq1 = [1, 3], seq2 = [1, 1, 1, 1]
LOSSES = torch.tensor([[1.0, 3.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])


@pytest.mark.parametrize(
    ("mode", "constant", "expected"),
    [
        ("token-mean", None, 8 / 6),
        ("seq-mean-token-sum", None, 4.0),
        ("seq-mean-token-mean", None, 1.5),
        ("seq-mean-token-sum-norm", 4.0, 2.0),
        ("seq-mean-token-sum-norm", None, 2.0),  # C defaults to the padded width, 4
    ],
)
def test_aggregation_modes(mode, constant, expected):
    assert aggregate(LOSSES, MASK, mode, constant).item() == pytest.approx(expected, abs=1e-4)


def test_seq_mean_modes_skip_rows_without_valid_tokens():
    losses = torch.cat([LOSSES, torch.full((1, 4), 99.0)])
    mask = torch.cat([MASK, torch.zeros(1, 4)])
    assert aggregate(losses, mask, "seq-mean-token-sum").item() == pytest.approx(4.0)
    assert aggregate(losses, mask, "seq-mean-token-mean").item() == pytest.approx(1.5)
    assert aggregate(losses, mask, "token-mean").item() == pytest.approx(8 / 6)


def test_unknown_aggregation_is_rejected():
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(LOSSES, MASK, "sum")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("k1", 0.5), ("abs", 0.5), ("k2", 0.125), ("k3", 0.106531), ("low_var_kl", 0.106531)],
)
def test_kl_estimators(name, expected):
    value = kl_penalty(torch.tensor([-1.0]), torch.tensor([-1.5]), name)
    assert value.item() == pytest.approx(expected, abs=1e-6)


def test_k3_is_clamped():
    # d = logp - ref = -30: x = clamp(30, -20, 20) = 20, exp(20) - 21 is huge -> clamped to 10.
    assert kl_penalty(torch.tensor([-31.0]), torch.tensor([-1.0]), "k3").item() == 10.0
    assert kl_penalty(torch.tensor([-1.0]), torch.tensor([-1.0]), "k3").item() == 0.0


def test_entropy_from_logits():
    uniform = entropy_from_logits(torch.zeros(2, 3, 5))
    torch.testing.assert_close(uniform, torch.full((2, 3), math.log(5)))
    peaked = entropy_from_logits(torch.tensor([[100.0, 0.0, 0.0]]))
    assert peaked.item() == pytest.approx(0.0, abs=1e-6)
    p = torch.tensor([0.5, 0.25, 0.25])
    assert entropy_from_logits(p.log()).item() == pytest.approx(
        -(p * p.log()).sum().item(), abs=1e-6
    )


# (A, r) -> (L, has gradient); eps_low 0.2, eps_high 0.28, dual-clip c = 3
CLIP_CASES = [
    (+1.0, 1.35, -1.28, False),  # clipped at 1 + eps_high
    (+1.0, 0.50, -0.50, True),
    (-1.0, 0.75, 0.80, False),  # clipped at 1 - eps_low
    (-1.0, 1.50, 1.50, True),
    (-1.0, 4.00, 3.00, False),  # dual-clip
]


@pytest.mark.parametrize(("adv", "ratio", "expected", "has_grad"), CLIP_CASES)
def test_ppo_clip_values_and_gradients(adv, ratio, expected, has_grad):
    logp = torch.tensor([math.log(ratio)], requires_grad=True)
    loss, clipped, dual = ppo_clip_loss(
        logp - 0.0, torch.tensor([adv]), eps_low=0.2, eps_high=0.28, dual_clip=3.0
    )
    assert loss.item() == pytest.approx(expected, abs=1e-4)
    loss.sum().backward()
    grad = logp.grad.item()
    if has_grad:
        assert grad == pytest.approx(-adv * ratio, abs=1e-5)  # d(-A r)/dlogp = -A r
    else:
        assert grad == 0.0


def test_clipfrac_and_dual_clip_flags():
    log_ratio = torch.tensor([math.log(r) for _, r, _, _ in CLIP_CASES])
    adv = torch.tensor([a for a, _, _, _ in CLIP_CASES])
    _, clipped, dual = ppo_clip_loss(log_ratio, adv, 0.2, 0.28, 3.0)
    assert clipped.tolist() == [True, False, True, False, False]
    assert dual.tolist() == [False, False, False, False, True]


def test_dual_clip_off():
    loss, _, _ = ppo_clip_loss(torch.tensor([math.log(4.0)]), torch.tensor([-1.0]), 0.2, 0.28, None)
    assert loss.item() == pytest.approx(4.0)


def test_log_ratio_is_clamped_before_exp():
    loss, _, _ = ppo_clip_loss(torch.tensor([500.0]), torch.tensor([-1.0]), dual_clip=None)
    assert torch.isfinite(loss).all() and loss.item() == pytest.approx(math.exp(20.0), rel=1e-6)


def test_gspo_sequence_ratio():
    logp = torch.tensor([[0.3, 0.0, -0.06, 7.0]], requires_grad=True)  # last token is padding
    old = torch.zeros(1, 4)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    log_s = gspo_log_ratio(logp, old, mask)
    torch.testing.assert_close(
        torch.exp(log_s[0, :3]), torch.full((3,), 1.083287), atol=1e-6, rtol=0
    )
    cfg = LossConfig(ratio="sequence", eps_low=3e-4, eps_high=4e-4, loss_agg="seq-mean-token-mean")
    loss, metrics = policy_loss(logp, old, torch.tensor([1.0]), mask, cfg)
    assert loss.item() == pytest.approx(-1.0004, abs=1e-6)  # clipped to 1 + 4e-4
    assert metrics["clipfrac"] == 1.0
    loss.backward()
    assert torch.count_nonzero(logp.grad) == 0


def test_gspo_token_form_gradient_is_the_tokens_own():
    logp = torch.tensor([[0.3, 0.0, -0.06]], requires_grad=True)
    log_s = gspo_log_ratio(logp, torch.zeros(1, 3), torch.ones(1, 3))
    log_s[0, 1].backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 1.0, 0.0]]))


def test_gspo_log_ratio_is_clamped_at_ten():
    log_s = gspo_log_ratio(torch.full((1, 2), 50.0), torch.zeros(1, 2), torch.ones(1, 2))
    assert log_s.max().item() == 10.0


def test_policy_loss_combines_pg_entropy_and_kl():
    logp = torch.tensor([[-1.0, -1.0], [-1.0, -2.0]], requires_grad=True)
    old = logp.detach().clone()  # ratio 1: pg loss = -A per token
    adv = torch.tensor([1.0, -0.5])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    ref = logp.detach() - 0.5  # d = 0.5 -> k3 = 0.106531 per token
    entropy = torch.tensor([[2.0, 2.0], [1.0, 9.0]])
    cfg = LossConfig(use_kl=True, kl_coef=0.1, entropy_coef=0.01)
    loss, metrics = policy_loss(logp, old, adv, mask, cfg, ref_logp=ref, entropy=entropy)
    pg = (-1.0 - 1.0 + 0.5) / 3
    ent = (2.0 + 2.0 + 1.0) / 3
    assert metrics["pg_loss"] == pytest.approx(pg, abs=1e-6)
    assert metrics["entropy"] == pytest.approx(ent, abs=1e-6)
    assert metrics["kl"] == pytest.approx(0.106531, abs=1e-6)
    assert loss.item() == pytest.approx(pg - 0.01 * ent + 0.1 * 0.106531, abs=1e-6)
    assert metrics["loss"] == pytest.approx(loss.item())
    assert metrics["clipfrac"] == 0.0 and metrics["ratio_mean"] == pytest.approx(1.0)
    loss.backward()
    assert logp.grad[1, 1].item() == 0.0  # padding gets no gradient


def test_policy_loss_defaults_and_missing_inputs():
    cfg = LossConfig()
    assert (cfg.eps_low, cfg.eps_high, cfg.dual_clip, cfg.loss_agg) == (0.2, 0.2, 3.0, "token-mean")
    assert (cfg.kl_coef, cfg.kl_estimator, cfg.entropy_coef, cfg.use_kl) == (
        0.001,
        "low_var_kl",
        0.0,
        False,
    )
    logp = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="reference"):
        policy_loss(logp, logp, torch.ones(1), torch.ones(1, 2), LossConfig(use_kl=True))
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(logp, logp, torch.ones(1), torch.ones(1, 2), LossConfig(entropy_coef=0.1))


def test_loss_config_is_flat_documented_and_strict():
    for name, field in LossConfig.model_fields.items():
        assert field.description, f"LossConfig.{name} has no documentation"
    with pytest.raises(ValidationError):
        LossConfig(loss_agg="sum")
    with pytest.raises(ValidationError):
        LossConfig(dual_clip=0.5)
    with pytest.raises(ValidationError):
        LossConfig(eps_hgih=0.3)


def test_logprob_mismatch():
    gap = logprob_mismatch(
        torch.tensor([[-1.0, -2.0, 0.0]]),
        torch.tensor([[-1.1, -2.0, 5.0]]),
        torch.tensor([[1.0, 1.0, 0.0]]),
    )
    assert gap["abs_mean"] == pytest.approx(0.05, abs=1e-6)
    assert gap["abs_max"] == pytest.approx(0.1, abs=1e-6)
    assert gap["k3"] > 0


def test_gspo_has_no_dual_clip():
    # A < 0 and s = e^2 = 7.39: token PPO would cap the loss at 3; GSPO keeps max(-A s, -A clip(s)).
    logp = torch.full((1, 2), 2.0)
    cfg = LossConfig(ratio="sequence", loss_agg="seq-mean-token-mean")
    loss, metrics = policy_loss(
        logp, torch.zeros(1, 2), torch.tensor([-1.0]), torch.ones(1, 2), cfg
    )
    assert loss.item() == pytest.approx(math.exp(2.0), rel=1e-6)
    assert metrics["dual_clipfrac"] == 0.0
    token_loss, _ = policy_loss(
        logp, torch.zeros(1, 2), torch.tensor([-1.0]), torch.ones(1, 2), LossConfig()
    )
    assert token_loss.item() == pytest.approx(3.0)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_each_aggregation_weights_micro_batches_to_the_whole(mode):
    """Gradient accumulation: sum over micro-batches of weight(part, whole) * reduce(part) is the
    mini-batch's reduce(whole), whatever the split (the update relies on it for every mode)."""
    from turngym.trainers.losses import AGGREGATIONS, Counts

    agg = AGGREGATIONS[mode]
    torch.manual_seed(0)
    values = torch.randn(7, 6)
    mask = (torch.rand(7, 6) < 0.7).float()
    mask[:, 0] = 1.0

    def counts(m):
        return Counts(tokens=float(m.sum()), rows=float((m.sum(-1) > 0).sum()))

    longest = float(mask.sum(-1).max())
    constant = agg.mini_batch_constant(None, lambda: longest)
    assert constant == (longest if mode == "seq-mean-token-sum-norm" else None)
    whole = agg(values, mask, constant)
    for split in ([3, 4], [1, 2, 4], [7]):
        parts = torch.split(torch.arange(7), split)
        total = sum(agg.weight(counts(mask[p]), counts(mask)) * agg(values[p], mask[p], constant) for p in parts)
        assert float(total) == pytest.approx(float(whole), abs=1e-5), split
