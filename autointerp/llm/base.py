"""One LLM client contract: an async `complete(request) -> Completion` that can
return token logprobs. The in-process transformers client and the
OpenAI-compatible client implement it; `CachedClient` wraps either."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple, Protocol

from autointerp.errors import AutointerpError


@dataclass(frozen=True)
class CompletionRequest:
    """A chat (`messages`) or raw-prompt (`prompt`) request. Exactly one is set."""

    model: str
    messages: tuple[tuple[str, str], ...] | None = None
    """(role, content) pairs."""
    prompt: str | None = None
    """Raw text for completion endpoints (the all-at-once simulator)."""
    max_tokens: int = 256
    temperature: float = 0.0
    top_logprobs: int = 0
    """How many alternatives to return per generated token (0: no logprobs)."""
    prompt_logprobs: int = 0
    """How many alternatives to return per prompt token (0: none). vLLM `prompt_logprobs`,
    llama.cpp `echo` + `logprobs`, exact in-process."""
    candidate_tokens: tuple[str, ...] = ()
    """Tokens whose logprob a backend that can compute it exactly (in-process) adds to
    every position's alternatives, e.g. the digits "0".."10"."""
    prompt_logprobs_after: str = ""
    """When set, a backend may leave out prompt-token alternatives except at positions
    right after a token ending in this text (the all-at-once simulator's slots follow a
    tab), and the in-process one leaves out the logprob there too (None): it reads the
    vocabulary only where it will be read. Keeps responses and the cache small; backends
    that cannot filter ignore it."""
    prompt_logprobs_slots: int = 0
    """With `prompt_logprobs_after`: how many slots (positions right after a token ending
    in that text) the caller reads, all of them the prompt's last. A backend may then
    return only the prompt's last positions, from the one before the first of those
    slots on: a vLLM answer holds every position, most of them a few-shot prefix nobody
    reads, and the client decodes only the tail. Not part of the cache key (see
    `canonical`): it never changes what the caller reads."""
    stop: tuple[str, ...] = ()
    sample_index: int = 0
    """Distinguishes repeated samples of the same request in the cache."""
    answer_decided: str = ""
    """A regular expression: once the text generated so far matches it, what the caller
    reads from the answer can no longer change (the explainer keeps the first sentence of
    the first line), so a backend that generates a token at a time (in process) may end
    there; the text is not cut. Endpoints ignore it. Not part of the cache key or the
    sampling seed (see `canonical`): it never changes what the caller reads."""

    def __post_init__(self):
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("exactly one of messages and prompt must be set")


def canonical(request: CompletionRequest) -> dict:
    """The request as the cache keys it and the in-process sampler seeds from it: every
    field but `answer_decided` and `prompt_logprobs_slots`."""
    out = asdict(request)
    del out["answer_decided"], out["prompt_logprobs_slots"]
    return out


class TokenLogprob(NamedTuple):
    """One position's token and logprob. A named tuple, not a dataclass: a scoring run
    makes millions (every prompt position of every call), and one builds in 0.22 us
    instead of 0.70 us."""

    token: str
    logprob: float | None
    top: tuple[tuple[str, float], ...] = ()
    """Alternatives at this position, most likely first."""


@dataclass(frozen=True)
class Usage:
    """Tokens billed for one call: the endpoint's `usage`, or counted by the tokenizer in
    process."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: tuple[TokenLogprob, ...] | None = None
    """Generated tokens with their logprobs, when requested and supported."""
    prompt_tokens: tuple[TokenLogprob, ...] | None = None
    """Prompt tokens with their logprobs (position i: P(token i | tokens < i))."""
    finish_reason: str | None = None
    meta: dict = field(default_factory=dict, compare=False)
    """Backend extras (latency, cache hit); never part of the cache key."""
    usage: Usage | None = None
    """Tokens of this call, when the backend reports or counts them."""


def alternatives_after(tokens: tuple[TokenLogprob, ...], after: str) -> tuple[TokenLogprob, ...]:
    """Prompt tokens with their alternatives kept only right after a token ending in
    `after` (see CompletionRequest.prompt_logprobs_after); every token keeps its logprob."""
    return tuple(t if i and tokens[i - 1].token.endswith(after) or not t.top
                 else TokenLogprob(t.token, t.logprob) for i, t in enumerate(tokens))


class LLMCallError(AutointerpError):
    """A call failed for good (after retries, or a non-retryable 4xx)."""


class EndpointAuthError(LLMCallError):
    """The endpoint rejected the API key (401): every other call would fail the same way,
    so a run stops at once instead of recording each feature as failed."""


class LLMClient(Protocol):
    name: str
    """Model identity recorded in results, e.g. 'inprocess:smollm2-135m' or 'openai:gpt-4o'."""

    async def complete(self, request: CompletionRequest) -> Completion: ...

    def supports(self, feature: str) -> bool | None:
        """'prompt_logprobs' | 'top_logprobs': True/False when known, None when only a probe can tell."""
        ...
