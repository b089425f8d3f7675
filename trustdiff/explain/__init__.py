"""Word-level LIME and SHAP explanations of both models on shared perturbations, and alignment."""

from trustdiff.explain.runner import explain_and_align

__all__ = ["explain_and_align"]
