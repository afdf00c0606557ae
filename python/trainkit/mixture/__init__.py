"""Mixture search, pure: the prior a sweep samples from, the models that predict a metric from mixture
weights, their cross-validated quality, the recommendation (RegMix-style) and the next round of a sweep
that searches.

numpy (and scikit-learn for the trees) only; nothing here reads storage or talks to Kubernetes, so the
operator's sweep controller, `trainkit sweep --local`, `trainkit compare` and `trainkit bench mixture`
all run the same decisions. One algorithm per module:

- `simplex`: normalising, rounding and the total-variation distance between mixtures
- `prior`: the Dirichlet prior a sweep samples from (uniform, or RegMix's natural distribution)
- `scheffe`: linear and quadratic Scheffé mixture regressions (ridge)
- `trees`: gradient-boosted trees (scikit-learn's HistGradientBoostingRegressor)
- `models`: the models by name, and what each needs
- `crossval`: k-fold out-of-fold predictions and their Spearman rank correlation, with an interval
- `recommend`: model choice by cross-validation, the top-k average over prior candidates, the distance bound
- `search`: rounds: the next round's mixtures around the current recommendation, and when to stop
"""
