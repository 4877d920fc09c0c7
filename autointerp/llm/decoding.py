"""The in-process backend's generation loop (a mixin of TransformersClient): greedy or
seeded-sampled decoding, one batched step at a time, with stop strings and EOS."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import torch

from autointerp.db import dumps
from autointerp.llm.base import CompletionRequest, TokenLogprob, canonical


@dataclass
class _Row:
    """One request's generation state in the decode loop."""

    request: CompletionRequest
    generator: torch.Generator | None
    ids: list[int]
    tokens: list[TokenLogprob]
    candidates: tuple[list[int], list[str]]
    text: str = ""
    finish_reason: str | None = None


def request_seed(request: CompletionRequest) -> int:
    return int(hashlib.sha256(dumps(canonical(request)).encode()).hexdigest()[:15], 16)


class DecodeLoop:
    """Needs `_lm`, `_forward`, `_logits`, `_read_out`, `_candidate_ids`, `_eos`."""

    def _decode(self, requests, cache, last_hidden, mask, last_pos) -> list[_Row]:
        """Greedy or seeded-sampled generation, one batched step at a time; rows that
        finish leave the batch (and the KV cache), so short answers do not pay for long."""
        rows = [_Row(r, torch.Generator().manual_seed(request_seed(r)) if r.temperature > 0
                     else None, [], [], self._candidate_ids(r)) for r in requests]
        active = list(range(len(rows)))
        for row in rows:
            if row.request.max_tokens <= 0:
                row.finish_reason = "length"
        while active:
            keep = [j for j, b in enumerate(active) if not rows[b].finish_reason]
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, dtype=torch.long, device=mask.device)
                cache.batch_select_indices(index)
                mask, last_pos, last_hidden = mask[index], last_pos[index], last_hidden[index]
                active = [active[j] for j in keep]
            logprobs = self._logits(last_hidden)  # (active, vocab)
            next_ids = [self._step(rows[b], logprobs[j]) for j, b in enumerate(active)]
            if all(rows[b].finish_reason for b in active):
                break
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            last_pos = last_pos + 1
            hidden, cache = self._forward(
                input_ids=torch.tensor(next_ids, device=mask.device)[:, None],
                attention_mask=mask, position_ids=last_pos[:, None], past=cache)
            last_hidden = hidden[:, -1]
        for row in rows:
            row.text = self._final_text(row)
        return rows

    def _step(self, row: _Row, logprobs: torch.Tensor) -> int:
        """Choose the row's next token, record it, and decide whether the row is done."""
        r = row.request
        if row.generator is None:
            token_id = int(logprobs.argmax())
        else:
            probs = torch.softmax(logprobs.float().cpu() / r.temperature, dim=-1)
            token_id = int(torch.multinomial(probs, 1, generator=row.generator))
        row.ids.append(token_id)
        if r.top_logprobs:
            row.tokens += self._read_out(logprobs[None], [token_id], r.top_logprobs, row.candidates)
        text = self._lm.tokenizer.decode(row.ids, skip_special_tokens=True) \
            if r.stop or r.answer_decided else ""
        if r.stop and any(s in text for s in r.stop):
            row.finish_reason = "stop"
        elif r.answer_decided and re.search(r.answer_decided, text):
            row.finish_reason = "stop"  # the rest could not change what the caller reads
        elif token_id in self._eos_ids():
            row.finish_reason = "stop"
        elif len(row.ids) >= r.max_tokens:
            row.finish_reason = "length"
        return token_id

    def _final_text(self, row: _Row) -> str:
        """The decoded answer, cut before the first stop string."""
        text = self._lm.tokenizer.decode(row.ids, skip_special_tokens=True)
        hits = [text.find(s) for s in row.request.stop if s in text]
        return text[: min(hits)] if hits else text

    def _eos_ids(self) -> set[int]:
        if self._eos is None:
            ids = getattr(self._lm.model.generation_config, "eos_token_id", None)
            ids = ids if isinstance(ids, list) else [ids]
            self._eos = {i for i in ids + [self._lm.tokenizer.eos_token_id] if i is not None}
        return self._eos
