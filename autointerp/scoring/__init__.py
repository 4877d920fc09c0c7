"""Fragments, explainer, the scoring pipeline, self-test, planted features, parsing, statistics."""
