"""What the tests share: tiny models (models.py), stores and result databases (data.py),
scripted LLM clients and endpoints (llm.py), the CLI runner (cli.py), local servers
(servers/), multi-process runs (ranks.py). Test modules import from here, never from
each other."""
