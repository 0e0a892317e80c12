"""The BalanceRoute and BF-IO paper experiments: one module per experiment, listed in ``registry``; ``driver`` runs
them (``dpbalance reproduce``) and ``render`` / ``figures`` write the report."""
