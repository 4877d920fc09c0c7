"""The offline default backend: a transformers causal LM in this process.

Concurrent `complete` calls that arrive within a short window are batched into
one left-padded prefill and one decode loop, run in a worker thread so the event
loop keeps going. Prompt logprobs are exact (they come from the prefill);
`candidate_tokens` get their exact logprob at every position. Sampling draws
from a generator seeded by the request's hash, so a sample does not depend on
what else shared its batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import torch

from autointerp.db import dumps
from autointerp.llm.base import Completion, CompletionRequest, TokenLogprob

LM_HEAD_CHUNK = 512
"""Positions per lm_head call when reading prompt logprobs: (chunk, vocab) floats at a time."""


@dataclass
class ModelStats:
    """Where the backend's time goes (bench/score.py: overhead = wall - model_s)."""

    model_s: float = 0.0
    """Seconds inside forward passes (prefill, decode steps, lm_head)."""
    backend_s: float = 0.0
    """Seconds in the worker thread per batch: model_s plus tokenising and read-out."""
    batches: int = 0
    requests: int = 0


@dataclass
class _Row:
    """One request's generation state in the decode loop."""

    request: CompletionRequest
    generator: torch.Generator | None
    ids: list[int]
    tokens: list[TokenLogprob]
    text: str = ""
    finish_reason: str | None = None


def request_seed(request: CompletionRequest) -> int:
    return int(hashlib.sha256(dumps(asdict(request)).encode()).hexdigest()[:15], 16)


class TransformersClient:
    """`model`: a name `autointerp.models.load_causal_lm` knows, or an HF model path."""

    def __init__(self, model: str = "smollm2-135m", device: str = "auto", dtype: str = "auto",
                 max_batch: int = 16, batch_window_s: float = 0.005, loaded=None):
        self.model_name = model
        self.device = device
        self.dtype = dtype
        self.max_batch = max_batch
        self.batch_window_s = batch_window_s
        self.name = f"inprocess:{model}"
        self.stats = ModelStats()
        self._lm = loaded
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autointerp-lm")
        self._pending: list[tuple[CompletionRequest, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None

    def supports(self, feature: str) -> bool | None:
        return feature in ("prompt_logprobs", "top_logprobs", "candidate_tokens")

    async def probe(self) -> dict:
        return {"prompt_logprobs_style": "exact", "top_logprobs": True}

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    async def complete(self, request: CompletionRequest) -> Completion:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((request, fut))
        if self._flusher is None or self._flusher.done() or self._flusher.get_loop() is not loop:
            # The first request of a batch waits briefly for company; requests that
            # arrive while a batch runs form the next one.
            self._flusher = loop.create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        await asyncio.sleep(self.batch_window_s)
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            try:
                results = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._run_batch, [r for r, _ in batch])
            except Exception as e:  # one bad batch fails its own requests, not the loop
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    # --- everything below runs in the worker thread -------------------------------

    def _load(self):
        if self._lm is None:
            from autointerp.models import load_causal_lm
            self._lm = load_causal_lm(self.model_name, self.device, self.dtype)
        return self._lm

    def _encode(self, tokenizer, request: CompletionRequest) -> list[int]:
        if request.messages is not None:
            messages = [{"role": r, "content": c} for r, c in request.messages]
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                 tokenize=False)
            return tokenizer(text, add_special_tokens=False)["input_ids"]
        return tokenizer(request.prompt)["input_ids"]

    def _forward(self, **kwargs):
        t0 = time.perf_counter()
        out = self._lm.model.base_model(use_cache=True, return_dict=True, **kwargs)
        self.stats.model_s += time.perf_counter() - t0
        return out

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d_model) final hidden states -> (..., vocab) float32 log-probabilities."""
        t0 = time.perf_counter()
        logits = self._lm.model.get_output_embeddings()(hidden).float()
        cap = getattr(self._lm.model.config, "final_logit_softcapping", None)
        if cap:
            logits = cap * torch.tanh(logits / cap)
        out = torch.log_softmax(logits, dim=-1)
        self.stats.model_s += time.perf_counter() - t0
        return out

    def _run_batch(self, requests: list[CompletionRequest]) -> list[Completion]:
        t0 = time.perf_counter()
        lm = self._load()
        model, tok = lm.model, lm.tokenizer
        ids = [self._encode(tok, r) for r in requests]
        length = max(len(x) for x in ids)
        device = next(model.parameters()).device
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        # Left padding, so every row's next token sits in the last column.
        input_ids = torch.tensor([[pad] * (length - len(x)) + x for x in ids], device=device)
        mask = torch.tensor([[0] * (length - len(x)) + [1] * len(x) for x in ids], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self._forward(input_ids=input_ids, attention_mask=mask, position_ids=positions)
            hidden = out.last_hidden_state  # (batch, seq, d_model)
            prompt = [self._prompt_tokens(hidden[b, length - len(x):], x, r)
                      if r.prompt_logprobs else None
                      for b, (x, r) in enumerate(zip(ids, requests, strict=True))]
            rows = self._decode(requests, out.past_key_values, hidden[:, -1], mask, positions[:, -1])
        self.stats.batches += 1
        self.stats.requests += len(requests)
        self.stats.backend_s += time.perf_counter() - t0
        return [Completion(row.text, tuple(row.tokens) if r.top_logprobs else None, p,
                           row.finish_reason, {"batch_size": len(requests)})
                for row, r, p in zip(rows, requests, prompt, strict=True)]

    def _candidate_ids(self, request: CompletionRequest) -> dict[int, str]:
        """Candidates that are one token in this tokenizer (others cannot be read exactly)."""
        tok = self._lm.tokenizer
        out = {}
        for c in request.candidate_tokens:
            ids = tok.encode(c, add_special_tokens=False)
            if len(ids) == 1:
                out[ids[0]] = c
        return out

    def _alternatives(self, logprobs: torch.Tensor, k: int, candidates: dict[int, str]):
        """(vocab,) log-probabilities -> top k plus the candidates, most likely first."""
        tok = self._lm.tokenizer
        alts = {}
        if k:
            values, indices = logprobs.topk(k)
            for v, i in zip(values.tolist(), indices.tolist(), strict=True):
                alts.setdefault(tok.decode([i]), v)  # byte pieces can decode alike
        for i, c in candidates.items():
            alts.setdefault(c, float(logprobs[i]))
        return tuple(sorted(alts.items(), key=lambda a: -a[1]))

    def _prompt_tokens(self, hidden: torch.Tensor, ids: list[int], request: CompletionRequest):
        """Position i: P(token i | tokens < i) and its alternatives; position 0 has none."""
        tok = self._lm.tokenizer
        candidates = self._candidate_ids(request)
        out = [TokenLogprob(tok.decode([ids[0]]), None, ())]
        hidden = hidden[:-1]  # the state after token i predicts token i + 1
        for start in range(0, len(hidden), LM_HEAD_CHUNK):
            logprobs = self._logits(hidden[start:start + LM_HEAD_CHUNK])  # (chunk, vocab)
            for j in range(len(logprobs)):
                token_id = ids[start + j + 1]
                out.append(TokenLogprob(
                    tok.decode([token_id]), float(logprobs[j, token_id]),
                    self._alternatives(logprobs[j], request.prompt_logprobs, candidates)))
        return tuple(out)

    def _decode(self, requests, cache, last_hidden, mask, last_pos) -> list[_Row]:
        """Greedy or seeded-sampled generation for every row, one batched step at a time."""
        rows = [_Row(r, torch.Generator().manual_seed(request_seed(r)) if r.temperature > 0
                     else None, [], []) for r in requests]
        for row in rows:
            if row.request.max_tokens <= 0:
                row.finish_reason = "length"
        for _ in range(max(r.max_tokens for r in requests)):
            logprobs = self._logits(last_hidden)  # (batch, vocab)
            next_ids = [self._step(row, logprobs[b]) for b, row in enumerate(rows)]
            if all(row.finish_reason for row in rows):
                break
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            last_pos = last_pos + 1
            out = self._forward(input_ids=torch.tensor(next_ids, device=mask.device)[:, None],
                                attention_mask=mask, position_ids=last_pos[:, None],
                                past_key_values=cache)
            cache, last_hidden = out.past_key_values, out.last_hidden_state[:, -1]
        return rows

    def _step(self, row: _Row, logprobs: torch.Tensor) -> int:
        """Choose row's next token (unless it is done); returns the id to feed back."""
        if row.finish_reason:
            return 0
        r, tok = row.request, self._lm.tokenizer
        if row.generator is None:
            token_id = int(logprobs.argmax())
        else:
            probs = torch.softmax(logprobs.float().cpu() / r.temperature, dim=-1)
            token_id = int(torch.multinomial(probs, 1, generator=row.generator))
        row.ids.append(token_id)
        if r.top_logprobs:
            row.tokens.append(TokenLogprob(
                tok.decode([token_id]), float(logprobs[token_id]),
                self._alternatives(logprobs, r.top_logprobs, self._candidate_ids(r))))
        row.text = tok.decode(row.ids, skip_special_tokens=True)
        hits = [row.text.find(s) for s in r.stop if s in row.text]
        if hits:
            row.text, row.finish_reason = row.text[: min(hits)], "stop"
        elif token_id in self._eos_ids():
            row.finish_reason = "stop"
        elif len(row.ids) >= r.max_tokens:
            row.finish_reason = "length"
        return token_id

    def _eos_ids(self) -> set[int]:
        ids = getattr(self._lm.model.generation_config, "eos_token_id", None)
        ids = ids if isinstance(ids, list) else [ids]
        return {i for i in ids + [self._lm.tokenizer.eos_token_id] if i is not None}
