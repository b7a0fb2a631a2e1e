"""Blocks shared by model families. Import what you need: `from zoo.layers import NobleLinear`."""

from zoo.layers.noble import NobleLinear, noble_param_groups
from zoo.layers.versatile_ffn import VersatileFFN

__all__ = ["NobleLinear", "VersatileFFN", "noble_param_groups"]
