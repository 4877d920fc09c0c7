"""Models, hook points, corpora, the harvest run, shards and the activation store."""
