"""The three splits every task and file uses, in this order."""

SPLITS = ("train", "val", "test")
