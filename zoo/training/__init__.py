"""Training: the one fine-tune loop (`loop`), its DDP launcher, and the local-learning methods."""
