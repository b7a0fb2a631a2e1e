"""Model families: one file per paper's family, plain nn.Modules plus builder functions."""
