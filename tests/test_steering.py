"""Steering on a tiny random GPT-2: the edit is x + s * d_i at the hook point, the
KL-matched strength lands within the tolerance of each target and grows with it, the
continuations are reproducible, and encode-only dictionaries are refused."""

from __future__ import annotations

import pytest
import torch

from autointerp.causal import forward
from autointerp.causal.steering import (
    Direction,
    Steerer,
    feature_direction,
    random_direction,
)
from autointerp.dictionaries.dictionary import Dictionary
from autointerp.errors import BadInputError
from autointerp.harvest.hooks import parse_hook
from autointerp.harvest.models import load_causal_lm
from tests.support.models import build_tiny_gpt2, single_torch_thread

one_thread = pytest.fixture(autouse=True)(single_torch_thread)


@pytest.fixture(scope="module")
def steerer(tmp_path_factory):
    # initializer 20x GPT-2's, so that a strong enough push moves the next token a lot
    path = build_tiny_gpt2(tmp_path_factory.mktemp("tiny-steer"), scale=20)
    loaded = load_causal_lm(str(path), device="cpu", dtype="float32")
    prompts = torch.randint(3, loaded.model.config.vocab_size, (6, 10),
                            generator=torch.Generator().manual_seed(0))
    return Steerer(loaded, parse_hook("resid.0", loaded.n_layers), prompts)


def test_edit_adds_the_direction_and_keeps_the_rest(steerer):
    d = random_direction(Direction(torch.ones(steerer.loaded.d_model)), seed=1)
    ids, mask = steerer.prompts, torch.ones_like(steerer.prompts)
    clean = forward.run(steerer.loaded, ids, mask, read=steerer.hook)
    steered = forward.run(steerer.loaded, ids, mask, steerer._edit(d, 3.0), read=steerer.hook)
    assert torch.allclose(steered - clean, 3.0 * d.vector.expand_as(clean), atol=1e-5)
    # the stand-in for the blocks before the hook gives the full pass's answer
    assert steerer.start is not None


@pytest.mark.parametrize("seed", [0, 1])
def test_kl_matched_strength_hits_each_target_and_grows(steerer, seed):
    d = random_direction(Direction(torch.ones(steerer.loaded.d_model)), seed=seed)
    found = [steerer.calibrate(d, target) for target in (0.25, 0.5, 1.0)]
    for cal in found:
        assert cal.reached and abs(cal.kl - cal.target) < 0.1
        assert cal.steps[-1][0] == cal.strength or any(s == cal.strength for s, _ in cal.steps)
        assert abs(steerer.kl(d, cal.strength) - cal.kl) < 1e-6  # the recorded KL is real
    strengths = [c.strength for c in found]
    assert strengths[0] < strengths[1] < strengths[2]


def test_continuations_reproducible_and_steering_changes_them(steerer):
    d = random_direction(Direction(torch.ones(steerer.loaded.d_model)), seed=2)
    s = steerer.calibrate(d, 1.0).strength
    a, b = steerer.generate(d, s, 8, seed=5), steerer.generate(d, s, 8, seed=5)
    clean = steerer.generate(None, 0.0, 8, seed=5)
    assert a.shape == (6, 8) and torch.equal(a, b)
    assert not torch.equal(a, clean)
    assert steerer.costs()["generated_tokens"] >= 3 * 6 * 8


def test_cached_generation_matches_full_passes(steerer):
    """The key-value cache changes nothing: the same tokens as sampling each step from a
    full steered pass over the prompt and the tokens so far (the last position's logits)."""
    d = random_direction(Direction(torch.ones(steerer.loaded.d_model)), seed=3)
    s = steerer.calibrate(d, 1.0).strength
    got = steerer.generate(d, s, 6, seed=7)
    g, ids = torch.Generator().manual_seed(7), steerer.prompts
    for _ in range(6):
        logits = forward.run(steerer.loaded, ids, torch.ones_like(ids), steerer._edit(d, s))
        ids = torch.cat([ids, torch.multinomial(logits[:, -1].float().softmax(-1), 1, generator=g)], 1)
    assert torch.equal(got, ids[:, steerer.prompts.shape[1]:])


def test_encode_only_dictionaries_cannot_steer():
    d_model, n = 8, 4
    transcoder = Dictionary(torch.randn(n, d_model), torch.zeros(n), torch.randn(n, 12),
                            torch.zeros(12), meta={"encode_only": True, "architecture": "transcoder"},
                            apply_b_dec_to_input=False)
    with pytest.raises(BadInputError, match="encode-only"):
        feature_direction(transcoder, 0)
    sae = Dictionary(torch.randn(n, d_model), torch.zeros(n), torch.randn(n, d_model), torch.zeros(d_model))
    assert torch.equal(feature_direction(sae, 2).vector, sae.W_dec[2])
    same = random_direction(feature_direction(sae, 2), seed=0)
    assert abs(same.norm - sae.W_dec[2].norm()) < 1e-5


def test_a_saturated_kl_ends_the_search_early(steerer, monkeypatch):
    """A direction whose KL stops growing below the target (a re-initialised model's) is
    not doubled 40 times: three flat doublings end the search, unreached."""
    from autointerp.causal import steering

    monkeypatch.setattr(steering.Steerer, "kl", lambda self, d, s: min(0.1, s * 1e-3))
    d = random_direction(Direction(torch.ones(steerer.loaded.d_model)), 0)
    cal = steerer.calibrate(d, target=0.5)
    assert not cal.reached and cal.kl == pytest.approx(0.1)
    assert len(cal.steps) < 20
    assert [k for _, k in cal.steps[-steering.SATURATED - 1:]] == [0.1] * (steering.SATURATED + 1)
