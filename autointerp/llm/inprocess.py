"""The offline default backend: a transformers causal LM in this process.

Concurrent `complete` calls that arrive within a short window are batched into
one left-padded prefill and one decode loop, run in a worker thread so the event
loop keeps going. Requests that share a long prompt prefix (the explainer's and
the simulator's instructions and few-shot examples) run only their own tail: the
prefix's keys/values are computed once per process and reused (prefix_cache.py). Prompt logprobs are exact (they come from the prefill);
`candidate_tokens` get their exact logprob at every position. Sampling draws
from a generator seeded by the request's hash, so a sample does not depend on
what else shared its batch.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import torch

from autointerp.llm.base import (
    Completion,
    CompletionRequest,
    TokenLogprob,
    Usage,
)
from autointerp.llm.decoding import DecodeLoop
from autointerp.llm.prefix_cache import Prefix, PrefixCache, group_by_prefix

LM_HEAD_CHUNK = 512
"""Positions per lm_head call when reading prompt logprobs: (chunk, vocab) floats at a time."""
PREFILL_CHUNK = 512
"""Tail positions per forward pass of a prefill. A long tail (the explainer's records,
1,300+ tokens) run in chunks attends only to what precedes each chunk, where one pass
computes the whole (tail x context) attention and masks out the causal half: on a CPU
attention is most of such a pass."""


@dataclass
class ModelStats:
    """Where the backend's time goes (bench/score.py: overhead = wall - model_s)."""

    model_s: float = 0.0
    """Seconds inside forward passes (prefill, decode steps, lm_head)."""
    backend_s: float = 0.0
    """Seconds in the worker thread per batch: model_s plus tokenising and read-out."""
    batches: int = 0
    requests: int = 0


class TransformersClient(DecodeLoop):
    """`model`: a name `autointerp.harvest.models.load_causal_lm` knows, or an HF model path."""

    def __init__(self, model: str = "smollm2-135m", device: str = "auto", dtype: str = "auto",
                 max_batch: int = 16, batch_window_s: float = 0.005, loaded=None,
                 prefix_cache: bool = True, prefill_chunk: int = PREFILL_CHUNK):
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
        self._pieces: dict[int, str] = {}
        self._eos: set[int] | None = None
        self._cache_kw: str | None = None
        self.prefixes = PrefixCache() if prefix_cache else None
        """Shared prompt prefixes' key/value caches (None: every prompt runs in full)."""
        self.prefill_chunk = prefill_chunk

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
            from autointerp.harvest.models import load_causal_lm
            self._lm = load_causal_lm(self.model_name, self.device, self.dtype)
        return self._lm

    def _encode(self, tokenizer, request: CompletionRequest) -> list[int]:
        if request.messages is not None:
            messages = [{"role": r, "content": c} for r, c in request.messages]
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                 tokenize=False)
            return tokenizer(text, add_special_tokens=False)["input_ids"]
        return tokenizer(request.prompt)["input_ids"]

    def _forward(self, past=None, **kwargs):
        """One pass of the base model; `past`: a key/value cache to extend (the keyword's
        name changed in transformers 5: `cache`, before it `past_key_values`)."""
        t0 = time.perf_counter()
        base = self._lm.model.base_model
        if self._cache_kw is None:
            params = inspect.signature(base.forward).parameters
            self._cache_kw = "cache" if "cache" in params else "past_key_values"
        if past is not None:
            kwargs[self._cache_kw] = past
        out = base(use_cache=True, return_dict=True, **kwargs)
        self.stats.model_s += time.perf_counter() - t0
        cache = getattr(out, "cache", None) if self._cache_kw == "cache" else out.past_key_values
        return out.last_hidden_state, cache

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
        tok = self._load().tokenizer
        ids = [self._encode(tok, r) for r in requests]
        groups = group_by_prefix(ids) if self.prefixes else [(list(range(len(ids))), 0)]
        results: list[Completion | None] = [None] * len(requests)
        with torch.inference_mode():
            for members, n_prefix in groups:
                prefix = self._prefix(ids[members[0]], n_prefix)
                done = self._run_group([requests[i] for i in members], [ids[i] for i in members],
                                       prefix)
                for i, completion in zip(members, done, strict=True):
                    results[i] = replace(completion, meta={"batch_size": len(requests)})
        self.stats.batches += 1
        self.stats.requests += len(requests)
        self.stats.backend_s += time.perf_counter() - t0
        return results

    def _prefix(self, row: list[int], n_shared: int) -> Prefix | None:
        """The kept prefix a group whose rows share row[:n_shared] runs after; a lone
        request (n_shared 0) takes the longest kept prefix of its own tokens."""
        if self.prefixes is None:
            return None
        if n_shared:
            return self.prefixes.get(row, n_shared, self._prefill, self._extend)
        return self.prefixes.find(row, len(row) - 1, gap=None)

    def _prefill(self, ids: list[int]) -> tuple[object, torch.Tensor]:
        """A shared prefix run once: its key/value cache and (len, d_model) hidden states."""
        device = next(self._lm.model.parameters()).device
        hidden, cache = self._forward(input_ids=torch.tensor([ids], device=device))
        return cache, hidden[0]

    def _extend(self, kept: Prefix, n_shared: int, ids: list[int]) -> tuple[object, torch.Tensor]:
        """A new prefix that begins with kept.ids[:n_shared]: that part's keys and values
        are copied and cut, and only the rest of `ids` runs through the model."""
        cache = copy.deepcopy(kept.cache)
        if n_shared < len(kept.ids):  # a negative length drops that many (transformers 4 and 5)
            cache.crop(n_shared - len(kept.ids))
        if n_shared == len(ids):
            return cache, kept.hidden[:n_shared]
        device = next(self._lm.model.parameters()).device
        positions = torch.arange(n_shared, len(ids), device=device)[None]
        hidden, cache = self._forward(input_ids=torch.tensor([ids[n_shared:]], device=device),
                                      position_ids=positions, past=cache)
        return cache, torch.cat([kept.hidden[:n_shared], hidden[0]])

    def _run_group(self, requests: list[CompletionRequest], ids: list[list[int]],
                   prefix: Prefix | None) -> list[Completion]:
        """One prefill of the rows' tokens after `prefix` (all of them without one; a long
        tail in chunks of `prefill_chunk` columns), then the decode loop. The tails are
        left-padded, so every row's next token sits in the last column; padding between
        prefix and tail is masked out."""
        tok = self._lm.tokenizer
        device = next(self._lm.model.parameters()).device
        n_prefix = len(prefix.ids) if prefix else 0
        tails = [x[n_prefix:] for x in ids]
        length = max(len(t) for t in tails)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        input_ids = torch.tensor([[pad] * (length - len(t)) + t for t in tails], device=device)
        tail_mask = torch.tensor([[0] * (length - len(t)) + [1] * len(t) for t in tails],
                                 device=device)
        positions = n_prefix + (tail_mask.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat([tail_mask.new_ones(len(ids), n_prefix), tail_mask], dim=1)
        cache = prefix.batch_cache(len(ids)) if prefix else None
        parts = []
        for start in range(0, length, self.prefill_chunk):
            end = min(length, start + self.prefill_chunk)
            part, cache = self._forward(input_ids=input_ids[:, start:end],
                                        attention_mask=mask[:, :n_prefix + end],
                                        position_ids=positions[:, start:end], past=cache)
            parts.append(part)
        hidden = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        prompt = [self._prompt_tokens(prefix, hidden[b, length - len(t):], x, r)
                  if r.prompt_logprobs else None
                  for b, (t, x, r) in enumerate(zip(tails, ids, requests, strict=True))]
        rows = self._decode(requests, cache, hidden[:, -1], mask, positions[:, -1])
        # Usage is counted by this tokenizer: the prompt as encoded, the tokens generated.
        return [Completion(row.text, tuple(row.tokens) if r.top_logprobs else None, p,
                           row.finish_reason, {}, Usage(len(x), len(row.ids)))
                for row, r, p, x in zip(rows, requests, prompt, ids, strict=True)]

    def _piece(self, token_id: int) -> str:
        """A token's text, memoised: read-outs decode the same few ids over and over."""
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self._lm.tokenizer.decode([token_id])
        return piece

    def _candidate_ids(self, request: CompletionRequest) -> tuple[list[int], list[str]]:
        """Candidates that are one token in this tokenizer (others cannot be read exactly)."""
        ids, names = [], []
        for c in request.candidate_tokens:
            encoded = self._lm.tokenizer.encode(c, add_special_tokens=False)
            if len(encoded) == 1:
                ids.append(encoded[0])
                names.append(c)
        return ids, names

    def _read_out(self, logprobs: torch.Tensor, targets: list[int], k: int,
                  candidates: tuple[list[int], list[str]]) -> list[TokenLogprob]:
        """(n, vocab) log-probabilities -> per row: the target token, its logprob and the
        alternatives (top k plus the candidates, most likely first). One transfer per kind."""
        n = len(targets)
        index = torch.tensor(targets, device=logprobs.device)[:, None]
        own = logprobs.gather(1, index)[:, 0].tolist()
        top = logprobs.topk(k, dim=-1) if k else None
        top_v, top_i = (top.values.tolist(), top.indices.tolist()) if k else ([[]] * n, [[]] * n)
        cand_ids, cand_names = candidates
        cand_v = logprobs[:, cand_ids].tolist() if cand_ids else [[]] * n
        out = []
        for t, lp, vs, ix, cv in zip(targets, own, top_v, top_i, cand_v, strict=True):
            alts: dict[str, float] = {}
            for v, i in zip(vs, ix, strict=True):
                alts.setdefault(self._piece(i), v)  # byte pieces can decode alike
            for name, v in zip(cand_names, cv, strict=True):
                alts.setdefault(name, v)
            out.append(TokenLogprob(self._piece(t), lp, tuple(sorted(alts.items(), key=lambda a: -a[1]))))
        return out

    def _read_states(self, states: torch.Tensor, targets: list[int], k: int,
                     candidates: tuple[list[int], list[str]],
                     want: list[bool] | None = None) -> list[TokenLogprob]:
        """Row i of `states` (n, d_model) predicts targets[i]; lm_head a chunk at a time.
        With `want`, only the rows where it is true are read; the others keep their token
        alone (no logprob: the vocabulary projection is most of a read-out's cost)."""
        if want is not None:
            rows = [i for i, w in enumerate(want) if w]
            out = [TokenLogprob(self._piece(t), None) for t in targets]
            if rows:
                read = self._read_states(states[rows], [targets[i] for i in rows], k, candidates)
                for i, token in zip(rows, read, strict=True):
                    out[i] = token
            return out
        out = []
        for start in range(0, len(targets), LM_HEAD_CHUNK):
            logprobs = self._logits(states[start:start + LM_HEAD_CHUNK])  # (chunk, vocab)
            out += self._read_out(logprobs, targets[start:start + len(logprobs)], k, candidates)
        return out

    def _prompt_tokens(self, prefix: Prefix | None, hidden: torch.Tensor, ids: list[int],
                       request: CompletionRequest) -> tuple[TokenLogprob, ...]:
        """Position i: P(token i | tokens < i) and its alternatives; position 0 has none.
        `hidden` holds the states after the tokens past the prefix. The prefix's part
        depends only on the read-out settings, so it is read once per prefix. With
        `prompt_logprobs_after`, only the positions that will be read get a logprob and
        alternatives (see CompletionRequest); elsewhere a position keeps its token alone."""
        candidates = self._candidate_ids(request)
        k = request.prompt_logprobs
        after = request.prompt_logprobs_after
        want = [False] + [self._piece(i).endswith(after) for i in ids[:-1]] if after else None

        def part(states, start, end):
            return self._read_states(states, ids[start:end], k, candidates,
                                     None if want is None else want[start:end])

        if prefix is None:
            out = [TokenLogprob(self._piece(ids[0]), None, ())]
            states = hidden[:-1]  # the state after token i predicts token i + 1
        else:
            n = len(prefix.ids)
            out = list(prefix.read_out((k, tuple(candidates[0]), after), lambda: [
                TokenLogprob(self._piece(ids[0]), None, ()), *part(prefix.hidden[:-1], 1, n)]))
            states = torch.cat([prefix.hidden[-1:], hidden[:-1]])
        out += part(states, len(out), len(ids))
        return tuple(out)
