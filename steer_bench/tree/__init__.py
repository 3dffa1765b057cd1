"""The reasoning-tree testbed (issue #8): a tabular softmax policy over a tree of choices, trained by the
objective library's own estimators and losses, where every entropy and accuracy is computed exactly.

Modules: ``task`` (tree, verifier automata, exact dynamic programmes), ``policy`` (the tabular model),
``loop`` (one run), ``probe`` (exact ΔH vs the Ω / covariance estimates), ``study`` (methods × paired seeds
in a process pool), ``summary`` / ``report`` / ``figures`` (tables, tree.md, PNGs), ``cli`` (`steer-bench tree`).
"""
