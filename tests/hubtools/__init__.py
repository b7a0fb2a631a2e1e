"""Test helpers for the hub: a local olah mirror, a counting/throttling proxy, a small upload
endpoint speaking the Hugging Face upload protocol, and a tiny model to publish."""
