"""The oracle reader's adapter start (`align.user="oracle_titles"`): square maps set to the identity."""

import numpy as np


def identity_maps(adapter_params):
  """The adapter with every square Dense map (d_llm -> d_llm) set to the identity, its bias cut to
  1/100: for the oracle reader, whose inputs are LLM embeddings, soft tokens start as those
  embeddings (then the output norm), not a random projection of them. (A token embedding's
  entries are ~0.1, the size of `common.token_dense`'s random bias; a hundredth keeps a zero
  input from giving an exactly zero token.)"""
  def visit(tree):
    if not isinstance(tree, dict):
      return tree
    kernel = tree.get("kernel")
    if kernel is not None and np.ndim(kernel) == 2 and kernel.shape[0] == kernel.shape[1]:
      return {**tree, "kernel": np.eye(kernel.shape[0], dtype=np.asarray(kernel).dtype),
              **({"bias": np.asarray(tree["bias"]) / 100} if "bias" in tree else {})}
    return {k: visit(v) for k, v in tree.items()}
  return visit(adapter_params)
