"""Adapter training: base-model reading, the adapter in torch, feature shards, the fit loop.

Submodules are imported explicitly (`from kangaroo_edge.train.fit import fit`) so that importing
`kangaroo_edge` or `kangaroo_edge.train` never pulls in torch; only `base_model`, `adapter_model`
and `fit` need it (`feature_shards` needs only numpy until a batch is collated).
"""
