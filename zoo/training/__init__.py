"""Training: the one fine-tune loop (`loop`) and its DDP launcher. The local-learning methods (MAN,
AugLocal) live in zoo.layers.local_learning beside their auxiliary heads, because the
classification task, which sits below training, chooses them."""
