"""Causal results (Cunningham et al. 2023, sections 4-5): patching dictionary features
from a counterfactual prompt (IOI feature identification) and feature circuits across layers."""
