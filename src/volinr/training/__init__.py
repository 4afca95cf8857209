"""Training loops: the SIREN fit (autograd, and the hand-written blocked step for CPUs) and
SRDenseNet pretraining. Networks are in volinr.models."""
