"""Exact patching in a dictionary basis, its invariants, the greedy curve and attribution,
on a tiny random GPT-2 whose word-level tokenizer makes every IOI name one token."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

from autointerp.baselines.directions import fit_baseline
from autointerp.causal import curves, forward
from autointerp.causal.attribution import attribution_scores, exact_single_effects
from autointerp.causal.basis import Basis, rotation
from autointerp.causal.patching import Patcher
from autointerp.causal.tasks import make_ioi, tokenize_pairs
from autointerp.dictionaries.dictionary import Dictionary
from autointerp.errors import BadInputError
from autointerp.harvest.hooks import forward_with_replacement, parse_hook
from autointerp.harvest.models import load_causal_lm
from tests.support.models import build_tiny_gpt2, single_torch_thread

one_thread = pytest.fixture(autouse=True)(single_torch_thread)


def _setup(path, scale, n_prompts=8):
    loaded = load_causal_lm(str(build_tiny_gpt2(path, scale=scale)), device="cpu", dtype="float32")
    batch = tokenize_pairs(loaded.tokenizer, make_ioi(loaded.tokenizer, n_prompts, seed=1))
    hook = parse_hook("resid.0", loaded.n_layers)
    x = forward.run(loaded, batch.clean_ids, batch.mask, read=hook)[batch.mask.bool()]
    pca = fit_baseline("pca", torch.cat([x, forward.run(loaded, batch.cf_ids, batch.mask, read=hook)[
        batch.mask.bool()]]), meta={"method": "pca"})
    return loaded, batch, hook, rotation(pca, "pca rotation")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    # initializer 20x GPT-2's, so that the next-token distributions differ clearly
    return _setup(tmp_path_factory.mktemp("tiny-causal"), scale=20)


def _sae(d_model: int, n_features: int = 64, seed: int = 0, bias: float = -0.1) -> Basis:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n_features, d_model, generator=g)
    W = W / W.norm(dim=1, keepdim=True)
    d = Dictionary(W, torch.full((n_features,), bias), W.clone(), torch.zeros(d_model), meta={"method": "sae"})
    return Basis("sae", d.W_enc, d.b_enc, d.W_dec, d.b_dec, d)


def _last_logp(logits, batch):
    return logits[torch.arange(batch.n_prompts), batch.last].log_softmax(-1)


def test_all_patched_rotation_reaches_the_counterfactual(setup):
    loaded, batch, hook, rot = setup
    p = Patcher(loaded, hook, rot, batch)
    out = p.evaluate(torch.ones(1, p.n_active))
    assert p.n_active == 32  # every direction of a full rotation changes somewhere
    assert float(out.kl[0]) < 1e-5


def test_none_patched_equals_clean_to_counterfactual_kl(setup):
    loaded, batch, hook, rot = setup
    p = Patcher(loaded, hook, rot, batch)
    with torch.no_grad():
        clean = _last_logp(loaded.model(batch.clean_ids, attention_mask=batch.mask).logits, batch)
        cf = _last_logp(loaded.model(batch.cf_ids, attention_mask=batch.mask).logits, batch)
    expected = float((clean.exp() * (clean - cf)).sum(-1).mean())
    assert expected > 1e-3  # the two prompts really differ
    assert float(p.evaluate(torch.zeros(1, p.n_active)).kl[0]) == pytest.approx(expected, rel=1e-4)


def test_single_feature_patch_equals_closed_form(setup):
    loaded, batch, hook, _ = setup
    sae = _sae(loaded.d_model)
    p = Patcher(loaded, hook, sae, batch)
    j = int(p.delta.abs().sum((0, 1)).argmax())
    i = int(p.active[j])
    x_clean = forward.run(loaded, batch.clean_ids, batch.mask, read=hook)
    x_cf = forward.run(loaded, batch.cf_ids, batch.mask, read=hook)
    coef = sae.dictionary.encode(x_cf.reshape(-1, 32))[:, i] - sae.dictionary.encode(x_clean.reshape(-1, 32))[:, i]
    edit = (coef.reshape(*x_clean.shape[:2], 1) * batch.mask[..., None]) * sae.W_dec[i]
    logits = forward_with_replacement(loaded, hook, batch.clean_ids, batch.mask, lambda x: x + edit)
    cf = _last_logp(forward_with_replacement(loaded, hook, batch.cf_ids, batch.mask, lambda x: x), batch)
    got = _last_logp(logits, batch)
    closed = float((got.exp() * (got - cf)).sum(-1).mean())
    mask = torch.zeros(1, p.n_active)
    mask[0, j] = 1
    assert float(p.evaluate(mask).kl[0]) == pytest.approx(closed, rel=1e-4, abs=1e-7)
    assert closed != pytest.approx(float(p.evaluate(0 * mask).kl[0]), rel=1e-3)  # it did change


def test_greedy_curve_never_grows_as_tau_grows(setup):
    loaded, batch, hook, _ = setup
    p = Patcher(loaded, hook, _sae(loaded.d_model), batch, max_batch=32)
    points = curves.greedy(p, "kl", curves.thresholds(12), seed=0)
    sizes = [pt.n_patched for pt in points]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] <= p.n_active and sizes[-1] < p.n_active
    # the edit magnitude is that of the set kept, recomputed
    last = points[-1]
    assert last.edit_norm <= curves.endpoints(p)[1].edit_norm + 1e-6


def paper_greedy(p: Patcher, taus, seed: int) -> list[tuple[int, float]]:
    """The released code's loop, one forward pass per candidate: (|S|, KL) per threshold."""
    import numpy as np

    rng = np.random.default_rng(seed)
    keep = torch.ones(p.n_active)
    value = float(p.evaluate(keep[None]).kl[0])
    out = []
    for tau in taus:
        for c in rng.permutation(keep.nonzero().squeeze(1).numpy()):
            trial = keep.clone()
            trial[int(c)] = 0
            kl = float(p.evaluate(trial[None]).kl[0])
            if kl - value < tau:
                keep, value = trial, kl
        out.append((int(keep.sum()), value))
    return out


def test_greedy_batching_is_exactly_sequential(setup):
    loaded, batch, hook, _ = setup
    sae = _sae(loaded.d_model, 24, seed=3)
    taus = curves.thresholds(12)
    ref = Patcher(loaded, hook, sae, batch, max_batch=batch.n_prompts)
    expected = paper_greedy(ref, taus, seed=2)
    for per_pass in (1, 8):
        p = Patcher(loaded, hook, sae, batch, max_batch=per_pass * batch.n_prompts)
        got = curves.greedy(p, "kl", taus, seed=2)
        assert [q.n_patched for q in got] == [n for n, _ in expected]
        assert [q.kl for q in got] == pytest.approx([kl for _, kl in expected], rel=1e-4, abs=1e-8)
        # a candidate tried against the set still kept is not tried again, and a pass
        # settles several: fewer passes than the loop's one per candidate
        assert p.n_forward < ref.n_forward


def test_attribution_ranks_like_exact_single_patches(tmp_path):
    # initial weights at GPT-2's own scale: a nearly linear model, where first-order
    # effects dominate
    loaded, batch, hook, rot = _setup(tmp_path, scale=3)
    p = Patcher(loaded, hook, rot, batch)
    exact = exact_single_effects(p, "kl")
    for method in ("grad", "ig"):
        rho = spearmanr(attribution_scores(p, "kl", method, steps=10).numpy(), exact.numpy())[0]
        assert rho >= 0.8, (method, rho)


def test_topk_curve_uses_one_pass_per_point_and_ends_all_patched(setup):
    loaded, batch, hook, rot = setup
    p = Patcher(loaded, hook, rot, batch, max_batch=batch.n_prompts)
    scores = attribution_scores(p, "kl", "grad")
    before = p.n_forward
    points = curves.topk_curve(p, scores, "grad")
    assert p.n_forward - before == len(points) == len(curves.k_grid(p.n_active))
    assert points[-1].n_patched == p.n_active and points[-1].kl < 1e-5
    assert points[0].kl < curves.endpoints(p)[0].kl  # the top feature moves towards cf


def test_logit_diff_metric_moves_to_counterfactual(setup):
    loaded, batch, hook, rot = setup
    p = Patcher(loaded, hook, rot, batch)
    out = p.evaluate(torch.stack([torch.zeros(p.n_active), torch.ones(p.n_active)]))
    assert float(out.logit_diff[1]) == pytest.approx(p.cf_logit_diff, abs=1e-4)
    assert float(p.objective(out, "logit-diff")[1]) == pytest.approx(0, abs=1e-4)


def test_width_mismatch_is_refused(setup):
    loaded, batch, hook, _ = setup
    with pytest.raises(BadInputError, match="d_model"):
        Patcher(loaded, hook, _sae(16), batch)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_skipping_the_blocks_before_the_hook_changes_nothing(tmp_path_factory, family):
    from autointerp.causal.tasks import TaskBatch
    from tests.support.models import tiny_model_dirs

    loaded = load_causal_lm(str(tiny_model_dirs(tmp_path_factory)[family]), device="cpu", dtype="float32")
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(3, 300, (3, 12), generator=g)
    cf = clean.clone()
    cf[:, 4] = torch.randint(3, 300, (3,), generator=g)
    mask = torch.ones_like(clean)
    mask[1, 9:] = 0  # one right-padded prompt
    batch = TaskBatch(clean, cf, mask, torch.tensor([11, 8, 11]), None, None)
    hook = parse_hook("resid.1", loaded.n_layers)
    p = Patcher(loaded, hook, _sae(loaded.d_model, seed=1), batch)
    assert p.start is not None  # the stand-in blocks passed their check
    masks = (torch.rand(3, p.n_active, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    fast = p.evaluate(masks).kl
    p.start = None  # the plain path: every block runs, the edit is a forward hook
    assert torch.allclose(fast, p.evaluate(masks).kl, rtol=1e-4, atol=1e-7)
    assert fast.max() > 0


def test_a_16k_feature_dictionary_stays_bounded(setup):
    loaded, batch, hook, _ = setup
    x = forward.run(loaded, batch.clean_ids, batch.mask, read=hook)
    sae = _sae(loaded.d_model, n_features=16384, seed=4, bias=-0.5 * float(x.norm(dim=-1).max()))
    p = Patcher(loaded, hook, sae, batch, max_batch=2 * batch.n_prompts)
    # only features that differ somewhere are kept: the state is (P, T, n_active), not 16k wide
    assert 0 < p.n_active < 16384 and p.delta.shape == (*batch.clean_ids.shape, p.n_active)
    before = p.n_forward
    out = p.evaluate(torch.ones(5, p.n_active))
    assert p.n_forward - before == 3  # 5 masks, 2 per pass: passes never exceed max_batch
    assert torch.allclose(out.kl, out.kl[0].expand(5), rtol=1e-5)
