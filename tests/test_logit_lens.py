"""Decoder promoted/suppressed tokens: the top and bottom of W_U @ W_dec[f], through the
model's real unembedding, checked against a direct computation."""

from __future__ import annotations

import torch

from autointerp.dictionaries.dictionary import Dictionary
from autointerp.harvest.models import load_causal_lm
from autointerp.results.logit_lens import decoder_tokens


def test_decoder_tokens_match_the_unembedding(tiny_llama_dir, tmp_path):
    lm = load_causal_lm(str(tiny_llama_dir), "cpu", "float32")
    W_U = lm.model.get_output_embeddings().weight.detach()
    d = W_U.shape[1]
    g = torch.Generator().manual_seed(0)
    W_dec = torch.randn(6, d, generator=g)
    path = Dictionary(W_dec.clone(), torch.zeros(6), W_dec, torch.zeros(d),
                      meta={"method": "test", "model": str(tiny_llama_dir), "hook": "resid.1",
                            "layer": 1}).save(tmp_path / "dict")
    got = decoder_tokens(path, [2, 5], k=4)
    for f in (2, 5):
        logits = W_U @ W_dec[f]
        top, bottom = logits.topk(4).indices.tolist(), (-logits).topk(4).indices.tolist()
        assert [v for _, v in got[f].promoted] == [round(float(logits[i]), 3) for i in top]
        assert [v for _, v in got[f].suppressed] == [round(float(logits[i]), 3) for i in bottom]
        assert got[f].promoted[0][1] > 0 > got[f].suppressed[0][1]


def test_unavailable_model_is_a_reason_not_an_error(tmp_path):
    d = 8
    path = Dictionary(torch.eye(d), torch.zeros(d), torch.eye(d), torch.zeros(d),
                      meta={"method": "test", "model": str(tmp_path / "no-such-model"),
                            "hook": "resid.0", "layer": 0}).save(tmp_path / "dict")
    reason = decoder_tokens(path, [0])
    assert isinstance(reason, str) and "cannot load model" in reason and "\n" not in reason
